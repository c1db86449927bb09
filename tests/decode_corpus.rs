//! The decoder's bad-input corpus (one case per reject kind, each checked for its DLQ code
//! and for a message that names the field and the value) and its good inputs of both
//! payload shapes. Pure: no broker, no store.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value as Json};
use std::time::Duration;
use streamtally::ingest::decode::{
    decode, event_id_for, event_id_for_message_id, DecodeOptions, DecodedEvent, RejectReason,
    SourceMeta,
};
use streamtally::store::Value;
use uuid::Uuid;

const ORG: &str = "0b6f3c1e-7d2a-4c53-9f0e-2a1b3c4d5e6f";
const OTHER_ORG: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const EVENT_ID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap()
}

fn opts() -> DecodeOptions {
    DecodeOptions {
        max_message_bytes: 1024,
        max_future_skew: Duration::from_secs(3600),
        default_org_id: None,
        org_id_header: "x-org-id".to_string(),
        now: now(),
    }
}

/// One message: payload plus the parts of the Kafka record and options a case varies.
#[derive(Default)]
struct Msg {
    payload: Option<Vec<u8>>,
    kafka_timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    default_org_id: Option<Uuid>,
}

impl Msg {
    fn json(v: Json) -> Msg {
        Msg::bytes(v.to_string().into_bytes())
    }
    fn bytes(b: impl Into<Vec<u8>>) -> Msg {
        Msg {
            payload: Some(b.into()),
            ..Msg::default()
        }
    }
    fn kafka_ts(mut self, ms: i64) -> Msg {
        self.kafka_timestamp_ms = Some(ms);
        self
    }
    fn header(mut self, name: &str, value: Option<&[u8]>) -> Msg {
        self.headers
            .push((name.to_string(), value.map(<[u8]>::to_vec)));
        self
    }
    fn key(mut self, key: &[u8]) -> Msg {
        self.key = Some(key.to_vec());
        self
    }
    fn default_org(mut self, org: &str) -> Msg {
        self.default_org_id = Some(Uuid::parse_str(org).unwrap());
        self
    }
    fn decode(&self) -> Result<DecodedEvent, RejectReason> {
        let meta = SourceMeta {
            topic: "events.web",
            partition: 4,
            offset: 1234,
            kafka_timestamp_ms: self.kafka_timestamp_ms,
            key: self.key.as_deref(),
            headers: &self.headers,
        };
        let opts = DecodeOptions {
            default_org_id: self.default_org_id,
            ..opts()
        };
        decode(self.payload.as_deref(), &meta, &opts)
    }
}

/// A valid native event with `field` set to `value`.
fn native_with(field: &str, value: Json) -> Msg {
    let mut v = json!({"org_id": ORG, "event_type": "track", "event_name": "signup"});
    v[field] = value;
    Msg::json(v)
}

fn native_without(field: &str) -> Msg {
    let mut v = json!({"org_id": ORG, "event_type": "track", "event_name": "signup"});
    v.as_object_mut().unwrap().remove(field);
    Msg::json(v)
}

fn nested_properties(levels: usize) -> Msg {
    let text = format!(
        r#"{{"org_id":"{ORG}","event_type":"t","event_name":"n","properties":{{"deep":{}{}}}}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    );
    Msg::bytes(text)
}

fn iso(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn bad_inputs_are_rejected_with_a_code_and_a_message_naming_field_and_value() {
    let two_hours_ahead = now() + chrono::Duration::hours(2);
    let cases: Vec<(&str, Msg, &str, &[&str])> = vec![
        (
            "tombstone",
            Msg::default(),
            "tombstone",
            &["payload", "tombstone"],
        ),
        (
            "empty value",
            Msg::bytes(""),
            "empty_payload",
            &["payload", "0 bytes"],
        ),
        (
            "oversized",
            // Not even JSON: the size is checked before anything is parsed.
            Msg::bytes(format!("{{{}", " ".repeat(1999))),
            "oversized",
            &["payload", "2000 bytes", "limit of 1024 bytes"],
        ),
        (
            "invalid UTF-8",
            Msg::bytes(*b"{\"org_id\": \"\xff\xfe\"}"),
            "invalid_utf8",
            &["payload", "byte 12", "0xff 0xfe"],
        ),
        (
            "truncated JSON",
            Msg::bytes(format!(r#"{{"org_id": "{ORG}", "event_type": "#)),
            "invalid_json",
            &["EOF while parsing", "line 1 column", "event_type"],
        ),
        (
            "trailing comma",
            Msg::bytes("{\"event_name\": \"a\",\n}"),
            "invalid_json",
            &["trailing comma", "line 2 column 1"],
        ),
        (
            "trailing garbage",
            Msg::bytes(format!(
                r#"{{"org_id":"{ORG}","event_type":"t","event_name":"n"}} extra"#
            )),
            "invalid_json",
            &["trailing characters", "extra"],
        ),
        (
            "nesting 70 deep",
            nested_properties(68),
            "nesting_too_deep",
            &["\"properties\"", "depth 70", "64"],
        ),
        (
            "nesting past serde's recursion limit",
            nested_properties(300),
            "nesting_too_deep",
            &["payload", "recursion limit exceeded", "line 1 column"],
        ),
        (
            "lone surrogate escape",
            Msg::bytes(format!(
                r#"{{"org_id":"{ORG}","event_type":"t","event_name":"\ud800"}}"#
            )),
            "invalid_json",
            &["hex escape", "line 1 column", "ud800"],
        ),
        (
            "array payload",
            Msg::bytes("[1, 2, 3]"),
            "not_an_object",
            &["payload", "an array: [1, 2, 3]"],
        ),
        (
            "string payload",
            Msg::bytes("\"signup\""),
            "not_an_object",
            &["a string: \"signup\""],
        ),
        (
            "null payload",
            Msg::bytes("null"),
            "not_an_object",
            &["payload", "got null: null"],
        ),
        (
            "number payload",
            Msg::bytes("42"),
            "not_an_object",
            &["a number", "42"],
        ),
        (
            "duplicate top-level key",
            Msg::bytes(format!(
                r#"{{"org_id":"{ORG}","event_type":"t","event_name":"a","event_name":"b"}}"#
            )),
            "duplicate_key",
            &["\"event_name\"", "more than once"],
        ),
        (
            "missing org_id",
            native_without("org_id"),
            "missing_field",
            &["org_id", "missing"],
        ),
        (
            "missing event_name",
            native_without("event_name"),
            "missing_field",
            &["event_name"],
        ),
        (
            "null event_type",
            native_with("event_type", Json::Null),
            "missing_field",
            &["event_type"],
        ),
        (
            "Segment track without event",
            Msg::json(json!({"type": "track", "userId": "u1", "orgId": ORG})),
            "missing_field",
            &["event", "missing"],
        ),
        (
            "event_name is a number",
            native_with("event_name", json!(42)),
            "wrong_type",
            &["event_name", "expected a string", "a number 42"],
        ),
        (
            "org_id is a number",
            native_with("org_id", json!(7)),
            "wrong_type",
            &["org_id", "a number 7"],
        ),
        (
            "user_id is an object",
            native_with("user_id", json!({"id": 1})),
            "wrong_type",
            &["user_id", "an object", "{\"id\":1}"],
        ),
        (
            "session_id is an array",
            native_with("session_id", json!(["s1"])),
            "wrong_type",
            &["session_id", "an array", "[\"s1\"]"],
        ),
        (
            "timestamp is a boolean",
            native_with("timestamp", json!(true)),
            "wrong_type",
            &["timestamp", "a boolean true"],
        ),
        (
            "Segment context is a string",
            Msg::json(json!({"event": "e", "orgId": ORG, "context": "web"})),
            "wrong_type",
            &["context", "a string \"web\""],
        ),
        (
            "Segment userId is a boolean",
            Msg::json(json!({"event": "e", "orgId": ORG, "userId": false})),
            "wrong_type",
            &["userId", "a boolean false"],
        ),
        (
            "empty event_type",
            native_with("event_type", json!("")),
            "empty_field",
            &["event_type", "\"\""],
        ),
        (
            "blank event_name",
            native_with("event_name", json!("   ")),
            "empty_field",
            &["event_name", "\"   \""],
        ),
        (
            "blank Segment type",
            Msg::json(json!({"event": "e", "orgId": ORG, "type": "  "})),
            "empty_field",
            &["type", "\"  \""],
        ),
        (
            "bad org_id uuid",
            native_with("org_id", json!("acme-corp")),
            "invalid_uuid",
            &["org_id", "\"acme-corp\"", "not a valid UUID"],
        ),
        (
            "bad id uuid",
            native_with("id", json!("1234")),
            "invalid_uuid",
            &["id", "\"1234\""],
        ),
        (
            "bad Segment orgId",
            Msg::json(json!({"event": "e", "orgId": "org-7"})),
            "invalid_uuid",
            &["orgId", "\"org-7\""],
        ),
        (
            "org_id header not a uuid",
            Msg::json(json!({"event": "e", "userId": "u"})).header("x-org-id", Some(b"acme")),
            "invalid_org_id_header",
            &["x-org-id", "\"acme\""],
        ),
        (
            "org_id header without a value",
            Msg::json(json!({"event": "e"})).header("x-org-id", None),
            "invalid_org_id_header",
            &["x-org-id", "null"],
        ),
        (
            "no org anywhere",
            Msg::json(json!({"event": "e", "userId": "u"})),
            "missing_org_id",
            &["org_id", "x-org-id", "default"],
        ),
        (
            "unparsable timestamp",
            native_with("timestamp", json!("yesterday")),
            "invalid_timestamp",
            &["timestamp", "\"yesterday\"", "RFC 3339"],
        ),
        (
            "timestamp without a zone",
            native_with("timestamp", json!("2024-05-01T10:00:00")),
            "invalid_timestamp",
            &["timestamp", "2024-05-01T10:00:00"],
        ),
        (
            "no such calendar day",
            native_with("timestamp", json!("2024-02-30T10:00:00Z")),
            "invalid_timestamp",
            &["timestamp", "\"2024-02-30T10:00:00Z\"", "out of range"],
        ),
        (
            "fractional epoch ms",
            native_with("timestamp", json!(1_717_000_000_000.5)),
            "invalid_timestamp",
            &["timestamp", "1717000000000.5", "whole number"],
        ),
        (
            "timestamp two hours ahead",
            native_with("timestamp", json!(iso(two_hours_ahead))),
            "timestamp_in_future",
            &[
                "timestamp",
                "2024-06-01T14:00:00",
                "7200000 ms ahead",
                "3600000",
            ],
        ),
        (
            "Kafka timestamp two hours ahead",
            native_without("timestamp").kafka_ts(two_hours_ahead.timestamp_millis()),
            "timestamp_in_future",
            &["kafka timestamp", "2024-06-01T14:00:00"],
        ),
        (
            "timestamp before 1970",
            native_with("timestamp", json!("1969-12-31T23:59:59Z")),
            "timestamp_before_epoch",
            &["timestamp", "1969-12-31T23:59:59Z", "1970"],
        ),
        (
            "negative epoch ms",
            native_with("timestamp", json!(-1)),
            "timestamp_before_epoch",
            &["timestamp", "-1"],
        ),
        (
            "epoch ms past u64",
            Msg::bytes(format!(
                r#"{{"org_id":"{ORG}","event_type":"t","event_name":"n","timestamp":123456789012345678901234567890}}"#
            )),
            "timestamp_out_of_range",
            &["timestamp", "1.2345678901234568e+29"],
        ),
        (
            "epoch ms past i64",
            native_with("timestamp", json!(u64::MAX)),
            "timestamp_out_of_range",
            &["timestamp", "18446744073709551615"],
        ),
        (
            "epoch ms past year 262143",
            native_with("timestamp", json!(i64::MAX)),
            "timestamp_out_of_range",
            &["timestamp", "9223372036854775807"],
        ),
        (
            "properties is an array",
            native_with("properties", json!([1, 2])),
            "properties_not_object",
            &["properties", "an array [1,2]"],
        ),
        (
            "properties is a string",
            native_with("properties", json!("{\"a\":1}")),
            "properties_not_object",
            &["properties", "a string"],
        ),
        (
            "event_name of 300 chars",
            native_with("event_name", json!("e".repeat(300))),
            "field_too_long",
            &["event_name", "300 characters", "256", "eeee"],
        ),
        (
            "Segment type of 257 chars",
            Msg::json(json!({"event": "e", "orgId": ORG, "type": "t".repeat(257)})),
            "field_too_long",
            &["type", "257 characters"],
        ),
        (
            "control character in event_name",
            native_with("event_name", json!("sign\u{7}up")),
            "control_character",
            &["event_name", "U+0007", "character 4", "\"sign\\u0007up\""],
        ),
        (
            "newline in Segment event",
            Msg::json(json!({"event": "a\nb", "orgId": ORG})),
            "control_character",
            &["event", "U+000A"],
        ),
    ];

    let mut codes = std::collections::BTreeSet::new();
    for (name, msg, code, needles) in &cases {
        let reason = match msg.decode() {
            Ok(e) => panic!("{name}: expected {code}, decoded {e:?}"),
            Err(r) => r,
        };
        let text = reason.to_string();
        assert_eq!(reason.code(), *code, "{name}: {text}");
        for needle in *needles {
            assert!(text.contains(needle), "{name}: {text:?} lacks {needle:?}");
        }
        assert!(
            text.chars().count() < 400,
            "{name}: message too long: {text}"
        );
        codes.insert(reason.code());
    }
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let all: std::collections::BTreeSet<_> = RejectReason::ALL_CODES.iter().copied().collect();
    assert_eq!(codes, all, "every reject code is covered by the corpus");
}

#[test]
fn long_values_are_truncated_in_messages() {
    let err = native_with("org_id", json!("z".repeat(500)))
        .decode()
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.code(), "invalid_uuid");
    assert!(
        text.contains(&format!("\"{}\"… is not", "z".repeat(100))),
        "{text}"
    );
    assert!(text.chars().count() < 250, "{text}");
}

fn ok(msg: Msg) -> DecodedEvent {
    match msg.decode() {
        Ok(e) => e,
        Err(r) => panic!("rejected as {}: {r}", r.code()),
    }
}

#[test]
fn native_event_with_every_field() {
    let e = ok(Msg::json(json!({
        "id": EVENT_ID,
        "org_id": ORG,
        "event_type": "track",
        "event_name": "checkout_completed",
        "user_id": "user-17",
        "session_id": 99,
        "properties": {"plan": "pro", "amount": 42, "items": [1, 2]},
        "timestamp": "2024-05-31T22:15:00.250+02:00",
        "unknown_field": "ignored",
    }))
    .key(b"user-17")
    .header("source", Some(b"web"))
    .header("trace", None));
    assert_eq!(
        e,
        DecodedEvent {
            id: Uuid::parse_str(EVENT_ID).unwrap(),
            id_from_payload: true,
            org_id: Uuid::parse_str(ORG).unwrap(),
            event_type: "track".into(),
            event_name: "checkout_completed".into(),
            user_id: Some("user-17".into()),
            session_id: Some("99".into()),
            properties: Some(r#"{"amount":42,"items":[1,2],"plan":"pro"}"#.into()),
            timestamp: Utc.with_ymd_and_hms(2024, 5, 31, 20, 15, 0).unwrap()
                + chrono::Duration::milliseconds(250),
            topic: "events.web".into(),
            partition: 4,
            offset: 1234,
            key: Some("user-17".into()),
            headers: Some(r#"{"source":"web","trace":null}"#.into()),
            dropped_fields: 1,
        }
    );
    let row = e.to_row();
    assert_eq!(row.get("date"), Some(&Value::String("2024-05-31".into())));
    assert_eq!(row.get("hour"), Some(&Value::Int32(20)));
    assert_eq!(row.get("kafka_key"), Some(&Value::String("user-17".into())));
    assert_eq!(
        row.get("kafka_headers"),
        Some(&Value::String(r#"{"source":"web","trace":null}"#.into()))
    );
    assert_eq!(row.get("ingested_at"), None);
}

#[test]
fn top_level_fields_the_shape_does_not_read_are_counted_as_dropped() {
    let native = ok(native_with("extra", json!({"a": 1})));
    assert_eq!(native.dropped_fields, 1);
    // Segment shape: `session_id` at the top level is a native field, not read here.
    let segment = ok(Msg::json(json!({
        "event": "e", "orgId": ORG, "userId": "u",
        "traits": {"plan": "pro"}, "integrations": {}, "session_id": "s",
    })));
    assert_eq!(segment.dropped_fields, 3);
    assert_eq!(ok(native_with("user_id", json!("u"))).dropped_fields, 0);
}

#[test]
fn id_is_derived_from_the_kafka_position_when_absent() {
    let e = ok(native_without("id"));
    assert_eq!(e.id, event_id_for("events.web", 4, 1234, None));
    assert!(!e.id_from_payload);
    // A re-read of the same record gets the same id; another offset does not.
    assert_eq!(ok(native_without("id")).id, e.id);
    assert_ne!(e.id, event_id_for("events.web", 4, 1235, None));
    // With a Kafka timestamp the id is time-ordered (UUIDv7) and still stable.
    let stamped = ok(native_without("id").kafka_ts(1_717_243_200_000));
    assert_eq!(
        stamped.id,
        event_id_for("events.web", 4, 1234, Some(1_717_243_200_000))
    );
    assert_eq!(stamped.id.get_version_num(), 7);
    assert_eq!(
        ok(native_without("id").kafka_ts(1_717_243_200_000)).id,
        stamped.id
    );
}

#[test]
fn event_time_falls_back_to_kafka_then_ingest_time() {
    let kafka_ms = 1_709_251_199_999; // 2024-02-29T23:59:59.999Z
    let e = ok(native_without("timestamp").kafka_ts(kafka_ms));
    assert_eq!(e.timestamp.timestamp_millis(), kafka_ms);
    let row = e.to_row();
    assert_eq!(row.get("date"), Some(&Value::String("2024-02-29".into())));
    assert_eq!(row.get("hour"), Some(&Value::Int32(23)));

    // The payload's timestamp wins over the Kafka one.
    let e = ok(native_with("timestamp", json!(1_000)).kafka_ts(kafka_ms));
    assert_eq!(e.timestamp.timestamp_millis(), 1_000);

    // No timestamp anywhere (Kafka's -1 means none): ingest time.
    assert_eq!(ok(native_without("timestamp")).timestamp, now());
    assert_eq!(
        ok(native_without("timestamp").kafka_ts(-1)).timestamp,
        now()
    );
}

#[test]
fn timestamps_in_accepted_forms() {
    let cases = [
        (json!(0), "1970-01-01T00:00:00Z"),
        (json!(1_717_243_200_000i64), "2024-06-01T12:00:00Z"),
        (json!(1.7172432e12), "2024-06-01T12:00:00Z"),
        (json!("2024-06-01T12:59:59Z"), "2024-06-01T12:59:59Z"), // within the 1 h skew
        (json!("2024-06-01t10:00:00.5z"), "2024-06-01T10:00:00.500Z"),
    ];
    for (ts, expected) in cases {
        let e = ok(native_with("timestamp", ts.clone()));
        let expected = DateTime::parse_from_rfc3339(expected).unwrap();
        assert_eq!(e.timestamp, expected, "for {ts}");
    }
}

#[test]
fn segment_track_event() {
    let e = ok(Msg::json(json!({
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "anonymousId": "anon-1",
        "messageId": EVENT_ID,
        "orgId": ORG,
        "timestamp": "2024-05-01T08:30:00Z",
        "properties": {"revenue": 10},
        "context": {"sessionId": "s-9", "ip": "127.0.0.1"},
    })));
    assert_eq!(e.event_type, "track");
    assert_eq!(e.event_name, "Order Completed");
    assert_eq!(e.user_id.as_deref(), Some("u-1"));
    assert_eq!(e.session_id.as_deref(), Some("s-9"));
    assert_eq!(
        (e.id, e.id_from_payload),
        (Uuid::parse_str(EVENT_ID).unwrap(), true)
    );
    assert_eq!(e.org_id, Uuid::parse_str(ORG).unwrap());
    assert_eq!(e.properties.as_deref(), Some(r#"{"revenue":10}"#));
    assert_eq!(
        e.timestamp,
        Utc.with_ymd_and_hms(2024, 5, 1, 8, 30, 0).unwrap()
    );
}

#[test]
fn segment_defaults_anonymous_id_and_non_uuid_message_id() {
    let e = ok(Msg::json(json!({
        "event": "Signed Up",
        "anonymousId": "anon-1",
        "messageId": "ajs-next-1717000000000-abc",
        "org_id": ORG,
        "properties": {"session_id": "s-2"},
    })));
    assert_eq!(e.event_type, "track");
    assert_eq!(e.user_id.as_deref(), Some("anon-1"));
    assert_eq!(e.session_id.as_deref(), Some("s-2"));
    assert_eq!(e.id, event_id_for_message_id("ajs-next-1717000000000-abc"));
    assert!(e.id_from_payload);
    assert_eq!(e.timestamp, now());
}

#[test]
fn segment_page_and_screen_names() {
    let page = ok(Msg::json(
        json!({"type": "page", "name": "Pricing", "userId": 42, "orgId": ORG}),
    ));
    assert_eq!(
        (page.event_type.as_str(), page.event_name.as_str()),
        ("page", "Pricing")
    );
    assert_eq!(page.user_id.as_deref(), Some("42"));

    let unnamed = ok(Msg::json(
        json!({"type": "screen", "userId": "u", "orgId": ORG}),
    ));
    assert_eq!(
        (unnamed.event_type.as_str(), unnamed.event_name.as_str()),
        ("screen", "screen")
    );
}

#[test]
fn org_id_from_header_then_default() {
    let segment = || Msg::json(json!({"event": "Clicked", "userId": "u"}));

    let e = ok(segment().header("X-Org-Id", Some(ORG.as_bytes())));
    assert_eq!(e.org_id, Uuid::parse_str(ORG).unwrap());
    assert_eq!(e.headers, Some(format!(r#"{{"X-Org-Id":"{ORG}"}}"#)));

    let e = ok(segment().default_org(OTHER_ORG));
    assert_eq!(e.org_id, Uuid::parse_str(OTHER_ORG).unwrap());
    assert_eq!(e.headers, None);

    // Payload beats header beats default.
    let e = ok(segment()
        .header("x-org-id", Some(OTHER_ORG.as_bytes()))
        .default_org(EVENT_ID));
    assert_eq!(e.org_id, Uuid::parse_str(OTHER_ORG).unwrap());
    let mut v = json!({"event": "Clicked", "orgId": ORG});
    v["userId"] = json!("u");
    let e = ok(Msg::json(v).header("x-org-id", Some(OTHER_ORG.as_bytes())));
    assert_eq!(e.org_id, Uuid::parse_str(ORG).unwrap());
}

#[test]
fn binary_key_and_header_values_are_base64() {
    let e = ok(native_without("id")
        .key(&[0xff, 0x00, 0x10])
        .header("bin", Some(&[0xc3, 0x28])));
    assert_eq!(e.key.as_deref(), Some("base64:/wAQ"));
    assert_eq!(e.headers.as_deref(), Some(r#"{"bin":"base64:wyg="}"#));
}

#[test]
fn byte_order_mark_is_accepted() {
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend_from_slice(
        json!({"org_id": ORG, "event_type": "t", "event_name": "n"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(ok(Msg::bytes(bytes)).event_name, "n");
}
