//! validate(): each rule names its key and value; masking keeps secrets out of output.

use super::*;
use std::time::Duration;

/// The problems `validate` finds in `c`, one a line.
fn problems(c: &Config) -> String {
    match c.validate() {
        Err(ConfigError::Validation { problems }) => problems.join("\n"),
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn validate_checks_cross_field_rules_with_both_values() {
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

#[test]
fn values_callers_used_to_clamp_are_refused_naming_key_value_and_range() {
    // ws.rs used at least 10 ms, the push cache at least 20, the live publisher at least 10.
    let mut c = Config::default();
    c.gateway.push_interval_ms = 1;
    c.gateway.ws_ping_interval_ms = 9;
    c.gateway.recent_events_cap = 0;
    c.store.checkpoint_interval_ms = 5;
    assert_contains(
        &problems(&c),
        &[
            "gateway.push_interval_ms 1: must be >= 40",
            "gateway.ws_ping_interval_ms 9: must be >= 10",
            "gateway.recent_events_cap 0: must be >= 1",
            "store.checkpoint_interval_ms 5: must be >= 10",
        ],
    );

    c.gateway.push_interval_ms = 39;
    assert_contains(
        &problems(&c),
        &["gateway.push_interval_ms 39: must be >= 40"],
    );

    // At the limits, every typed option is what the callers used to clamp to, unclamped.
    let mut c = Config::default();
    c.gateway.push_interval_ms = 40;
    c.gateway.ws_ping_interval_ms = 10;
    c.gateway.recent_events_cap = 1;
    c.store.checkpoint_interval_ms = 10;
    c.validate().expect("the limits are valid");
    assert_eq!(c.gateway.push_interval(), Duration::from_millis(40));
    assert_eq!(c.gateway.push_read_shared_for(), Duration::from_millis(20));
    assert_eq!(c.gateway.live_publish_interval(), Duration::from_millis(10));
    assert_eq!(c.gateway.ws_ping_interval(), Duration::from_millis(10));
    assert_eq!(c.gateway.recent_events_cap().get(), 1);
    assert_eq!(c.store.checkpoint_interval(), Duration::from_millis(10));

    // load() names the layer's value too.
    let (_, e) = err("", &[("STREAMTALLY__GATEWAY__PUSH_INTERVAL_MS", "1")], &[]);
    assert_contains(
        &e.to_string(),
        &["gateway.push_interval_ms 1: must be >= 40"],
    );
}

#[test]
fn typed_options_of_the_defaults() {
    let c = Config::default();
    assert_eq!(c.batching.max_batch_events().get(), 1_000);
    assert_eq!(c.batching.max_batch_delay(), Duration::from_millis(100));
    assert_eq!(c.batching.max_inflight_bytes().get(), 64 << 20);
    assert_eq!(c.kafka.retry_backoff_initial(), Duration::from_millis(100));
    assert_eq!(c.kafka.retry_backoff_max(), Duration::from_secs(10));
    assert_eq!(c.store.group_commit_max_batches().get(), 16);
    assert_eq!(c.store.wal_segment_bytes(), 64 << 20);
    assert_eq!(c.store.checkpoint_interval(), Duration::from_secs(5));
    assert_eq!(c.stats.persist_interval(), Duration::from_secs(1));
    assert_eq!(c.stats.rollup_flush_interval(), Duration::from_secs(1));
    assert_eq!(c.gateway.push_interval(), Duration::from_secs(1));
    assert_eq!(c.gateway.push_read_shared_for(), Duration::from_millis(500));
    assert_eq!(
        c.gateway.live_publish_interval(),
        Duration::from_millis(250)
    );
    assert_eq!(c.gateway.ws_ping_interval(), Duration::from_secs(15));
    assert_eq!(c.gateway.ws_send_queue().get(), 64);
    assert_eq!(c.gateway.recent_events_cap().get(), 100);
    // The batching rules keep every zero out, so these never meet one after validate().
    let mut c = Config::default();
    c.batching.max_batch_events = 0;
    c.kafka.retry_backoff_initial_ms = 0;
    c.gateway.ws_send_queue = 0;
    c.store.group_commit_max_batches = 0;
    assert_contains(
        &c.validate().unwrap_err().to_string(),
        &[
            "batching.max_batch_events 0: must be >= 1",
            "kafka.retry_backoff_initial_ms 0: must be >= 1",
            "gateway.ws_send_queue 0: must be >= 1",
            "store.group_commit_max_batches 0: must be >= 1",
        ],
    );
}
