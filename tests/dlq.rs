//! `streamtally dlq list|replay` against Tansu (an independent Kafka-compatible broker,
//! started from its binary without Docker: `TestBroker::tansu`) and `streamtally run` as a
//! child process: 100 events over a lowered `kafka.max_message_bytes` are dead-lettered as
//! `oversized`; `dlq list` counts them; a dry run sends nothing; after the limit is raised a
//! replay stores every one exactly once, with `streamtally.replayed_from` and without the
//! dead-letter headers; a second replay stores nothing more.
//!
//! Outside CI the test skips (saying so) when the Tansu binary is missing
//! (`bash .ci/install-tansu.sh`).

mod common;

use common::broker::{consume_all, produce, random_name, TestBroker, TestRecord};
use common::run::{self, sigterm};
use rdkafka::message::{Headers, Message};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use streamtally::stats::query::StatsReader;
use uuid::Uuid;

const BIG: usize = 100;
const SMALL: usize = 20;

fn records(org: Uuid, n: usize, padding: usize) -> Vec<TestRecord> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..n)
        .map(|i| {
            let payload = json!({
                "id": Uuid::new_v4().to_string(),
                "org_id": org.to_string(),
                "event_type": "track",
                "event_name": "upload",
                "user_id": format!("u{}", i % 7),
                "timestamp": now,
                "properties": {"blob": "x".repeat(padding)},
            });
            (
                Some(format!("k{i}").into_bytes()),
                Some(payload.to_string().into_bytes()),
                vec![("trace".to_string(), format!("t{i}").into_bytes())],
                None,
            )
        })
        .collect()
}

/// `streamtally dlq ARGS` against `broker`: (exit code, stdout, stderr).
fn dlq(dir: &Path, broker: &str, args: &[&str]) -> (i32, String, String) {
    let out = run::command(dir, ["--brokers", broker, "dlq"].iter().chain(args))
        .output()
        .expect("run streamtally dlq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the connector until the group committed `offsets` in all, then stops it cleanly.
fn run_until(
    broker: &str,
    topic: &str,
    group: &str,
    dir: &Path,
    offsets: i64,
    env: &[(&str, &str)],
) {
    let log = dir.join("run.log");
    let mut child = run::spawn_run(broker, topic, group, &dir.join("store"), &log, env);
    let done = run::wait_progress(
        broker,
        group,
        topic,
        1,
        offsets - 1,
        Duration::from_secs(120),
    );
    assert_eq!(
        done,
        offsets,
        "committed offsets; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(sigterm(&mut child).success());
}

fn stored(dir: &Path, org: Uuid) -> u64 {
    let store = common::open(&dir.join("store"));
    StatsReader::new(store)
        .count_raw(*org.as_bytes(), 0, i64::MAX / 2)
        .expect("count")
}

#[test]
fn oversized_dead_letters_replayed_after_the_limit_is_raised_are_stored_exactly_once() {
    let Some(broker) = TestBroker::tansu() else {
        return;
    };
    let bs = broker.bootstrap.clone();
    let topic = random_name("dlq-src");
    broker.create_topic(&topic, 1);
    let dlq_topic = format!("{topic}.dlq");
    broker.create_topic(&dlq_topic, 1);
    let group = random_name("dlq");
    let dir = tempfile::tempdir().unwrap();
    let org = common::test_org(7);

    produce(&bs, &topic, &records(org, SMALL, 10));
    produce(&bs, &topic, &records(org, BIG, 2_000));
    let small_limit = [("STREAMTALLY__KAFKA__MAX_MESSAGE_BYTES", "1000")];
    run_until(
        &bs,
        &topic,
        &group,
        dir.path(),
        (SMALL + BIG) as i64,
        &small_limit,
    );
    assert_eq!(stored(dir.path(), org), SMALL as u64);

    let (code, out, err) = dlq(dir.path(), &bs, &["list", "--topic", &dlq_topic]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("'{dlq_topic}': {BIG} dead letter(s)")),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("oversized"))
        .unwrap_or_else(|| panic!("no oversized line: {out}"));
    assert!(
        line.split_whitespace().any(|w| w == BIG.to_string()),
        "{line}"
    );
    assert!(out.contains(&format!("{topic}/0")), "by source: {out}");

    // A dry run counts and sends nothing.
    let (code, out, err) = dlq(
        dir.path(),
        &bs,
        &[
            "replay",
            "--topic",
            &dlq_topic,
            "--reason",
            "oversized",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("would replay {BIG} ({BIG} to '{topic}')")),
        "{out}"
    );
    let (code, out, _) = dlq(
        dir.path(),
        &bs,
        &["replay", "--topic", &dlq_topic, "--reason", "invalid_json"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("matched 0, replayed 0"),
        "another reason matches none: {out}"
    );
    assert_eq!(
        consume_all(&bs, &topic, SMALL + BIG, Duration::from_secs(10)).len(),
        SMALL + BIG,
        "a dry run sends nothing"
    );

    // The limit raised, a replay stores each exactly once.
    let (code, out, err) = dlq(
        dir.path(),
        &bs,
        &["replay", "--topic", &dlq_topic, "--reason", "oversized"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("replayed {BIG} ({BIG} to '{topic}')")),
        "{out}"
    );
    assert!(!out.contains("without an event id"), "{out}");
    run_until(
        &bs,
        &topic,
        &group,
        dir.path(),
        (SMALL + 2 * BIG) as i64,
        &[],
    );
    assert_eq!(stored(dir.path(), org), (SMALL + BIG) as u64);

    let all = consume_all(&bs, &topic, SMALL + 2 * BIG, Duration::from_secs(30));
    assert_eq!(all.len(), SMALL + 2 * BIG);
    for (i, m) in all[SMALL + BIG..].iter().enumerate() {
        let headers: Vec<(String, String)> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(m.key(), Some(format!("k{i}").as_bytes()), "key kept");
        assert_eq!(
            headers,
            [
                ("trace".to_string(), format!("t{i}")),
                (
                    "streamtally.replayed_from".to_string(),
                    format!("{dlq_topic}/0/{i}")
                )
            ],
            "headers kept, dead-letter ones dropped"
        );
    }

    // A second replay: the events are already stored.
    let (code, out, err) = dlq(
        dir.path(),
        &bs,
        &["replay", "--topic", &dlq_topic, "--reason", "oversized"],
    );
    assert_eq!(code, 0, "{out}{err}");
    run_until(
        &bs,
        &topic,
        &group,
        dir.path(),
        (SMALL + 3 * BIG) as i64,
        &[],
    );
    assert_eq!(
        stored(dir.path(), org),
        (SMALL + BIG) as u64,
        "nothing stored twice"
    );
    assert_eq!(
        consume_all(&bs, &dlq_topic, BIG + 1, Duration::from_secs(5)).len(),
        BIG,
        "nothing dead-lettered again"
    );

    let (code, _, err) = dlq(
        dir.path(),
        &bs,
        &["replay", "--topic", &dlq_topic, "--offsets", "9..3"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--offsets \"9..3\""), "{err}");
}
