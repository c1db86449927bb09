//! `cargo bench --bench store -- --events N [--ids v4|v7]`: durable batch writes of seed-shaped events
//! through the store layer, then the gateway's read shapes, and, for comparison, ormdb-core's
//! own typed `Transaction` path on the first 20,000 events. The last stdout line is JSON.

#[path = "support/mod.rs"]
mod common;
use common::{arg, cpu_secs, event_batch, ids_arg, peak_rss_mb, percentile, rss_mb};

use std::ops::Bound;
use std::time::{Duration, Instant};
use streamtally::schema::Schema;
use streamtally::store::{Query, Store, StoreOptions, Value};
use streamtally::synth::{SynthConfig, SynthEvent};

const BATCH: usize = 1000;
const WRITERS: usize = 4;
const TYPED_EVENTS: u64 = 20_000;

fn median_ms(mut f: impl FnMut(), runs: usize) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    percentile(&t, 0.5)
}

fn ormdb_typed(cfg: &SynthConfig, n: u64) -> f64 {
    use ormdb_core::{Record, StorageConfig, StorageEngine};
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = StorageEngine::open(StorageConfig {
        compression: false,
        ..StorageConfig::new(dir.path())
    })
    .expect("open ormdb-core");
    let schema = Schema::parse(include_str!("../schema.ormdb")).expect("schema");
    let catalog = ormdb_core::Catalog::open(engine.db()).expect("catalog");
    catalog
        .apply_schema(schema.to_bundle(0))
        .expect("apply schema");
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let mut tx = engine.transaction();
        for j in i..(i + BATCH as u64).min(n) {
            let row = SynthEvent::generate(cfg, j).to_row();
            let data = ormdb_core::query::encode_entity(&row.fields).expect("encode");
            tx.insert("Event", row.id().expect("id"), Record::new(data));
        }
        tx.commit().expect("typed commit");
        engine.flush().expect("flush");
        i += BATCH as u64;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let events = arg("--events", 1_000_000);
    let schema = Schema::parse(include_str!("../schema.ormdb")).expect("schema.ormdb parses");
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = SynthConfig {
        ids: ids_arg(),
        ..SynthConfig::new(events)
    };
    let store = Store::open(StoreOptions::new(dir.path()), &schema).expect("open store");

    // What generating the events costs (the writers do it on the same cores as the store).
    let t = Instant::now();
    let sample = 100_000.min(events);
    for b in (0..sample).step_by(BATCH) {
        std::hint::black_box(event_batch(&cfg, b, (b + BATCH as u64).min(sample)));
    }
    eprintln!(
        "generating events: {:.2} us an event (one thread)",
        t.elapsed().as_secs_f64() * 1e6 / sample as f64
    );

    // Writers: WRITERS threads take batch numbers in order and write them durably.
    let next = std::sync::atomic::AtomicU64::new(0);
    let latencies = std::sync::Mutex::new(Vec::new());
    let chunk_done = std::sync::Mutex::new(Vec::<(u64, Instant)>::new());
    let batches = events.div_ceil(BATCH as u64);
    let cpu_before = cpu_secs();
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            s.spawn(|| loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if b >= batches {
                    break;
                }
                let from = b * BATCH as u64;
                let to = (from + BATCH as u64).min(events);
                let batch = event_batch(&cfg, from, to);
                let t = Instant::now();
                store.write_blocking(batch).expect("durable batch write");
                latencies
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                chunk_done.lock().unwrap().push((to, Instant::now()));
                if to.is_multiple_of(100_000) {
                    let (resident, resident_bytes) = store.resident_blocks();
                    eprintln!(
                        "  {to} events written ({:.1} s; RSS {:.0} MB; {resident} resident blocks, {:.1} MB)",
                        started.elapsed().as_secs_f64(),
                        rss_mb(),
                        resident_bytes as f64 / 1e6
                    );
                }
            });
        }
    });
    let write_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "peak RSS after the writes: {:.0} MB; CPU {:.2} us an event (all threads, generation included)",
        peak_rss_mb(),
        (cpu_secs() - cpu_before) * 1e6 / events as f64
    );
    let events_per_sec = events as f64 / write_secs;
    let mut lat = latencies.into_inner().unwrap();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());

    // Throughput per 100k events, to show it stays flat.
    let mut done = chunk_done.into_inner().unwrap();
    done.sort_by_key(|(_, t)| *t);
    let mut per_chunk = Vec::new();
    let mut prev_t = started;
    let mut written = 0u64;
    let mut mark = 100_000u64;
    for (_, t) in &done {
        written += BATCH as u64;
        if written >= mark {
            per_chunk.push((100_000.0 / (*t - prev_t).as_secs_f64()).round());
            prev_t = *t;
            mark += 100_000;
        }
    }

    // The rate of the last million events (of the second half, in a run of fewer than 2M).
    let tail = 1_000_000.min(events / 2);
    let tail_from = done
        .iter()
        .filter(|(to, _)| *to <= events - tail)
        .map(|(_, t)| *t)
        .max()
        .unwrap_or(started);
    let tail_end = done.iter().map(|(_, t)| *t).max().unwrap_or(started);
    let events_per_sec_last_1m = tail as f64 / (tail_end - tail_from).as_secs_f64().max(1e-9);

    store.close().expect("close");
    drop(store);
    let disk = streamtally_dir_size(dir.path());
    let _ = std::process::Command::new("du")
        .args(["-ab", "--max-depth=2"])
        .arg(dir.path())
        .status();
    let t = Instant::now();
    let store = Store::open(StoreOptions::new(dir.path()), &schema).expect("reopen store");
    let reopen_ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!("peak RSS after the reopen: {:.0} MB", peak_rss_mb());

    // Read shapes at the end of the range (the newest day, the last 7 days).
    let last = SynthEvent::generate(&cfg, events - 1).timestamp;
    // An event's day is the UTC day of its timestamp: days are ranges of event time.
    let midnight = |t: chrono::DateTime<chrono::Utc>| {
        Value::Timestamp(
            t.date_naive()
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp_micros(),
        )
    };
    let day = midnight(last);
    let next_day = midnight(last + chrono::Duration::days(1));
    let week_ago = midnight(last - chrono::Duration::days(6));
    let org = Value::Uuid(cfg.org_id(3));
    let mut day_count = 0;
    let count_org_day_ms = median_ms(
        || {
            day_count = store
                .count(&Query::new("Event").eq("org_id", org.clone()).range(
                    "timestamp",
                    Bound::Included(day.clone()),
                    Bound::Excluded(next_day.clone()),
                ))
                .expect("count");
        },
        9,
    );
    let mut distinct = 0;
    let distinct_users_7d_ms = median_ms(
        || {
            distinct = store
                .count_distinct(
                    &Query::new("Event").eq("org_id", org.clone()).range(
                        "timestamp",
                        Bound::Included(week_ago.clone()),
                        Bound::Excluded(next_day.clone()),
                    ),
                    "user_id",
                )
                .expect("distinct");
        },
        9,
    );
    let mut top = Vec::new();
    let top_events_day_ms = median_ms(
        || {
            top = store
                .group_count(
                    &Query::new("Event").eq("org_id", org.clone()).range(
                        "timestamp",
                        Bound::Included(day.clone()),
                        Bound::Excluded(next_day.clone()),
                    ),
                    "event_name",
                    10,
                )
                .expect("top events");
        },
        9,
    );
    let recent_ms = median_ms(
        || {
            let rows = store
                .query(
                    &Query::new("Event")
                        .eq("org_id", org.clone())
                        .order_by("timestamp", streamtally::store::Order::Desc)
                        .limit(100),
                )
                .expect("recent");
            assert_eq!(rows.len(), 100.min(events as usize / 20));
        },
        9,
    );
    eprintln!(
        "org 3 on the day of {last}: {day_count} events; {distinct} distinct users over 7 days; top: {:?}",
        top.iter().take(3).collect::<Vec<_>>()
    );
    store.close().expect("close");
    drop(store);

    let typed = ormdb_typed(&cfg, TYPED_EVENTS.min(events));
    let chunks = per_chunk
        .iter()
        .map(|v| format!("{v}"))
        .collect::<Vec<_>>()
        .join(",");
    eprintln!("events/s per 100k: [{chunks}]");
    let _ = Duration::ZERO;
    println!(
        "{{\"bench\":\"store\",\"events\":{events},\"events_per_sec\":{:.0},\"events_per_sec_last_1m\":{:.0},\"batch_p50_ms\":{:.2},\"batch_p99_ms\":{:.2},\"disk_bytes_per_event\":{:.0},\"peak_rss_mb\":{:.1},\"reopen_ms\":{:.0},\"count_org_day_ms\":{:.2},\"distinct_users_7d_ms\":{:.2},\"top_events_day_ms\":{:.2},\"recent_events_ms\":{:.2},\"events_per_sec_per_100k\":[{chunks}],\"writers\":{WRITERS},\"ormdb_typed_events_per_sec\":{:.0},\"ids\":\"{}\"}}",
        events_per_sec,
        events_per_sec_last_1m,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        disk as f64 / events as f64,
        peak_rss_mb(),
        reopen_ms,
        count_org_day_ms,
        distinct_users_7d_ms,
        top_events_day_ms,
        recent_ms,
        typed,
        cfg.ids.name()
    );
}

fn streamtally_dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => streamtally_dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
