use super::*;
use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::json;

const ORG: &str = "0b6f3c1e-7d2a-4c53-9f0e-2a1b3c4d5e6f";

fn opts() -> DecodeOptions {
    DecodeOptions {
        max_message_bytes: 64 * 1024,
        max_future_skew: Duration::from_secs(3600),
        default_org_id: None,
        org_id_header: "x-org-id".to_string(),
        now: Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap(),
    }
}

fn meta() -> SourceMeta<'static> {
    SourceMeta {
        topic: "events",
        partition: 3,
        offset: 812,
        kafka_timestamp_ms: None,
        key: None,
        headers: &[],
    }
}

fn decode_json(v: &Json) -> Result<DecodedEvent, RejectReason> {
    decode(Some(v.to_string().as_bytes()), &meta(), &opts())
}

fn date_hour(row: &Row) -> (String, i32) {
    match (row.get("date"), row.get("hour")) {
        (Some(Value::String(d)), Some(Value::Int32(h))) => (d.clone(), *h),
        other => panic!("date/hour missing: {other:?}"),
    }
}

fn row_for_timestamp(ts: Json) -> Row {
    let v = json!({"org_id": ORG, "event_type": "t", "event_name": "n", "timestamp": ts});
    decode_json(&v).unwrap().to_row()
}

#[test]
fn date_and_hour_at_day_boundaries_and_leap_day() {
    let cases = [
        (json!("2024-02-29T23:59:59.999Z"), "2024-02-29", 23),
        (json!(1_709_251_199_999i64), "2024-02-29", 23),
        (json!("2024-03-01T00:00:00Z"), "2024-03-01", 0),
        (json!(1_709_251_200_000i64), "2024-03-01", 0),
        // An offset is converted to UTC before the date is taken.
        (json!("2024-03-01T01:30:00+02:00"), "2024-02-29", 23),
        (json!("2023-12-31T23:59:59.999999Z"), "2023-12-31", 23),
        (json!(0), "1970-01-01", 0),
    ];
    for (ts, date, hour) in cases {
        let row = row_for_timestamp(ts.clone());
        assert_eq!(date_hour(&row), (date.to_string(), hour), "for {ts}");
    }
}

#[test]
fn timestamp_is_stored_in_micros() {
    let row = row_for_timestamp(json!("2024-02-29T23:59:59.999999999Z"));
    let expected = Utc
        .with_ymd_and_hms(2024, 2, 29, 23, 59, 59)
        .unwrap()
        .timestamp_micros()
        + 999_999;
    assert_eq!(row.get("timestamp"), Some(&Value::Timestamp(expected)));
    let row = row_for_timestamp(json!(1_709_251_199_999i64));
    assert_eq!(
        row.get("timestamp"),
        Some(&Value::Timestamp(1_709_251_199_999_000))
    );
}

#[test]
fn to_row_has_the_event_fields_and_omits_absent_ones() {
    let e = decode_json(&json!({"org_id": ORG, "event_type": "t", "event_name": "n"})).unwrap();
    let row = e.to_row();
    let names: Vec<&str> = row.fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "org_id",
            "event_type",
            "event_name",
            "timestamp",
            "date",
            "hour",
            "topic",
            "partition",
            "offset"
        ]
    );
    assert_eq!(
        row.id(),
        Some(event_id_for("events", 3, 812, None).into_bytes())
    );
    assert_eq!(row.get("partition"), Some(&Value::Int32(3)));
    assert_eq!(row.get("offset"), Some(&Value::Int64(812)));
}

#[test]
fn event_ids_are_stable() {
    // Pinned: a change here re-keys the events stored from now on, so a record read
    // again after an upgrade would be stored a second time.
    assert_eq!(
        event_id_for("events", 0, 0, Some(1_764_300_000_123)).to_string(),
        "019ac879-8b7b-74d9-9891-3ca8ed4a8f96"
    );
    assert_eq!(
        EVENT_ID_NAMESPACE.to_string(),
        "6406de7b-d6c1-49a3-9073-1d4af200eab5"
    );
    assert_ne!(
        event_id_for("events", 1, 0, None),
        event_id_for("events", 0, 1, None)
    );
    assert_ne!(
        event_id_for("a", 11, 1, None),
        event_id_for("a1", 1, 1, None)
    );
}

#[test]
fn derived_ids_are_uuidv7_ordered_by_kafka_timestamp() {
    let at = |offset: i64, ms: Option<i64>| event_id_for("events", 2, offset, ms);
    let id = at(7, Some(1_764_300_000_123));
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
    let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
    assert_eq!((secs, nanos / 1_000_000), (1_764_300_000, 123));
    // Later records sort after earlier ones whatever their position; within one
    // millisecond the position decides, and positions never collide.
    assert!(at(900, Some(1_764_300_000_123)) < at(5, Some(1_764_300_000_124)));
    assert_ne!(at(7, Some(1)), at(8, Some(1)));
    // No timestamp, a negative one, or one past the 48-bit range: time 0, still distinct.
    for ms in [None, Some(-1), Some(1 << 48)] {
        assert_eq!(at(7, ms).get_timestamp().unwrap().to_unix(), (0, 0));
    }
    assert_eq!(at(7, None), at(7, Some(-5)));
    assert_ne!(at(7, None), at(8, None));
}

#[test]
fn base64_matches_rfc4648_vectors() {
    let cases = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in cases {
        assert_eq!(base64_encode(plain.as_bytes()), encoded);
    }
    assert_eq!(base64_encode(&[0xff, 0xfe, 0x00]), "//4A");
    assert_eq!(bytes_as_text(&[0xff, 0xfe]), "base64://4=");
}

#[test]
fn snippets_are_bounded() {
    let long = "x".repeat(10_000);
    assert!(str_snippet(&long).chars().count() <= SNIPPET_CHARS + 3);
    let big = json!({ "a": long, "b": [1, 2, 3] });
    let s = json_snippet(&big);
    assert!(
        s.ends_with('…') && s.chars().count() == SNIPPET_CHARS + 1,
        "{s}"
    );
    assert_eq!(json_snippet(&json!([1, "é"])), "[1,\"é\"]");
    assert_eq!(str_snippet("a\u{1}b"), "\"a\\u0001b\"");
}

#[test]
fn invalid_json_points_at_the_error() {
    let err = decode(Some(b"{\n  \"org_id\": 12,\n  oops\n}"), &meta(), &opts()).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.code(), "invalid_json");
    assert!(
        msg.contains("line 3 column 3") && msg.contains("oops"),
        "{msg}"
    );
}

#[test]
fn depth_limit_applies_at_65_levels() {
    let nested = |levels: usize| {
        // `levels` containers in total, counting the top-level object.
        let inner = format!("{}{}", "[".repeat(levels - 1), "]".repeat(levels - 1));
        format!(
            r#"{{"org_id":"{ORG}","event_type":"t","event_name":"n","properties":{{"a":{inner}}}}}"#
        )
    };
    // properties object is one level, so `levels - 1` arrays plus 2 objects.
    assert!(decode(Some(nested(63).as_bytes()), &meta(), &opts()).is_ok());
    let err = decode(Some(nested(64).as_bytes()), &meta(), &opts()).unwrap_err();
    assert_eq!(err.code(), "nesting_too_deep");
    assert!(
        err.to_string()
            .starts_with("\"properties\": JSON nesting depth 65"),
        "{err}"
    );
    let err = decode(Some(nested(500).as_bytes()), &meta(), &opts()).unwrap_err();
    assert_eq!(err.code(), "nesting_too_deep");
}

/// Per-event CPU of the consumer thread's share of ingest, on the payloads `streamtally
/// produce` sends (the ingest benchmark's): `decode`, and `to_row` (which `flush` calls
/// once per event; it keeps the decoded events for a retry, not a copy of the rows).
/// Best of 5 rounds of 100k events. Run with
/// `cargo test --release --lib decode_cost -- --ignored --nocapture`.
#[test]
#[ignore = "timing harness, prints ns/event"]
fn decode_cost() {
    use std::time::Instant;
    let cfg = crate::synth::SynthConfig::new(100_000);
    let payloads: Vec<String> = (0..100_000)
        .map(|i| crate::produce::synthetic_json(&cfg, i))
        .collect();
    let o = DecodeOptions {
        now: Utc::now(),
        ..opts()
    };
    let n = payloads.len() as f64;
    let ns = |t: Instant| t.elapsed().as_nanos() as f64 / n;
    let (mut decode_ns, mut row_ns) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t = Instant::now();
        let events: Vec<DecodedEvent> = payloads
            .iter()
            .map(|p| decode(Some(p.as_bytes()), &meta(), &o).unwrap())
            .collect();
        decode_ns = decode_ns.min(ns(t));
        let t = Instant::now();
        let rows: Vec<Row> = events.iter().map(DecodedEvent::to_row).collect();
        row_ns = row_ns.min(ns(t));
        drop((rows, events));
    }
    println!(
        "decode {decode_ns:.0} ns/event, to_row {row_ns:.0} ns/event, total {:.0} ns/event",
        decode_ns + row_ns
    );
}

/// The fast path and the full parse agree: the same errors, and the same events, except
/// that `properties` is the payload's own text, which the full parse used to parse and
/// serialize again. (Not "parses to the same value": serde_json's default float parsing
/// is not exact, so a parse of the serialized text can differ in the last bit of a float
/// from a parse of the original.)
fn assert_paths_agree(bytes: &[u8], meta: &SourceMeta, o: &DecodeOptions) {
    let fast = decode_with(Some(bytes), meta, o, true);
    let full = decode_with(Some(bytes), meta, o, false);
    match (fast, full) {
        (Ok(mut f), Ok(mut s)) => {
            let reserialized = f.properties.as_deref().map(|t| {
                serde_json::from_str::<Json>(t)
                    .expect("stored text is JSON")
                    .to_string()
            });
            assert_eq!(reserialized, s.properties, "{bytes:?}");
            if let Some(t) = &f.properties {
                assert!(t.starts_with('{') && t.ends_with('}'), "{t}");
                // The store checks JSON columns this way too.
                serde_json::from_str::<serde::de::IgnoredAny>(t).unwrap();
            }
            f.properties = None;
            s.properties = None;
            assert_eq!(f, s, "{bytes:?}");
        }
        (f, s) => assert_eq!(f, s, "{:?}", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn properties_are_kept_as_sent() {
    let payload = format!(
        "{{\"org_id\":\"{ORG}\",\"event_type\":\"t\",\"event_name\":\"n\",\
         \"properties\" : {{ \"b\": 1.50, \"a\":[ {{}} ], \"b\":\"x\\u0041\" }} ,\"z\":{{}}}}"
    );
    let e = decode(Some(payload.as_bytes()), &meta(), &opts()).unwrap();
    assert_eq!(
        e.properties.as_deref(),
        Some("{ \"b\": 1.50, \"a\":[ {} ], \"b\":\"x\\u0041\" }")
    );
    assert_paths_agree(payload.as_bytes(), &meta(), &opts());
    // Re-reading the record gives the same row.
    let again = decode(Some(payload.as_bytes()), &meta(), &opts()).unwrap();
    assert_eq!(e.to_row(), again.to_row());
}

#[test]
fn fast_path_edge_cases_match_the_full_parse() {
    let base = format!(r#""org_id":"{ORG}","event_type":"t","event_name":"n""#);
    let seg = r#""event":"e","userId":"u","context":{"x":1}"#;
    let cases = [
        // An escaped key is still the properties field.
        format!(r#"{{{base},"propert\u0069es":{{"a":1}}}}"#),
        format!(r#"{{{base},"properties":{{"a":"\ud800"}}}}"#),
        format!(r#"{{{base},"properties":{{"a":"\ud83d\ude00"}}}}"#),
        format!(r#"{{{base},"properties":{{"a":1e400}}}}"#),
        format!(r#"{{{base},"properties":{{"a":-0.0,"b":18446744073709551616}}}}"#),
        format!(r#"{{{base},"properties":{{"a":1}}}} x"#),
        format!(r#"{{{base},"properties":{{"a":1,}}}}"#),
        format!(r#"{{{base},"properties":null}}"#),
        format!(r#"{{{base},"properties":[]}}"#),
        format!(r#"{{{base},"properties":{{}},"properties":{{}}}}"#),
        format!(r#"{{{base},"x":1,"x":2}}"#),
        format!(r#"{{{base},"x":"\u00"}}"#),
        format!(r#"{{{base},"x":"}}"#),
        format!(r#"{{"properties":{{"a":"}}\"{{[\\"}}}},{base}}}"#),
        format!(r#"{{"properties":{{"a":1}},"event_name":null,{seg}}}"#),
        format!(r#"{{"properties":{{"session_id":7,"session_id":"s"}},{seg},"orgId":"{ORG}"}}"#),
        format!(r#"{{"properties":{{"session_id":[]}},{seg},"orgId":"{ORG}"}}"#),
        format!(r#"{{"properties":{{"session_id":""}},"event":"e","userId":"u","orgId":"{ORG}"}}"#),
        format!(r#"{{"properties":{{"session_id":5}},"event":"e","userId":"u","orgId":"{ORG}"}}"#),
        format!(
            r#"{{"properties":{{"session_id":{{"a":[[1]]}}}},"event":"e","userId":"u","orgId":"{ORG}"}}"#
        ),
        format!("\t{{ {base} , \"properties\"\n:\r{{\"a\" : {{\"b\":[1, 2]}}}}\n}}\n"),
        "[1,2]".to_string(),
        "\"text\"".to_string(),
        "{}".to_string(),
        "{".to_string(),
    ];
    for c in &cases {
        assert_paths_agree(c.as_bytes(), &meta(), &opts());
    }
    // Nesting at and past the limit, in properties, in a field the decoder reads, in
    // one it does not, and past serde_json's own limit.
    for levels in [62, 63, 64, 65, 127, 128, 129, 200] {
        let arrays = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        for field in ["properties", "context", "extra"] {
            let value = if field == "properties" {
                format!(r#"{{"a":{arrays}}}"#)
            } else {
                arrays.clone()
            };
            let c = format!(r#"{{{base},"{field}":{value}}}"#);
            assert_paths_agree(c.as_bytes(), &meta(), &opts());
        }
    }
}

#[test]
fn utc_date_matches_chrono() {
    let mut cases: Vec<DateTime<Utc>> = [
        0i64,
        951_782_400_000,
        1_709_251_199_999,
        1_709_251_200_000,
        253_402_300_799_999,
        253_402_300_800_000,
    ]
    .iter()
    .map(|&ms| DateTime::from_timestamp_millis(ms).unwrap())
    .collect();
    cases.push(DateTime::<Utc>::MAX_UTC);
    cases
        .extend((0..20_000).map(|d| DateTime::from_timestamp(d * 86_400 * 3 + 86_399, 0).unwrap()));
    for ts in cases {
        assert_eq!(utc_date(&ts), ts.format("%Y-%m-%d").to_string(), "{ts:?}");
    }
}

mod props;
