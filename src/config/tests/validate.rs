//! validate(): each rule names its key and value; masking keeps secrets out of output.

use super::*;

#[test]
fn validate_checks_cross_field_rules_with_both_values() {
    let problems = |c: &Config| match c.validate() {
        Err(ConfigError::Validation { problems }) => problems.join("\n"),
        other => panic!("expected validation problems, got {other:?}"),
    };

    let mut c = Config::default();
    c.batching.max_batch_events = 0;
    c.batching.max_batch_delay_ms = 0;
    c.batching.max_inflight_bytes = 1000;
    let text = problems(&c);
    assert_contains(
        &text,
        &[
            "batching.max_batch_events 0",
            "batching.max_batch_delay_ms 0",
            "batching.max_inflight_bytes (1000) must be >= kafka.max_message_bytes (1000000)",
        ],
    );

    let mut c = Config::default();
    c.kafka.topics = vec!["orders".into()];
    c.kafka.topic_regex = Some(r"^events\..*".into());
    assert_contains(
        &problems(&c),
        &["kafka.topic_regex \"^events\\\\..*\" and kafka.topics [\"orders\"]"],
    );

    let mut c = Config::default();
    let org_a: Uuid = ORG_A.parse().unwrap();
    let org_b: Uuid = ORG_B.parse().unwrap();
    c.auth.tokens = vec![
        AuthToken {
            org_id: org_a,
            token_sha256: HASH_1.into(),
            name: None,
        },
        AuthToken {
            org_id: org_b,
            token_sha256: HASH_1.to_uppercase(),
            name: None,
        },
        AuthToken {
            org_id: org_b,
            token_sha256: "abc123".into(),
            name: None,
        },
    ];
    assert_contains(
        &problems(&c),
        &[
            "auth.tokens[1] (org 0b8e7d6c-5a4f-4e3d-9c2b-1a0f9e8d7c6b) and auth.tokens[0]",
            "auth.tokens[2].token_sha256 \"abc123\"",
        ],
    );

    let mut c = Config::default();
    c.stats.realtime_windows_s = vec![60];
    c.kafka.session_timeout_ms = 50;
    c.kafka.partition_assignment_strategy = "range,cooperative-sticky".into();
    c.kafka.dead_letter.topic_suffix = String::new();
    c.metrics.readiness.max_flush_age_ms = 100;
    c.log.level = "verbose".into();
    c.gateway.cors_allowed_origins = vec!["dash.example.com".into()];
    assert_contains(
        &problems(&c),
        &[
            "stats.realtime_windows_s [60]: must include 300",
            "batching.max_batch_delay_ms (100) must be < kafka.session_timeout_ms (50)",
            "\"range,cooperative-sticky\"",
            "kafka.dead_letter.topic_suffix is empty",
            "metrics.readiness.max_flush_age_ms (100) must be > batching.max_batch_delay_ms (100)",
            "log.level \"verbose\"",
            "\"dash.example.com\"",
        ],
    );

    let mut c = Config::default();
    c.kafka.default_org_ids.insert("clicks".into(), org_a);
    c.kafka.brokers = "host:notaport".into();
    c.kafka.dead_letter.topic = Some("events".into());
    assert_contains(
        &problems(&c),
        &[
            "kafka.default_org_ids has topic \"clicks\"",
            "broker \"host:notaport\"",
            "kafka.dead_letter.topic \"events\" is also in kafka.topics",
        ],
    );

    let mut c = Config::default();
    c.kafka.topics = vec!["events".into(), "events.dlq".into()];
    assert_contains(
        &problems(&c),
        &["sends topic \"events\" to \"events.dlq\", which is also in kafka.topics"],
    );

    // load() runs validate().
    let (_, e) = err("", &[("STREAMTALLY__BATCHING__MAX_BATCH_EVENTS", "0")], &[]);
    assert!(matches!(e, ConfigError::Validation { .. }), "{e:?}");
}

#[test]
fn masking_hides_secrets_and_round_trips() {
    let mut c = Config::default();
    for (k, v) in [
        ("sasl.password", "hunter2"),
        ("ssl.key.password", "k3y"),
        ("sasl.oauthbearer.client.secret", "s3cret"),
        ("sasl.username", "svc"),
        ("security.protocol", "SASL_SSL"),
    ] {
        c.kafka.client.insert(k.into(), v.into());
    }
    c.auth.tokens.push(AuthToken {
        org_id: ORG_A.parse::<Uuid>().unwrap(),
        token_sha256: HASH_1.into(),
        name: Some("dash".into()),
    });
    let text = c.to_masked_toml();
    for secret in ["hunter2", "k3y", "s3cret"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert_contains(
        &text,
        &[
            "\"sasl.password\" = \"***\"",
            "\"ssl.key.password\" = \"***\"",
            "\"sasl.username\" = \"svc\"",
            "[[auth.tokens]]",
        ],
    );
    // Nor do secrets leak through error messages.
    let (_, e) = err(
        "[kafka.client]\n\"sasl.password\" = [\"hunter2\"]\n",
        &[],
        &[],
    );
    assert!(!e.to_string().contains("hunter2"), "leaked: {e}");
    assert_contains(
        &e.to_string(),
        &["kafka.client.\"sasl.password\" = \"***\""],
    );

    // Without secrets the printed config loads back to the same config.
    c.kafka.client.retain(|k, _| !is_secret_client_key(k));
    assert_eq!(ok(&c.to_masked_toml(), &[], &[]), c);
    assert_eq!(
        ok(&Config::default().to_masked_toml(), &[], &[]),
        Config::default()
    );
}
