//! `cargo bench --bench queries -- --events N --days D` (the full size: `--events 10000000
//! --days 30`): seed-shaped events over D days and 20 orgs written through the store layer
//! (the ingest write path without Kafka: durable batches of 1000 from 4 writer threads, each
//! event generated when its batch is built, so memory does not grow with N), the stats
//! workers catch up (timed), then each dashboard query runs 200 times. The last stdout line
//! is JSON. `--per-partition N`: the events spread over N partitions and the rollups kept per
//! partition (as a scaled-out group keeps them, `scale_out.enabled`), every query merging
//! the N partitions' rows (the most one instance reads: the whole group's partitions);
//! the JSON then says `"partitions":N` (0: one row for the whole store).

#[path = "support/mod.rs"]
mod common;
use common::{arg, event_batch_over, peak_rss_mb, percentile};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use streamtally::schema::Schema;
use streamtally::stats::bucket::Source;
use streamtally::stats::query::{Granularity, Sources, StatsReader};
use streamtally::stats::realtime::{RealtimeOptions, RealtimeWorker, SystemClock};
use streamtally::stats::rollup::{RollupOptions, RollupWorker};
use streamtally::stats::trends::{Breakdown, Condition, Measure, TrendSpec};
use streamtally::stats::zone::{boundaries, Step, Zone};
use streamtally::store::{Store, StoreOptions};
use streamtally::synth::SynthConfig;

const BATCH: u64 = 1000;
const WRITERS: usize = 4;
const RUNS: usize = 200;
const DAY_US: i64 = 86_400_000_000;

fn main() {
    let events = arg("--events", 1_000_000);
    let days = arg("--days", 30) as u32;
    let partitions = arg("--per-partition", 0);
    let per_partition = partitions > 0;
    let schema = Schema::parse(include_str!("../schema.ormdb")).expect("schema.ormdb parses");
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = SynthConfig {
        span_days: days,
        ..SynthConfig::new(events)
    };
    let store = Store::open(StoreOptions::new(dir.path()), &schema).expect("open store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // Rows per partition from the start, as a scaled-out group keeps them.
    rt.block_on(streamtally::stats::rebuild::switch_layout(
        &store,
        per_partition,
        10_000,
        &indicatif::ProgressBar::hidden(),
    ))
    .expect("rollup keying");

    // Ingest: WRITERS threads write 1000-event batches durably.
    let started = Instant::now();
    let next = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            s.spawn(|| loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let from = b * BATCH;
                if from >= events {
                    break;
                }
                let batch = event_batch_over(
                    &cfg,
                    from,
                    (from + BATCH).min(events),
                    if per_partition { partitions } else { 6 },
                );
                store.write_blocking(batch).expect("durable batch write");
                if (from + BATCH).is_multiple_of(100_000) {
                    eprintln!(
                        "  {} events written ({:.1} s)",
                        from + BATCH,
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    eprintln!(
        "ingested {events} events in {:.1} s (peak RSS so far {:.0} MB)",
        started.elapsed().as_secs_f64(),
        peak_rss_mb()
    );

    // Stats catch-up: the rollup worker applies the whole feed from its cursor.
    let opts = RollupOptions {
        per_partition,
        ..RollupOptions::default()
    };
    let mut rollups = RollupWorker::new(store.clone(), opts).expect("rollup worker");
    let started = Instant::now();
    let applied = rt.block_on(rollups.catch_up()).expect("catch up");
    let catchup = started.elapsed().as_secs_f64();
    let catchup_eps = events as f64 / catchup;
    eprintln!(
        "rollups caught up: {applied} changes in {catchup:.1} s ({catchup_eps:.0} events/s; \
         peak RSS so far {:.0} MB)",
        peak_rss_mb()
    );
    let mut realtime = RealtimeWorker::new(
        store.clone(),
        RealtimeOptions::default(),
        Arc::new(SystemClock),
    )
    .expect("realtime worker");
    rt.block_on(realtime.replay()).expect("realtime replay");

    let mut reader = StatsReader::new(store.clone());
    if per_partition {
        let all: Vec<Source> = (0..partitions as i32)
            .map(|p| Source::new("events", p))
            .collect();
        reader = reader.with_sources(Arc::new(move || Sources::Partitions(all.clone())));
    }
    let now = chrono::Utc::now().timestamp_micros();
    let today = now.div_euclid(DAY_US) * DAY_US;
    let orgs: Vec<[u8; 16]> = (0..cfg.orgs).map(|o| cfg.org_id(o)).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut p50 = BTreeMap::new();
    let mut p99 = BTreeMap::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut(usize) -> u64| {
        let mut t: Vec<f64> = Vec::with_capacity(RUNS);
        let mut sink = 0u64;
        for i in 0..RUNS {
            let s = Instant::now();
            sink = sink.wrapping_add(f(i));
            t.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        eprintln!(
            "  {name}: p50 {:.3} ms, p99 {:.3} ms (checksum {sink})",
            percentile(&t, 0.5),
            percentile(&t, 0.99)
        );
        p50.insert(name, (percentile(&t, 0.5) * 1000.0).round() / 1000.0);
        p99.insert(name, (percentile(&t, 0.99) * 1000.0).round() / 1000.0);
    };
    let org = |i: usize| orgs[i % orgs.len()];
    time("counters", &mut |i| {
        let c = reader.counters(org(i), &[300], now).expect("counters");
        (c.windows[0].events + c.events_today) as u64
    });
    time("today_hourly", &mut |i| {
        let s = reader
            .timeseries(org(i), today, now, Granularity::Hour, None)
            .expect("today");
        s.iter().map(|p| p.events as u64).sum()
    });
    time("days_7", &mut |i| {
        let s = reader
            .timeseries(org(i), now - 7 * DAY_US, now, Granularity::Day, None)
            .expect("7d");
        s.iter().map(|p| p.events as u64).sum()
    });
    time("days_30", &mut |i| {
        let s = reader
            .timeseries(org(i), now - 30 * DAY_US, now, Granularity::Day, None)
            .expect("30d");
        s.iter().map(|p| p.events as u64).sum()
    });
    time("top_events_day", &mut |i| {
        let day = chrono::DateTime::from_timestamp_micros(today - DAY_US)
            .expect("date")
            .date_naive();
        let t = reader.top_events(org(i), day, 10).expect("top");
        t.iter().map(|e| e.count as u64).sum()
    });
    time("unique_users_7d", &mut |i| {
        reader
            .unique(org(i), now - 7 * DAY_US, now)
            .expect("unique")
            .users
    });
    let span = days as i64 * DAY_US;
    time("custom_range_raw", &mut |i| {
        // An arbitrary range (not bucket-aligned) of 1 to 3 days inside the data.
        let len = DAY_US + (rand() % (2 * DAY_US as u64)) as i64;
        let from = now - span + (rand() % (span - len).max(1) as u64) as i64;
        reader
            .count_raw(org(i), from, from + len)
            .expect("raw range")
    });
    // Trends over the last 30 days, daily: from the event blocks (one property filter, one
    // property breakdown) and from the rollups (a whole-hour zone). The first question of
    // each org decodes its blocks' columns (cold); the decoded columns are then kept
    // (stats.trends_cache_mb, default 512 MB).
    let zone = Zone::parse("America/New_York").expect("zone");
    let month = boundaries(&Zone::UTC, Step::Day, (now - 30 * DAY_US, now), 10_000).expect("days");
    let month_ny = boundaries(&zone, Step::Day, (now - 30 * DAY_US, now), 10_000).expect("days");
    let spec = |org: [u8; 16], b: &Vec<i64>, z: Zone| TrendSpec {
        org,
        events: Vec::new(),
        event_type: None,
        conditions: Vec::new(),
        breakdown: None,
        breakdown_limit: 10,
        measure: Measure::Events,
        step: Step::Day,
        zone: z,
        boundaries: b.clone(),
    };
    let mut first_touch: Vec<f64> = Vec::new();
    time("trends_breakdown_30d", &mut |i| {
        let mut s = spec(org(i), &month, Zone::UTC);
        s.conditions = vec![Condition::parse("properties.plan = pro").expect("filter")];
        s.breakdown = Some(Breakdown::parse("properties.browser").expect("breakdown"));
        let t0 = Instant::now();
        let t = reader.trend(&s, 10_000).expect("trend");
        if i < orgs.len() {
            first_touch.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        t.series.iter().map(|x| x.total as u64).sum()
    });
    time("trends_rollup_30d", &mut |i| {
        let t = reader
            .trend(&spec(org(i), &month_ny, zone), 10_000)
            .expect("trend");
        assert_eq!(t.source, "rollups");
        t.series[0].total as u64
    });
    time("trends_rollup_30d_unique", &mut |i| {
        let mut s = spec(org(i), &month_ny, zone);
        s.measure = Measure::UniqueUsers;
        reader.trend(&s, 10_000).expect("trend").series[0].total as u64
    });
    first_touch.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let cold = (percentile(&first_touch, 0.5) * 1000.0).round() / 1000.0;
    eprintln!("  trends_breakdown_30d, first question of each org: p50 {cold:.3} ms");
    p50.insert("trends_breakdown_30d_cold", cold);
    p99.insert(
        "trends_breakdown_30d_cold",
        (percentile(&first_touch, 0.99) * 1000.0).round() / 1000.0,
    );
    let json = |m: &BTreeMap<&str, f64>| {
        let order = [
            "counters",
            "today_hourly",
            "days_7",
            "days_30",
            "top_events_day",
            "unique_users_7d",
            "custom_range_raw",
            "trends_breakdown_30d",
            "trends_breakdown_30d_cold",
            "trends_rollup_30d",
            "trends_rollup_30d_unique",
        ];
        let parts: Vec<String> = order.iter().map(|k| format!("\"{k}\":{}", m[k])).collect();
        format!("{{{}}}", parts.join(","))
    };
    println!(
        "{{\"bench\":\"queries\",\"events\":{events},\"partitions\":{partitions},\"catchup_events_per_sec\":{:.0},\"p50_ms\":{},\"p99_ms\":{}}}",
        catchup_eps,
        json(&p50),
        json(&p99)
    );
}
