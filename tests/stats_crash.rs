//! `streamtally run` (ingest + stats workers) as a child process against Tansu, SIGKILLed at
//! random moments and, through the test-only fault hook, in the middle of a stats rollup
//! write, while 200,000 events are produced. At the end `streamtally stats verify` finds no
//! difference between the stored rollups and a recomputation from the raw events (counts
//! exactly equal, sketches equal to a rebuild), and the day totals equal the events produced.
//!
//! The broker is Tansu (`TestBroker::end_to_end`: `KAFKA_BOOTSTRAP_SERVERS` if set, else the
//! Tansu binary installed by .ci/install-tansu.sh). The exact-set threshold is lowered to
//! 1,000 so that busy buckets are sketches.

mod common;

use common::broker::{produce, random_name, synth_records, TestBroker};
use common::run::{
    log_count, sigkill, sigterm, spawn_run, wait_exit, wait_log, wait_progress, ASSIGNED,
};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use streamtally::stats::bucket::RollupKey;
use streamtally::stats::parts;
use streamtally::store::Value;
use streamtally::synth::{SynthConfig, SynthEvent};

const PARTITIONS: i32 = 3;
const THRESHOLD: &str = "1000";

#[test]
fn rollups_equal_a_rebuild_after_sigkills_during_ingest_and_stats_writes() {
    let broker = TestBroker::end_to_end();
    eprintln!(
        "stats_crash: broker {} at {}",
        broker.kind, broker.bootstrap
    );
    let topic = random_name("events");
    broker.create_topic(&topic, PARTITIONS);
    let group = random_name("stats-crash");
    let work = tempfile::tempdir().unwrap();
    let store_dir = work.path().join("data");
    let log = work.path().join("streamtally.log");
    let n: u64 = std::env::var("STATS_CRASH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let cfg = SynthConfig {
        span_days: 2,
        ..SynthConfig::new(n)
    };
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("stats_crash: seed {seed}, {n} events");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let env_plain = [("STREAMTALLY__STATS__UNIQUE_EXACT_THRESHOLD", THRESHOLD)];

    // A quarter up front, the rest while the connector is being killed.
    let first = n / 4;
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&cfg, 0..first, PARTITIONS),
    );
    let bootstrap = broker.bootstrap.clone();
    let (t2, c2) = (topic.clone(), cfg.clone());
    let producer = std::thread::spawn(move || {
        for start in (first..n).step_by(10_000) {
            produce(
                &bootstrap,
                &t2,
                &synth_records(&c2, start..(start + 10_000).min(n), PARTITIONS),
            );
            std::thread::sleep(Duration::from_millis(1_500));
        }
    });

    let kills = 12;
    let mut progress = 0i64;
    let mut hook_kills = 0;
    for k in 0..kills {
        // Every third run dies inside a stats rollup write (the fault hook), the others
        // by SIGKILL at a random moment once the run is writing.
        let hook = if k % 3 == 1 && cfg!(feature = "fault-injection") {
            Some(format!("stats_write_kill:{}", rng.gen_range(2..12)))
        } else {
            None
        };
        let mut env: Vec<(&str, &str)> = env_plain.to_vec();
        if let Some(h) = &hook {
            env.push(("STREAMTALLY_FAULT", h.as_str()));
        }
        let mut child = spawn_run(&broker.bootstrap, &topic, &group, &store_dir, &log, &env);
        progress = wait_progress(
            &broker.bootstrap,
            &group,
            &topic,
            PARTITIONS,
            progress,
            Duration::from_secs(40),
        );
        match hook {
            Some(h) => match wait_exit(&mut child, Duration::from_secs(60)) {
                Some(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    assert_eq!(status.signal(), Some(libc::SIGKILL), "{h}: {status:?}");
                    hook_kills += 1;
                    eprintln!(
                        "stats_crash: kill {} by the fault hook ({h}) at committed {progress}",
                        k + 1
                    );
                }
                None => {
                    sigkill(&mut child);
                    eprintln!(
                        "stats_crash: kill {}: the hook ({h}) did not fire in 60 s; SIGKILL",
                        k + 1
                    );
                }
            },
            None => {
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..2_000)));
                sigkill(&mut child);
                eprintln!(
                    "stats_crash: kill {} (SIGKILL) at committed {progress}",
                    k + 1
                );
            }
        }
    }
    producer.join().unwrap();
    if cfg!(feature = "fault-injection") {
        assert!(hook_kills >= 2, "the fault hook fired {hook_kills} times");
    }

    // A last run drains everything, then stops gracefully.
    let assigned = log_count(&log, ASSIGNED);
    let mut child = spawn_run(
        &broker.bootstrap,
        &topic,
        &group,
        &store_dir,
        &log,
        &env_plain,
    );
    let started = Instant::now();
    let done = wait_progress(
        &broker.bootstrap,
        &group,
        &topic,
        PARTITIONS,
        n as i64 - 1,
        Duration::from_secs(600),
    );
    eprintln!(
        "stats_crash: drained to {done} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // Kafka may have been caught up before this run started: signal it once it is up.
    wait_log(&log, ASSIGNED, assigned, Duration::from_secs(120));
    let status = sigterm(&mut child);
    assert!(
        status.success(),
        "graceful stop exits 0: {status:?}; log {}",
        log.display()
    );

    // `stats verify` applies what the workers had not, then compares with a recomputation.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamtally"))
        .args(["stats", "verify"])
        .env("STREAMTALLY__STORE__PATH", &store_dir)
        .env("STREAMTALLY__STATS__UNIQUE_EXACT_THRESHOLD", THRESHOLD)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("stats_crash: stats verify:\n{stdout}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(", 0 difference(s)"), "{stdout}");

    // Exactly the produced events, and the day totals add up to them.
    let store = common::open(&store_dir);
    let mut ids = HashSet::new();
    store
        .for_each_row("Event", |r| {
            ids.insert(r.id().unwrap());
        })
        .unwrap();
    let missing = (0..n)
        .filter(|i| !ids.contains(&SynthEvent::generate(&cfg, *i).id))
        .count();
    assert_eq!(
        (ids.len() as u64, missing),
        (n, 0),
        "events stored exactly once"
    );
    let all_types = Some(Value::String(String::new()));
    let day_total: i64 = store
        .scan_all("DailyStats")
        .unwrap()
        .iter()
        .filter(|r| r.get("event_type") == all_types.as_ref())
        .map(|r| match r.get("event_count") {
            Some(Value::Int64(c)) => *c,
            _ => 0,
        })
        .sum();
    let sketched = store
        .scan_all("DailyStats")
        .unwrap()
        .iter()
        .filter(|r| {
            let key = RollupKey::from_row("DailyStats", r).unwrap();
            let (state, _) = parts::read_state(&store, &key, r).unwrap();
            !state.users.is_exact()
        })
        .count();
    store.close().unwrap();
    eprintln!(
        "stats_crash: {n} events, {kills} kills ({hook_kills} inside a stats write), day totals {day_total}, {sketched} sketched day rows, verify: 0 differences"
    );
    assert_eq!(day_total, n as i64);
    assert!(sketched > 0, "busy buckets must be sketches in this test");
}
