//! Shared helpers for integration tests: a temp-dir store over the real schema.ormdb, org
//! ids, synthetic streams, runtimes, and the in-process [`Connector`]; [`run`] runs the
//! binary, [`http`] talks to the gateway, [`broker`] provides the Kafka side.
#![allow(dead_code)]

pub mod broker;
pub mod http;
pub mod run;

use streamtally::schema::Schema;
use streamtally::store::{Row, Store, StoreOptions, Value};
use streamtally::synth::{SynthConfig, SynthEvent};

pub fn schema() -> Schema {
    Schema::parse(include_str!("../../schema.ormdb")).expect("schema.ormdb parses")
}

/// Opens the store in `dir`. sled lets go of its file lock from background threads a little
/// after the last handle is dropped, so a reopen right after a close (or after a killed
/// child was reaped) retries a lock conflict for up to 10 s.
pub fn open(dir: &std::path::Path) -> Store {
    open_retrying(|| Store::open(StoreOptions::new(dir), &schema()))
}

/// `open_store()`, retried on sled's file-lock conflict for up to 10 s (see [`open`]).
pub fn open_retrying(
    mut open_store: impl FnMut() -> Result<Store, streamtally::store::StoreError>,
) -> Store {
    let started = std::time::Instant::now();
    loop {
        match open_store() {
            Ok(store) => return store,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < std::time::Duration::from_secs(10) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("open store: {e:?}"),
        }
    }
}

/// schema.ormdb with Event kept as ORMDB rows (one per event, with a `@postings` index), as
/// releases before blocks kept it.
pub fn row_schema() -> Schema {
    let text = include_str!("../../schema.ormdb")
        .replace("\n  @blocks\n", "\n  @postings([org_id, timestamp])\n");
    Schema::parse(&text).expect("the row schema parses")
}

/// Event `i` of a small synthetic stream (3 orgs, 50 users, spread over 3 days).
pub fn event(i: u64) -> Row {
    let mut cfg = SynthConfig::new(1000);
    cfg.orgs = 3;
    cfg.users = 50;
    cfg.span_days = 3;
    cfg.end = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .expect("date")
        .to_utc();
    SynthEvent::generate(&cfg, i).to_row()
}

pub fn org(n: usize) -> Value {
    let mut cfg = SynthConfig::new(1000);
    cfg.orgs = 3;
    Value::Uuid(cfg.org_id(n))
}

/// Org `n` of tests that make up their own events (a fixed, version-4-shaped UUID; not
/// one of the synthetic stream's orgs, for which see [`org`]).
pub fn test_org(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 + n)
}

/// A synthetic stream of `n` events spread over one day.
pub fn synth(n: u64) -> SynthConfig {
    SynthConfig {
        span_days: 1,
        ..SynthConfig::new(n)
    }
}

/// A single-threaded runtime with I/O and timers, for `block_on` in a synchronous test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A runtime with two worker threads, for tests whose tasks must run while the test thread
/// blocks.
pub fn rt_multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn str_of(row: &Row, field: &str) -> String {
    match row.get(field) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("{field} is {other:?}"),
    }
}

/// A connector (`Ingest`) running in this process on its own thread, with its own store.
pub struct Connector {
    pub store: Store,
    pub metrics: std::sync::Arc<streamtally::metrics::Metrics>,
    pub shutdown: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<(), streamtally::ingest::IngestError>>>,
    cfg: streamtally::config::Config,
    pub dir: tempfile::TempDir,
}

/// Test defaults: the broker, the topics, a group, a short session timeout.
pub fn connector_config(
    bootstrap: &str,
    topics: &[&str],
    group: &str,
    store_dir: &std::path::Path,
) -> streamtally::config::Config {
    let mut cfg = streamtally::config::Config::default();
    cfg.kafka.brokers = bootstrap.to_string();
    cfg.kafka.topics = topics.iter().map(|t| t.to_string()).collect();
    cfg.kafka.group_id = group.to_string();
    cfg.kafka.session_timeout_ms = 6000;
    cfg.store.path = store_dir.to_path_buf();
    cfg
}

impl Connector {
    pub fn start(
        bootstrap: &str,
        topics: &[&str],
        group: &str,
        tweak: impl FnOnce(&mut streamtally::config::Config),
    ) -> Connector {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_opening(dir, bootstrap, topics, group, tweak, |_, dir| open(dir))
    }

    /// [`Connector::start`] with the store opened as `streamtally run` opens it: with the
    /// options of `[store]` (retention included), not the test defaults.
    #[allow(dead_code)]
    pub fn start_as_configured(
        bootstrap: &str,
        topics: &[&str],
        group: &str,
        tweak: impl FnOnce(&mut streamtally::config::Config),
    ) -> Connector {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_as_configured_in(dir, bootstrap, topics, group, tweak)
    }

    /// [`Connector::start_as_configured`] on the store in `dir` (e.g. a restored backup).
    #[allow(dead_code)]
    pub fn start_as_configured_in(
        dir: tempfile::TempDir,
        bootstrap: &str,
        topics: &[&str],
        group: &str,
        tweak: impl FnOnce(&mut streamtally::config::Config),
    ) -> Connector {
        Self::start_opening(dir, bootstrap, topics, group, tweak, |cfg, _| {
            open_retrying(|| Store::open(StoreOptions::from_config(&cfg.store), &schema()))
        })
    }

    fn start_opening(
        dir: tempfile::TempDir,
        bootstrap: &str,
        topics: &[&str],
        group: &str,
        tweak: impl FnOnce(&mut streamtally::config::Config),
        open: impl FnOnce(&streamtally::config::Config, &std::path::Path) -> Store,
    ) -> Connector {
        init_logs();
        let mut cfg = connector_config(bootstrap, topics, group, dir.path());
        tweak(&mut cfg);
        let store = open(&cfg, dir.path());
        let metrics = std::sync::Arc::new(streamtally::metrics::Metrics::new());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let ingest = streamtally::ingest::Ingest::new(
            cfg.clone(),
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        let thread = std::thread::spawn(move || ingest.run());
        Connector {
            store,
            metrics,
            shutdown,
            thread: Some(thread),
            cfg,
            dir,
        }
    }

    /// Stops gracefully, closes the store, and starts again on the same store and
    /// configuration with fresh metrics.
    pub fn restart(&mut self) {
        self.restart_with(|_| {});
    }

    /// [`Connector::restart`] with the configuration changed by `tweak` first.
    pub fn restart_with(&mut self, tweak: impl FnOnce(&mut streamtally::config::Config)) {
        tweak(&mut self.cfg);
        self.stop().expect("graceful stop before the restart");
        // Every handle must be gone before the store can be opened again: park a scratch
        // store in the field meanwhile.
        let scratch = tempfile::tempdir().expect("temp dir");
        let old = std::mem::replace(&mut self.store, open(scratch.path()));
        old.close().expect("close the store");
        drop(old);
        self.store = open(self.dir.path());
        self.metrics = std::sync::Arc::new(streamtally::metrics::Metrics::new());
        self.shutdown = tokio_util::sync::CancellationToken::new();
        let ingest = streamtally::ingest::Ingest::new(
            self.cfg.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        );
        self.thread = Some(std::thread::spawn(move || ingest.run()));
    }

    /// The stored next offset of each of `topic`'s partitions `0..partitions`, -1 where
    /// none is stored (as [`broker::committed_offsets`] reports a partition without one).
    pub fn positions(&self, topic: &str, partitions: i32) -> Vec<i64> {
        (0..partitions)
            .map(|p| self.store.offset(topic, p).unwrap().unwrap_or(-1))
            .collect()
    }

    /// Sum of the stored next offsets of `topic`'s partitions `0..partitions`.
    pub fn stored(&self, topic: &str, partitions: i32) -> i64 {
        (0..partitions)
            .map(|p| self.store.offset(topic, p).unwrap().unwrap_or(0))
            .sum()
    }

    /// Waits until `cond` holds (panics after `timeout`, naming `what`).
    pub fn wait_for(
        &self,
        what: &str,
        timeout: std::time::Duration,
        cond: impl Fn(&Connector) -> bool,
    ) {
        let started = std::time::Instant::now();
        while !cond(self) {
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}"
            );
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                panic!("the connector stopped while waiting for {what}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Graceful stop: flush, commit, leave the group.
    pub fn stop(&mut self) -> Result<(), streamtally::ingest::IngestError> {
        self.shutdown.cancel();
        match self.thread.take() {
            Some(t) => t.join().expect("ingest thread"),
            None => Ok(()),
        }
    }

    /// The stats workers and the gateway (`gateway.listen` of the configuration, e.g.
    /// `127.0.0.1:0`) on this connector's store, metrics and shutdown token, as
    /// `streamtally run` wires them.
    pub fn services(&self) -> streamtally::app::Services {
        streamtally::app::Services::start(
            self.cfg.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        )
        .expect("stats workers and gateway start")
    }

    /// Waits for the connector to stop by itself (e.g. dead_letter.policy = fail).
    pub fn join(&mut self) -> Result<(), streamtally::ingest::IngestError> {
        match self.thread.take() {
            Some(t) => t.join().expect("ingest thread"),
            None => Ok(()),
        }
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Logs of the code under test on stderr (RUST_LOG, default warn), once per test binary.
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}
