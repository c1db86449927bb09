//! A store write that fails (disk full, injected by the test-only fault hook) during ingest:
//! no offset advances past it, the batch and those behind it are retried in order, nothing is
//! lost. Its own test binary, because the hook is process-wide (an environment variable).

mod common;

#[cfg(feature = "fault-injection")]
use common::broker::{produce, random_name, synth_records, TestBroker};
#[cfg(feature = "fault-injection")]
use common::{synth, Connector};
#[cfg(feature = "fault-injection")]
use std::collections::HashSet;
#[cfg(feature = "fault-injection")]
use std::time::Duration;
#[cfg(feature = "fault-injection")]
use streamtally::synth::SynthEvent;

/// Needs the test-only fault hook: `cargo test --features fault-injection` (as .ci/run does).
#[cfg(feature = "fault-injection")]
#[test]
fn failed_store_writes_are_retried_in_order_and_no_offset_advances_past_them() {
    let broker = TestBroker::mock(2);
    let topic = random_name("events");
    broker.create_topic(&topic, 2);
    let n = 3000u64;
    let cfg = synth(n);
    produce(&broker.bootstrap, &topic, &synth_records(&cfg, 0..n, 2));
    // The fault hook reads the environment of this process: the first 5 WAL appends fail as
    // if the disk were full. (Set before the connector's store writes anything.)
    std::env::set_var("STREAMTALLY_FAULT", "wal_write_error:5");
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        |cfg| {
            cfg.batching.max_batch_events = 200;
            cfg.kafka.retry_backoff_initial_ms = 20;
            cfg.kafka.retry_backoff_max_ms = 100;
        },
    );
    c.wait_for("every event stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 2) as u64 >= n
    });
    c.stop().unwrap();
    std::env::remove_var("STREAMTALLY_FAULT");
    let rows = c.store.scan_all("Event").unwrap();
    let ids: HashSet<[u8; 16]> = rows.iter().map(|r| r.id().unwrap()).collect();
    let missing = (0..n)
        .filter(|i| !ids.contains(&SynthEvent::generate(&cfg, *i).id))
        .count();
    assert_eq!((rows.len() as u64, missing), (n, 0));
    let m = c.metrics.encode();
    assert!(
        !m.contains("streamtally_store_write_errors_total 0\n"),
        "the failures were seen: {m}"
    );
    assert!(c.store.verify().unwrap().is_empty());
}
