//! Tests of the configuration: defaults and the reference file here, the loader in
//! `layers`, the rules in `validate`.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::{Table, Value};
use uuid::Uuid;

mod layers;
mod validate;

pub(super) const ORG_A: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
pub(super) const ORG_B: &str = "0b8e7d6c-5a4f-4e3d-9c2b-1a0f9e8d7c6b";
pub(super) const HASH_1: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
pub(super) const HASH_2: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

pub(super) struct Loaded {
    result: Result<Config, ConfigError>,
    path: String,
    _file: tempfile::NamedTempFile,
}

/// Loads `file` (written to a temp file; empty = defaults) with the given env and flags.
pub(super) fn load(file: &str, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> Loaded {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    f.write_all(file.as_bytes()).expect("write temp file");
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let src = ConfigSource {
        file: Some(f.path().to_path_buf()),
        env: pairs(env),
        overrides: pairs(overrides),
    };
    Loaded {
        result: Config::load(&src),
        path: f.path().display().to_string(),
        _file: f,
    }
}

pub(super) fn ok(file: &str, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> Config {
    match load(file, env, overrides).result {
        Ok(c) => c,
        Err(e) => panic!("expected the config to load, got: {e}"),
    }
}

pub(super) fn err(
    file: &str,
    env: &[(&str, &str)],
    overrides: &[(&str, &str)],
) -> (String, ConfigError) {
    let loaded = load(file, env, overrides);
    match loaded.result {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => (loaded.path, e),
    }
}

pub(super) fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            haystack.contains(needle),
            "expected {needle:?} in:\n{haystack}"
        );
    }
}

#[test]
fn defaults_run_on_one_machine() {
    let c = Config::default();
    c.validate().expect("defaults are valid");
    assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(
        c.kafka.subscription(),
        Subscription::Topics(vec!["events".into()])
    );
    assert_eq!(c.kafka.group_id, "streamtally");
    assert_eq!(c.kafka.auto_offset_reset, AutoOffsetReset::Earliest);
    assert_eq!(c.kafka.session_timeout_ms, 10_000);
    assert_eq!(c.kafka.partition_assignment_strategy, "cooperative-sticky");
    assert_eq!(c.kafka.max_message_bytes, 1_000_000);
    assert_eq!(c.kafka.max_future_skew_s, 86_400);
    assert_eq!(c.kafka.dead_letter.policy, DeadLetterPolicy::Topic);
    assert_eq!(
        c.kafka.dead_letter.topic_for("events").as_deref(),
        Some("events.dlq")
    );
    assert_eq!(c.kafka.dedup_window_events, 100_000);
    assert_eq!(c.store.path, PathBuf::from("./data"));
    assert_eq!(c.store.cache_capacity_mb, 64);
    assert_eq!(c.store.group_commit_max_batches, 16);
    assert_eq!(c.store.wal_segment_mb, 64);
    assert_eq!(c.store.checkpoint_interval_ms, 5_000);
    assert_eq!(c.store.row_cache_mb, 64);
    assert_eq!(c.batching.max_batch_events, 1_000);
    assert_eq!(c.batching.max_batch_delay_ms, 100);
    assert_eq!(c.batching.max_inflight_bytes, 64 << 20);
    assert!(c.stats.enabled);
    assert_eq!(c.stats.unique_exact_threshold, 10_000);
    assert_eq!(c.stats.realtime_windows_s, vec![300]);
    assert_eq!(c.stats.persist_interval_ms, 1_000);
    assert_eq!(c.stats.rollup_flush_interval_ms, 1_000);
    assert_eq!(
        c.gateway.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.gateway.push_interval_ms, 1_000);
    assert_eq!(c.gateway.max_range_days, 400);
    assert!(c.gateway.cors_allowed_origins.is_empty());
    assert_eq!(c.gateway.ws_max_message_bytes, 65_536);
    assert_eq!(c.gateway.ws_send_queue, 64);
    assert_eq!(c.gateway.ws_max_commands_per_s, 20);
    assert_eq!(c.gateway.recent_events_cap, 100);
    assert_eq!(c.gateway.header_read_timeout_ms, 10_000);
    assert_eq!(c.gateway.idle_timeout_ms, 60_000);
    assert_eq!(c.gateway.max_connections, 10_000);
    assert!(c.auth.enabled && c.auth.tokens.is_empty() && c.auth.admin_token_sha256.is_none());
    assert!(c.metrics.enabled);
    assert_eq!(c.metrics.path, "/metrics");
    assert_eq!(c.metrics.readiness.max_lag_events, 100_000);
    assert_eq!(c.metrics.readiness.max_freshness_ms, 60_000);
    assert_eq!(c.metrics.readiness.max_flush_age_ms, 30_000);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    // An empty file is all defaults.
    assert_eq!(ok("", &[], &[]), c);
}

#[test]
fn connector_toml_equals_defaults_and_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_FILE);
    let src = ConfigSource {
        file: Some(path.clone()),
        ..ConfigSource::default()
    };
    let loaded = Config::load(&src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded, Config::default());

    fn keys(t: &Table, prefix: &str, out: &mut BTreeSet<String>) {
        for (k, v) in t {
            let key = format!("{prefix}{k}");
            if let Value::Table(inner) = v {
                keys(inner, &format!("{key}."), out);
            }
            out.insert(key);
        }
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let mut in_file = BTreeSet::new();
    keys(&toml::from_str(&text).unwrap(), "", &mut in_file);
    let mut in_defaults = BTreeSet::new();
    keys(&defaults_table().unwrap(), "", &mut in_defaults);
    // Documented as a commented [[auth.tokens]] example: an uncommented `tokens = []`
    // would clash with it.
    in_defaults.remove("auth.tokens");
    assert_eq!(
        in_file, in_defaults,
        "connector.toml and the defaults differ"
    );
    assert_contains(
        &text,
        &[
            "# topic_regex = ",
            "# topic = ",
            "# \"security.protocol\" = \"SASL_SSL\"",
            "# events = ",
            "# admin_token_sha256 = ",
            "# [[auth.tokens]]",
        ],
    );
}
