//! Issue "Reliability" 2: deduplication is per (org, id). The same id in two orgs is two
//! events; the same (org, id) with the same content is a duplicate (`kind="same"`), with
//! other content a conflict (`kind="conflict"`, first write wins, dead-lettered on request).
//! Against librdkafka's mock cluster and the real store.

use crate::common::broker::{consume_all, produce, random_name, TestBroker, TestRecord};
use crate::common::Connector;
use rdkafka::message::{Headers, Message};
use std::time::Duration;
use streamtally::store::{Row, Value, WriteBatch};

const ORG_A: &str = "0a0a0a0a-0000-4000-8000-00000000000a";
const ORG_B: &str = "0b0b0b0b-0000-4000-8000-00000000000b";
const ID: &str = "5f1c8a2e-9b7d-4e3f-a1c2-d3e4f5a6b7c8";

fn event(org: &str, name: &str, props: &str) -> TestRecord {
    let json = format!(
        r#"{{"id":"{ID}","org_id":"{org}","event_type":"track","event_name":"{name}","user_id":"u1","timestamp":"2026-11-30T10:00:00.123456Z","properties":{props}}}"#
    );
    (None, Some(json.into_bytes()), Vec::new(), Some(0))
}

/// Org A's event; org B's event with the same id (other content); org A's again with the same
/// content (properties in another key order and spacing); org A's with another name.
fn records() -> Vec<TestRecord> {
    vec![
        event(ORG_A, "signup", r#"{"plan":"pro","n":1}"#),
        event(ORG_B, "login", r#"{"plan":"free"}"#),
        event(ORG_A, "signup", r#"{ "n": 1, "plan": "pro" }"#),
        event(ORG_A, "purchase", r#"{"plan":"pro","n":1}"#),
    ]
}

fn counter(metrics: &str, name: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What [`records`] stores: org A's first event and org B's, both under the producer's id.
fn both_orgs_events() -> Vec<(String, String, String)> {
    vec![
        (ORG_A.into(), ID.into(), "signup".into()),
        (ORG_B.into(), ID.into(), "login".into()),
    ]
}

/// The stored events as the API shows them, (org, id, name).
fn api_events(c: &Connector) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = c
        .store
        .scan_all("Event")
        .unwrap()
        .iter()
        .map(|row| {
            let j = serde_json::to_value(streamtally::gateway::events::EventJson::from_row(row))
                .unwrap();
            (
                j["org_id"].as_str().unwrap().to_string(),
                j["id"].as_str().unwrap().to_string(),
                j["event_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_same_id_in_two_orgs_is_two_events_and_a_changed_resend_is_a_conflict() {
    let broker = TestBroker::mock(1);
    let topic = random_name("events");
    broker.create_topic(&topic, 1);
    produce(&broker.bootstrap, &topic, &records());
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        |_| {},
    );
    c.wait_for("every record", Duration::from_secs(60), |c| {
        c.positions(&topic, 1) == vec![4]
    });
    c.stop().unwrap();
    assert_eq!(
        api_events(&c),
        both_orgs_events(),
        "both orgs' events, each under the id its producer gave; org A's first write kept"
    );
    let m = c.metrics.encode();
    let topic_label = format!("topic=\"{topic}\"");
    assert_eq!(
        counter(&m, "streamtally_events_stored_total", &topic_label),
        2,
        "{m}"
    );
    let kind = |k: &str| {
        let labels = format!("{topic_label},kind=\"{k}\"");
        counter(&m, "streamtally_events_duplicate_total", &labels)
    };
    assert_eq!(kind("same"), 1, "{m}");
    assert_eq!(kind("conflict"), 1, "{m}");
    // Read again from the start (a new store position is not needed: a restart re-reads
    // nothing), and the same records produced again are all duplicates.
    produce(&broker.bootstrap, &topic, &records());
    c.restart();
    c.wait_for("the re-sent records", Duration::from_secs(60), |c| {
        c.positions(&topic, 1) == vec![8]
    });
    c.stop().unwrap();
    assert_eq!(api_events(&c).len(), 2, "nothing stored twice");
}

#[test]
fn a_conflicting_resend_is_dead_lettered_when_asked() {
    let broker = TestBroker::mock(1);
    let topic = random_name("events");
    broker.create_topic(&topic, 1);
    broker.create_topic(&format!("{topic}.dlq"), 1);
    produce(&broker.bootstrap, &topic, &records());
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        |cfg| {
            cfg.kafka.dead_letter.id_conflicts = true;
        },
    );
    c.wait_for("every record", Duration::from_secs(60), |c| {
        c.positions(&topic, 1) == vec![4]
    });
    c.stop().unwrap();
    assert_eq!(api_events(&c).len(), 2);
    let dlq = consume_all(
        &broker.bootstrap,
        &format!("{topic}.dlq"),
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dlq.len(), 1, "only the conflicting re-send");
    let h = dlq[0].headers().unwrap();
    let get = |name: &str| {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        get("streamtally.reason_code").as_deref(),
        Some("id_conflict")
    );
    assert_eq!(get("streamtally.source_offset").as_deref(), Some("3"));
    assert!(String::from_utf8_lossy(dlq[0].payload().unwrap()).contains("purchase"));
}

#[test]
fn a_store_written_before_per_org_ids_stores_nothing_twice() {
    let broker = TestBroker::mock(1);
    let topic = random_name("events");
    broker.create_topic(&topic, 1);
    let mut c = Connector::start(
        &broker.bootstrap,
        &[topic.as_str()],
        &random_name("g"),
        |_| {},
    );
    // A row as the earlier releases wrote it: keyed by the producer's id, no `event_id`.
    let id = *uuid::Uuid::parse_str(ID).unwrap().as_bytes();
    let org = *uuid::Uuid::parse_str(ORG_A).unwrap().as_bytes();
    let row = Row::new()
        .with("id", Value::Uuid(id))
        .with("org_id", Value::Uuid(org))
        .with("event_type", Value::String("track".into()))
        .with("event_name", Value::String("signup".into()))
        .with("user_id", Value::String("u1".into()))
        .with(
            "properties",
            Value::String(r#"{"plan":"pro","n":1}"#.into()),
        )
        .with("timestamp", Value::Timestamp(1_764_496_800_123_456))
        .with("date", Value::String("2026-11-30".into()))
        .with("hour", Value::Int32(10));
    let mut batch = WriteBatch::new();
    batch.insert("Event", row);
    c.store.write_blocking(batch).unwrap();
    produce(&broker.bootstrap, &topic, &records());
    c.wait_for("every record", Duration::from_secs(60), |c| {
        c.positions(&topic, 1) == vec![4]
    });
    c.stop().unwrap();
    assert_eq!(api_events(&c), both_orgs_events());
}
