//! `streamtally produce` (src/produce.rs) against real brokers: librdkafka's mock cluster and
//! Tansu out of process (skipped, saying so, only when Tansu is not installed and CI is
//! unset). Each scenario runs on both, with random topic names.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::broker::{consume_all, random_name, TestBroker};
use rdkafka::Message;
use streamtally::produce::{run, ProduceError, ProduceOptions};
use tokio_util::sync::CancellationToken;

const REQUIRED_FIELDS: [&str; 6] = [
    "id",
    "org_id",
    "event_type",
    "event_name",
    "user_id",
    "session_id",
];

fn on_mock(scenario: fn(&TestBroker)) {
    let broker = TestBroker::mock(3);
    scenario(&broker);
}

fn on_tansu(scenario: fn(&TestBroker)) {
    match TestBroker::tansu() {
        Some(broker) => scenario(&broker),
        None => eprintln!("SKIPPED: Tansu is not installed (and CI is unset)"),
    }
}

fn log_broker(scenario: &str, broker: &TestBroker) {
    eprintln!(
        "{scenario}: running on the {} at {}",
        broker.kind, broker.bootstrap
    );
}

fn synthetic_events_arrive_valid_and_keyed(broker: &TestBroker) {
    log_broker("synthetic 5000", broker);
    let topic = random_name("produce-synth");
    broker.create_topic(&topic, 3);
    let mut opts = ProduceOptions::new(&broker.bootstrap, &topic);
    opts.events = Some(5000);
    opts.orgs = 5;
    let before = chrono::Utc::now();
    let summary = run(&opts, &CancellationToken::new()).expect("produce run");
    assert_eq!(
        (summary.sent, summary.failed),
        (5000, 0),
        "{:?}",
        summary.failures
    );
    assert!(!summary.interrupted);

    let messages = consume_all(&broker.bootstrap, &topic, 5000, Duration::from_secs(60));
    assert_eq!(messages.len(), 5000, "records read back from '{topic}'");
    let mut ids = HashSet::new();
    let mut orgs = HashSet::new();
    let mut partitions_of_user: HashMap<String, HashSet<i32>> = HashMap::new();
    for m in &messages {
        let payload = m.payload().expect("payload");
        let v: serde_json::Value = serde_json::from_slice(payload).expect("valid JSON");
        assert!(v.is_object());
        for field in REQUIRED_FIELDS {
            assert!(v[field].is_string(), "{field} missing in {v}");
        }
        assert!(v["properties"].is_object(), "properties in {v}");
        let ts = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().expect("ts"))
            .expect("RFC 3339 timestamp")
            .to_utc();
        assert!(
            ts >= before - chrono::Duration::days(1) - chrono::Duration::minutes(1)
                && ts <= chrono::Utc::now(),
            "timestamp {ts} is not within the last day"
        );
        uuid::Uuid::parse_str(v["id"].as_str().expect("id")).expect("id is a uuid");
        uuid::Uuid::parse_str(v["org_id"].as_str().expect("org")).expect("org_id is a uuid");
        let user = v["user_id"].as_str().expect("user").to_owned();
        assert_eq!(m.key(), Some(user.as_bytes()), "keyed by user_id");
        ids.insert(v["id"].as_str().expect("id").to_owned());
        orgs.insert(v["org_id"].as_str().expect("org").to_owned());
        partitions_of_user
            .entry(user)
            .or_default()
            .insert(m.partition());
    }
    assert_eq!(ids.len(), 5000, "distinct event ids");
    assert_eq!(orgs.len(), 5, "--orgs 5");
    assert!(
        partitions_of_user.values().all(|p| p.len() == 1),
        "a user's events stay on one partition"
    );
    let used: HashSet<i32> = messages.iter().map(|m| m.partition()).collect();
    assert_eq!(used.len(), 3, "keys spread over all 3 partitions");
}

fn ndjson_lines_arrive_byte_identical(broker: &TestBroker) {
    log_broker("ndjson", broker);
    let topic = random_name("produce-ndjson");
    broker.create_topic(&topic, 3);
    let lines: [&[u8]; 3] = [
        br#"{"org_id":"7d4e0f7c-6a43-5f0e-9a51-2a0f0d6b8e11","event_type":"track","event_name":"click","user_id":"u1","properties":{"a":1}}"#,
        b"{\"org_id\": not json at all \xff\xfe",
        br#"{"event":"Signed Up","userId":"u2","messageId":"m-1","properties":{"plan":"pro"}}"#,
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.ndjson");
    let mut file = lines.join(&b'\n');
    file.extend_from_slice(b"\n\n"); // a trailing blank line is skipped, not sent
    std::fs::write(&path, &file).expect("write ndjson");

    let mut opts = ProduceOptions::new(&broker.bootstrap, &topic);
    opts.input = Some(path);
    let summary = run(&opts, &CancellationToken::new()).expect("produce run");
    assert_eq!((summary.sent, summary.failed), (3, 0));

    let messages = consume_all(&broker.bootstrap, &topic, 3, Duration::from_secs(30));
    assert_eq!(messages.len(), 3, "records read back from '{topic}'");
    let mut got: Vec<&[u8]> = messages
        .iter()
        .map(|m| m.payload().expect("payload"))
        .collect();
    let mut want = lines.to_vec();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "every line arrives byte for byte, the invalid one too"
    );
    let key_of = |needle: &[u8]| {
        messages
            .iter()
            .find(|m| m.payload() == Some(needle))
            .and_then(|m| m.key().map(<[u8]>::to_vec))
    };
    assert_eq!(key_of(lines[0]), Some(b"u1".to_vec()));
    assert_eq!(key_of(lines[1]), None);
    assert_eq!(key_of(lines[2]), Some(b"u2".to_vec()));
}

fn missing_file_is_named(broker: &TestBroker) {
    log_broker("missing file", broker);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no-such-events.ndjson");
    let mut opts = ProduceOptions::new(&broker.bootstrap, random_name("produce-missing"));
    opts.input = Some(path.clone());
    let err = run(&opts, &CancellationToken::new()).expect_err("a missing file is an error");
    assert!(
        matches!(&err, ProduceError::OpenInput { path: p, .. } if *p == path),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
}

fn rate_limit_holds(broker: &TestBroker) {
    log_broker("rate 2000/s", broker);
    let topic = random_name("produce-rate");
    broker.create_topic(&topic, 3);
    let mut opts = ProduceOptions::new(&broker.bootstrap, &topic);
    opts.events = Some(1000);
    opts.rate_per_s = Some(2000);
    let started = Instant::now();
    let summary = run(&opts, &CancellationToken::new()).expect("produce run");
    let took = started.elapsed();
    assert_eq!((summary.sent, summary.failed), (1000, 0));
    // 1000 records at 2000/s take 0.5 s; a lower bound only, machines vary upwards.
    assert!(took >= Duration::from_millis(400), "took {took:?}");
    assert!(
        summary.elapsed >= Duration::from_millis(400),
        "{:?}",
        summary.elapsed
    );
}

fn missing_topic_is_an_error(broker: &TestBroker) {
    log_broker("missing topic", broker);
    let topic = random_name("produce-absent");
    let opts = ProduceOptions::new(&broker.bootstrap, &topic);
    let err = run(&opts, &CancellationToken::new()).expect_err("the topic does not exist");
    assert!(
        matches!(&err, ProduceError::TopicMissing { topic: t, .. } if *t == topic),
        "{err:?}"
    );
    assert!(err.to_string().contains(&topic), "{err}");
}

#[test]
fn synthetic_events_on_mock() {
    on_mock(synthetic_events_arrive_valid_and_keyed);
}

#[test]
fn synthetic_events_on_tansu() {
    on_tansu(synthetic_events_arrive_valid_and_keyed);
}

#[test]
fn ndjson_on_mock() {
    on_mock(ndjson_lines_arrive_byte_identical);
}

#[test]
fn ndjson_on_tansu() {
    on_tansu(ndjson_lines_arrive_byte_identical);
}

#[test]
fn missing_file_on_mock() {
    on_mock(missing_file_is_named);
}

#[test]
fn missing_file_on_tansu() {
    on_tansu(missing_file_is_named);
}

#[test]
fn rate_limit_on_mock() {
    on_mock(rate_limit_holds);
}

#[test]
fn rate_limit_on_tansu() {
    on_tansu(rate_limit_holds);
}

#[test]
fn missing_topic_on_mock() {
    on_mock(missing_topic_is_an_error);
}

#[test]
fn missing_topic_on_tansu() {
    on_tansu(missing_topic_is_an_error);
}

/// --partitions creates a missing topic through the admin API (not implemented by the mock).
#[test]
fn partitions_flag_creates_the_topic_on_tansu() {
    on_tansu(|broker| {
        log_broker("--partitions", broker);
        let topic = random_name("produce-create");
        let mut opts = ProduceOptions::new(&broker.bootstrap, &topic);
        opts.events = Some(100);
        opts.partitions = Some(4);
        let summary = run(&opts, &CancellationToken::new()).expect("produce run");
        assert_eq!((summary.sent, summary.failed), (100, 0));
        let messages = consume_all(&broker.bootstrap, &topic, 100, Duration::from_secs(30));
        assert_eq!(messages.len(), 100);
        let used: HashSet<i32> = messages.iter().map(|m| m.partition()).collect();
        assert!(
            used.iter().all(|p| (0..4).contains(p)) && used.len() > 1,
            "{used:?}"
        );
    });
}

/// Nothing listens: the error names the brokers once message.timeout.ms has passed.
#[test]
fn unreachable_broker_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let brokers = format!("127.0.0.1:{port}");
    eprintln!("unreachable broker: running against nothing at {brokers}");
    let mut opts = ProduceOptions::new(&brokers, "events");
    opts.client = BTreeMap::from([("message.timeout.ms".to_owned(), "1500".to_owned())]);
    let started = Instant::now();
    let err = run(&opts, &CancellationToken::new()).expect_err("nothing listens");
    assert!(
        matches!(&err, ProduceError::BrokerUnreachable { brokers: b, timeout_ms: 1500, .. } if *b == brokers),
        "{err:?}"
    );
    assert!(err.to_string().contains(&brokers), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// The harness itself: a Tansu restart comes back on the same port, empty (memory storage).
#[test]
fn tansu_restart_keeps_the_port_and_loses_the_data() {
    let Some(mut broker) = TestBroker::tansu() else {
        eprintln!("SKIPPED: Tansu is not installed (and CI is unset)");
        return;
    };
    log_broker("restart", &broker);
    let topic = broker.new_topic("harness-restart");
    common::broker::produce(
        &broker.bootstrap,
        &topic,
        &[(
            Some(b"k".to_vec()),
            Some(b"v".to_vec()),
            vec![("h".to_owned(), b"1".to_vec())],
            Some(0),
        )],
    );
    let before = consume_all(&broker.bootstrap, &topic, 1, Duration::from_secs(10));
    assert_eq!(before.len(), 1);
    let headers = before[0].headers().expect("headers");
    assert_eq!(rdkafka::message::Headers::count(headers), 1);
    broker.restart();
    broker.create_topic(&topic, 3);
    let after = consume_all(&broker.bootstrap, &topic, 1, Duration::from_secs(2));
    assert!(
        after.is_empty(),
        "memory storage starts empty after a restart"
    );
}
