//! `Config::validate`: the rules serde cannot check (ranges, formats, settings that must
//! agree). Each problem names the key and its value, and the other key and value for a
//! cross-field rule. A value a caller would otherwise have to clamp is refused here, so the
//! typed accessors of the sections never see it.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::gateway::{MIN_PUSH_INTERVAL_MS, MIN_WS_PING_INTERVAL_MS};
use super::kafka::default_topics;
use super::rules::{
    assignment_strategy_problem, brokers_problem, cors_origin_problem, log_level_problem,
    scheme_host_problem, topic_name_problem,
};
use super::scale_out::{MAX_ANNOUNCE_INTERVAL_MS, MIN_ANNOUNCE_INTERVAL_MS, MIN_SECRET_CHARS};
use super::store::{MIN_CHECKPOINT_INTERVAL_MS, REQUIRED_REALTIME_WINDOW_S};
use super::{parse_sha256_hex, Config, ConfigError, DeadLetterPolicy};

/// librdkafka properties the connector derives from typed settings or must own itself.
/// Setting them in `[kafka.client]` would silently fight the typed setting.
const RESERVED_CLIENT_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("group.id", "set kafka.group_id instead"),
    ("auto.offset.reset", "set kafka.auto_offset_reset instead"),
    ("session.timeout.ms", "set kafka.session_timeout_ms instead"),
    (
        "partition.assignment.strategy",
        "set kafka.partition_assignment_strategy instead",
    ),
    (
        "enable.auto.commit",
        "offsets are stored with the events and committed by the connector after each durable write",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored with the events and committed by the connector after each durable write",
    ),
];

impl Config {
    /// Checks the rules serde cannot: ranges, formats, and settings that must agree.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        self.validate_kafka(&mut p);
        self.validate_store_and_batching(&mut p);
        self.validate_stats(&mut p);
        self.validate_gateway(&mut p);
        self.validate_auth(&mut p);
        self.validate_metrics_and_log(&mut p);
        self.validate_scale_out(&mut p);
        self.alerts.problems(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Validation { problems: p })
        }
    }

    fn validate_kafka(&self, p: &mut Vec<String>) {
        let k = &self.kafka;
        if let Some(problem) = brokers_problem(&k.brokers) {
            p.push(format!("kafka.brokers {:?}: {problem}", k.brokers));
        }
        match &k.topic_regex {
            Some(regex) => {
                if !k.topics.is_empty() && k.topics != default_topics() {
                    p.push(format!(
                        "kafka.topic_regex {regex:?} and kafka.topics {:?} are mutually \
                         exclusive: set one of them",
                        k.topics
                    ));
                }
                if !regex.starts_with('^') || regex.len() < 2 {
                    p.push(format!(
                        "kafka.topic_regex {regex:?}: must start with '^' and have a pattern \
                         after it (librdkafka treats other values as a topic name)"
                    ));
                }
            }
            None if k.topics.is_empty() => p.push(
                "kafka.topics is empty and kafka.topic_regex is not set: nothing to consume"
                    .to_string(),
            ),
            None => {}
        }
        let mut seen = BTreeSet::new();
        for topic in &k.topics {
            if let Some(problem) = topic_name_problem(topic) {
                p.push(format!("kafka.topics: topic {topic:?} {problem}"));
            }
            if !seen.insert(topic) {
                p.push(format!("kafka.topics: topic {topic:?} is listed twice"));
            }
        }
        if k.group_id.trim().is_empty() {
            p.push(format!(
                "kafka.group_id {:?}: must not be empty",
                k.group_id
            ));
        }
        if !(1..=3_600_000).contains(&k.session_timeout_ms) {
            p.push(format!(
                "kafka.session_timeout_ms {}: must be between 1 and 3600000",
                k.session_timeout_ms
            ));
        }
        if let Some(problem) = assignment_strategy_problem(&k.partition_assignment_strategy) {
            p.push(format!(
                "kafka.partition_assignment_strategy {:?}: {problem}",
                k.partition_assignment_strategy
            ));
        }
        if k.max_message_bytes == 0 {
            p.push("kafka.max_message_bytes 0: must be >= 1".to_string());
        }
        if k.max_future_skew_s == 0 {
            p.push("kafka.max_future_skew_s 0: must be >= 1".to_string());
        }
        if k.org_id_header.trim().is_empty() {
            p.push(format!(
                "kafka.org_id_header {:?}: must not be empty",
                k.org_id_header
            ));
        }
        if k.retry_backoff_initial_ms == 0 {
            p.push("kafka.retry_backoff_initial_ms 0: must be >= 1".to_string());
        }
        if k.retry_backoff_max_ms < k.retry_backoff_initial_ms {
            p.push(format!(
                "kafka.retry_backoff_max_ms ({}) must be >= kafka.retry_backoff_initial_ms ({})",
                k.retry_backoff_max_ms, k.retry_backoff_initial_ms
            ));
        }
        self.validate_dead_letter(p);
        self.validate_kafka_maps(p);
    }

    fn validate_dead_letter(&self, p: &mut Vec<String>) {
        let k = &self.kafka;
        let dl = &k.dead_letter;
        if let Some(topic) = &dl.topic {
            if let Some(problem) = topic_name_problem(topic) {
                p.push(format!("kafka.dead_letter.topic {topic:?}: {problem}"));
            }
        }
        if !(1..=512).contains(&dl.envelope_prefix_kib) {
            p.push(format!(
                "kafka.dead_letter.envelope_prefix_kib {}: must be 1 to 512 (an envelope must \
                 stay small enough for any broker)",
                dl.envelope_prefix_kib
            ));
        }
        if dl.policy == DeadLetterPolicy::Topic {
            match &dl.topic {
                Some(fixed) if k.topic_regex.is_none() && k.topics.contains(fixed) => {
                    p.push(format!(
                        "kafka.dead_letter.topic {fixed:?} is also in kafka.topics {:?}: dead \
                         letters would be consumed again",
                        k.topics
                    ))
                }
                Some(_) => {}
                None if dl.topic_suffix.is_empty() => p.push(
                    "kafka.dead_letter.topic_suffix is empty and kafka.dead_letter.topic is \
                     not set: dead letters would go back to their source topic"
                        .to_string(),
                ),
                None if k.topic_regex.is_none() => {
                    for topic in &k.topics {
                        let dlq = format!("{topic}{}", dl.topic_suffix);
                        if k.topics.contains(&dlq) {
                            p.push(format!(
                                "kafka.dead_letter.topic_suffix {:?} sends topic {topic:?} to \
                                 {dlq:?}, which is also in kafka.topics {:?}: dead letters \
                                 would be consumed again",
                                dl.topic_suffix, k.topics
                            ));
                        } else if let Some(problem) = topic_name_problem(&dlq) {
                            p.push(format!(
                                "kafka.dead_letter.topic_suffix {:?}: dead-letter topic \
                                 {dlq:?} {problem}",
                                dl.topic_suffix
                            ));
                        }
                    }
                }
                None => {}
            }
        }
    }

    fn validate_kafka_maps(&self, p: &mut Vec<String>) {
        let k = &self.kafka;
        for topic in k.default_org_ids.keys() {
            if let Some(problem) = topic_name_problem(topic) {
                p.push(format!("kafka.default_org_ids: topic {topic:?} {problem}"));
            } else if k.topic_regex.is_none() && !k.topics.contains(topic) {
                p.push(format!(
                    "kafka.default_org_ids has topic {topic:?}, which is not in kafka.topics {:?}",
                    k.topics
                ));
            }
        }

        for key in k.client.keys() {
            if key.trim().is_empty() {
                p.push("kafka.client: empty property name".to_string());
            }
            if let Some((_, why)) = RESERVED_CLIENT_KEYS.iter().find(|(r, _)| r == key) {
                p.push(format!("kafka.client {key:?} is not allowed: {why}"));
            }
        }
    }

    fn validate_store_and_batching(&self, p: &mut Vec<String>) {
        let s = &self.store;
        if s.path.as_os_str().is_empty() {
            p.push("store.path \"\": must not be empty".to_string());
        }
        for (key, value) in [
            ("store.cache_capacity_mb", s.cache_capacity_mb),
            ("store.group_commit_max_batches", s.group_commit_max_batches),
            ("store.wal_segment_mb", s.wal_segment_mb),
            ("store.migrate_chunk_rows", s.migrate_chunk_rows),
        ] {
            if value == 0 {
                p.push(format!("{key} 0: must be >= 1"));
            }
        }
        if super::store::parse_span(&s.dedup_window).is_none() {
            p.push(format!(
                "store.dedup_window {:?}: expected a whole number and a unit, s, m, h or d (e.g. \"24h\")",
                s.dedup_window
            ));
        }
        at_least(
            p,
            "store.checkpoint_interval_ms",
            s.checkpoint_interval_ms,
            MIN_CHECKPOINT_INTERVAL_MS,
            "more frequent checkpoints would take the store's time",
        );

        let b = &self.batching;
        if b.max_batch_events == 0 {
            p.push("batching.max_batch_events 0: must be >= 1".to_string());
        }
        if b.max_batch_delay_ms == 0 {
            p.push("batching.max_batch_delay_ms 0: must be > 0".to_string());
        }
        if b.max_batch_delay_ms >= self.kafka.session_timeout_ms {
            p.push(format!(
                "batching.max_batch_delay_ms ({}) must be < kafka.session_timeout_ms ({}): a \
                 revoke or shutdown drain must finish within the session",
                b.max_batch_delay_ms, self.kafka.session_timeout_ms
            ));
        }
        if b.max_inflight_bytes < self.kafka.max_message_bytes {
            p.push(format!(
                "batching.max_inflight_bytes ({}) must be >= kafka.max_message_bytes ({}): \
                 the largest accepted message must fit in flight",
                b.max_inflight_bytes, self.kafka.max_message_bytes
            ));
        }
    }

    fn validate_stats(&self, p: &mut Vec<String>) {
        let s = &self.stats;
        if s.unique_exact_threshold == 0 {
            p.push("stats.unique_exact_threshold 0: must be >= 1".to_string());
        }
        if s.persist_interval_ms == 0 {
            p.push("stats.persist_interval_ms 0: must be >= 1".to_string());
        }
        if s.trends_cache_mb > 65_536 {
            p.push(format!(
                "stats.trends_cache_mb {}: must be 0..=65536",
                s.trends_cache_mb
            ));
        }
        if s.rollup_flush_interval_ms == 0 {
            p.push("stats.rollup_flush_interval_ms 0: must be >= 1".to_string());
        }
        let windows = &s.realtime_windows_s;
        if !windows.contains(&REQUIRED_REALTIME_WINDOW_S) {
            p.push(format!(
                "stats.realtime_windows_s {windows:?}: must include {REQUIRED_REALTIME_WINDOW_S} \
                 (the window behind events_5m and active_users_5m)"
            ));
        }
        let mut seen = BTreeSet::new();
        for &w in windows {
            if !(1..=86_400).contains(&w) {
                p.push(format!(
                    "stats.realtime_windows_s {windows:?}: window {w} must be between 1 and \
                     86400 seconds"
                ));
            }
            if !seen.insert(w) {
                p.push(format!(
                    "stats.realtime_windows_s {windows:?}: window {w} is listed twice"
                ));
            }
        }
    }

    fn validate_gateway(&self, p: &mut Vec<String>) {
        let g = &self.gateway;
        at_least(
            p,
            "gateway.push_interval_ms",
            g.push_interval_ms,
            MIN_PUSH_INTERVAL_MS,
            "sessions share reads for half of it and new events are published every quarter",
        );
        at_least(
            p,
            "gateway.ws_ping_interval_ms",
            g.ws_ping_interval_ms,
            MIN_WS_PING_INTERVAL_MS,
            "pings more frequent than that only add load",
        );
        for (key, value) in [
            ("gateway.max_range_days", g.max_range_days),
            ("gateway.ws_max_message_bytes", g.ws_max_message_bytes),
            ("gateway.ws_send_queue", g.ws_send_queue),
            ("gateway.ws_max_commands_per_s", g.ws_max_commands_per_s),
            ("gateway.recent_events_cap", g.recent_events_cap),
            ("gateway.header_read_timeout_ms", g.header_read_timeout_ms),
            ("gateway.idle_timeout_ms", g.idle_timeout_ms),
            ("gateway.max_connections", g.max_connections),
        ] {
            if value == 0 {
                p.push(format!("{key} 0: must be >= 1"));
            }
        }
        for origin in &g.cors_allowed_origins {
            if let Some(problem) = cors_origin_problem(origin) {
                p.push(format!(
                    "gateway.cors_allowed_origins: {origin:?} {problem}"
                ));
            }
        }
        if g.cors_allowed_origins.len() > 1 && g.cors_allowed_origins.iter().any(|o| o == "*") {
            p.push(format!(
                "gateway.cors_allowed_origins {:?}: \"*\" must be the only entry",
                g.cors_allowed_origins
            ));
        }
    }

    fn validate_auth(&self, p: &mut Vec<String>) {
        let a = &self.auth;
        if let Some(hash) = &a.admin_token_sha256 {
            if parse_sha256_hex(hash).is_none() {
                p.push(format!(
                    "auth.admin_token_sha256 {hash:?}: must be a SHA-256 hash, 64 hex characters"
                ));
            }
        }
        let mut seen: BTreeMap<[u8; 32], (usize, Uuid)> = BTreeMap::new();
        for (i, token) in a.tokens.iter().enumerate() {
            let Some(bytes) = token.sha256_bytes() else {
                p.push(format!(
                    "auth.tokens[{i}].token_sha256 {:?} (org {}): must be a SHA-256 hash, 64 hex \
                     characters",
                    token.token_sha256, token.org_id
                ));
                continue;
            };
            if let Some((j, other_org)) = seen.get(&bytes) {
                p.push(format!(
                    "auth.tokens[{i}] (org {}) and auth.tokens[{j}] (org {other_org}) have the \
                     same token_sha256 {:?}",
                    token.org_id, token.token_sha256
                ));
            } else {
                seen.insert(bytes, (i, token.org_id));
            }
            if a.admin_token_sha256.as_deref().and_then(parse_sha256_hex) == Some(bytes) {
                p.push(format!(
                    "auth.tokens[{i}] (org {}) has the same hash as auth.admin_token_sha256 {:?}",
                    token.org_id, token.token_sha256
                ));
            }
        }
    }

    fn validate_metrics_and_log(&self, p: &mut Vec<String>) {
        let m = &self.metrics;
        let path = &m.path;
        if !path.starts_with('/') || path.len() < 2 || path.contains(char::is_whitespace) {
            p.push(format!(
                "metrics.path {path:?}: must start with '/' and name a path"
            ));
        } else if ["/healthz", "/readyz"].contains(&path.as_str())
            || ["/api/", "/ws/"]
                .iter()
                .any(|prefix| path.starts_with(prefix))
        {
            p.push(format!(
                "metrics.path {path:?}: collides with a gateway route (/healthz, /readyz, \
                 /api/, /ws/)"
            ));
        }
        let r = &m.readiness;
        for (key, value) in [
            ("metrics.readiness.max_lag_events", r.max_lag_events),
            ("metrics.readiness.max_freshness_ms", r.max_freshness_ms),
            ("metrics.readiness.max_flush_age_ms", r.max_flush_age_ms),
        ] {
            if value == 0 {
                p.push(format!("{key} 0: must be >= 1"));
            }
        }
        if r.max_flush_age_ms <= self.batching.max_batch_delay_ms {
            p.push(format!(
                "metrics.readiness.max_flush_age_ms ({}) must be > batching.max_batch_delay_ms \
                 ({}): a healthy connector flushes at least that often",
                r.max_flush_age_ms, self.batching.max_batch_delay_ms
            ));
        }
        if let Some(problem) = log_level_problem(&self.log.level) {
            p.push(format!("log.level {:?}: {problem}", self.log.level));
        }
    }

    fn validate_scale_out(&self, p: &mut Vec<String>) {
        let s = &self.scale_out;
        let url = &self.gateway.advertised_url;
        if !url.is_empty() {
            // One trailing slash is taken (it is dropped when announced).
            let base = url.strip_suffix('/').unwrap_or(url);
            if let Some(problem) = scheme_host_problem(base) {
                p.push(format!("gateway.advertised_url {url:?}: {problem}"));
            }
        }
        let ms = s.announce_interval_ms;
        if !(MIN_ANNOUNCE_INTERVAL_MS..=MAX_ANNOUNCE_INTERVAL_MS).contains(&ms) {
            p.push(format!(
                "scale_out.announce_interval_ms {ms}: must be within \
                 {MIN_ANNOUNCE_INTERVAL_MS}..={MAX_ANNOUNCE_INTERVAL_MS}"
            ));
        }
        let id = &s.instance_id;
        if id.chars().count() > 200 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            p.push(format!(
                "scale_out.instance_id {id:?}: at most 200 characters, no spaces or control \
                 characters"
            ));
        }
        if !(100..=60_000).contains(&s.peer_timeout_ms) {
            p.push(format!(
                "scale_out.peer_timeout_ms {}: must be within 100..=60000",
                s.peer_timeout_ms
            ));
        }
        if !s.enabled {
            return;
        }
        let chars = s.cluster_secret.chars().count();
        if chars < MIN_SECRET_CHARS {
            p.push(format!(
                "scale_out.cluster_secret ({chars} characters): at least {MIN_SECRET_CHARS} \
                 characters, the same on every instance of the group (set it in the file or \
                 in STREAMTALLY__SCALE_OUT__CLUSTER_SECRET)"
            ));
        }
        let topic = s.members_topic(&self.kafka.group_id);
        if let Some(problem) = topic_name_problem(&topic) {
            if s.members_topic.is_empty() {
                p.push(format!(
                    "scale_out.members_topic (empty: \"<kafka.group_id>.members\" = {topic:?}): \
                     {problem}; set scale_out.members_topic"
                ));
            } else {
                p.push(format!("scale_out.members_topic {topic:?}: {problem}"));
            }
        }
        let source = self.kafka.topics.contains(&topic);
        if source {
            p.push(format!(
                "scale_out.members_topic {topic:?} is also in kafka.topics: announcements are \
                 not events"
            ));
        }
    }
}

/// Refuses `value` below `min`, naming the key, the value, the allowed range and why.
fn at_least(p: &mut Vec<String>, key: &str, value: u64, min: u64, why: &str) {
    if value < min {
        p.push(format!("{key} {value}: must be >= {min} ({why})"));
    }
}
