//! The consumer group against real Kafka-protocol brokers (librdkafka's mock cluster in this
//! process; see tests/ingest_crash.rs for Tansu out of process): exactly N rows for N
//! events, positions stored and committed, dead letters, failure policies, a broker outage,
//! and instances joining and leaving a group.

mod common;

use common::broker::{
    committed_offsets, consume_all, produce, random_name, synth_records, TestBroker, TestRecord,
};
use common::{synth, Connector};
use rdkafka::message::{Headers, Message};
use std::collections::HashSet;
use std::time::Duration;
use streamtally::config::DeadLetterPolicy;
use streamtally::produce::synthetic_json;
use streamtally::synth::SynthEvent;

#[test]
fn hundred_thousand_events_over_six_partitions_become_exactly_that_many_rows() {
    let broker = TestBroker::mock(6);
    let topic = random_name("events");
    broker.create_topic(&topic, 6);
    let n = 100_000u64;
    let cfg = synth(n);
    let group = random_name("group");
    let mut c = Connector::start(&broker.bootstrap, &[topic.as_str()], &group, |_| {});
    // Produce as a stream, in chunks, keeping the connector's lag bounded: the mock broker
    // keeps only the last ~5 MB of each partition, and would drop records nobody read yet.
    let chunk = 10_000u64;
    for start in (0..n).step_by(chunk as usize) {
        produce(
            &broker.bootstrap,
            &topic,
            &synth_records(&cfg, start..(start + chunk).min(n), 6),
        );
        c.wait_for("the connector to keep up", Duration::from_secs(120), |c| {
            c.stored(&topic, 6) as u64 + 2 * chunk >= start + chunk
        });
    }
    c.wait_for("every event stored", Duration::from_secs(300), |c| {
        c.stored(&topic, 6) as u64 >= n
    });
    c.stop().unwrap();
    let rows = c.store.scan_all("Event").unwrap();
    let m = c.metrics.encode();
    assert_eq!(rows.len() as u64, n, "exactly N rows; metrics:\n{m}");
    let ids: HashSet<[u8; 16]> = rows.iter().map(|r| r.id().unwrap()).collect();
    for i in 0..n {
        assert!(
            ids.contains(&SynthEvent::generate(&cfg, i).id),
            "event {i} stored under its payload id"
        );
    }
    for p in 0..6 {
        let expected = (n / 6 + u64::from((p as u64) < n % 6)) as i64;
        assert_eq!(
            c.store.offset(&topic, p).unwrap(),
            Some(expected),
            "stored offset of partition {p}"
        );
    }
    // After the durable write, the positions were committed to Kafka too (lag tooling).
    let kafka = committed_offsets(&broker.bootstrap, &group, &topic, 6);
    let stored = c.positions(&topic, 6);
    assert_eq!(kafka, stored);
    let m = c.metrics.encode();
    assert!(
        m.contains(&format!(
            "streamtally_events_stored_total{{topic=\"{topic}\"}} {n}"
        )),
        "{m}"
    );
    let problems = c.store.verify().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    eprintln!(
        "ingest: {n} events on mock broker {} -> {n} rows, offsets {stored:?}",
        broker.bootstrap
    );
}

#[test]
fn restart_resumes_from_the_store_and_replays_do_not_duplicate() {
    let broker = TestBroker::mock(3);
    let topic = random_name("events");
    broker.create_topic(&topic, 3);
    let cfg = synth(3000);
    produce(&broker.bootstrap, &topic, &synth_records(&cfg, 0..1500, 3));
    let group = random_name("group");
    let mut c = Connector::start(&broker.bootstrap, &[topic.as_str()], &group, |_| {});
    c.wait_for("1500 stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) >= 1500
    });
    c.stop().unwrap();
    let store_dir = c.dir.path().to_path_buf();
    drop(c.store.clone());
    // The same payload ids again (a producer retry), then new events.
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&cfg, 1000..3000, 3),
    );
    let dir = std::mem::replace(&mut c.dir, tempfile::tempdir().unwrap());
    drop(c);
    // A new process on the same store, in a NEW group (no Kafka commits to fall back on):
    // it must start from the store's positions, not from the beginning.
    let store = common::open(&store_dir);
    let metrics = std::sync::Arc::new(streamtally::metrics::Metrics::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let conf = common::connector_config(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("other"),
        &store_dir,
    );
    let ingest =
        streamtally::ingest::Ingest::new(conf, store.clone(), metrics.clone(), shutdown.clone());
    let t = std::thread::spawn(move || ingest.run());
    let started = std::time::Instant::now();
    while (0..3)
        .map(|p| store.offset(&topic, p).unwrap().unwrap_or(0))
        .sum::<i64>()
        < 3500
    {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out");
        std::thread::sleep(Duration::from_millis(100));
    }
    shutdown.cancel();
    t.join().unwrap().unwrap();
    assert_eq!(
        store.scan_all("Event").unwrap().len(),
        3000,
        "1500 + 1500 new; the 500 resent ids stored once"
    );
    let m = metrics.encode();
    assert!(
        m.contains(&format!(
            "streamtally_events_consumed_total{{topic=\"{topic}\"}} 2000"
        )),
        "read only past the stored positions: {m}"
    );
    assert!(
        m.contains(&format!(
            "streamtally_events_duplicate_total{{topic=\"{topic}\",kind=\"same\"}} 500"
        )),
        "{m}"
    );
    drop(dir);
}

/// At least 20 kinds of bad input, each with the reason code it must be dead-lettered with.
fn bad_corpus() -> Vec<(Vec<u8>, &'static str)> {
    let org = "7d0c7f2e-6a39-4d7e-8b1a-0c5f2d9e4a11";
    let ok = |extra: &str| {
        format!(r#"{{"org_id":"{org}","event_type":"track","event_name":"click"{extra}}}"#)
            .into_bytes()
    };
    vec![
        (b"{not json".to_vec(), "invalid_json"),
        (vec![0xff, 0xfe, b'{', b'}'], "invalid_utf8"),
        (b"[1,2,3]".to_vec(), "not_an_object"),
        (b"\"just a string\"".to_vec(), "not_an_object"),
        (
            br#"{"event_type":"track","event_name":"click"}"#.to_vec(),
            "missing_field",
        ),
        (
            format!(r#"{{"org_id":"{org}","event_name":"click"}}"#).into_bytes(),
            "missing_field",
        ),
        (
            format!(r#"{{"org_id":"{org}","event_type":"track"}}"#).into_bytes(),
            "missing_field",
        ),
        (
            br#"{"org_id":"not-a-uuid","event_type":"track","event_name":"click"}"#.to_vec(),
            "invalid_uuid",
        ),
        (ok(r#","id":"12345""#), "invalid_uuid"),
        (
            format!(r#"{{"org_id":"{org}","event_type":"track","event_name":42}}"#).into_bytes(),
            "wrong_type",
        ),
        (
            format!(r#"{{"org_id":"{org}","event_type":"track","event_name":""}}"#).into_bytes(),
            "empty_field",
        ),
        (ok(r#","timestamp":"yesterday""#), "invalid_timestamp"),
        (
            ok(r#","timestamp":"2999-01-01T00:00:00Z""#),
            "timestamp_in_future",
        ),
        (ok(r#","timestamp":-5"#), "timestamp_before_epoch"),
        (ok(r#","properties":[1,2]"#), "properties_not_object"),
        (ok(r#","user_id":{"a":1}"#), "wrong_type"),
        (
            format!(
                r#"{{"org_id":"{org}","event_type":"track","event_name":"{}"}}"#,
                "x".repeat(300)
            )
            .into_bytes(),
            "field_too_long",
        ),
        (
            format!(r#"{{"org_id":"{org}","event_type":"track","event_name":"a\u0001b"}}"#)
                .into_bytes(),
            "control_character",
        ),
        (
            format!(
                r#"{{"properties":{}1{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            )
            .into_bytes(),
            "nesting_too_deep",
        ),
        (vec![b' '; 200_001], "oversized"),
        (Vec::new(), "empty_payload"),
        (ok(r#","timestamp":1e400"#), "invalid_json"),
        (
            format!(r#"{{"org_id":"{org}","org_id":"{org}","event_type":"t","event_name":"n"}}"#)
                .into_bytes(),
            "duplicate_key",
        ),
        (
            ok(r#","timestamp":99999999999999999"#),
            "timestamp_out_of_range",
        ),
    ]
}

#[test]
fn bad_input_goes_to_the_dead_letter_topic_and_the_partition_keeps_moving() {
    let broker = TestBroker::mock(1);
    let topic = random_name("events");
    broker.create_topic(&topic, 1);
    broker.create_topic(&format!("{topic}.dlq"), 1);
    let cfg = synth(100);
    let bad = bad_corpus();
    let mut records: Vec<TestRecord> = Vec::new();
    let mut good = 0;
    for (i, (payload, _)) in bad.iter().enumerate() {
        records.push((
            None,
            Some(synthetic_json(&cfg, i as u64).into_bytes()),
            Vec::new(),
            Some(0),
        ));
        good += 1;
        records.push((
            Some(format!("k{i}").into_bytes()),
            Some(payload.clone()),
            vec![("trace".into(), b"t1".to_vec())],
            Some(0),
        ));
    }
    records.push((
        None,
        Some(synthetic_json(&cfg, 99).into_bytes()),
        Vec::new(),
        Some(0),
    ));
    good += 1;
    let total = records.len() as i64;
    produce(&broker.bootstrap, &topic, &records);
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        |cfg| {
            cfg.kafka.max_message_bytes = 200_000;
        },
    );
    c.wait_for(
        "the partition past every record",
        Duration::from_secs(60),
        |c| c.stored(&topic, 1) >= total,
    );
    c.stop().unwrap();
    assert_eq!(
        c.store.scan_all("Event").unwrap().len(),
        good,
        "every good event around the bad ones"
    );
    let dlq = consume_all(
        &broker.bootstrap,
        &format!("{topic}.dlq"),
        bad.len(),
        Duration::from_secs(30),
    );
    assert_eq!(dlq.len(), bad.len());
    let mut kinds = HashSet::new();
    for (m, (payload, code)) in dlq.iter().zip(&bad) {
        let h = m.headers().expect("dead letters carry headers");
        let get = |name: &str| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert_eq!(
            get("streamtally.reason_code"),
            *code,
            "reason: {}",
            get("streamtally.reason")
        );
        assert!(!get("streamtally.reason").is_empty());
        assert_eq!(get("streamtally.source_topic"), topic);
        assert_eq!(get("streamtally.source_partition"), "0");
        let offset: i64 = get("streamtally.source_offset").parse().unwrap();
        assert_eq!(offset % 2, 1, "bad records sit at odd offsets");
        assert_eq!(get("streamtally.version"), env!("CARGO_PKG_VERSION"));
        assert_eq!(get("trace"), "t1", "original headers are kept");
        assert_eq!(
            m.payload().unwrap_or_default(),
            &payload[..],
            "original payload is kept"
        );
        kinds.insert(*code);
    }
    assert!(bad.len() >= 20 && kinds.len() >= 14, "{kinds:?}");
    let m = c.metrics.encode();
    assert!(m.contains("streamtally_events_dead_lettered_total"), "{m}");
}

#[test]
fn skip_policy_counts_and_fail_policy_stops_with_a_clear_error() {
    let broker = TestBroker::mock(1);
    let cfg = synth(10);
    for policy in [DeadLetterPolicy::Skip, DeadLetterPolicy::Fail] {
        let topic = random_name("events");
        broker.create_topic(&topic, 1);
        let records: Vec<TestRecord> = vec![
            (
                None,
                Some(synthetic_json(&cfg, 0).into_bytes()),
                Vec::new(),
                Some(0),
            ),
            (None, Some(b"{oops".to_vec()), Vec::new(), Some(0)),
            (
                None,
                Some(synthetic_json(&cfg, 1).into_bytes()),
                Vec::new(),
                Some(0),
            ),
        ];
        produce(&broker.bootstrap, &topic, &records);
        let mut c = Connector::start(
            &broker.bootstrap,
            &[topic.as_str()],
            &random_name("g"),
            |cfg| {
                cfg.kafka.dead_letter.policy = policy;
            },
        );
        match policy {
            DeadLetterPolicy::Skip => {
                c.wait_for("all three", Duration::from_secs(60), |c| {
                    c.stored(&topic, 1) >= 3
                });
                c.stop().unwrap();
                assert_eq!(c.store.scan_all("Event").unwrap().len(), 2);
                assert!(c
                    .metrics
                    .encode()
                    .contains("streamtally_events_skipped_total"));
            }
            _ => {
                let err = c.join().unwrap_err().to_string();
                assert!(
                    err.contains(&topic) && err.contains("offset 1") && err.contains("fail"),
                    "{err}"
                );
                assert_eq!(
                    c.store.offset(&topic, 0).unwrap(),
                    Some(1),
                    "stopped before the bad record"
                );
                assert_eq!(c.store.scan_all("Event").unwrap().len(), 1);
            }
        }
    }
}

#[test]
fn broker_down_for_thirty_seconds_loses_and_duplicates_nothing() {
    let broker = TestBroker::mock(3);
    let topic = random_name("events");
    broker.create_topic(&topic, 3);
    let n = 6000u64;
    let cfg = synth(n);
    produce(&broker.bootstrap, &topic, &synth_records(&cfg, 0..n / 2, 3));
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        |_| {},
    );
    c.wait_for("first half", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) as u64 >= n / 2
    });
    broker.mock_cluster().unwrap().broker_down(1).unwrap();
    eprintln!("broker down for 30 s");
    std::thread::sleep(Duration::from_secs(30));
    broker.mock_cluster().unwrap().broker_up(1).unwrap();
    produce(&broker.bootstrap, &topic, &synth_records(&cfg, n / 2..n, 3));
    c.wait_for("second half", Duration::from_secs(120), |c| {
        c.stored(&topic, 3) as u64 >= n
    });
    c.stop().unwrap();
    let rows = c.store.scan_all("Event").unwrap();
    let ids: HashSet<[u8; 16]> = rows.iter().map(|r| r.id().unwrap()).collect();
    let missing = (0..n)
        .filter(|i| !ids.contains(&SynthEvent::generate(&cfg, *i).id))
        .count();
    assert_eq!(
        (rows.len() as u64, missing),
        (n, 0),
        "0 missing, 0 duplicated"
    );
}

#[test]
fn instances_joining_and_leaving_a_group_store_every_event_exactly_once() {
    // On the mock: librdkafka's mock refuses offset commits while a group rebalances
    // (REBALANCE_IN_PROGRESS), even the revoking member's final commit, so the next owner may
    // re-read from an older commit: events stored by two instances are possible here and are
    // reported; a missing event is a failure. (On Tansu this handoff was exact in local runs,
    // but once, on a loaded CI machine, its group never assigned the joiners.)
    let broker = TestBroker::mock(6);
    let topic = random_name("events");
    broker.create_topic(&topic, 6);
    let n = 30_000u64;
    let cfg = synth(n);
    let group = random_name("g");
    let topics = [topic.as_str()];
    let tweak = |c: &mut streamtally::config::Config| c.batching.max_batch_events = 200;
    produce(&broker.bootstrap, &topic, &synth_records(&cfg, 0..n / 3, 6));
    let mut a = Connector::start(&broker.bootstrap, &topics, &group, tweak);
    a.wait_for("a first batch in A", Duration::from_secs(60), |c| {
        c.stored(&topic, 6) > 0
    });
    let mut b = Connector::start(&broker.bootstrap, &topics, &group, tweak);
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&cfg, n / 3..2 * n / 3, 6),
    );
    let mut c3 = Connector::start(&broker.bootstrap, &topics, &group, tweak);
    std::thread::sleep(Duration::from_secs(8));
    a.stop().unwrap(); // graceful leave: its partitions move to B and C
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&cfg, 2 * n / 3..n, 6),
    );
    // Done when, per partition, the furthest stored position across instances is the end.
    let all = [&a, &b, &c3];
    let started = std::time::Instant::now();
    loop {
        let end: i64 = (0..6)
            .map(|p| {
                all.iter()
                    .map(|c| c.store.offset(&topic, p).unwrap().unwrap_or(0))
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        if end as u64 >= n || started.elapsed() > Duration::from_secs(180) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    b.stop().unwrap();
    c3.stop().unwrap();
    let mut union: HashSet<[u8; 16]> = HashSet::new();
    let mut total = 0usize;
    for (name, c) in [("A", &a), ("B", &b), ("C", &c3)] {
        let rows = c.store.scan_all("Event").unwrap();
        eprintln!("group: instance {name} stored {}", rows.len());
        total += rows.len();
        union.extend(rows.iter().map(|r| r.id().unwrap()));
    }
    let missing: Vec<u64> = (0..n)
        .filter(|i| !union.contains(&SynthEvent::generate(&cfg, *i).id))
        .collect();
    if !missing.is_empty() {
        for p in 0..6u64 {
            let m: Vec<u64> = missing
                .iter()
                .filter(|i| *i % 6 == p)
                .map(|i| i / 6)
                .collect();
            if !m.is_empty() {
                eprintln!(
                    "group: partition {p}: {} missing, offsets {:?}..{:?}",
                    m.len(),
                    m.first(),
                    m.last()
                );
            }
        }
        for (name, c) in [("A", &a), ("B", &b), ("C", &c3)] {
            let pos: Vec<_> = (0..6).map(|p| c.store.offset(&topic, p).unwrap()).collect();
            eprintln!("group: {name} stored positions {pos:?}");
        }
    }
    assert_eq!(missing.len(), 0, "0 missing across the group");
    assert!(total as u64 >= n);
    eprintln!(
        "group: {n} events, 0 missing, {} stored by two instances (re-read after a refused commit)",
        total as u64 - n
    );
}

#[test]
fn a_regex_subscription_takes_every_matching_topic_but_not_its_dead_letters() {
    let broker = TestBroker::mock(2);
    let prefix = random_name("rx");
    let (a, b, other) = (
        format!("{prefix}.web"),
        format!("{prefix}.app"),
        random_name("other"),
    );
    for t in [&a, &b, &other] {
        broker.create_topic(t, 2);
    }
    broker.create_topic(&format!("{a}.dlq"), 1);
    let cfg = synth(300);
    produce(&broker.bootstrap, &a, &synth_records(&cfg, 0..100, 2));
    produce(&broker.bootstrap, &b, &synth_records(&cfg, 100..200, 2));
    produce(&broker.bootstrap, &other, &synth_records(&cfg, 200..300, 2));
    // A dead letter already sitting in a matching topic must not be ingested.
    produce(
        &broker.bootstrap,
        &format!("{a}.dlq"),
        &synth_records(&cfg, 250..251, 1),
    );
    let regex = format!("^{}\\..*", prefix.replace('-', "\\-"));
    let mut c = Connector::start(&broker.bootstrap, &[], &random_name("g"), |c| {
        c.kafka.topics = Vec::new();
        c.kafka.topic_regex = Some(regex.clone());
    });
    c.wait_for("both matching topics", Duration::from_secs(60), |c| {
        c.stored(&a, 2) + c.stored(&b, 2) >= 200
    });
    std::thread::sleep(Duration::from_secs(1));
    c.stop().unwrap();
    let rows = c.store.scan_all("Event").unwrap();
    assert_eq!(rows.len(), 200, "topics {a} and {b} only (regex {regex})");
    assert_eq!(c.store.offset(&other, 0).unwrap(), None);
    assert_eq!(c.store.offset(&format!("{a}.dlq"), 0).unwrap(), None);
}

/// Events the broker deletes before the connector reads them (retention: librdkafka's mock
/// keeps 5 MB per partition) are gone from Kafka; the connector counts them in
/// `streamtally_events_skipped_total{reason="retention"}` and logs an error instead of
/// passing over them silently, and stores everything still there.
#[test]
fn events_deleted_by_retention_before_they_are_read_are_counted() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let broker = TestBroker::mock(1);
    let topic = random_name("events");
    broker.create_topic(&topic, 1);
    let org = uuid::Uuid::new_v4();
    let pad = "x".repeat(2000);
    let records = |from: usize, n: usize| -> Vec<TestRecord> {
        (from..from + n)
            .map(|i| {
                let payload = serde_json::json!({
                    "org_id": org, "event_type": "track", "event_name": "retained",
                    "user_id": format!("u{i}"), "properties": {"pad": pad},
                });
                (
                    None,
                    Some(payload.to_string().into_bytes()),
                    Vec::new(),
                    Some(0),
                )
            })
            .collect()
    };
    produce(&broker.bootstrap, &topic, &records(0, 50));
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        |_| {},
    );
    c.wait_for("the first 50 events", Duration::from_secs(60), |c| {
        c.stored(&topic, 1) >= 50
    });
    c.stop().unwrap();
    // While the connector is stopped, ~8 MB more: the oldest of them are deleted.
    produce(&broker.bootstrap, &topic, &records(50, 4000));
    let probe: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    let (low, high) = probe
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .unwrap();
    assert!(
        low > 50 && high == 4050,
        "the mock kept everything: log {low}..{high}"
    );

    c.restart();
    c.wait_for(
        "the events still in the log",
        Duration::from_secs(60),
        |c| c.stored(&topic, 1) >= high,
    );
    c.stop().unwrap();
    let rows = c.store.scan_all("Event").unwrap().len() as i64;
    assert_eq!(rows, 50 + (high - low), "log {low}..{high}");
    let metrics = c.metrics.encode();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("streamtally_events_skipped_total") && l.contains("retention"))
        .unwrap_or_else(|| panic!("no retention count in:\n{metrics}"));
    assert!(
        line.ends_with(&format!(" {}", low - 50)),
        "{line}: expected {} deleted before they were read",
        low - 50
    );
    println!(
        "retention: {} of 4050 deleted before they were read and counted; {rows} stored",
        low - 50
    );
}

#[test]
fn offset_commits_the_broker_refuses_are_repaired_while_idle() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let broker = TestBroker::mock(3);
    let topic = random_name("events");
    broker.create_topic(&topic, 3);
    let n = 3000u64;
    let cfg = synth(n);
    let group = random_name("g");
    produce(&broker.bootstrap, &topic, &synth_records(&cfg, 0..n / 3, 3));
    // Batches of up to 2 s: the rest arrives in fewer batches than the broker refuses commits,
    // so no later batch's commit gets through and repairs them.
    let c = Connector::start(&broker.bootstrap, &[topic.as_str()], &group, |cfg| {
        cfg.batching.max_batch_delay_ms = 2000;
    });
    c.wait_for("the first third stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) as u64 >= n / 3
    });
    c.wait_for("the first third committed", Duration::from_secs(30), |c| {
        committed_offsets(&broker.bootstrap, &group, &topic, 3) == c.positions(&topic, 3)
    });
    // The broker now refuses the next offset commits; the connector then goes idle, so no
    // later batch commits again.
    broker.mock_cluster().unwrap().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 3],
    );
    produce(&broker.bootstrap, &topic, &synth_records(&cfg, n / 3..n, 3));
    c.wait_for("every event stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) as u64 >= n
    });
    c.wait_for(
        "Kafka's committed offsets to catch up with the store while idle",
        Duration::from_secs(60),
        |c| committed_offsets(&broker.bootstrap, &group, &topic, 3) == c.positions(&topic, 3),
    );
    let m = c.metrics.encode();
    assert!(
        !m.contains("streamtally_kafka_commit_repairs_total 0"),
        "the refused commits were repaired by the idle check, not by a later batch:\n{m}"
    );
    assert_eq!(c.store.scan_all("Event").unwrap().len() as u64, n);
}

/// A run killed after a durable write and before its Kafka commit leaves Kafka behind the
/// store, and the next run has nothing left to read, so no batch would commit. Stand-in: a
/// store drained in one group, then reopened in a new group with no commits at all.
#[test]
fn kafka_catches_up_with_a_store_that_is_ahead_at_assignment() {
    let broker = TestBroker::mock(3);
    let topic = random_name("events");
    broker.create_topic(&topic, 3);
    let n = 1500u64;
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&synth(n), 0..n, 3),
    );
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        |_| {},
    );
    c.wait_for("every event stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) as u64 >= n
    });
    let other = random_name("other");
    c.restart_with(|cfg| cfg.kafka.group_id = other.clone());
    let stored = c.positions(&topic, 3);
    assert!(
        !stored.contains(&-1),
        "every partition has a stored position: {stored:?}"
    );
    assert_eq!(
        committed_offsets(&broker.bootstrap, &other, &topic, 3),
        vec![-1; 3],
        "the new group starts with no commits"
    );
    c.wait_for(
        "the new group's Kafka offsets to reach the stored positions with nothing to read",
        Duration::from_secs(60),
        |_| committed_offsets(&broker.bootstrap, &other, &topic, 3) == stored,
    );
    let m = c.metrics.encode();
    assert!(
        !m.contains("streamtally_kafka_commit_repairs_total 0"),
        "caught up by the check after the assignment:\n{m}"
    );
    assert!(
        m.contains(&format!(
            "streamtally_events_consumed_total{{topic=\"{topic}\"}} 0"
        )) || !m.contains("streamtally_events_consumed_total{"),
        "nothing was read again: {m}"
    );
    assert_eq!(c.store.scan_all("Event").unwrap().len() as u64, n);
}
