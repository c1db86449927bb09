//! `[kafka]`: the consumer group, what it reads, dead letters and the librdkafka
//! passthrough, with the typed options the ingest loop reads.

use std::collections::BTreeMap;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `[kafka]`: the consumer group and what it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, a comma-separated `host:port` list (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// Topics to consume. Leave at the default (or empty) when `topic_regex` is set.
    pub topics: Vec<String>,
    /// Subscribe to every topic matching this regex instead of `topics` (librdkafka syntax:
    /// must start with `^`, e.g. `^events\..*`). Make sure dead-letter topics do not match it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_regex: Option<String>,
    /// Consumer group id; instances with the same id share the partitions.
    pub group_id: String,
    /// Where a partition starts when neither the store nor Kafka has a position for it.
    pub auto_offset_reset: AutoOffsetReset,
    /// Consumer group session timeout; a shutdown or revoke drain must finish within it.
    pub session_timeout_ms: u64,
    /// librdkafka `partition.assignment.strategy`: `cooperative-sticky` (incremental
    /// rebalances), or eager `range` / `roundrobin` (comma-separated).
    pub partition_assignment_strategy: String,
    /// Messages larger than this (key + payload) are dead-lettered as oversized.
    pub max_message_bytes: u64,
    /// Events whose timestamp is more than this many seconds ahead of the wall clock are
    /// dead-lettered.
    pub max_future_skew_s: u64,
    /// Kafka header that carries the org id when the payload has none.
    pub org_id_header: String,
    /// How many recent payload ids are remembered to drop producer-retry duplicates before
    /// they reach the store (0 = off; the id-keyed upsert still stores each id once).
    pub dedup_window_events: u64,
    /// First delay when retrying a failed store write or dead-letter produce; doubles on
    /// each retry.
    pub retry_backoff_initial_ms: u64,
    /// Ceiling of the retry delay.
    pub retry_backoff_max_ms: u64,
    /// What happens to messages that cannot be stored.
    pub dead_letter: DeadLetterConfig,
    /// Org id for events that carry none in the payload or headers, per source topic.
    pub default_org_ids: BTreeMap<String, Uuid>,
    /// librdkafka properties passed through verbatim (security, SASL, SSL, fetch sizes).
    /// Values of keys containing password, secret, key or sasl.oauthbearer are masked
    /// when the config is printed.
    pub client: BTreeMap<String, String>,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_string()
}
pub(super) fn default_topics() -> Vec<String> {
    vec!["events".to_string()]
}
fn default_group_id() -> String {
    "streamtally".to_string()
}
fn default_session_timeout_ms() -> u64 {
    10_000
}
fn default_partition_assignment_strategy() -> String {
    "cooperative-sticky".to_string()
}
fn default_max_message_bytes() -> u64 {
    1_000_000
}
fn default_max_future_skew_s() -> u64 {
    86_400
}
fn default_org_id_header() -> String {
    "org_id".to_string()
}
fn default_dedup_window_events() -> u64 {
    100_000
}
fn default_retry_backoff_initial_ms() -> u64 {
    100
}
fn default_retry_backoff_max_ms() -> u64 {
    10_000
}

/// The consumer's prefetch queue, in KiB, unless `[kafka.client]` sets
/// `queued.max.messages.kbytes`.
pub const DEFAULT_QUEUED_MAX_KBYTES: u32 = 16 * 1024;

/// How long librdkafka waits before fetching a partition again once the prefetch queue was
/// full, in milliseconds, unless `[kafka.client]` sets `fetch.queue.backoff.ms`. librdkafka's
/// default, 1000, suits its 64 MiB queue: the 16 MiB queue drains in ~0.2 s at 100k
/// ~300-byte events/s, after which the poll loop waited for the rest of the second. Measured
/// (`cargo bench --bench ingest -- --events 2000000 --ids v4`, Tansu, 2026-12-04): 55,441
/// events/s with 1000 ms, the ingest thread waiting in `poll` ~55% of the time and the two
/// cores half idle; 100,089 with 20 ms.
pub const DEFAULT_FETCH_QUEUE_BACKOFF_MS: u32 = 20;

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            topics: default_topics(),
            topic_regex: None,
            group_id: default_group_id(),
            auto_offset_reset: AutoOffsetReset::default(),
            session_timeout_ms: default_session_timeout_ms(),
            partition_assignment_strategy: default_partition_assignment_strategy(),
            max_message_bytes: default_max_message_bytes(),
            max_future_skew_s: default_max_future_skew_s(),
            org_id_header: default_org_id_header(),
            dedup_window_events: default_dedup_window_events(),
            retry_backoff_initial_ms: default_retry_backoff_initial_ms(),
            retry_backoff_max_ms: default_retry_backoff_max_ms(),
            dead_letter: DeadLetterConfig::default(),
            default_org_ids: BTreeMap::new(),
            client: BTreeMap::new(),
        }
    }
}

/// What the consumer subscribes to, resolved from `topics` and `topic_regex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// A fixed list of topics.
    Topics(Vec<String>),
    /// A librdkafka regex subscription (starts with `^`).
    Regex(String),
}

impl KafkaConfig {
    /// The subscription: the regex when one is set, else the topic list.
    pub fn subscription(&self) -> Subscription {
        match &self.topic_regex {
            Some(regex) => Subscription::Regex(regex.clone()),
            None => Subscription::Topics(self.topics.clone()),
        }
    }

    /// The librdkafka consumer properties: those derived from the typed settings, manual
    /// offset handling, then `[kafka.client]` verbatim.
    pub fn consumer_properties(&self) -> BTreeMap<String, String> {
        let mut props = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            props.insert(k.to_string(), v);
        };
        set("bootstrap.servers", self.brokers.clone());
        set("group.id", self.group_id.clone());
        set(
            "auto.offset.reset",
            self.auto_offset_reset.as_str().to_string(),
        );
        set("session.timeout.ms", self.session_timeout_ms.to_string());
        set(
            "partition.assignment.strategy",
            self.partition_assignment_strategy.clone(),
        );
        set("enable.auto.commit", "false".to_string());
        set("enable.auto.offset.store", "false".to_string());
        // librdkafka prefetches up to 64 MiB by default; a sidecar under a memory limit
        // needs far less to keep the store busy (16 MiB is ~0.8 s of ~300-byte events at
        // 65k/s). `[kafka.client]` may set it.
        set(
            "queued.max.messages.kbytes",
            DEFAULT_QUEUED_MAX_KBYTES.to_string(),
        );
        set(
            "fetch.queue.backoff.ms",
            DEFAULT_FETCH_QUEUE_BACKOFF_MS.to_string(),
        );
        for (k, v) in &self.client {
            props.insert(k.clone(), v.clone());
        }
        props
    }

    /// The org id configured for events of `topic` that carry none.
    pub fn default_org_id(&self, topic: &str) -> Option<Uuid> {
        self.default_org_ids.get(topic).copied()
    }

    /// `retry_backoff_initial_ms`: the first retry delay (`validate` keeps it >= 1 ms).
    pub fn retry_backoff_initial(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_initial_ms)
    }

    /// `retry_backoff_max_ms`: the retry delay's ceiling (`validate` keeps it >= the
    /// initial delay).
    pub fn retry_backoff_max(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_max_ms)
    }
}

/// `kafka.auto_offset_reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoOffsetReset {
    /// Start from the oldest retained message.
    #[default]
    Earliest,
    /// Start from the next message produced.
    Latest,
}

impl AutoOffsetReset {
    /// The librdkafka spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoOffsetReset::Earliest => "earliest",
            AutoOffsetReset::Latest => "latest",
        }
    }
}

/// `[kafka.dead_letter]`: where messages that cannot be stored go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// `topic`: produce to a dead-letter topic (the partition does not advance until the
    /// produce succeeds); `fail`: stop the connector with an error; `skip`: log and count.
    pub policy: DeadLetterPolicy,
    /// With policy `topic`: the dead-letter topic is the source topic plus this suffix.
    pub topic_suffix: String,
    /// With policy `topic`: one fixed dead-letter topic for all sources (overrides
    /// `topic_suffix`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// With policy `topic`: when the dead-letter producer or the broker refuses a record for
    /// its size, an envelope is sent instead (header `streamtally.truncated: true`): a JSON
    /// object with this many KiB of the value (base64), its length and SHA-256, the reason and
    /// the source topic, partition and offset.
    pub envelope_prefix_kib: u64,
    /// Dead-letter an event whose (org, id) is already stored with other content (reason
    /// `id_conflict`) instead of only counting and logging it. The first write wins either way.
    pub id_conflicts: bool,
}

fn default_envelope_prefix_kib() -> u64 {
    4
}

fn default_dead_letter_topic_suffix() -> String {
    ".dlq".to_string()
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            policy: DeadLetterPolicy::default(),
            topic_suffix: default_dead_letter_topic_suffix(),
            topic: None,
            envelope_prefix_kib: default_envelope_prefix_kib(),
            id_conflicts: false,
        }
    }
}

impl DeadLetterConfig {
    /// The dead-letter topic for messages from `source_topic`; `None` unless the policy is
    /// `topic`.
    pub fn topic_for(&self, source_topic: &str) -> Option<String> {
        match self.policy {
            DeadLetterPolicy::Topic => Some(match &self.topic {
                Some(fixed) => fixed.clone(),
                None => format!("{source_topic}{}", self.topic_suffix),
            }),
            DeadLetterPolicy::Fail | DeadLetterPolicy::Skip => None,
        }
    }
}

/// `kafka.dead_letter.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterPolicy {
    /// Produce the message to a dead-letter topic with headers giving the reason.
    #[default]
    Topic,
    /// Stop the connector with an error naming the message.
    Fail,
    /// Log and count the message, then move on.
    Skip,
}
