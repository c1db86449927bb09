//! kill -9 the store mid-write, many times, and check what survives.
//!
//! A child process (this test binary, running the ignored `crash_child` test) writes batches
//! of events from two threads, one partition each, every batch also carrying the partition's
//! next offset and an upsert of a progress row, and prints `ACK <partition> <next>` after
//! each acknowledged write. The parent SIGKILLs it at random moments (at least 20 times),
//! reopens the store, and asserts: every acknowledged batch is present; no partial batch is
//! visible (events, offset and progress row agree exactly); every index agrees with the rows;
//! the change feed is contiguous and matches the rows; then it starts the child again.

mod common;

use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamtally::store::{ChangeOp, Row, Value, WriteBatch};

const CHILD_ENV: &str = "STREAMTALLY_CRASH_CHILD_DIR";
const BATCH: u64 = 200;
const PARTITIONS: i32 = 2;
const KILLS: usize = 20;

fn event_id(partition: i32, n: u64) -> [u8; 16] {
    *uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("crash-{partition}-{n}").as_bytes(),
    )
    .as_bytes()
}

fn progress_row(partition: i32, next: u64) -> Row {
    Row::new()
        .with("org_id", common::org(0))
        .with("date", Value::String(format!("partition-{partition}")))
        .with("event_name", Value::String("progress".into()))
        .with("event_count", Value::Int64(next as i64))
}

#[test]
#[ignore = "child process of store_survives_repeated_sigkill"]
fn crash_child() {
    let dir = std::env::var(CHILD_ENV).expect("run by store_survives_repeated_sigkill");
    let store = common::open(std::path::Path::new(&dir));
    std::thread::scope(|s| {
        for p in 0..PARTITIONS {
            let store = store.clone();
            s.spawn(move || {
                let mut next = store.offset("crash", p).unwrap().unwrap_or(0) as u64;
                for _ in 0..5_000 {
                    let mut b = WriteBatch::new();
                    for n in next..next + BATCH {
                        let row = common::event(n).with("id", Value::Uuid(event_id(p, n)));
                        let mut fields: Vec<(String, Value)> = Vec::new();
                        for (k, v) in row.fields {
                            fields.retain(|(f, _)| *f != k);
                            fields.push((k, v));
                        }
                        b.insert("Event", Row { fields });
                    }
                    next += BATCH;
                    b.set_offset("crash", p, next as i64);
                    b.upsert("EventNameDaily", progress_row(p, next));
                    store.write_blocking(b).unwrap();
                    println!("ACK {p} {next}");
                }
            });
        }
    });
}

#[test]
fn store_survives_repeated_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("store_crash: seed {seed} (set CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<i32, u64> = HashMap::new();
    let mut total_acks = 0usize;

    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let acks: Arc<Mutex<Vec<(i32, u64)>>> = Arc::default();
        let sink = acks.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut parts = line.split_whitespace();
                if parts.next() == Some("ACK") {
                    let p: i32 = parts.next().unwrap().parse().unwrap();
                    let n: u64 = parts.next().unwrap().parse().unwrap();
                    sink.lock().unwrap().push((p, n));
                }
            }
        });
        // Wait for the child to be writing, then kill it at a random moment.
        let started = Instant::now();
        while acks.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let round_acks = acks.lock().unwrap().clone();
        assert!(
            !round_acks.is_empty(),
            "round {round}: the child never acknowledged a batch"
        );
        total_acks += round_acks.len();
        for (p, n) in round_acks {
            let e = acked.entry(p).or_default();
            *e = (*e).max(n);
        }

        // Reopen and check.
        let store = common::open(dir.path());
        // Every stored id, from one scan (a `get` per event decoded a block per event and
        // made the test's time grow with the square of its events); gets are sampled below.
        let all = store.scan_all("Event").unwrap();
        let stored: std::collections::HashSet<[u8; 16]> =
            all.iter().filter_map(|r| r.id()).collect();
        let mut expected_events = 0u64;
        for p in 0..PARTITIONS {
            let offset = store.offset("crash", p).unwrap().unwrap_or(0) as u64;
            let last_ack = acked.get(&p).copied().unwrap_or(0);
            assert!(
                offset >= last_ack,
                "round {round}: partition {p} acknowledged up to {last_ack} but the store has {offset}"
            );
            assert_eq!(offset % BATCH, 0, "offsets move by whole batches");
            // Every event below the offset is there, none at or above it (no partial batch).
            for n in 0..offset {
                assert!(
                    stored.contains(&event_id(p, n)),
                    "round {round}: partition {p} event {n} below offset {offset} is missing"
                );
            }
            for n in (0..offset).step_by(997) {
                assert!(
                    store.get("Event", &event_id(p, n)).unwrap().is_some(),
                    "round {round}: partition {p} event {n} below offset {offset} is not found by id"
                );
            }
            for n in offset..offset + BATCH {
                assert!(
                    !stored.contains(&event_id(p, n))
                        && store.get("Event", &event_id(p, n)).unwrap().is_none(),
                    "round {round}: partition {p} event {n} from a batch past offset {offset} is visible"
                );
            }
            // The upsert rode in the same write as the offset.
            let progress = store
                .scan_all("EventNameDaily")
                .unwrap()
                .into_iter()
                .find(|r| r.get("date") == Some(&Value::String(format!("partition-{p}"))));
            let count = progress.map(|r| match r.get("event_count") {
                Some(Value::Int64(n)) => *n as u64,
                _ => 0,
            });
            assert_eq!(
                count.unwrap_or(0),
                offset,
                "round {round}: progress row vs offset"
            );
            expected_events += offset;
        }
        let rows = all.len() as u64;
        assert_eq!(rows, expected_events, "round {round}: rows vs offsets");
        let problems = store.verify().unwrap();
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        // The feed holds exactly one insert per event row and nothing else but progress rows.
        let feed = store.feed_read(store.feed_floor(), usize::MAX).unwrap();
        let inserts = feed
            .iter()
            .filter(|e| e.entity == "Event" && e.op == ChangeOp::Insert)
            .count() as u64;
        assert_eq!(inserts, rows, "round {round}: feed inserts vs rows");
        assert_eq!(
            feed.len() as u64 + 1,
            store.feed_head(),
            "round {round}: feed length"
        );
        store.close().unwrap();
        drop(store);
        eprintln!(
            "store_crash: round {round}: killed; offsets {:?}, {rows} events, feed head {}",
            (0..PARTITIONS)
                .map(|p| acked.get(&p).copied().unwrap_or(0))
                .collect::<Vec<_>>(),
            feed.len() + 1
        );
    }
    eprintln!("store_crash: {KILLS} SIGKILLs, {total_acks} acknowledged batches, all present, no partial batch");
}
