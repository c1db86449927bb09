//! The connector.toml tree: typed, documented settings for every module, their built-in
//! defaults, the layered loader and the cross-field checks.
//!
//! Layers, lowest to highest: built-in defaults < the config file (`--config`, else
//! `./connector.toml` if it exists) < environment variables `STREAMTALLY__SECTION__KEY`
//! < command-line flags (dotted keys). `main` builds a [`ConfigSource`], calls
//! [`Config::load`] and hands the sections to ingest, store, stats, gateway and metrics;
//! this module talks to nothing else.
//!
//! Why the loader is not "merge everything, then deserialize": once layers are merged,
//! serde can no longer say which layer brought a bad key. So every layer is first cut into
//! leaves (a key path and a TOML value), and each leaf is deserialized on its own on top of
//! the defaults. A leaf that fails is reported with its key, its value and its layer; only
//! then are the leaves merged and deserialized once. Arrays are leaves (a higher layer
//! replaces the whole list); `[kafka.client]` and `[kafka.default_org_ids]` are open maps
//! whose entries are leaves (layers add to them key by key).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};
use uuid::Uuid;

/// Prefix of the environment variables that override settings:
/// `STREAMTALLY__KAFKA__BROKERS`, `STREAMTALLY__KAFKA__CLIENT__SECURITY.PROTOCOL`.
pub const ENV_PREFIX: &str = "STREAMTALLY__";

/// The config file read when no `--config` is given (relative to the working directory).
pub const DEFAULT_CONFIG_FILE: &str = "connector.toml";

/// What secret values are replaced with in [`Config::to_masked_toml`] and in errors.
pub const MASK: &str = "***";

/// Open maps: tables whose keys are data (librdkafka property names, topic names), not
/// settings. Their entries are merged key by key, and an environment variable or flag
/// names one entry with everything after the map's path.
const OPEN_MAPS: &[&[&str]] = &[&["kafka", "client"], &["kafka", "default_org_ids"]];

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

/// The 5-minute window behind `RealtimeCounter.events_5m` and `active_users_5m`.
const REQUIRED_REALTIME_WINDOW_S: u64 = 300;

// ---------------------------------------------------------------------------------------
// The tree
// ---------------------------------------------------------------------------------------

/// The whole configuration: one field per `[section]` of connector.toml.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka consumer group: brokers, subscription, limits, dead letters, librdkafka passthrough.
    pub kafka: KafkaConfig,
    /// The embedded store: location, cache, group commit, WAL, checkpoints.
    pub store: StoreConfig,
    /// When the consumer flushes a batch to the store, and how much may be in flight.
    pub batching: BatchingConfig,
    /// Change-feed workers: rollups, unique counts, real-time counters.
    pub stats: StatsConfig,
    /// The HTTP/WebSocket gateway.
    pub gateway: GatewayConfig,
    /// API tokens for the gateway.
    pub auth: AuthConfig,
    /// Prometheus metrics and the readiness thresholds of `/readyz`.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
}

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
fn default_topics() -> Vec<String> {
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
        for (k, v) in &self.client {
            props.insert(k.clone(), v.clone());
        }
        props
    }

    /// The org id configured for events of `topic` that carry none.
    pub fn default_org_id(&self, topic: &str) -> Option<Uuid> {
        self.default_org_ids.get(topic).copied()
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

/// `[store]`: the embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the store (created if missing).
    pub path: PathBuf,
    /// Page cache size in MiB.
    pub cache_capacity_mb: u64,
    /// Most batches one fsync may carry (group commit).
    pub group_commit_max_batches: u64,
    /// Write-ahead-log segment size in MiB before rotation.
    pub wal_segment_mb: u64,
    /// How often the store checkpoints and drops old WAL segments and change-feed entries.
    pub checkpoint_interval_ms: u64,
    /// Memory for the latest rows of the rollups the gateway reads (0: no cache), in MiB.
    pub row_cache_mb: u64,
}

fn default_store_path() -> PathBuf {
    PathBuf::from("./data")
}
fn default_cache_capacity_mb() -> u64 {
    256
}
fn default_group_commit_max_batches() -> u64 {
    16
}
fn default_wal_segment_mb() -> u64 {
    64
}
fn default_checkpoint_interval_ms() -> u64 {
    5_000
}
fn default_row_cache_mb() -> u64 {
    64
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            cache_capacity_mb: default_cache_capacity_mb(),
            group_commit_max_batches: default_group_commit_max_batches(),
            wal_segment_mb: default_wal_segment_mb(),
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
            row_cache_mb: default_row_cache_mb(),
        }
    }
}

/// `[batching]`: consumer-side batching and backpressure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingConfig {
    /// Flush a batch when it holds this many events.
    pub max_batch_events: u64,
    /// Flush a batch when its oldest event has waited this long.
    pub max_batch_delay_ms: u64,
    /// Bytes read from Kafka but not yet durable; above it the partitions are paused.
    pub max_inflight_bytes: u64,
}

fn default_max_batch_events() -> u64 {
    1_000
}
fn default_max_batch_delay_ms() -> u64 {
    100
}
fn default_max_inflight_bytes() -> u64 {
    64 * 1024 * 1024
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_events: default_max_batch_events(),
            max_batch_delay_ms: default_max_batch_delay_ms(),
            max_inflight_bytes: default_max_inflight_bytes(),
        }
    }
}

/// `[stats]`: change-feed workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// Run the stats workers (rollups and real-time counters).
    pub enabled: bool,
    /// Unique users/sessions are counted exactly up to this many per bucket, then by sketch.
    pub unique_exact_threshold: u64,
    /// Sliding windows of the real-time counters, in seconds; must include 300 (the window
    /// behind `events_5m` and `active_users_5m`).
    pub realtime_windows_s: Vec<u64>,
    /// How often the real-time counters are written to the store.
    pub persist_interval_ms: u64,
    /// Longest time rollup changes wait in memory before the rollup worker writes them.
    pub rollup_flush_interval_ms: u64,
}

fn default_stats_enabled() -> bool {
    true
}
fn default_unique_exact_threshold() -> u64 {
    10_000
}
fn default_realtime_windows_s() -> Vec<u64> {
    vec![REQUIRED_REALTIME_WINDOW_S]
}
fn default_persist_interval_ms() -> u64 {
    1_000
}
fn default_rollup_flush_interval_ms() -> u64 {
    1_000
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            enabled: default_stats_enabled(),
            unique_exact_threshold: default_unique_exact_threshold(),
            realtime_windows_s: default_realtime_windows_s(),
            persist_interval_ms: default_persist_interval_ms(),
            rollup_flush_interval_ms: default_rollup_flush_interval_ms(),
        }
    }
}

/// `[gateway]`: the HTTP API and WebSocket push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the gateway listens on (`ip:port`).
    pub listen: SocketAddr,
    /// How often WebSocket clients get an update (only when something changed).
    pub push_interval_ms: u64,
    /// Longest time range a query may ask for, in days; longer ranges get a 400.
    pub max_range_days: u64,
    /// Origins allowed by CORS (`https://host[:port]`, or `*`); empty = same origin only.
    pub cors_allowed_origins: Vec<String>,
    /// Largest WebSocket message a client may send, in bytes; a larger one (one frame or
    /// many fragments) closes the connection with 1009 before more of it is buffered.
    pub ws_max_message_bytes: u64,
    /// Pushes queued per WebSocket client; a client whose queue is full is skipped, then
    /// disconnected.
    pub ws_send_queue: u64,
    /// Commands a WebSocket client may send per second; more close the connection.
    pub ws_max_commands_per_s: u64,
    /// How often an idle WebSocket connection is pinged.
    pub ws_ping_interval_ms: u64,
    /// Most new events one update message carries.
    pub recent_events_cap: u64,
    /// Time a client has to send a whole request head (request line and headers), counted
    /// from its connection, or from its first byte after an idle keep-alive pause; a slower
    /// connection is closed.
    pub header_read_timeout_ms: u64,
    /// How long a keep-alive connection may wait between requests before it is closed.
    /// Upgraded WebSocket connections are not affected (they have pings and their own
    /// limits).
    pub idle_timeout_ms: u64,
    /// Most open connections, HTTP and WebSocket together; a connection over the cap is
    /// accepted and closed at once (counted in `streamtally_gateway_connections_refused_total`).
    /// Each takes a file descriptor: keep it under the process's open-files limit.
    pub max_connections: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_push_interval_ms() -> u64 {
    1_000
}
fn default_max_range_days() -> u64 {
    400
}
fn default_ws_max_message_bytes() -> u64 {
    65_536
}
fn default_ws_send_queue() -> u64 {
    64
}
fn default_ws_max_commands_per_s() -> u64 {
    20
}
fn default_ws_ping_interval_ms() -> u64 {
    15_000
}
fn default_recent_events_cap() -> u64 {
    100
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_connections() -> u64 {
    10_000
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: default_listen(),
            push_interval_ms: default_push_interval_ms(),
            max_range_days: default_max_range_days(),
            cors_allowed_origins: Vec::new(),
            ws_max_message_bytes: default_ws_max_message_bytes(),
            ws_send_queue: default_ws_send_queue(),
            ws_max_commands_per_s: default_ws_max_commands_per_s(),
            ws_ping_interval_ms: default_ws_ping_interval_ms(),
            recent_events_cap: default_recent_events_cap(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: default_max_connections(),
        }
    }
}

/// `[auth]`: gateway API tokens, stored as SHA-256 hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require a token on every API and WebSocket request (disable only for local trials).
    pub enabled: bool,
    /// SHA-256 (64 hex chars) of a token that may read every org.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_sha256: Option<String>,
    /// Per-org tokens (`[[auth.tokens]]`).
    pub tokens: Vec<AuthToken>,
}

fn default_auth_enabled() -> bool {
    true
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: default_auth_enabled(),
            admin_token_sha256: None,
            tokens: Vec::new(),
        }
    }
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthToken {
    /// The org this token may read.
    pub org_id: Uuid,
    /// SHA-256 of the token, 64 hex chars (`streamtally token new --org X` prints it).
    pub token_sha256: String,
    /// A label for operators (who or what holds the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl AuthToken {
    /// The hash as bytes; `None` if it is not 64 hex chars (`validate` rejects that).
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        parse_sha256_hex(&self.token_sha256)
    }
}

/// `[metrics]`: Prometheus endpoint and readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics on the gateway.
    pub enabled: bool,
    /// HTTP path of the metrics endpoint.
    pub path: String,
    /// When `/readyz` answers 200.
    pub readiness: ReadinessConfig,
}

fn default_metrics_enabled() -> bool {
    true
}
fn default_metrics_path() -> String {
    "/metrics".to_string()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: default_metrics_enabled(),
            path: default_metrics_path(),
            readiness: ReadinessConfig::default(),
        }
    }
}

/// `[metrics.readiness]`: `/readyz` thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessConfig {
    /// Not ready when the summed consumer lag (high watermark minus stored position)
    /// exceeds this many events.
    pub max_lag_events: u64,
    /// Not ready when the newest stored event time is older than this.
    pub max_freshness_ms: u64,
    /// Not ready when the last successful store flush is older than this while events wait.
    pub max_flush_age_ms: u64,
}

fn default_max_lag_events() -> u64 {
    100_000
}
fn default_max_freshness_ms() -> u64 {
    60_000
}
fn default_max_flush_age_ms() -> u64 {
    30_000
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            max_lag_events: default_max_lag_events(),
            max_freshness_ms: default_max_freshness_ms(),
            max_flush_age_ms: default_max_flush_age_ms(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or
    /// directives like `info,streamtally::ingest=debug`.
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".to_string()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// The layer a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A config file.
    File(PathBuf),
    /// An environment variable (its full name).
    Env(String),
    /// A command-line flag, given to [`ConfigSource::overrides`] as a dotted key.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag => f.write_str("command-line flag"),
        }
    }
}

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly given config file does not exist.
    #[error("config file {} not found", path.display())]
    FileNotFound { path: PathBuf },
    /// The config file exists but cannot be read.
    #[error("cannot read config file {}: {error}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{}:{line}:{column}: TOML syntax error: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key that is not a setting.
    #[error("unknown key {key} = {value} (from {origin}); {reason}")]
    UnknownKey {
        key: String,
        value: String,
        origin: Box<Origin>,
        reason: String,
    },
    /// A setting whose value has the wrong type or form.
    #[error("invalid value for {key} = {value} (from {origin}): {reason}")]
    InvalidValue {
        key: String,
        value: String,
        origin: Box<Origin>,
        reason: String,
    },
    /// An environment variable or flag name that is not a well-formed key.
    #[error("malformed key '{key}' (from {origin}): {reason}")]
    MalformedKey {
        key: String,
        origin: Box<Origin>,
        reason: String,
    },
    /// Settings that are each well-formed but break a rule (alone or together).
    #[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
    Validation { problems: Vec<String> },
    /// Several of the above, in layer order.
    #[error("{} configuration errors:\n  - {}", .0.len(), join_errors(.0))]
    Many(Vec<ConfigError>),
    /// A bug in this module (the defaults themselves do not load).
    #[error("internal configuration error: {0}")]
    Internal(String),
}

fn join_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string().replace('\n', "\n    "))
        .collect::<Vec<_>>()
        .join("\n  - ")
}

impl ConfigError {
    fn from_errors(mut errors: Vec<ConfigError>) -> ConfigError {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ConfigError::Many(errors)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Where [`Config::load`] reads from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The `--config` file; `None` reads `./connector.toml` if it exists.
    pub file: Option<PathBuf>,
    /// Environment variables; `main` passes `std::env::vars()`, tests their own. Only those
    /// starting with [`ENV_PREFIX`] are read.
    pub env: Vec<(String, String)>,
    /// Command-line flags as dotted keys and raw values, e.g. `("kafka.brokers", "h:9092")`.
    pub overrides: Vec<(String, String)>,
}

impl ConfigSource {
    /// A source reading `file` (or `./connector.toml`) and this process's environment.
    pub fn with_process_env(file: Option<PathBuf>) -> ConfigSource {
        ConfigSource {
            file,
            env: std::env::vars().collect(),
            overrides: Vec::new(),
        }
    }
}

/// One setting from one layer: a key path and the values to try, in order (an environment
/// value may be a TOML literal, a comma-separated list, or a plain string).
struct Leaf {
    path: Vec<String>,
    candidates: Vec<Value>,
    origin: Origin,
}

impl Config {
    /// Loads defaults < file < environment < overrides, then [`validate`](Config::validate)s.
    pub fn load(src: &ConfigSource) -> Result<Config, ConfigError> {
        let defaults = defaults_table()?;
        let mut errors = Vec::new();
        let mut leaves = Vec::new();

        if let Some((path, table)) = read_file(src.file.as_deref())? {
            let origin = Origin::File(path);
            file_leaves(
                &table,
                Some(&defaults),
                &mut Vec::new(),
                &origin,
                &mut leaves,
            );
        }

        // Sorted, so that two spellings of one key resolve the same way on every run.
        let mut env: Vec<&(String, String)> = src
            .env
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (name, raw) in env {
            let origin = Origin::Env(name.clone());
            let segments = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            match key_path(segments, &origin, name) {
                Ok(path) => leaves.push(raw_leaf(&defaults, path, raw, origin)),
                Err(e) => errors.push(e),
            }
        }

        for (key, raw) in &src.overrides {
            let segments = key.split('.').map(str::to_string).collect();
            match key_path(segments, &Origin::Flag, key) {
                Ok(path) => leaves.push(raw_leaf(&defaults, path, raw, Origin::Flag)),
                Err(e) => errors.push(e),
            }
        }

        let mut merged = defaults.clone();
        for leaf in leaves {
            match resolve(&defaults, leaf) {
                Ok((path, value)) => set_path(&mut merged, &path, value),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError::from_errors(errors));
        }

        // Every leaf deserialized on its own, so this only fails on a bug here.
        let config = Config::deserialize(Value::Table(merged))
            .map_err(|e| ConfigError::Internal(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules serde cannot: ranges, formats, and settings that must agree.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        self.validate_kafka(&mut p);
        self.validate_store_and_batching(&mut p);
        self.validate_stats(&mut p);
        self.validate_gateway(&mut p);
        self.validate_auth(&mut p);
        self.validate_metrics_and_log(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Validation { problems: p })
        }
    }

    /// The effective configuration as TOML, with secret `[kafka.client]` values as `***`.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        for (key, value) in masked.kafka.client.iter_mut() {
            if is_secret_client_key(key) {
                *value = MASK.to_string();
            }
        }
        toml::to_string(&masked)
            .unwrap_or_else(|e| format!("# cannot render the configuration as TOML: {e}\n"))
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
            ("store.checkpoint_interval_ms", s.checkpoint_interval_ms),
        ] {
            if value == 0 {
                p.push(format!("{key} 0: must be >= 1"));
            }
        }

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
        for (key, value) in [
            ("gateway.push_interval_ms", g.push_interval_ms),
            ("gateway.max_range_days", g.max_range_days),
            ("gateway.ws_max_message_bytes", g.ws_max_message_bytes),
            ("gateway.ws_send_queue", g.ws_send_queue),
            ("gateway.ws_max_commands_per_s", g.ws_max_commands_per_s),
            ("gateway.ws_ping_interval_ms", g.ws_ping_interval_ms),
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
}

/// Whether the value of librdkafka property `key` is a secret (masked when printed).
pub fn is_secret_client_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "sasl.oauthbearer", "key"]
        .iter()
        .any(|needle| key.contains(needle))
}

/// Parses a SHA-256 hash written as 64 hex characters (either case).
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Rule helpers
// ---------------------------------------------------------------------------------------

fn brokers_problem(brokers: &str) -> Option<String> {
    if brokers.trim().is_empty() {
        return Some("must list at least one host:port".to_string());
    }
    for entry in brokers.split(',').map(str::trim) {
        // librdkafka accepts an optional protocol prefix, e.g. SASL_SSL://host:9093.
        let hostport = entry.split_once("://").map_or(entry, |(_, rest)| rest);
        let port = if let Some(rest) = hostport.strip_prefix('[') {
            match rest.split_once(']') {
                Some((host, tail)) if !host.is_empty() => match tail {
                    "" => None,
                    _ => match tail.strip_prefix(':') {
                        Some(port) => Some(port),
                        None => return Some(format!("broker {entry:?} is not host:port")),
                    },
                },
                _ => return Some(format!("broker {entry:?} is not host:port")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && !host.contains(':') => Some(port),
                Some(_) => return Some(format!("broker {entry:?} is not host:port")),
                None => None,
            }
        };
        if hostport.is_empty() || hostport.contains(char::is_whitespace) {
            return Some(format!("broker {entry:?} is not host:port"));
        }
        if let Some(port) = port {
            if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
                return Some(format!("broker {entry:?} has an invalid port {port:?}"));
            }
        }
    }
    None
}

fn topic_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 249 {
        Some("is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("is not a valid topic name")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("may only contain ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}

fn assignment_strategy_problem(strategy: &str) -> Option<String> {
    let parts: Vec<&str> = strategy.split(',').map(str::trim).collect();
    for part in &parts {
        if !matches!(*part, "range" | "roundrobin" | "cooperative-sticky") {
            return Some(format!(
                "unknown strategy {part:?}, expected range, roundrobin or cooperative-sticky"
            ));
        }
    }
    if parts.len() > 1 && parts.contains(&"cooperative-sticky") {
        return Some("cooperative-sticky cannot be combined with eager strategies".to_string());
    }
    None
}

fn cors_origin_problem(origin: &str) -> Option<&'static str> {
    if origin == "*" {
        return None;
    }
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return Some("must be \"*\" or start with http:// or https://");
    };
    if rest.is_empty() || rest.contains(['/', '?', '#']) || rest.contains(char::is_whitespace) {
        return Some("must be scheme://host[:port] without a path or trailing slash");
    }
    None
}

fn log_level_problem(level: &str) -> Option<String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    if level.trim().is_empty() {
        return Some("must not be empty".to_string());
    }
    // EnvFilter reads a bare word as a target name, so "verbose" would parse and log
    // nothing useful; require a level or target=level for each directive.
    for directive in level.split(',').map(str::trim) {
        let word = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&word.to_ascii_lowercase().as_str()) {
            return Some(format!(
                "directive {directive:?} is not a level ({}) or target=level",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .err()
        .map(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// Layer plumbing
// ---------------------------------------------------------------------------------------

fn defaults_table() -> Result<Table, ConfigError> {
    match Value::try_from(Config::default()) {
        Ok(Value::Table(t)) => Ok(t),
        Ok(other) => Err(ConfigError::Internal(format!(
            "defaults serialize to a {}, not a table",
            other.type_str()
        ))),
        Err(e) => Err(ConfigError::Internal(e.to_string())),
    }
}

fn read_file(explicit: Option<&Path>) -> Result<Option<(PathBuf, Table)>, ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG_FILE);
            if !p.exists() {
                return Ok(None);
            }
            p
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::FileNotFound { path })
        }
        Err(error) => return Err(ConfigError::ReadFile { path, error }),
    };
    match toml::from_str::<Table>(&text) {
        Ok(table) => Ok(Some((path, table))),
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit_once('\n')
                .map_or(before, |(_, l)| l)
                .chars()
                .count()
                + 1;
            Err(ConfigError::Syntax {
                path,
                line,
                column,
                message: e.message().trim().replace('\n', "; "),
            })
        }
    }
}

fn open_map_at(path: &[String]) -> Option<&'static [&'static str]> {
    OPEN_MAPS
        .iter()
        .copied()
        .find(|m| m.len() == path.len() && m.iter().zip(path).all(|(a, b)| *a == b.as_str()))
}

fn in_open_map(path: &[String]) -> bool {
    path.len() > 1 && open_map_at(&path[..path.len() - 1]).is_some()
}

/// Cuts a file's table into leaves: descends into tables the defaults also have, takes
/// anything else (scalars, arrays, unknown tables) whole.
fn file_leaves(
    table: &Table,
    defaults: Option<&Table>,
    prefix: &mut Vec<String>,
    origin: &Origin,
    out: &mut Vec<Leaf>,
) {
    for (key, value) in table {
        prefix.push(key.clone());
        let default = defaults.and_then(|d| d.get(key));
        match (value, default) {
            (Value::Table(t), Some(Value::Table(_))) if open_map_at(prefix).is_some() => {
                // Unquoted dotted keys (`security.protocol = ..`) arrive as nested tables.
                let is_client = prefix.last().is_some_and(|k| k == "client");
                let mut entries = Vec::new();
                flatten_dotted(t, "", &mut entries);
                for (entry, v) in entries {
                    let v = match v {
                        // librdkafka takes every property as a string.
                        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) if is_client => {
                            Value::String(v.to_string())
                        }
                        other => other,
                    };
                    let mut path = prefix.clone();
                    path.push(entry);
                    out.push(Leaf {
                        path,
                        candidates: vec![v],
                        origin: origin.clone(),
                    });
                }
            }
            (Value::Table(t), Some(Value::Table(d))) => {
                file_leaves(t, Some(d), prefix, origin, out)
            }
            _ => out.push(Leaf {
                path: prefix.clone(),
                candidates: vec![value.clone()],
                origin: origin.clone(),
            }),
        }
        prefix.pop();
    }
}

fn flatten_dotted(table: &Table, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (key, value) in table {
        let full = format!("{prefix}{key}");
        match value {
            Value::Table(t) => flatten_dotted(t, &format!("{full}."), out),
            other => out.push((full, other.clone())),
        }
    }
}

/// Turns the segments of an environment variable or flag into a key path; inside an open
/// map, everything after the map's path is one key (joined with '.').
fn key_path(
    segments: Vec<String>,
    origin: &Origin,
    shown: &str,
) -> Result<Vec<String>, ConfigError> {
    let malformed = |reason: &str| ConfigError::MalformedKey {
        key: shown.to_string(),
        origin: Box::new(origin.clone()),
        reason: reason.to_string(),
    };
    for len in 1..segments.len() {
        if open_map_at(&segments[..len]).is_some() {
            let entry = segments[len..].join(".");
            if entry.is_empty() || entry.split('.').any(str::is_empty) {
                return Err(malformed("empty segment in the property or topic name"));
            }
            let mut path = segments[..len].to_vec();
            path.push(entry);
            return Ok(path);
        }
    }
    if segments.iter().any(String::is_empty) {
        return Err(malformed(
            "empty key segment (sections and keys are separated by '__' in environment \
             variables, '.' in flags)",
        ));
    }
    Ok(segments)
}

/// A leaf from an environment variable or flag. Open-map entries are taken verbatim (a
/// password is never reinterpreted); other values are tried as a TOML literal, then as a
/// comma-separated list where the setting is a list, then as a plain string.
fn raw_leaf(defaults: &Table, path: Vec<String>, raw: &str, origin: Origin) -> Leaf {
    let mut candidates = Vec::new();
    if !in_open_map(&path) {
        let parsed = parse_toml_value(raw);
        let default_is_array = matches!(get_path(defaults, &path), Some(Value::Array(_)));
        if let Some(v) = &parsed {
            candidates.push(v.clone());
        }
        if default_is_array && !matches!(parsed, Some(Value::Array(_))) {
            let items = if raw.trim().is_empty() {
                Vec::new()
            } else {
                raw.split(',')
                    .map(str::trim)
                    .map(|item| {
                        parse_toml_value(item).unwrap_or_else(|| Value::String(item.to_string()))
                    })
                    .collect()
            };
            candidates.push(Value::Array(items));
        }
    }
    candidates.push(Value::String(raw.to_string()));
    Leaf {
        path,
        candidates,
        origin,
    }
}

fn parse_toml_value(raw: &str) -> Option<Value> {
    let mut table = toml::from_str::<Table>(&format!("v = {raw}")).ok()?;
    if table.len() == 1 {
        table.remove("v")
    } else {
        None
    }
}

fn get_path<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for key in parents {
        t = t.get(key)?.as_table()?;
    }
    t.get(last)
}

fn set_path(table: &mut Table, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for key in parents {
        let entry = t
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        let Value::Table(inner) = entry else {
            return;
        };
        t = inner;
    }
    t.insert(last.clone(), value);
}

/// Deserializes the defaults with one leaf set; the error message if that fails.
fn probe(defaults: &Table, path: &[String], value: &Value) -> Result<(), String> {
    let mut t = defaults.clone();
    set_path(&mut t, path, value.clone());
    Config::deserialize(Value::Table(t))
        .map(|_| ())
        .map_err(|e| e.message().trim().to_string())
}

/// The first candidate value of a leaf that deserializes, or an error naming the key, the
/// value and the layer.
fn resolve(defaults: &Table, leaf: Leaf) -> Result<(Vec<String>, Value), ConfigError> {
    let mut first_error = None;
    for value in &leaf.candidates {
        match probe(defaults, &leaf.path, value) {
            Ok(()) => return Ok((leaf.path, value.clone())),
            Err(msg) => {
                first_error.get_or_insert((value, msg));
            }
        }
    }
    let Some((value, msg)) = first_error else {
        return Err(ConfigError::Internal(format!(
            "no value to try for {}",
            display_key(&leaf.path)
        )));
    };
    let (key, shown, msg) = narrow(defaults, &leaf.path, value, msg);
    let origin = Box::new(leaf.origin);
    Err(match msg.strip_prefix("unknown field `") {
        Some(rest) => ConfigError::UnknownKey {
            key,
            value: shown,
            origin,
            reason: rest
                .split_once("`, ")
                .map_or_else(|| msg.clone(), |(_, expected)| expected.to_string()),
        },
        None => ConfigError::InvalidValue {
            key,
            value: shown,
            origin,
            reason: msg,
        },
    })
}

/// For a failing list (e.g. `[[auth.tokens]]`), finds the element and, inside a table
/// element, the key that fails, so the error says `auth.tokens[1].org_id`, not the list.
fn narrow(
    defaults: &Table,
    path: &[String],
    value: &Value,
    msg: String,
) -> (String, String, String) {
    let whole = || (display_key(path), display_value(path, value), msg.clone());
    // Only settings that are lists; a list given where a string belongs is wrong as a whole.
    let (Value::Array(items), Some(Value::Array(_))) = (value, get_path(defaults, path)) else {
        return whole();
    };
    for (i, item) in items.iter().enumerate() {
        let Err(item_msg) = probe(defaults, path, &Value::Array(vec![item.clone()])) else {
            continue;
        };
        let at = format!("{}[{i}]", display_key(path));
        let Value::Table(t) = item else {
            return (at, item.to_string(), item_msg);
        };
        let culprit = t.keys().find(|k| {
            let mut without = t.clone();
            without.remove(*k);
            probe(defaults, path, &Value::Array(vec![Value::Table(without)])).as_ref()
                != Err(&item_msg)
        });
        return match culprit {
            Some(k) => (
                format!("{at}.{}", display_segment(k)),
                t[k].to_string(),
                item_msg,
            ),
            None => (at, item.to_string(), item_msg),
        };
    }
    whole()
}

fn display_segment(segment: &str) -> String {
    let bare = !segment.is_empty()
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        segment.to_string()
    } else {
        format!("{segment:?}")
    }
}

fn display_key(path: &[String]) -> String {
    path.iter()
        .map(|s| display_segment(s))
        .collect::<Vec<_>>()
        .join(".")
}

/// A value as TOML for an error message, with secret `[kafka.client]` values masked.
fn display_value(path: &[String], value: &Value) -> String {
    let is_client = |p: &[String]| p.len() == 2 && p[0] == "kafka" && p[1] == "client";
    if path.len() == 3 && is_client(&path[..2]) && is_secret_client_key(&path[2]) {
        return format!("{MASK:?}");
    }
    if let (true, Value::Table(t)) = (is_client(path), value) {
        let mut masked = t.clone();
        for (k, v) in masked.iter_mut() {
            if is_secret_client_key(k) {
                *v = Value::String(MASK.to_string());
            }
        }
        return Value::Table(masked).to_string();
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const ORG_A: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    const ORG_B: &str = "0b8e7d6c-5a4f-4e3d-9c2b-1a0f9e8d7c6b";
    const HASH_1: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const HASH_2: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    struct Loaded {
        result: Result<Config, ConfigError>,
        path: String,
        _file: tempfile::NamedTempFile,
    }

    /// Loads `file` (written to a temp file; empty = defaults) with the given env and flags.
    fn load(file: &str, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> Loaded {
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

    fn ok(file: &str, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> Config {
        match load(file, env, overrides).result {
            Ok(c) => c,
            Err(e) => panic!("expected the config to load, got: {e}"),
        }
    }

    fn err(file: &str, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> (String, ConfigError) {
        let loaded = load(file, env, overrides);
        match loaded.result {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => (loaded.path, e),
        }
    }

    fn assert_contains(haystack: &str, needles: &[&str]) {
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
        assert_eq!(c.store.cache_capacity_mb, 256);
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
}
