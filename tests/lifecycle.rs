//! A store that lives for months (issue 19): retention of raw events apart from the
//! rollups, deleting a person's events, online backup.
//!
//! Broker: Tansu, out of process (`.ci/install-tansu.sh`), started by each test; the
//! connector runs in this process with its store opened from `[store]` as `streamtally run`
//! opens it, and the gateway on a real socket.

mod common;

use common::broker::{produce, random_name, synth_records, TestBroker};
use common::Connector;
use std::collections::BTreeMap;
use std::time::Duration;
use streamtally::stats::bucket::ALL_TYPES;
use streamtally::stats::rebuild::{self, Scope};
use streamtally::store::blocks::retention::cutoff;
use streamtally::store::{Query, Store, Value};
use streamtally::synth::{SynthConfig, SynthEvent};

const DAY_US: i64 = 86_400_000_000;

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Stored DailyStats event counts of all event types, per (org, date).
fn daily_counts(store: &Store) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for row in store.scan_all("DailyStats").unwrap() {
        if common::str_of(&row, "event_type") != ALL_TYPES {
            continue;
        }
        let org = match row.get("org_id") {
            Some(Value::Uuid(u)) => uuid::Uuid::from_bytes(*u).to_string(),
            other => panic!("org_id {other:?}"),
        };
        let n = match row.get("event_count") {
            Some(Value::Int64(n)) => *n,
            other => panic!("event_count {other:?}"),
        };
        out.insert((org, common::str_of(&row, "date")), n);
    }
    out
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Events over 60 days, raw retention 7 days: the blocks of older days go (their files
/// too), the rollups of every day stay as ingested, an export of an older range answers 410
/// naming the oldest kept time, one of the kept range every kept event, and `stats verify`
/// (rollups against raw events) is clean over the days still kept.
#[test]
fn retention_drops_old_event_blocks_keeps_rollups_and_refuses_old_raw_reads() {
    let Some(broker) = TestBroker::tansu() else {
        return;
    };
    let topic = random_name("lifecycle-retention");
    broker.create_topic(&topic, 3);
    let total = 6_000;
    let synth = SynthConfig {
        orgs: 3,
        users: 400,
        span_days: 60,
        ..SynthConfig::new(total)
    };
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&synth, 0..total, 3),
    );
    let events: Vec<SynthEvent> = (0..total)
        .map(|i| SynthEvent::generate(&synth, i))
        .collect();

    let started_us = now_us();
    let connector = Connector::start_as_configured(
        &broker.bootstrap,
        &[&topic],
        &random_name("lifecycle"),
        |cfg| {
            cfg.store.retention.events_days = 7;
            cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
            cfg.auth.enabled = false;
            cfg.batching.max_batch_delay_ms = 20;
        },
    );
    let services = connector.services();
    let addr = services.gateway_addr.to_string();
    let store = connector.store.clone();
    connector.wait_for("every event stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) == total as i64
    });
    wait("the rollups to catch up", Duration::from_secs(60), || {
        store.cursor(streamtally::stats::ROLLUP_CURSOR).unwrap() == Some(store.feed_head())
    });

    // The cutoff of the day the test ran in (it may have crossed midnight UTC).
    let cutoffs = [cutoff(started_us, 7), cutoff(now_us(), 7)];
    let kept = |before: i64| {
        events
            .iter()
            .filter(|e| e.timestamp.timestamp_micros() >= before)
            .count() as u64
    };
    wait(
        "retention to drop the old blocks",
        Duration::from_secs(60),
        || {
            store
                .retained_from("Event")
                .is_some_and(|t| cutoffs.contains(&t))
                && store.count(&Query::new("Event")).unwrap()
                    == kept(store.retained_from("Event").unwrap())
        },
    );
    let before = store.retained_from("Event").unwrap();
    let expected_kept = kept(before);
    assert!(
        expected_kept > 0 && expected_kept < total / 4,
        "7 of 60 days kept: {expected_kept}"
    );
    for day in store.block_days("Event").unwrap() {
        assert!(
            day.min_time.is_some_and(|t| t >= before),
            "a block of day {:?} is older than the cutoff {}",
            day.day,
            rfc3339(before)
        );
    }

    // Rollups keep every day, dropped or not, exactly as ingested.
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in &events {
        let org = uuid::Uuid::from_bytes(e.org_id).to_string();
        let date = e.timestamp.date_naive().format("%Y-%m-%d").to_string();
        *want.entry((org, date)).or_default() += 1;
    }
    assert_eq!(daily_counts(&store), want);

    // Stats verify over what retention kept: clean (the dropped days are not compared).
    let bar = indicatif::ProgressBar::hidden();
    let fresh = rebuild::recompute(&store, &Scope::default(), 10_000, &bar).unwrap();
    let stored = rebuild::stored(&store, &Scope::default()).unwrap();
    assert!(!fresh.is_empty());
    assert_eq!(rebuild::diff(&stored, &fresh), Vec::<String>::new());

    // Raw reads over the dropped range: 410 with the oldest kept time; over the kept
    // range: every kept event of the org.
    let org = uuid::Uuid::from_bytes(synth.org_id(0)).to_string();
    let old_from = rfc3339(before - 10 * DAY_US);
    let to = rfc3339(now_us() + 60_000_000);
    let path = format!("/api/v1/orgs/{org}/export?from={old_from}&to={to}");
    let (status, body) = common::http::status_body(&addr, &path, None).expect("gateway answers");
    assert_eq!(status, 410, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "beyond_retention", "{body}");
    assert_eq!(json["error"]["retained_from"], rfc3339(before), "{body}");
    assert_eq!(json["error"]["parameter"], "from", "{body}");
    let path = format!("/api/v1/orgs/{org}/export?from={}&to={to}", rfc3339(before));
    let (status, body) = common::http::status_body(&addr, &path, None).expect("gateway answers");
    assert_eq!(status, 200, "{body}");
    let org_kept = events
        .iter()
        .filter(|e| e.org == 0 && e.timestamp.timestamp_micros() >= before)
        .count();
    assert_eq!(body.lines().count(), org_kept);

    // Disk given back: once the retired files' grace is over, the block files on disk are
    // exactly the catalog's.
    let blocks_dir = connector.dir.path().join("blocks");
    let on_disk = || -> (u64, u64) {
        let mut n = (0, 0);
        for f in std::fs::read_dir(&blocks_dir).unwrap() {
            let f = f.unwrap();
            if f.file_name().to_string_lossy().ends_with(".blk") {
                n.0 += 1;
                n.1 += f.metadata().unwrap().len();
            }
        }
        n
    };
    wait(
        "the dropped blocks' files to go",
        Duration::from_secs(90),
        || {
            let (blocks, _, bytes) = store.block_totals("Event").unwrap();
            on_disk() == (blocks, bytes)
        },
    );
    let (_, rows, bytes) = store.block_totals("Event").unwrap();
    assert_eq!(rows, expected_kept);
    assert!(
        bytes < expected_kept * 1_000,
        "{bytes} bytes of blocks for {expected_kept} events"
    );

    // The cutoff survives a restart.
    drop(store);
    connector.shutdown.cancel();
    services.join().unwrap();
    let mut connector = connector;
    connector.restart();
    assert_eq!(connector.store.retained_from("Event"), Some(before));
}
