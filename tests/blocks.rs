//! The block codec (src/store/blocks) on the real Event entity of schema.ormdb: any rows
//! round-trip exactly (unicode, absent optional fields, large and nested JSON text as the
//! producer wrote it, microsecond and extreme times), a projection equals the same columns
//! of the full decode, and a truncated or bit-flipped block is an error, never a panic.
//!
//! Migration (src/store/migrate.rs): a store written by the row path (Event as one ORMDB
//! row per event, as releases before blocks kept it) opened with the real schema has every
//! event in blocks, read back equal, counted once, with its rollups still right; a
//! `store migrate` killed between chunks continues on the next run.

//!
//! Blocks in a running store (tests/blocks/merge.rs): merges, a kill mid-merge, the dedup
//! window.

mod common;
#[path = "blocks/merge.rs"]
mod merge;

use proptest::prelude::*;
use streamtally::schema::{FieldType, Schema};
use streamtally::store::blocks::{encode_block, encode_block_with, BlockReader, Compression};
use streamtally::store::{FieldLayout, Layout, StoreError, Value, Values};

fn event_fields() -> Vec<FieldLayout> {
    let schema = Schema::parse(include_str!("../schema.ormdb")).expect("schema.ormdb parses");
    let layout = Layout::new(&schema).expect("layout");
    layout.entity("Event").expect("Event").fields.clone()
}

/// How a column's values vary within one block.
#[derive(Debug, Clone, Copy)]
enum Spread {
    AllEqual,
    Few,
    AllDistinct,
}

fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("1.5e3".to_string()),
        Just(r#""caf\u00e9 \ud83d\ude00""#.to_string()),
    ];
    let nested = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z\u{e9}]{1,6}", inner), 0..5).prop_map(|kv| {
                let body: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{} : {v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{ {} }}", body.join(",\n  "))
            }),
        ]
    });
    prop_oneof![
        8 => nested,
        1 => (0usize..100_000).prop_map(|n| format!(r#"{{"blob":"{}"}}"#, "x".repeat(100_000 + n % 7))),
    ]
}

fn value_of(ty: FieldType) -> BoxedStrategy<Value> {
    match ty {
        FieldType::Uuid => any::<[u8; 16]>().prop_map(Value::Uuid).boxed(),
        FieldType::String => "\\PC{0,24}".prop_map(Value::String).boxed(),
        FieldType::Json => json_text().prop_map(Value::String).boxed(),
        FieldType::Timestamp => prop_oneof![
            (1_700_000_000_000_000i64..1_800_000_000_000_000).prop_map(Value::Timestamp),
            any::<i64>().prop_map(Value::Timestamp),
            prop::sample::select(vec![i64::MIN, i64::MAX, 0, -1]).prop_map(Value::Timestamp),
        ]
        .boxed(),
        FieldType::Int32 => any::<i32>().prop_map(Value::Int32).boxed(),
        FieldType::Int64 => any::<i64>().prop_map(Value::Int64).boxed(),
        FieldType::Float64 => any::<f64>().prop_map(Value::Float64).boxed(),
        FieldType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
    }
}

/// `n` values of one field, spread as `spread` says, each absent with probability
/// `null_pct`% when the field is optional.
fn column_of(field: &FieldLayout, n: usize) -> BoxedStrategy<Vec<Value>> {
    let optional = field.optional;
    let ty = field.ty;
    (
        prop::sample::select(vec![Spread::AllEqual, Spread::Few, Spread::AllDistinct]),
        prop::sample::select(vec![0u32, 10, 60, 100]),
    )
        .prop_flat_map(move |(spread, null_pct)| {
            let pool = match spread {
                Spread::AllEqual => 1,
                Spread::Few => 3,
                Spread::AllDistinct => n.max(1),
            };
            let nulls = if optional { null_pct } else { 0 };
            (
                prop::collection::vec(value_of(ty), pool),
                prop::collection::vec((any::<prop::sample::Index>(), 0u32..100), n),
            )
                .prop_map(move |(pool, picks)| {
                    picks
                        .into_iter()
                        .enumerate()
                        .map(|(i, (pick, roll))| match roll < nulls {
                            true => Value::Null,
                            false if matches!(spread, Spread::AllDistinct) => pool[i].clone(),
                            false => pool[pick.index(pool.len())].clone(),
                        })
                        .collect()
                })
        })
        .boxed()
}

fn rows_of(fields: &[FieldLayout], n: usize) -> impl Strategy<Value = Vec<Values>> {
    let columns: Vec<_> = fields.iter().map(|f| column_of(f, n)).collect();
    columns.prop_map(move |cols| {
        (0..n)
            .map(|r| cols.iter().map(|c| c[r].clone()).collect())
            .collect()
    })
}

/// Equality that holds for floats bit for bit (NaN, -0.0).
fn same_rows(a: &[Values], b: &[Values]) -> bool {
    let key = |v: &Value| match v {
        Value::Float64(f) => format!("f{}", f.to_bits()),
        v => format!("{v:?}"),
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| key(p) == key(q)))
}

fn assert_round_trip(fields: &[FieldLayout], rows: &[Values], c: Compression) -> Vec<u8> {
    let block = encode_block_with(fields, rows, c).expect("encodes");
    let reader = BlockReader::open(&block).expect("opens");
    assert_eq!(reader.len(), rows.len());
    let back = reader.rows_all().expect("decodes");
    assert!(
        same_rows(&back, rows),
        "{c:?}: rows differ after the round trip"
    );
    block
}

fn fails(block: &[u8]) -> Option<StoreError> {
    BlockReader::open(block).and_then(|r| r.rows_all()).err()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_event_rows_round_trip_and_project(
        (rows, projection) in (0usize..40).prop_flat_map(|n| {
            let fields = event_fields();
            let width = fields.len();
            (rows_of(&fields, n), prop::collection::vec(0..width, 0..8))
        })
    ) {
        let fields = event_fields();
        for c in [Compression::DEFAULT, Compression::Lz4, Compression::None] {
            assert_round_trip(&fields, &rows, c);
        }
        let block = encode_block(&fields, &rows).unwrap();
        let reader = BlockReader::open(&block).unwrap();
        let projected = reader.rows(&projection).unwrap();
        let expected: Vec<Values> = rows
            .iter()
            .map(|r| projection.iter().map(|&p| r[p].clone()).collect())
            .collect();
        prop_assert!(same_rows(&projected, &expected));
        for (p, _) in fields.iter().enumerate() {
            let column: Vec<Values> = reader.column(p).unwrap().into_iter().map(|v| vec![v]).collect();
            let expected: Vec<Values> = rows.iter().map(|r| vec![r[p].clone()]).collect();
            prop_assert!(same_rows(&column, &expected));
        }
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics(
        rows in (1usize..12).prop_flat_map(|n| rows_of(&event_fields(), n)),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let block = encode_block(&event_fields(), &rows).unwrap();
        let at = cut.index(block.len());
        prop_assert!(fails(&block[..at]).is_some(), "truncated to {at} of {} bytes", block.len());
        let mut flipped = block.clone();
        flipped[flip.index(block.len())] ^= 1 << bit;
        let err = fails(&flipped);
        prop_assert!(matches!(err, Some(StoreError::Corrupt { .. })), "{err:?}");
    }
}

/// Event-shaped rows: a few names and types, users and sessions, ticking microseconds.
fn event_like(n: usize, equal: bool) -> Vec<Values> {
    (0..n)
        .map(|i| {
            let v = if equal { 0 } else { i };
            vec![
                Value::Uuid(((v as u128) * 0x9E37_79B9_7F4A_7C15_F39C).to_le_bytes()),
                Value::Uuid([7; 16]),
                Value::String(["track", "page"][v % 2].into()),
                Value::String(format!("name_{}", v % 13)),
                if v % 5 != 0 {
                    Value::String(format!("user_{}", v % 97))
                } else {
                    Value::Null
                },
                Value::String(format!("s{}-{}", v % 97, v / 500)),
                Value::String(format!(r#"{{"path":"/p/{v}","n":{{"k":[1,2,{v}]}}}}"#)),
                Value::Timestamp(1_770_000_000_000_000 + (v as i64 / 3) * 1_000),
                Value::String("2026-02-02".into()),
                Value::Int32((v / 400) as i32 % 24),
                Value::String("events".into()),
                Value::Int32(3),
                Value::Int64(v as i64),
                Value::Null,
                Value::Null,
                Value::Timestamp(1_770_000_000_000_000 + (v as i64 / 1000) * 40_000),
                Value::Null,
            ]
        })
        .collect()
}

#[test]
fn one_row_and_five_thousand_rows_round_trip() {
    let fields = event_fields();
    assert_eq!(event_like(1, false)[0].len(), fields.len());
    for n in [1, 5000] {
        for equal in [false, true] {
            for c in [
                Compression::Zstd(3),
                Compression::Zstd(1),
                Compression::Lz4,
                Compression::None,
            ] {
                assert_round_trip(&fields, &event_like(n, equal), c);
            }
        }
    }
}

#[test]
fn all_equal_columns_are_stored_once() {
    let fields = event_fields();
    let block = encode_block(&fields, &event_like(5000, true)).unwrap();
    let reader = BlockReader::open(&block).unwrap();
    assert!(
        reader.columns().iter().all(|c| c.raw_len < 200),
        "{:?}",
        reader.columns()
    );
    assert!(block.len() < 1000, "{} bytes", block.len());
}

#[test]
fn wrong_types_and_widths_are_refused() {
    let fields = event_fields();
    let mut rows = event_like(3, false);
    rows[1][7] = Value::Int64(5);
    let err = encode_block(&fields, &rows).unwrap_err().to_string();
    assert!(
        err.contains("block row 1.timestamp: expected timestamp, got int64"),
        "{err}"
    );
    rows[1].pop();
    assert!(encode_block(&fields, &rows).is_err());
}

#[test]
fn corruption_messages_name_the_fault() {
    let fields = event_fields();
    let block = encode_block(&fields, &event_like(100, false)).unwrap();
    let msg = |b: &[u8]| fails(b).map(|e| e.to_string()).unwrap_or_default();
    assert!(msg(&block[..3]).contains("header"), "{}", msg(&block[..3]));
    let mut bad = block.clone();
    bad[0] = b'X';
    assert!(msg(&bad).contains("magic"));
    let mut bad = block.clone();
    bad[4] = 9;
    assert!(msg(&bad).contains("version 9"));
    let mut bad = block.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x10;
    // The last column (event_id) is all null and stores nothing: the last byte is ingested_at's.
    assert!(
        msg(&bad).contains("column 15") && msg(&bad).contains("crc32"),
        "{}",
        msg(&bad)
    );
    assert!(msg(&block[..block.len() - 1]).contains("accounts for"));
    let reader = BlockReader::open(&block).unwrap();
    assert!(reader.column(17).is_err());
}

// ---------------------------------------------------------------------------------------------
// Migration of a store written before blocks
// ---------------------------------------------------------------------------------------------

mod migration {
    use super::common::{self, org, run::streamtally};
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;
    use streamtally::stats::rollup::{RollupOptions, RollupWorker};
    use streamtally::store::{
        IdScope, Migration, Order, Query, Row, Store, StoreOptions, Value, WriteBatch,
    };

    /// Event `i` of 3 orgs over 3 days, from 4 partitions of topic "events".
    fn event(i: u64) -> Row {
        common::event(i)
            .with("topic", Value::String("events".into()))
            .with("partition", Value::Int32((i % 4) as i32))
            .with("offset", Value::Int64((i / 4) as i64))
    }

    fn scope() -> Arc<IdScope> {
        Arc::new(IdScope {
            scope_field: "org_id".into(),
            original_id_field: "event_id".into(),
            content_fields: vec!["event_type".into(), "event_name".into()],
        })
    }

    /// `Store::open` retrying sled's file lock, which a closed store (or a killed child)
    /// lets go of a little later.
    fn open_with(opts: StoreOptions, schema: &streamtally::schema::Schema) -> Store {
        open_reporting(opts, schema, &mut |_| {})
    }

    fn open_reporting(
        opts: StoreOptions,
        schema: &streamtally::schema::Schema,
        progress: &mut dyn FnMut(&Migration),
    ) -> Store {
        common::open_retrying(|| Store::open_with_progress(opts.clone(), schema, progress))
    }

    fn open_rows(dir: &Path) -> Store {
        open_with(StoreOptions::new(dir), &common::row_schema())
    }

    /// Text without its ANSI colour sequences.
    fn plain(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn id_of(row: &Row) -> [u8; 16] {
        row.id().expect("an id")
    }

    /// Writes `n` events through the row path in batches of 500 (with offsets), catches the
    /// rollup worker up, then updates (some twice), deletes and adds events under another
    /// org's ids (stored under derived ids), which the rollups have not seen yet.
    fn write_row_store(dir: &Path, n: u64) {
        let store = open_rows(dir);
        for start in (0..n).step_by(500) {
            let mut b = WriteBatch::new();
            for i in start..(start + 500).min(n) {
                b.insert("Event", event(i));
                b.set_offset("events", (i % 4) as i32, (i / 4 + 1) as i64);
            }
            store.write_blocking(b).unwrap();
        }
        let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
        common::rt().block_on(worker.catch_up()).unwrap();
        let mut b = WriteBatch::new();
        for i in (0..n).step_by(37) {
            let row = event(i).with("event_name", Value::String("renamed".into()));
            b.update("Event", id_of(&row), row);
        }
        for i in (0..n).step_by(111) {
            let row = event(i).with("event_name", Value::String("renamed twice".into()));
            b.update("Event", id_of(&row), row);
        }
        for i in (5..n).step_by(53) {
            b.delete("Event", id_of(&event(i)));
        }
        for i in (1..n).step_by(97) {
            // Event i's id in the next org: a second row under the id derived from (id, org).
            let org_no = (0..3)
                .find(|&k| Some(&org(k)) != event(i).get("org_id"))
                .unwrap();
            b.insert_scoped("Event", event(i).with("org_id", org(org_no)), &scope());
        }
        store.write_blocking(b).unwrap();
        store.close().unwrap();
    }

    /// What a reader sees of the events: every row by id, deleted ids as None, counts and
    /// a few queries.
    #[derive(Debug, PartialEq)]
    struct Seen {
        rows: BTreeMap<[u8; 16], Option<Row>>,
        count: u64,
        per_org: Vec<u64>,
        recent: Vec<Vec<Value>>,
        day: Vec<Row>,
    }

    fn seen(store: &Store, ids: &[[u8; 16]]) -> Seen {
        let rows = ids
            .iter()
            .map(|id| (*id, store.get("Event", id).unwrap()))
            .collect::<BTreeMap<_, _>>();
        // Read together (each block decoded once), the same rows as read one by one.
        let many = store.get_many("Event", ids).unwrap();
        for (id, row) in &rows {
            assert_eq!(many.get(id), row.as_ref(), "get_many of {id:02x?}");
        }
        assert_eq!(many.len(), rows.values().flatten().count());
        let per_org = (0..3)
            .map(|k| {
                store
                    .count(&Query::new("Event").eq("org_id", org(k)))
                    .unwrap()
            })
            .collect();
        // Ordered and limited: compared by timestamp (ties may come in another order).
        let recent = (0..3)
            .map(|k| {
                let q = Query::new("Event")
                    .eq("org_id", org(k))
                    .order_by("timestamp", Order::Desc)
                    .limit(40);
                let rows = store.query(&q).unwrap();
                rows.iter()
                    .map(|r| r.get("timestamp").unwrap().clone())
                    .collect()
            })
            .collect();
        let mut day = store
            .query(
                &Query::new("Event")
                    .eq("org_id", org(1))
                    .eq("date", Value::String("2026-02-28".into())),
            )
            .unwrap();
        day.sort_by_key(id_of);
        Seen {
            rows,
            count: store.count_rows("Event").unwrap(),
            per_org,
            recent,
            day,
        }
    }

    /// Every id a row store holds for Event, deleted ones included.
    fn all_ids(dir: &Path, n: u64) -> Vec<[u8; 16]> {
        let store = open_rows(dir);
        let mut ids: Vec<[u8; 16]> = store
            .ormdb()
            .0
            .scan_entity_type("Event")
            .map(|item| item.unwrap().0)
            .collect();
        ids.extend((0..n).map(|i| id_of(&event(i))));
        ids.sort();
        ids.dedup();
        store.close().unwrap();
        ids
    }

    fn seen_by_row_store(dir: &Path, ids: &[[u8; 16]]) -> Seen {
        let store = open_rows(dir);
        let s = seen(&store, ids);
        store.close().unwrap();
        s
    }

    fn open_blocks(dir: &Path, chunk_rows: usize) -> Store {
        let opts = StoreOptions {
            migrate_chunk_rows: chunk_rows,
            // No merge while the test counts blocks.
            merge_interval: None,
            ..StoreOptions::new(dir)
        };
        open_with(opts, &common::schema())
    }

    fn assert_migrated(store: &Store, before: &Seen, ids: &[[u8; 16]]) {
        let after = seen(store, ids);
        assert_eq!(after.count, before.count);
        assert_eq!(after.per_org, before.per_org);
        assert_eq!(after.recent, before.recent);
        assert_eq!(after.day, before.day);
        for (id, row) in &before.rows {
            assert_eq!(
                &after.rows[id],
                row,
                "event {}",
                uuid::Uuid::from_bytes(*id)
            );
        }
        assert_eq!(store.verify().unwrap(), Vec::<String>::new());
        assert!(store.rows_to_migrate().unwrap().is_empty());
        let (engine, _) = store.ormdb();
        assert_eq!(
            engine.scan_entity_type("Event").count(),
            0,
            "Event rows left"
        );
        for id in ids {
            assert!(
                engine.get_latest(id).unwrap().is_none(),
                "a version is left"
            );
        }
        let registered: i64 = engine
            .scan_entity_type("EventBlock")
            .map(|item| {
                let (_, _, record) = item.unwrap();
                let fields =
                    ormdb_core::query::get_fields_fast(&record.data, &["row_count"]).unwrap();
                match fields[0].1 {
                    Value::Int64(n) => n,
                    ref other => panic!("row_count {other:?}"),
                }
            })
            .sum();
        assert_eq!(registered as u64, before.count);
    }

    #[test]
    fn a_row_store_moves_into_blocks_on_open_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3000;
        write_row_store(dir.path(), n);
        let ids = all_ids(dir.path(), n);
        let before = seen_by_row_store(dir.path(), &ids);
        let deleted = before.rows.values().filter(|r| r.is_none()).count();
        assert!(
            deleted > 50 && before.count > 2900,
            "{deleted} {}",
            before.count
        );

        let mut reports = Vec::new();
        let opts = StoreOptions {
            migrate_chunk_rows: 700,
            merge_interval: None,
            ..StoreOptions::new(dir.path())
        };
        let store = open_reporting(opts, &common::schema(), &mut |m| reports.push(m.clone()));
        let last = reports.last().unwrap().clone();
        assert_eq!(last.entity, "Event");
        assert_eq!(
            (last.rows_total, last.rows_done),
            (ids.len() as u64, ids.len() as u64)
        );
        assert_eq!(last.moved, before.count);
        assert_eq!(reports.len(), 1 + ids.len().div_ceil(700), "{reports:?}");
        assert_eq!(store.block_totals("Event").unwrap().0, last.blocks);
        assert_migrated(&store, &before, &ids);
        let feed_head = store.feed_head();
        store.close().unwrap();
        drop(store);

        // Nothing left to do on the next open; the rollups agree with the migrated events
        // (`stats verify` applies the feed written after the rollups caught up first).
        let store = open_blocks(dir.path(), 700);
        assert_eq!(
            store.feed_head(),
            feed_head,
            "migration writes no feed entries"
        );
        assert_migrated(&store, &before, &ids);
        store.close().unwrap();
        drop(store);
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let data = dir.path().to_str().unwrap();
        let (code, out, err) = streamtally(&["--data", data, "stats", "verify"], manifest);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(", 0 difference(s)"), "{out}");
    }

    #[test]
    fn store_migrate_reports_and_a_killed_run_continues() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3000;
        write_row_store(dir.path(), n);
        let ids = all_ids(dir.path(), n);
        let before = seen_by_row_store(dir.path(), &ids);
        let data = dir.path().to_str().unwrap();
        let migrate = |fault: &str| {
            let out = common::run::command(
                dir.path(),
                [
                    "--data",
                    data,
                    "--set",
                    "store.migrate_chunk_rows=400",
                    "store",
                    "migrate",
                ],
            )
            .env("STREAMTALLY_FAULT", fault)
            .env("STREAMTALLY__LOG__LEVEL", "info")
            .output()
            .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };

        // SIGKILLed after its third chunk: 1200 rows converted, the rest still rows.
        let (code, out, err) = migrate("migrate_crash_after_chunk:3");
        let err = plain(&err);
        assert_eq!(code, -1, "{out}{err}");
        assert!(
            err.contains("fault injection: SIGKILL after a migration chunk"),
            "{err}"
        );
        assert!(err.contains("rows_done=1200"), "{err}");
        let moved_first: u64 = err
            .lines()
            .filter(|l| l.contains("rows_done=1200"))
            .find_map(|l| {
                l.split("moved=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("moved= in the log");

        // The rerun converts the rest: together, every event once.
        let (code, out, err) = migrate("");
        assert_eq!(code, 0, "{out}{err}");
        let want = format!("migrated {} events into ", before.count - moved_first);
        assert!(
            out.contains(&want) && out.ends_with("; 0 problem(s)\n"),
            "{out}"
        );

        let (code, out, err) = migrate("");
        assert_eq!(
            (code, out.as_str()),
            (0, "migrated 0 events into 0 blocks; 0 problem(s)\n"),
            "{err}"
        );

        let store = open_blocks(dir.path(), 400);
        assert_migrated(&store, &before, &ids);
        store.close().unwrap();
    }
}
