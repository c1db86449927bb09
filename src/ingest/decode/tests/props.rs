//! Property tests: the decoder never panics, and the fast path agrees with the full parse.

use super::*;

fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        "\\PC{0,8}".prop_map(Json::from),
        "[\\x00-\\x1f\"\\\\]{0,3}".prop_map(Json::from),
        Just(json!(ORG)),
        Just(json!("2024-02-29T23:59:59Z")),
        Just(json!(1_709_251_199_999i64)),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            proptest::collection::btree_map(any_key(), inner, 0..6)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        // Every field the decoder reads, the nested ones it looks for, and others.
        proptest::sample::select(
            payload::READ_FIELDS
                .iter()
                .chain(&["properties", "sessionId"])
                .copied()
                .collect::<Vec<_>>()
        )
        .prop_map(String::from),
        "\\PC{0,5}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_path_agrees_on_json_objects(
        fields in proptest::collection::btree_map(any_key(), any_json(), 0..10),
        required in proptest::collection::vec(any::<bool>(), 4),
        pretty in any::<bool>(),
        headers in headers_strategy(),
    ) {
        let mut obj: Map<String, Json> = fields.into_iter().collect();
        // Mostly valid events, so the field checks run too.
        if required[0] { obj.insert("org_id".into(), json!(ORG)); }
        if required[1] { obj.insert("event_type".into(), json!("t")); }
        if required[2] { obj.insert("event_name".into(), json!("n")); }
        if required[3] { obj.insert("event".into(), json!("e")); }
        let v = Json::Object(obj);
        let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
        let meta = SourceMeta { headers: &headers, ..meta() };
        let mut o = opts();
        o.default_org_id = Some(Uuid::nil());
        assert_paths_agree(text.as_bytes(), &meta, &o);
    }

    #[test]
    fn fast_path_agrees_on_jsonish_text(text in jsonish(), headers in headers_strategy()) {
        let meta = SourceMeta { headers: &headers, ..meta() };
        assert_paths_agree(text.as_bytes(), &meta, &opts());
    }

    #[test]
    fn fast_path_agrees_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        assert_paths_agree(&bytes, &meta(), &opts());
    }
}

/// JSON-ish text: real tokens mixed so the parser gets past the first byte.
fn jsonish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("null".to_string()),
        Just(format!("\"{ORG}\"")),
        Just("\"org_id\"".to_string()),
        Just("\"event_name\"".to_string()),
        Just("\"event_type\"".to_string()),
        Just("\"event\"".to_string()),
        Just("\"type\"".to_string()),
        Just("\"messageId\"".to_string()),
        Just("\"userId\"".to_string()),
        Just("\"properties\"".to_string()),
        Just("\"context\"".to_string()),
        Just("\"timestamp\"".to_string()),
        Just("\"2024-02-29T23:59:59Z\"".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        "\"\\PC{0,8}\"",
        "[ -~]{0,4}",
    ];
    proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

fn headers_strategy() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
    let name = prop_oneof![Just("x-org-id".to_string()), "\\PC{0,6}"];
    let value = proptest::option::of(prop_oneof![
        Just(ORG.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]);
    proptest::collection::vec((name, value), 0..4)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        headers in headers_strategy(),
        kafka_ts in proptest::option::of(any::<i64>()),
        offset in any::<i64>(),
        // Any clock chrono can represent, and any skew: no overflow on either end.
        now_ms in proptest::option::of(-8_000_000_000_000_000i64..8_000_000_000_000_000),
        skew_secs in any::<u64>(),
    ) {
        let meta = SourceMeta { key: key.as_deref(), headers: &headers, kafka_timestamp_ms: kafka_ts, offset, ..meta() };
        let mut o = opts();
        o.default_org_id = Some(Uuid::nil());
        o.max_future_skew = Duration::from_secs(skew_secs);
        if let Some(ms) = now_ms {
            o.now = DateTime::from_timestamp_millis(ms).unwrap();
        }
        if let Ok(e) = decode(Some(&bytes), &meta, &o) {
            let _ = e.to_row();
        }
    }

    #[test]
    fn jsonish_text_never_panics(text in jsonish(), headers in headers_strategy()) {
        let meta = SourceMeta { headers: &headers, ..meta() };
        match decode(Some(text.as_bytes()), &meta, &opts()) {
            Ok(e) => { let _ = e.to_row(); }
            Err(r) => {
                prop_assert!(RejectReason::ALL_CODES.contains(&r.code()));
                prop_assert!(r.to_string().chars().count() < 1000);
            }
        }
    }

    #[test]
    fn native_events_round_trip(
        id in proptest::option::of(any::<u128>()),
        org in any::<u128>(),
        event_type in "[a-z_]{1,20}",
        event_name in "[\\w][\\PC]{0,60}",
        user_id in proptest::option::of("\\PC{1,30}"),
        session_id in proptest::option::of(any::<u32>()),
        properties in proptest::option::of(proptest::collection::btree_map(
            "\\PC{0,10}",
            prop_oneof![
                Just(Json::Null),
                any::<bool>().prop_map(Json::from),
                any::<i64>().prop_map(Json::from),
                "\\PC{0,20}".prop_map(Json::from),
            ],
            0..6,
        )),
        ts_ms in proptest::option::of(0i64..=1_717_243_200_000),
        ts_as_text in any::<bool>(),
    ) {
        let o = opts();
        let mut payload = json!({
            "org_id": Uuid::from_u128(org).to_string(),
            "event_type": event_type,
            "event_name": event_name,
        });
        let obj = payload.as_object_mut().unwrap();
        if let Some(id) = id { obj.insert("id".into(), json!(Uuid::from_u128(id).to_string())); }
        if let Some(u) = &user_id { obj.insert("user_id".into(), json!(u)); }
        if let Some(s) = session_id { obj.insert("session_id".into(), json!(s)); }
        let props: Option<Map<String, Json>> = properties.map(|p| p.into_iter().collect());
        if let Some(p) = &props { obj.insert("properties".into(), Json::Object(p.clone())); }
        let ts = ts_ms.map(|ms| DateTime::from_timestamp_millis(ms).unwrap());
        if let Some(ts) = ts {
            let v = if ts_as_text { json!(ts.to_rfc3339_opts(SecondsFormat::Millis, true)) } else { json!(ts.timestamp_millis()) };
            obj.insert("timestamp".into(), v);
        }

        let decoded = decode(Some(payload.to_string().as_bytes()), &meta(), &o).unwrap();
        let expected = DecodedEvent {
            id: id.map_or_else(|| event_id_for("events", 3, 812, None), Uuid::from_u128),
            id_from_payload: id.is_some(),
            org_id: Uuid::from_u128(org),
            event_type,
            event_name,
            user_id,
            session_id: session_id.map(|s| s.to_string()),
            properties: props.map(|p| Json::Object(p).to_string()),
            timestamp: ts.unwrap_or(o.now),
            topic: "events".into(),
            partition: 3,
            offset: 812,
            key: None,
            headers: None,
            dropped_fields: 0,
        };
        prop_assert_eq!(decoded, expected);
    }
}
