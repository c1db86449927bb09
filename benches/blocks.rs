//! `cargo bench --bench blocks -- --events N [--props 0|1]`: the block codec
//! (src/store/blocks) on seed-shaped events of ONE org in ONE partition, as a partition keyed
//! by org would carry them, cut into blocks of 1,000 and 10,000 rows: bytes per event (in
//! total and per column), encode and decode speed in CPU time of one thread, per compressor
//! candidate.
//! With `--props 1` (default) also a per-property-key layout of `properties` (see
//! support/props.rs). One JSON line per candidate, the chosen one last.

#[path = "support/mod.rs"]
mod common;
#[path = "support/props.rs"]
mod props;
use common::arg;

use std::time::Duration;
use streamtally::schema::Schema;
use streamtally::store::blocks::{encode_block_with, BlockReader, Compression};
use streamtally::store::{FieldLayout, Layout, Value, Values};
use streamtally::synth::{mix, SynthConfig, SynthEvent, SynthIds};

const CANDIDATES: [Compression; 4] = [
    Compression::None,
    Compression::Lz4,
    Compression::Zstd(1),
    Compression::Zstd(3),
];
const BLOCK_ROWS: [usize; 2] = [1_000, 10_000];
/// Events are consumed and written in batches of this many; a batch shares `ingested_at`.
const INGEST_BATCH: u64 = 500;

/// Events `from..to` of the stream as validated Event values: org 0, partition 0, offsets in
/// order, keyed by user (as `streamtally produce` keys them), random v4 ids ([`random_v4`]).
fn event_rows(layout: &Layout, cfg: &SynthConfig, from: u64, to: u64) -> Vec<Values> {
    let entity = layout.entity("Event").expect("Event");
    let mut batch_end = (u64::MAX, 0);
    (from..to)
        .map(|i| {
            let ev = SynthEvent::generate(cfg, i);
            let last = (i / INGEST_BATCH + 1) * INGEST_BATCH - 1;
            if batch_end.0 != last {
                let t = SynthEvent::generate(cfg, last).timestamp.timestamp_micros();
                batch_end = (last, t);
            }
            let mut row = ev.to_row();
            row.set("id", Value::Uuid(random_v4(cfg.seed, i)));
            row.set("org_id", Value::Uuid(cfg.org_id(0)));
            row.set("topic", Value::String("events".into()));
            row.set("partition", Value::Int32(0));
            row.set("offset", Value::Int64(i as i64));
            row.set("kafka_key", Value::String(ev.user_id.clone()));
            let ingested = batch_end.1 + 180_000;
            row.set("ingested_at", Value::Timestamp(ingested));
            entity.validate(&row, ingested).expect("valid event")
        })
        .collect()
}

/// A v4 id with all 122 random bits random (the generator's v4 ids end in the event's
/// number, which compresses: ids as producers send them do not).
fn random_v4(seed: u64, i: u64) -> [u8; 16] {
    let hi = mix(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_le_bytes());
    bytes[8..].copy_from_slice(&mix(hi).to_le_bytes());
    *uuid::Builder::from_random_bytes(bytes).as_uuid().as_bytes()
}

/// CPU time of this thread: the machine is shared, and the targets are per core.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Totals for one (compressor, block size) over the whole stream.
#[derive(Default)]
struct Totals {
    bytes: usize,
    by_column: Vec<usize>,
    encode: Duration,
    decode: Duration,
    decode6: Duration,
}

fn measure(t: &mut Totals, fields: &[FieldLayout], rows: &[Values], c: Compression, six: &[usize]) {
    let started = cpu_now();
    let block = encode_block_with(fields, rows, c).expect("encode");
    t.encode += cpu_now() - started;
    t.bytes += block.len();
    let started = cpu_now();
    let reader = BlockReader::open(&block).expect("open");
    let all = reader.rows_all().expect("decode");
    t.decode += cpu_now() - started;
    assert_eq!(all.len(), rows.len());
    let started = cpu_now();
    let reader = BlockReader::open(&block).expect("open");
    let some = reader.rows(six).expect("decode 6");
    t.decode6 += cpu_now() - started;
    assert_eq!(some.len(), rows.len());
    t.by_column.resize(fields.len(), 0);
    for (i, col) in reader.columns().iter().enumerate() {
        t.by_column[i] += col.stored_len;
    }
}

fn line(t: &Totals, fields: &[FieldLayout], events: u64, rows: usize, c: Compression) -> String {
    let per = |b: usize| (b as f64 / events as f64 * 100.0).round() / 100.0;
    let columns: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .zip(&t.by_column)
        .map(|(f, &b)| (f.name.clone(), per(b).into()))
        .chain([(
            "_header".to_string(),
            per(t.bytes - t.by_column.iter().sum::<usize>()).into(),
        )])
        .collect();
    let rate = |d: Duration| (events as f64 / d.as_secs_f64()).round();
    serde_json::json!({
        "bench": "blocks",
        "events": events,
        "block_rows": rows,
        "bytes_per_event": per(t.bytes),
        "bytes_per_event_by_column": columns,
        "encode_events_per_sec": rate(t.encode),
        "decode_events_per_sec": rate(t.decode),
        "decode_6_columns_events_per_sec": rate(t.decode6),
        "codec": c.name(),
    })
    .to_string()
}

fn main() {
    let events = arg("--events", 1_000_000);
    let schema = Schema::parse(include_str!("../schema.ormdb")).expect("schema.ormdb parses");
    let layout = Layout::new(&schema).expect("layout");
    let entity = layout.entity("Event").expect("Event");
    let fields = entity.fields.clone();
    // What the stats workers read: the @feed fields.
    let six = entity.feed_fields.clone();
    let cfg = SynthConfig {
        ids: SynthIds::Random,
        ..SynthConfig::new(events)
    };
    let mut lines = Vec::new();
    let mut chosen = String::new();
    for rows_per_block in BLOCK_ROWS {
        let mut totals: Vec<Totals> = CANDIDATES.iter().map(|_| Totals::default()).collect();
        let mut from = 0;
        while from < events {
            let to = (from + rows_per_block as u64).min(events);
            let rows = event_rows(&layout, &cfg, from, to);
            for (t, &c) in totals.iter_mut().zip(&CANDIDATES) {
                measure(t, &fields, &rows, c, &six);
            }
            from = to;
        }
        for (t, &c) in totals.iter().zip(&CANDIDATES) {
            let l = line(t, &fields, events, rows_per_block, c);
            eprintln!("{l}");
            match c == Compression::DEFAULT && rows_per_block == 10_000 {
                true => chosen = l,
                false => lines.push(l),
            }
        }
    }
    if arg("--props", 1) == 1 {
        lines.extend(props::run(&layout, events, |f, t| {
            event_rows(&layout, &cfg, f, t)
        }));
    }
    for l in lines {
        println!("{l}");
    }
    println!("{chosen}");
}
