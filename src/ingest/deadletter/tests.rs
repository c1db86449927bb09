//! Unit tests of the dead-letter producer's pieces: refusals, limits, envelopes.
use super::*;

fn refusal(code: RDKafkaErrorCode, at_send: bool) -> Refusal {
    Refusal::of(&KafkaError::MessageProduction(code), at_send, 1_000_000)
}

#[test]
fn refusals_name_what_refused_the_record() {
    let local = refusal(RDKafkaErrorCode::MessageSizeTooLarge, true);
    assert_eq!((local.by, local.too_large), ("local producer limit", true));
    assert!(
        local.error.contains("message.max.bytes is 1000000"),
        "{}",
        local.error
    );
    let broker = refusal(RDKafkaErrorCode::MessageSizeTooLarge, false);
    assert_eq!((broker.by, broker.too_large), ("broker", true));
    assert!(refusal(RDKafkaErrorCode::MessageBatchTooLarge, false).too_large);
    let timeout = refusal(RDKafkaErrorCode::MessageTimedOut, false);
    assert_eq!((timeout.by, timeout.too_large), ("local producer", false));
    let auth = refusal(RDKafkaErrorCode::TopicAuthorizationFailed, false);
    assert_eq!((auth.by, auth.too_large), ("broker", false));
    assert!(auth.to_string().starts_with("refused by the broker: "));
}

#[test]
fn the_producer_limit_fits_what_the_consumer_can_receive() {
    let mut cfg = Config::default();
    assert_eq!(producer_max_bytes(&cfg), 100_000_000 + (1 << 20));
    cfg.kafka
        .client
        .insert("receive.message.max.bytes".into(), "2000000000".into());
    assert_eq!(
        producer_max_bytes(&cfg),
        1_000_000_000,
        "librdkafka's ceiling"
    );
    cfg.kafka
        .client
        .insert("message.max.bytes".into(), "1000000".into());
    assert_eq!(
        producer_max_bytes(&cfg),
        1_000_000,
        "the user's setting wins"
    );
}

#[test]
fn consumer_only_properties_stay_away_from_the_producer() {
    for key in [
        "fetch.max.bytes",
        "group.id",
        "isolation.level",
        "auto.offset.reset",
    ] {
        assert!(!applies_to_producer(key), "{key}");
    }
    for key in [
        "security.protocol",
        "sasl.username",
        "message.max.bytes",
        "client.id",
    ] {
        assert!(applies_to_producer(key), "{key}");
    }
}

#[test]
fn an_envelope_describes_the_record_without_most_of_it() {
    let letter = DeadLetter {
        topic: "events".into(),
        partition: 3,
        offset: 812,
        key: Some(b"k".to_vec()),
        payload: Some(vec![b'a'; 10_000]),
        headers: Vec::new(),
        reason: RejectReason::Oversized {
            size: 10_000,
            limit: 100,
        },
    };
    let refused = refusal(RDKafkaErrorCode::MessageSizeTooLarge, false);
    let v: serde_json::Value =
        serde_json::from_slice(&letter.envelope_value(4096, &refused)).unwrap();
    assert_eq!(v["value_length"], 10_000);
    assert_eq!(
        v["source"],
        serde_json::json!({"topic": "events", "partition": 3, "offset": 812})
    );
    assert_eq!(v["reason_code"], "oversized");
    assert_eq!(
        v["value_prefix_base64"].as_str().unwrap().len(),
        4096 / 3 * 4 + 4
    );
    assert_eq!(
        v["value_sha256"].as_str().unwrap().len(),
        64,
        "hex SHA-256 of the whole value"
    );
    assert!(v["refused"]
        .as_str()
        .unwrap()
        .starts_with("refused by the broker"));
}
