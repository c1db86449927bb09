//! "A fatal store error is retried forever" (issue Reliability, item 5): a failed WAL fsync
//! (injected by the test-only fault hook) is fatal by type, `StoreError::is_retryable()`:
//! the stats worker that meets it stops instead of retrying, the connector stops with it,
//! `/readyz` says the store refuses writes, and `streamtally run` exits non-zero naming the
//! error. Retryable store errors are still retried: tests/ingest_store_failure.rs.
//!
//! Needs `--features fault-injection`; without it the module is empty.

#![cfg(feature = "fault-injection")]

use crate::common::broker::{produce, random_name, synth_records, TestBroker};
use crate::common::{self, http, run};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamtally::store::WriteBatch;
use tower::ServiceExt;

/// In process: the rollup worker's write fails its fsync; the worker stops at once (it used
/// to retry forever), which stops everything, and readiness names the store.
#[test]
fn a_failed_fsync_stops_the_stats_worker_and_fails_readiness() {
    crate::common::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::common::open(dir.path());
    let mut cfg = streamtally::config::Config::default();
    cfg.store.path = dir.path().to_path_buf();
    cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
    cfg.stats.rollup_flush_interval_ms = 50;
    let metrics = Arc::new(streamtally::metrics::Metrics::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Per store, not through the environment: other tests share this process.
    store.inject_wal_fsync_error_on("HourlyStats");
    let services = streamtally::app::Services::start(
        cfg.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .unwrap();
    let mut events = WriteBatch::new();
    for i in 0..50 {
        events.insert("Event", crate::common::event(i));
    }
    store.write_blocking(events).expect("the events are stored");

    let started = Instant::now();
    while !shutdown.is_cancelled() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "20 s after the fsync failed the stats workers still run (store failure: {:?})",
            store.fatal_failure()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let why = store.fatal_failure().expect("the store failed fatally");
    assert!(why.contains("injected"), "{why}");

    // Readiness, asked of the same router the gateway serves (the socket closed with the
    // shutdown): the store check fails and says why.
    let app = streamtally::gateway::router(streamtally::gateway::GatewayState::new(
        store.clone(),
        streamtally::stats::query::StatsReader::new(store.clone()),
        cfg,
        metrics,
    ));
    let (status, body) = common::rt().block_on(async {
        let req = axum::http::Request::get("/readyz")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    });
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["failing"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("store")),
        "{body}"
    );
    let store_check = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "store")
        .unwrap();
    assert!(
        store_check["detail"].as_str().unwrap().contains("fsync"),
        "{store_check}"
    );

    let error = format!("{:#}", services.join().expect_err("the worker's error"));
    assert!(error.contains("stats rollups stopped"), "{error}");
    assert!(error.contains("fsync of the write-ahead log"), "{error}");
    drop(store);
}

/// `streamtally run` with `STREAMTALLY_FAULT=wal_fsync_error_on:HourlyStats`: the first
/// rollup write fails its fsync; the process stops by itself, non-zero, and its log names
/// the error and the worker that stopped.
#[test]
fn streamtally_run_exits_non_zero_naming_a_fatal_store_error() {
    let broker = TestBroker::mock(1);
    let topic = random_name("fatal");
    broker.create_topic(&topic, 1);
    let synth = common::synth(200);
    produce(&broker.bootstrap, &topic, &synth_records(&synth, 0..200, 1));

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = run::spawn_run(
        &broker.bootstrap,
        &topic,
        &random_name("fatal"),
        &dir.path().join("data"),
        &log,
        &[
            ("STREAMTALLY_FAULT", "wal_fsync_error_on:HourlyStats"),
            ("STREAMTALLY__GATEWAY__LISTEN", addr.as_str()),
            ("STREAMTALLY__STATS__ROLLUP_FLUSH_INTERVAL_MS", "100"),
        ],
    );
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Watch /readyz while it runs: a 503 naming the store may be seen between the failure
    // and the exit (the gateway stops with the rest, so it is not waited for; the
    // in-process test above checks it deterministically).
    let started = Instant::now();
    let mut readiness_seen = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            run::sigkill(&mut child);
            panic!(
                "still running 60 s after the fsync fault (retried forever?); readiness seen \
                 {readiness_seen:?}; log:\n{}",
                show_log()
            );
        }
        if let Some(r) = http::get(&addr, "/readyz", None) {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            let store_failing = body["failing"]
                .as_array()
                .is_some_and(|f| f.contains(&serde_json::json!("store")));
            // Changes only: (status, store check failing) as they follow each other.
            if readiness_seen.last() != Some(&(r.status, store_failing)) {
                readiness_seen.push((r.status, store_failing));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log_text = show_log();
    assert!(!status.success(), "exit {status:?}; log:\n{log_text}");
    assert!(
        log_text.contains("injected: input/output error (EIO) from fsync"),
        "{log_text}"
    );
    assert!(
        log_text.contains("worker stopped on an error that is not retried"),
        "{log_text}"
    );
    assert!(
        log_text
            .lines()
            .any(|l| l.starts_with("streamtally: ") && l.contains("fsync of the write-ahead log")),
        "the exit message names the error:\n{log_text}"
    );
    // Ready only before the failure; after it, 503 naming the store, or no answer.
    assert!(
        readiness_seen
            .iter()
            .all(|(status, store_failing)| !(*status == 200 && *store_failing)),
        "{readiness_seen:?}"
    );
    assert!(http::get(&addr, "/readyz", None).is_none());
    eprintln!("fatal_store: readiness while running: {readiness_seen:?}");
}
