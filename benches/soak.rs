//! `cargo bench --bench soak -- --days 60 --events-per-day 200000 --retention-days 7
//! [--ids v4|v7]`: a store that lives for months, in compressed event time. Day after day,
//! that day's events (timestamps within the day) are written as fast as the store takes them
//! (durable batches of 1,000 from 4 writers, as ingest writes them), then retention is
//! applied as of the next day's start, and the store's disk is measured. By default a
//! change-feed reader keeps up with the head, as the stats workers do (the feed is written,
//! then truncated at checkpoints; the rollups they would write are not part of this);
//! `--no-stats` runs the store as `stats.enabled = false` leaves it, with no feed reader.
//! After each simulated day, untimed (its time is printed as `maintenance_ms_per_day`), the
//! store seals its resident blocks, merges the blocks due, forgets ids past the dedup
//! window, checkpoints and removes retired block files, as a day of wall-clock time would
//! many times over (the merge thread is off: a day's rate is the ingest alone, not whichever
//! merge round happened to land in its half second). The dedup window
//! (`store.dedup_window`, 24 h of ingest time) is compressed like the days: `--dedup-window-ms`
//! of wall-clock time (default 1,000, about what a simulated day takes), so the id index
//! holds about a day of ids as a real store's does, not every id of the run.
//! The last stdout line is JSON.

#[path = "support/mod.rs"]
mod common;
use common::{arg, event_batch, ids_arg, peak_rss_mb, rss_mb, switch};

use std::time::Instant;
use streamtally::schema::Schema;
use streamtally::store::{Store, StoreOptions};
use streamtally::synth::SynthConfig;

const BATCH: u64 = 1000;
const WRITERS: usize = 4;
const DAY_US: i64 = 86_400_000_000;

fn main() {
    let days = arg("--days", 60);
    let per_day = arg("--events-per-day", 200_000);
    let retention_days = arg("--retention-days", 7) as u32;
    let dedup_window_ms = arg("--dedup-window-ms", 1000);
    assert!(
        days >= 11,
        "--days must be at least 11 (the growth is over the last 10)"
    );
    assert!(
        per_day >= BATCH,
        "--events-per-day must be at least {BATCH}"
    );
    let per_day = per_day / BATCH * BATCH;
    let schema = Schema::parse(include_str!("../schema.ormdb")).expect("schema.ormdb parses");
    let dir = tempfile::tempdir().expect("temp dir");
    // Day d's events have times within day d: the span ends at a UTC midnight.
    let today = chrono::Utc::now().timestamp_micros().div_euclid(DAY_US) * DAY_US;
    let cfg = SynthConfig {
        ids: ids_arg(),
        span_days: days as u32,
        end: chrono::DateTime::from_timestamp_micros(today).expect("today"),
        ..SynthConfig::new(days * per_day)
    };
    let first_day_us = today - days as i64 * DAY_US;
    let opts = StoreOptions {
        dedup_window: std::time::Duration::from_millis(dedup_window_ms),
        merge_interval: None,
        ..StoreOptions::new(dir.path())
    };
    let store = Store::open(opts, &schema).expect("open store");
    let stats = switch("stats", true);
    let reader = "soak.reader";
    if stats {
        let mut b = streamtally::store::WriteBatch::new();
        b.set_cursor(reader, store.feed_head());
        store.write_blocking(b).expect("register the feed reader");
    } else {
        // A connector with stats disabled: nothing reads the change feed.
        store
            .release_feed_readers(&[])
            .expect("release feed readers");
    }

    let mut disk_per_day = Vec::new();
    let mut rate_per_day = Vec::new();
    let mut maintenance_per_day = Vec::new();
    let (mut dropped_blocks, mut dropped_rows) = (0, 0);
    let started = Instant::now();
    for d in 0..days {
        let next = std::sync::atomic::AtomicU64::new(d * per_day);
        let end = (d + 1) * per_day;
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..WRITERS {
                s.spawn(|| loop {
                    let from = next.fetch_add(BATCH, std::sync::atomic::Ordering::SeqCst);
                    if from >= end {
                        break;
                    }
                    let batch = event_batch(&cfg, from, (from + BATCH).min(end));
                    store.write_blocking(batch).expect("durable batch write");
                });
            }
        });
        let rate = per_day as f64 / t.elapsed().as_secs_f64();
        rate_per_day.push(rate.round());
        let maintenance = Instant::now();
        // The day is over: its successor's start is "now" for retention.
        let now = first_day_us + (d as i64 + 1) * DAY_US;
        let x = store
            .apply_retention(now, retention_days)
            .expect("retention");
        dropped_blocks += x.blocks;
        dropped_rows += x.rows;
        // What a day of wall-clock time does many times over: the day's resident blocks
        // sealed into files (each is, 10 s after its write), a checkpoint (WAL segments and
        // change-feed entries dropped) and the removal of retired block files. Nothing
        // reads meanwhile, so they need no grace.
        streamtally::store::blocks::merge::seal_all(&store).expect("seal");
        while streamtally::store::blocks::merge::merge_due(&store).expect("merge") > 0 {}
        store.forget_expired_ids().expect("forget old ids");
        if stats {
            // The reader has read everything.
            let mut b = streamtally::store::WriteBatch::new();
            b.set_cursor(reader, store.feed_head());
            store.write_blocking(b).expect("move the feed reader");
        }
        store.checkpoint().expect("checkpoint");
        store
            .sweep_retired_files(std::time::Duration::ZERO)
            .expect("sweep");
        maintenance_per_day.push(maintenance.elapsed().as_millis() as u64);
        let disk = store.disk_usage().expect("disk usage");
        disk_per_day.push(disk.total);
        eprintln!(
            "day {:>3}: {:>7.0} events/s, disk {:>6.1} MB (blocks {:.1}, WAL {:.1}, database {:.1}, feed {:.1}), \
             RSS {:.0} MB, dropped {} blocks ({} rows), {:.0} s",
            d + 1,
            rate,
            disk.total as f64 / 1e6,
            disk.blocks as f64 / 1e6,
            disk.wal as f64 / 1e6,
            disk.database as f64 / 1e6,
            disk.feed as f64 / 1e6,
            rss_mb(),
            x.blocks,
            x.rows,
            started.elapsed().as_secs_f64()
        );
    }
    let (_, kept_rows, kept_bytes) = store.block_totals("Event").expect("totals");
    let n = disk_per_day.len();
    let growth = (disk_per_day[n - 1] as f64 - disk_per_day[n - 11] as f64)
        / disk_per_day[n - 11] as f64
        * 100.0;
    let peak = peak_rss_mb();
    store.close().expect("close");
    println!(
        "{}",
        serde_json::json!({
            "bench": "soak",
            "days": days,
            "events_per_day": per_day,
            "retention_days": retention_days,
            "ids": cfg.ids.name(),
            "feed_reader": stats,
            "dedup_window_ms": dedup_window_ms,
            "events": days * per_day,
            "events_kept": kept_rows,
            "block_bytes_kept": kept_bytes,
            "blocks_dropped": dropped_blocks,
            "events_dropped": dropped_rows,
            "disk_bytes_per_day": disk_per_day,
            "disk_growth_last_10_days_pct": (growth * 100.0).round() / 100.0,
            "peak_rss_mb": (peak * 10.0).round() / 10.0,
            "events_per_sec_per_day": rate_per_day,
            "maintenance_ms_per_day": maintenance_per_day,
            "first_day_events_per_sec": rate_per_day[0],
            "last_day_events_per_sec": rate_per_day[n - 1],
        })
    );
}
