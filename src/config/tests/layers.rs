//! The loader: layer order, open maps, and errors that name the key, value and layer.

use super::*;

#[test]
fn file_overrides_defaults() {
    let c = ok(
        &format!(
            r#"
            [kafka]
            brokers = "k1:9092,k2:9092"
            topic_regex = '^events\..*'
            auto_offset_reset = "latest"
            [kafka.dead_letter]
            policy = "skip"
            [kafka.default_org_ids]
            "events.web" = "{ORG_A}"
            [store]
            path = "/var/lib/streamtally"
            [stats]
            realtime_windows_s = [60, 300, 3600]
            [gateway]
            listen = "0.0.0.0:9000"
            cors_allowed_origins = ["https://dash.example.com"]
            [auth]
            admin_token_sha256 = "{HASH_2}"
            [[auth.tokens]]
            org_id = "{ORG_A}"
            token_sha256 = "{HASH_1}"
            name = "dashboard"
            [log]
            format = "json"
            "#
        ),
        &[],
        &[],
    );
    assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
    assert_eq!(
        c.kafka.subscription(),
        Subscription::Regex(r"^events\..*".into())
    );
    assert_eq!(c.kafka.auto_offset_reset, AutoOffsetReset::Latest);
    assert_eq!(c.kafka.dead_letter.topic_for("events"), None);
    assert_eq!(
        c.kafka.default_org_id("events.web"),
        Some(ORG_A.parse::<Uuid>().unwrap())
    );
    assert_eq!(c.store.path, PathBuf::from("/var/lib/streamtally"));
    assert_eq!(c.stats.realtime_windows_s, vec![60, 300, 3600]);
    assert_eq!(
        c.gateway.listen,
        "0.0.0.0:9000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.auth.tokens.len(), 1);
    assert_eq!(c.auth.tokens[0].name.as_deref(), Some("dashboard"));
    assert!(c.auth.tokens[0].sha256_bytes().is_some());
    assert_eq!(c.log.format, LogFormat::Json);
    // Untouched settings keep their defaults.
    assert_eq!(c.kafka.group_id, "streamtally");
    assert_eq!(c.batching, BatchingConfig::default());
}

#[test]
fn env_beats_file() {
    let file = "[kafka]\nbrokers = \"file:9092\"\ngroup_id = \"from-file\"\n[batching]\nmax_batch_events = 10\n";
    let c = ok(
        file,
        &[
            ("STREAMTALLY__KAFKA__BROKERS", "env:9092"),
            ("STREAMTALLY__BATCHING__MAX_BATCH_EVENTS", "500"),
            ("STREAMTALLY__STATS__ENABLED", "false"),
            ("STREAMTALLY__KAFKA__TOPICS", "a,b"),
            (
                "STREAMTALLY__GATEWAY__CORS_ALLOWED_ORIGINS",
                r#"["http://localhost:3000"]"#,
            ),
            ("STREAMTALLY__KAFKA__DEAD_LETTER__TOPIC", "all.dlq"),
            // Not TOML-typed as intended: falls back to the string.
            ("STREAMTALLY__KAFKA__ORG_ID_HEADER", "123"),
            ("OTHER_VAR", "ignored"),
            ("STREAMTALLY_CONFIG", "ignored: single underscore"),
        ],
        &[],
    );
    assert_eq!(c.kafka.brokers, "env:9092");
    assert_eq!(c.kafka.group_id, "from-file");
    assert_eq!(c.batching.max_batch_events, 500);
    assert!(!c.stats.enabled);
    assert_eq!(c.kafka.topics, vec!["a", "b"]);
    assert_eq!(
        c.gateway.cors_allowed_origins,
        vec!["http://localhost:3000"]
    );
    assert_eq!(
        c.kafka.dead_letter.topic_for("a").as_deref(),
        Some("all.dlq")
    );
    assert_eq!(c.kafka.org_id_header, "123");
}

#[test]
fn overrides_beat_env() {
    let c = ok(
        "[kafka]\nbrokers = \"file:9092\"\n",
        &[
            ("STREAMTALLY__KAFKA__BROKERS", "env:9092"),
            ("STREAMTALLY__LOG__LEVEL", "debug"),
        ],
        &[
            ("kafka.brokers", "flag:9092"),
            ("store.path", "/tmp/st"),
            ("stats.realtime_windows_s", "300,900"),
        ],
    );
    assert_eq!(c.kafka.brokers, "flag:9092");
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.store.path, PathBuf::from("/tmp/st"));
    assert_eq!(c.stats.realtime_windows_s, vec![300, 900]);
}

#[test]
fn kafka_client_passes_through_with_dotted_keys() {
    let file = r#"
        [kafka.client]
        "ssl.ca.location" = "/etc/ca.pem"
        sasl.mechanism = "SCRAM-SHA-512"
        "fetch.min.bytes" = 1024
        "enable.partition.eof" = false
    "#;
    let c = ok(
        file,
        &[
            ("STREAMTALLY__KAFKA__CLIENT__SECURITY.PROTOCOL", "SASL_SSL"),
            ("STREAMTALLY__KAFKA__CLIENT__SASL__USERNAME", "svc"),
            // Verbatim: not parsed as TOML, even though it looks like a string literal.
            ("STREAMTALLY__KAFKA__CLIENT__SASL.PASSWORD", "\"p@ss\""),
        ],
        &[("kafka.client.sasl.mechanism", "PLAIN")],
    );
    let expected: BTreeMap<String, String> = [
        ("ssl.ca.location", "/etc/ca.pem"),
        ("sasl.mechanism", "PLAIN"),
        ("fetch.min.bytes", "1024"),
        ("enable.partition.eof", "false"),
        ("security.protocol", "SASL_SSL"),
        ("sasl.username", "svc"),
        ("sasl.password", "\"p@ss\""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(c.kafka.client, expected);
    let props = c.kafka.consumer_properties();
    assert_eq!(props["security.protocol"], "SASL_SSL");
    assert_eq!(props["bootstrap.servers"], "127.0.0.1:9092");
    assert_eq!(props["enable.auto.commit"], "false");
    // The prefetch queue is bounded for a sidecar unless the user says otherwise.
    assert_eq!(props["queued.max.messages.kbytes"], "16384");
    // ... and refilled soon after it drains (librdkafka's own backoff is a second).
    assert_eq!(props["fetch.queue.backoff.ms"], "20");
    let c = ok(
        "[kafka.client]\n\"queued.max.messages.kbytes\" = \"4096\"\n\"fetch.queue.backoff.ms\" = \"5\"\n",
        &[],
        &[],
    );
    let props = c.kafka.consumer_properties();
    assert_eq!(props["queued.max.messages.kbytes"], "4096");
    assert_eq!(props["fetch.queue.backoff.ms"], "5");

    let (_, e) = err("[kafka.client]\n\"group.id\" = \"x\"\n", &[], &[]);
    assert_contains(&e.to_string(), &["\"group.id\"", "kafka.group_id"]);
}

#[test]
fn unknown_key_in_file_names_key_value_and_path() {
    let (path, e) = err("[kafka]\nbrokerz = \"x:9092\"\n", &[], &[]);
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e:?}");
    assert_contains(
        &e.to_string(),
        &["kafka.brokerz", "\"x:9092\"", &path, "brokers"],
    );

    let (path, e) = err("[kafak]\nbrokers = \"x\"\n", &[], &[]);
    assert_contains(&e.to_string(), &["unknown key kafak", &path]);

    let (_, e) = err("[metrics.readiness]\nmax_lag = 5\n", &[], &[]);
    assert_contains(&e.to_string(), &["metrics.readiness.max_lag = 5"]);
}

#[test]
fn unknown_env_key_names_the_variable() {
    let (_, e) = err("", &[("STREAMTALLY__KAFKA__BROKERZ", "x")], &[]);
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e:?}");
    assert_contains(
        &e.to_string(),
        &[
            "kafka.brokerz",
            "\"x\"",
            "environment variable STREAMTALLY__KAFKA__BROKERZ",
        ],
    );
    let (_, e) = err("", &[("STREAMTALLY__KAFKA____BROKERS", "x")], &[]);
    assert!(matches!(e, ConfigError::MalformedKey { .. }), "{e:?}");
    let (_, e) = err("", &[], &[("gateway.lisen", "0.0.0.0:1")]);
    assert_contains(&e.to_string(), &["gateway.lisen", "command-line flag"]);
}

#[test]
fn bad_enum_value_names_key_value_expected_and_source() {
    let (_, e) = err(
        "",
        &[("STREAMTALLY__KAFKA__AUTO_OFFSET_RESET", "newest")],
        &[],
    );
    assert!(matches!(e, ConfigError::InvalidValue { .. }), "{e:?}");
    assert_contains(
        &e.to_string(),
        &[
            "kafka.auto_offset_reset",
            "\"newest\"",
            "earliest",
            "latest",
            "environment variable STREAMTALLY__KAFKA__AUTO_OFFSET_RESET",
        ],
    );
    let (path, e) = err("[kafka.dead_letter]\npolicy = \"drop\"\n", &[], &[]);
    assert_contains(
        &e.to_string(),
        &[
            "kafka.dead_letter.policy",
            "\"drop\"",
            "topic",
            "skip",
            &path,
        ],
    );
    let (_, e) = err("", &[], &[("log.format", "yaml")]);
    assert_contains(
        &e.to_string(),
        &["log.format", "\"yaml\"", "command-line flag"],
    );
}

#[test]
fn type_errors_name_the_layer_that_set_the_key() {
    let (path, e) = err("[kafka]\nsession_timeout_ms = \"abc\"\n", &[], &[]);
    assert_contains(
        &e.to_string(),
        &["kafka.session_timeout_ms", "\"abc\"", "u64", &path],
    );
    let (_, e) = err(
        "[kafka]\nsession_timeout_ms = 5000\n",
        &[("STREAMTALLY__KAFKA__SESSION_TIMEOUT_MS", "-5")],
        &[],
    );
    assert_contains(
        &e.to_string(),
        &[
            "kafka.session_timeout_ms = -5",
            "STREAMTALLY__KAFKA__SESSION_TIMEOUT_MS",
        ],
    );
    // A scalar where a section belongs.
    let (_, e) = err("kafka = 1\n", &[], &[]);
    assert_contains(&e.to_string(), &["invalid value for kafka = 1"]);
}

#[test]
fn bad_socket_addr_names_the_value() {
    let (path, e) = err("[gateway]\nlisten = \"localhost:http\"\n", &[], &[]);
    assert!(matches!(e, ConfigError::InvalidValue { .. }), "{e:?}");
    assert_contains(
        &e.to_string(),
        &[
            "gateway.listen",
            "\"localhost:http\"",
            "socket address",
            &path,
        ],
    );
}

#[test]
fn bad_uuid_names_the_entry() {
    let (path, e) = err(
        "[kafka.default_org_ids]\nevents = \"not-a-uuid\"\n",
        &[],
        &[],
    );
    assert_contains(
        &e.to_string(),
        &["kafka.default_org_ids.events", "\"not-a-uuid\"", &path],
    );
    let file = format!(
        "[[auth.tokens]]\norg_id = \"{ORG_A}\"\ntoken_sha256 = \"{HASH_1}\"\n\
         [[auth.tokens]]\norg_id = \"org-b\"\ntoken_sha256 = \"{HASH_2}\"\n"
    );
    let (_, e) = err(&file, &[], &[]);
    assert_contains(&e.to_string(), &["auth.tokens[1].org_id", "\"org-b\""]);
    let (_, e) = err(
        &format!("[[auth.tokens]]\norg_id = \"{ORG_A}\"\ntoken = \"{HASH_1}\"\n"),
        &[],
        &[],
    );
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e:?}");
    assert_contains(&e.to_string(), &["auth.tokens[0].token ="]);
}

#[test]
fn file_errors_name_the_path_and_position() {
    let missing = PathBuf::from("/nonexistent/streamtally.toml");
    let e = Config::load(&ConfigSource {
        file: Some(missing),
        ..ConfigSource::default()
    })
    .unwrap_err();
    assert!(matches!(e, ConfigError::FileNotFound { .. }), "{e:?}");
    assert_contains(&e.to_string(), &["/nonexistent/streamtally.toml"]);

    let (path, e) = err("[kafka]\nbrokers = \"a\"\ngroup_id = = 3\n", &[], &[]);
    assert!(
        matches!(e, ConfigError::Syntax { line: 3, .. }),
        "expected line 3: {e:?}"
    );
    assert_contains(&e.to_string(), &[&format!("{path}:3:")]);
}

#[test]
fn several_errors_are_reported_together() {
    let (_, e) = err(
        "[store]\ncache_mb = 1\n",
        &[("STREAMTALLY__LOG__FORMAT", "xml")],
        &[],
    );
    let ConfigError::Many(errors) = &e else {
        panic!("expected Many, got {e:?}");
    };
    assert_eq!(errors.len(), 2);
    assert_contains(&e.to_string(), &["store.cache_mb", "log.format"]);
}

#[test]
fn a_bad_value_is_reported_even_where_a_higher_layer_overrides_it() {
    let (path, e) = err(
        "[kafka]\nsession_timeout_ms = \"abc\"\n",
        &[("STREAMTALLY__KAFKA__SESSION_TIMEOUT_MS", "x")],
        &[("kafka.session_timeout_ms", "6000")],
    );
    let ConfigError::Many(errors) = &e else {
        panic!("expected Many, got {e:?}");
    };
    assert_eq!(errors.len(), 2, "{e}");
    assert_contains(
        &errors[0].to_string(),
        &["kafka.session_timeout_ms = \"abc\"", &path],
    );
    assert_contains(
        &errors[1].to_string(),
        &[
            "kafka.session_timeout_ms = \"x\"",
            "STREAMTALLY__KAFKA__SESSION_TIMEOUT_MS",
        ],
    );
}
