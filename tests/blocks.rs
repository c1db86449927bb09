//! The block codec (src/store/blocks) on the real Event entity of schema.ormdb: any rows
//! round-trip exactly (unicode, absent optional fields, large and nested JSON text as the
//! producer wrote it, microsecond and extreme times), a projection equals the same columns
//! of the full decode, and a truncated or bit-flipped block is an error, never a panic.

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
