//! Issue "Reliability" 1: no record stalls the connector. A record too big for the
//! dead-letter topic is dead-lettered whole, or as an envelope, and a partition whose dead
//! letter cannot be delivered waits alone while the others flow. Against librdkafka's mock
//! cluster (its Produce errors and topic errors are what make the refusals deterministic).

use crate::common::broker::{consume_all, produce, random_name, TestBroker, TestRecord};
use crate::common::Connector;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sha2::Digest;
use std::time::Duration;
use streamtally::produce::synthetic_json;
use streamtally::synth::SynthConfig;

const ORG: &str = "7d4f5c1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f";

fn synth() -> SynthConfig {
    SynthConfig {
        orgs: 2,
        ..crate::common::synth(1000)
    }
}

/// A valid JSON event of about `size` bytes (its properties carry the padding).
fn big_event(size: usize) -> Vec<u8> {
    let pad = "x".repeat(size);
    format!(
        r#"{{"org_id":"{ORG}","event_type":"track","event_name":"big","user_id":"u1","properties":{{"pad":"{pad}"}}}}"#
    )
    .into_bytes()
}

fn record(payload: Vec<u8>, partition: i32) -> TestRecord {
    (
        Some(b"key-1".to_vec()),
        Some(payload),
        vec![("trace".into(), b"t1".to_vec())],
        Some(partition),
    )
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Topic with 2 partitions: partition 0 holds a good event, the big record, a good event;
/// partition 1 holds `p1` good events. Returns (topic, big payload).
fn setup(broker: &TestBroker, p1: u64) -> (String, Vec<u8>) {
    let topic = random_name("events");
    broker.create_topic(&topic, 2);
    broker.create_topic(&format!("{topic}.dlq"), 1);
    let cfg = synth();
    let big = big_event(1_500_000);
    let mut records = vec![
        record(synthetic_json(&cfg, 0).into_bytes(), 0),
        record(big.clone(), 0),
        record(synthetic_json(&cfg, 1).into_bytes(), 0),
    ];
    for i in 0..p1 {
        records.push(record(synthetic_json(&cfg, 100 + i).into_bytes(), 1));
    }
    produce(&broker.bootstrap, &topic, &records);
    (topic, big)
}

/// Runs a connector until both partitions of [`setup`]'s topic are past every record, and
/// returns it (stopped) with the one dead letter.
fn drain_to_the_end(
    broker: &TestBroker,
    topic: &str,
    tweak: impl FnOnce(&mut streamtally::config::Config),
) -> (Connector, Vec<OwnedMessage>) {
    let mut c = Connector::start(&broker.bootstrap, &[topic], &random_name("g"), tweak);
    c.wait_for(
        "both partitions past every record",
        Duration::from_secs(60),
        |c| c.positions(topic, 2) == vec![3, 5],
    );
    c.stop().unwrap();
    let dlq = consume_all(
        &broker.bootstrap,
        &format!("{topic}.dlq"),
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dlq.len(), 1);
    (c, dlq)
}

#[test]
fn an_oversized_record_is_dead_lettered_whole_and_the_partitions_move_on() {
    let broker = TestBroker::mock(2);
    let (topic, big) = setup(&broker, 5);
    let (c, dlq) = drain_to_the_end(&broker, &topic, |_| {});
    assert_eq!(c.store.scan_all("Event").unwrap().len(), 7);
    assert_eq!(dlq[0].payload().unwrap(), &big[..], "the whole record");
    assert_eq!(
        header(&dlq[0], "streamtally.reason_code").as_deref(),
        Some("oversized")
    );
    assert_eq!(header(&dlq[0], "streamtally.truncated"), None);
    assert_eq!(header(&dlq[0], "trace").as_deref(), Some("t1"));
}

/// Checks an envelope against the record it stands for.
fn assert_envelope(m: &OwnedMessage, big: &[u8], topic: &str, refused_by: &str) {
    assert_eq!(header(m, "streamtally.truncated").as_deref(), Some("true"));
    assert_eq!(
        header(m, "streamtally.reason_code").as_deref(),
        Some("oversized")
    );
    assert_eq!(
        header(m, "trace").as_deref(),
        Some("t1"),
        "small headers are kept"
    );
    assert_eq!(m.key(), Some(&b"key-1"[..]));
    let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    assert_eq!(v["value_length"], big.len());
    let sha: String = sha2::Sha256::digest(big)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v["value_sha256"], sha);
    use base64::Engine;
    let prefix = base64::engine::general_purpose::STANDARD
        .decode(v["value_prefix_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(prefix, &big[..4096], "the first envelope_prefix_kib KiB");
    assert_eq!(v["source"]["topic"], topic);
    assert_eq!(v["source"]["partition"], 0);
    assert_eq!(v["source"]["offset"], 1);
    assert_eq!(v["reason_code"], "oversized");
    let refused = v["refused"].as_str().unwrap();
    assert!(
        refused.starts_with(&format!("refused by the {refused_by}")),
        "{refused}"
    );
    assert!(m.payload().unwrap().len() < 8192, "an envelope is small");
}

#[test]
fn a_record_over_the_producer_limit_is_dead_lettered_as_an_envelope() {
    let broker = TestBroker::mock(2);
    let (topic, big) = setup(&broker, 5);
    // `[kafka.client] message.max.bytes` reaches the dead-letter producer.
    let (_, dlq) = drain_to_the_end(&broker, &topic, |cfg| {
        cfg.kafka
            .client
            .insert("message.max.bytes".into(), "1000000".into());
    });
    assert_envelope(&dlq[0], &big, &topic, "local producer limit");
}

#[test]
fn a_record_the_broker_refuses_for_its_size_is_dead_lettered_as_an_envelope() {
    let broker = TestBroker::mock(2);
    let (topic, big) = setup(&broker, 5);
    // The next Produce request (the dead letter's) is refused as the broker's size limit would.
    broker.mock_cluster().expect("mock").request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let (_, dlq) = drain_to_the_end(&broker, &topic, |_| {});
    assert_envelope(&dlq[0], &big, &topic, "broker");
}

fn readiness(c: &Connector) -> Vec<streamtally::gateway::health::Check> {
    streamtally::gateway::health::readiness(
        &c.metrics,
        &streamtally::config::Config::default().metrics.readiness,
        chrono::Utc::now().timestamp_millis(),
        None,
    )
}

/// Makes the mock cluster refuse every produce to `dlq_topic` until its error is cleared.
fn refuse_dead_letters<'a>(
    broker: &'a TestBroker,
    dlq_topic: &str,
) -> &'a rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = broker.mock_cluster().expect("mock");
    mock.topic_error(
        dlq_topic,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
    )
    .unwrap();
    mock
}

#[test]
fn a_partition_whose_dead_letter_cannot_be_delivered_waits_alone() {
    let broker = TestBroker::mock(2);
    let (topic, _) = setup(&broker, 5);
    let dlq_topic = format!("{topic}.dlq");
    let mock = refuse_dead_letters(&broker, &dlq_topic);
    let tweak = |cfg: &mut streamtally::config::Config| {
        cfg.kafka.retry_backoff_initial_ms = 100;
        cfg.kafka.retry_backoff_max_ms = 500;
    };
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        tweak,
    );
    c.wait_for(
        "partition 1 flowing, partition 0 held at the bad record",
        Duration::from_secs(60),
        |c| c.positions(&topic, 2) == vec![1, 5],
    );
    // More events on the other partition keep flowing while partition 0 waits.
    let cfg = synth();
    let more: Vec<TestRecord> = (0..5)
        .map(|i| record(synthetic_json(&cfg, 200 + i).into_bytes(), 1))
        .collect();
    produce(&broker.bootstrap, &topic, &more);
    c.wait_for(
        "partition 1 past the new events",
        Duration::from_secs(30),
        |c| c.positions(&topic, 2) == vec![1, 10],
    );
    // /readyz names the partition, the offset and what refused the dead letter.
    c.wait_for(
        "readiness to name the waiting partition",
        Duration::from_secs(30),
        |c| {
            readiness(c)
                .iter()
                .any(|k| k.name == "dead_letters" && !k.ok && k.detail.contains("refused by the"))
        },
    );
    let check = readiness(&c)
        .into_iter()
        .find(|k| k.name == "dead_letters")
        .unwrap();
    assert!(
        check
            .detail
            .contains(&format!("{topic}[0] waits at offset 1")),
        "{}",
        check.detail
    );
    assert!(check.detail.contains("(oversized)"), "{}", check.detail);
    // Its lag gauge shows the records waiting behind it.
    let lag_line =
        format!("streamtally_partition_lag_events{{topic=\"{topic}\",partition=\"0\"}} 2");
    c.wait_for(
        "the waiting partition's lag",
        Duration::from_secs(30),
        |c| c.metrics.encode().contains(&lag_line),
    );
    // A graceful stop while the dead letter is pending: Ok, nothing past the record stored.
    c.stop()
        .expect("a pending dead letter is not an error at shutdown");
    assert_eq!(c.positions(&topic, 2), vec![1, 10]);
    // Once the dead-letter topic takes it, the record is read again and the partition moves.
    mock.topic_error(&dlq_topic, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    c.restart();
    c.wait_for(
        "partition 0 past every record",
        Duration::from_secs(60),
        |c| c.positions(&topic, 2) == vec![3, 10],
    );
    assert!(readiness(&c)
        .iter()
        .all(|k| k.name != "dead_letters" || k.ok));
    c.stop().unwrap();
    assert_eq!(c.store.scan_all("Event").unwrap().len(), 12);
    let dlq = consume_all(&broker.bootstrap, &dlq_topic, 1, Duration::from_secs(30));
    assert_eq!(dlq.len(), 1);
}

#[test]
fn a_dead_letter_refused_for_a_while_is_delivered_without_a_restart() {
    let broker = TestBroker::mock(2);
    let (topic, big) = setup(&broker, 3);
    let dlq_topic = format!("{topic}.dlq");
    let mock = refuse_dead_letters(&broker, &dlq_topic);
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        |cfg| {
            cfg.kafka.retry_backoff_initial_ms = 100;
            cfg.kafka.retry_backoff_max_ms = 500;
        },
    );
    c.wait_for(
        "partition 0 held at the bad record",
        Duration::from_secs(60),
        |c| c.positions(&topic, 2) == vec![1, 3] && c.metrics.dead_letter_errors.get() >= 1,
    );
    mock.topic_error(&dlq_topic, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    c.wait_for(
        "partition 0 past every record",
        Duration::from_secs(60),
        |c| c.positions(&topic, 2) == vec![3, 3],
    );
    c.stop().unwrap();
    // The event after the dead letter was read again after the seek: stored once.
    assert_eq!(c.store.scan_all("Event").unwrap().len(), 5);
    let dlq = consume_all(&broker.bootstrap, &dlq_topic, 1, Duration::from_secs(30));
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].payload().unwrap(), &big[..]);
}
