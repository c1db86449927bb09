//! `streamtally run` as a child process against Tansu (an independent Kafka-compatible
//! broker, out of process), SIGKILLed at random moments while events are produced, plus a
//! deterministic crash between "store durable" and "Kafka commit" (the test-only fault hook,
//! `--features fault-injection`). At the end exactly the produced set is stored.
//!
//! The broker is Tansu (`TestBroker::end_to_end`: `KAFKA_BOOTSTRAP_SERVERS` if set, else the
//! Tansu binary installed by .ci/install-tansu.sh).

mod common;

use common::broker::{produce, random_name, synth_records, TestBroker};
use common::run::{self, sigkill, sigterm};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};
use streamtally::synth::{SynthConfig, SynthEvent};

const PARTITIONS: i32 = 3;

fn spawn_run(
    broker: &str,
    topic: &str,
    group: &str,
    store: &Path,
    log: &Path,
    fault: Option<&str>,
) -> Child {
    let env: Vec<(&str, &str)> = fault
        .map(|f| ("STREAMTALLY_FAULT", f))
        .into_iter()
        .collect();
    run::spawn_run(broker, topic, group, store, log, &env)
}

fn wait_progress(broker: &str, group: &str, topic: &str, beyond: i64, timeout: Duration) -> i64 {
    run::wait_progress(broker, group, topic, PARTITIONS, beyond, timeout)
}

/// Stored next offsets of the topic's partitions (store opened read-only-ish: open, read, close).
fn stored_positions(store_dir: &Path, topic: &str) -> Vec<i64> {
    let store = common::open(store_dir);
    let v = (0..PARTITIONS)
        .map(|p| store.offset(topic, p).unwrap().unwrap_or(0))
        .collect();
    store.close().unwrap();
    v
}

/// (missing, duplicated) of `expected` ids in the union of the stores.
fn count(stores: &[&Path], cfg: &SynthConfig, n: u64) -> (usize, usize, usize) {
    let mut rows = 0usize;
    let mut ids: HashSet<[u8; 16]> = HashSet::new();
    for dir in stores {
        let store = common::open(dir);
        for r in store.scan_all("Event").unwrap() {
            rows += 1;
            ids.insert(r.id().unwrap());
        }
        assert!(
            store.verify().unwrap().is_empty(),
            "store {} is consistent",
            dir.display()
        );
        store.close().unwrap();
    }
    let missing = (0..n)
        .filter(|i| !ids.contains(&SynthEvent::generate(cfg, *i).id))
        .count();
    (missing, rows - (n as usize - missing), rows)
}

#[test]
fn sigkill_at_random_moments_and_after_the_durable_write_loses_and_duplicates_nothing() {
    let broker = TestBroker::end_to_end();
    eprintln!(
        "ingest_crash: broker {} at {}",
        broker.kind, broker.bootstrap
    );
    let topic = random_name("events");
    broker.create_topic(&topic, PARTITIONS);
    let group = random_name("crash");
    let work = tempfile::tempdir().unwrap();
    let store_dir = work.path().join("data");
    let log = work.path().join("streamtally.log");
    let n = 40_000u64;
    let cfg = SynthConfig {
        span_days: 1,
        ..SynthConfig::new(n)
    };
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("ingest_crash: seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // Events arrive while the connector is being killed.
    let bootstrap = broker.bootstrap.clone();
    let (t2, c2) = (topic.clone(), cfg.clone());
    // The last 4000 are held back for the fault-hook run, so it has batches to write.
    let early = n - 4000;
    let producer = std::thread::spawn(move || {
        for start in (0..early).step_by(2000) {
            produce(
                &bootstrap,
                &t2,
                &synth_records(&c2, start..(start + 2000).min(early), PARTITIONS),
            );
            std::thread::sleep(Duration::from_millis(600));
        }
    });

    let kills = 10;
    let mut progress = 0i64;
    for k in 0..kills {
        let mut child = spawn_run(&broker.bootstrap, &topic, &group, &store_dir, &log, None);
        // A restarted member gets its partitions back only after the killed one's session
        // expires (kill -9 sends no LeaveGroup): wait until it is writing, then kill it at a
        // random moment.
        progress = wait_progress(
            &broker.bootstrap,
            &group,
            &topic,
            progress,
            Duration::from_secs(40),
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..1_500)));
        sigkill(&mut child);
        let pos = stored_positions(&store_dir, &topic);
        progress = progress.max(pos.iter().sum());
        eprintln!("ingest_crash: kill {} at stored positions {pos:?}", k + 1);
    }

    // The deterministic crash: right after a durable batch, before its Kafka commit.
    if cfg!(feature = "fault-injection") {
        let before = stored_positions(&store_dir, &topic);
        producer.join().unwrap();
        let mut child = spawn_run(
            &broker.bootstrap,
            &topic,
            &group,
            &store_dir,
            &log,
            Some("crash_after_store_durable:2"),
        );
        produce(
            &broker.bootstrap,
            &topic,
            &synth_records(&cfg, early..n, PARTITIONS),
        );
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(120) {
                sigkill(&mut child);
                panic!(
                    "the fault hook did not fire within 120 s; log {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the fault hook killed it: {status:?}"
        );
        let after = stored_positions(&store_dir, &topic);
        assert!(
            after.iter().sum::<i64>() > before.iter().sum::<i64>(),
            "it stored batches before dying: {before:?} -> {after:?}"
        );
        eprintln!("ingest_crash: fault hook killed the connector after a durable write, before the Kafka commit ({before:?} -> {after:?})");
    } else {
        eprintln!("ingest_crash: built without --features fault-injection; the deterministic crash point is not exercised (bash .ci/run enables it)");
        producer.join().unwrap();
        produce(
            &broker.bootstrap,
            &topic,
            &synth_records(&cfg, early..n, PARTITIONS),
        );
    }

    // A last run drains everything, then stops gracefully on SIGTERM.
    let expected: Vec<i64> = (0..PARTITIONS as u64)
        .map(|p| ((n + PARTITIONS as u64 - 1 - p) / PARTITIONS as u64) as i64)
        .collect();
    let assigned = run::log_count(&log, run::ASSIGNED);
    let mut child = spawn_run(&broker.bootstrap, &topic, &group, &store_dir, &log, None);
    wait_progress(
        &broker.bootstrap,
        &group,
        &topic,
        expected.iter().sum::<i64>() - 1,
        Duration::from_secs(240),
    );
    // Kafka may have been caught up before this run started: signal it once it is up.
    run::wait_log(&log, run::ASSIGNED, assigned, Duration::from_secs(120));
    let status = sigterm(&mut child);
    assert!(
        status.success(),
        "graceful stop exits 0: {status:?}; log {}",
        log.display()
    );
    assert_eq!(
        stored_positions(&store_dir, &topic),
        expected,
        "every partition fully stored"
    );
    let (missing, duplicated, rows) = count(&[&store_dir], &cfg, n);
    eprintln!("ingest_crash: produced {n}, stored {rows}, missing {missing}, duplicated {duplicated} after {kills} SIGKILLs + 1 crash after the durable write");
    assert_eq!((missing, duplicated), (0, 0));
}

#[test]
fn a_sigkilled_members_partitions_are_taken_over_with_nothing_missing() {
    let broker = TestBroker::end_to_end();
    eprintln!(
        "ingest_crash: broker {} at {}",
        broker.kind, broker.bootstrap
    );
    let topic = random_name("events");
    broker.create_topic(&topic, PARTITIONS);
    let group = random_name("takeover");
    let work = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (work.path().join("a"), work.path().join("b"));
    let log = work.path().join("streamtally.log");
    let n = 12_000u64;
    let cfg = SynthConfig {
        span_days: 1,
        ..SynthConfig::new(n)
    };
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&cfg, 0..n / 2, PARTITIONS),
    );
    let mut a = spawn_run(&broker.bootstrap, &topic, &group, &dir_a, &log, None);
    let mut b = spawn_run(&broker.bootstrap, &topic, &group, &dir_b, &log, None);
    std::thread::sleep(Duration::from_secs(10));
    sigkill(&mut a);
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&cfg, n / 2..n, PARTITIONS),
    );
    // B gets A's partitions once A's session expires, starting from A's last Kafka commit.
    wait_progress(
        &broker.bootstrap,
        &group,
        &topic,
        n as i64 - 1,
        Duration::from_secs(120),
    );
    let status = sigterm(&mut b);
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    let done = count(&[&dir_a, &dir_b], &cfg, n);
    eprintln!("ingest_crash: takeover after SIGKILL: missing {}, stored twice {} (re-read after A's last Kafka commit), rows {}", done.0, done.1, done.2);
    assert_eq!(done.0, 0, "0 missing after the takeover");
}
