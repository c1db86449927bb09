//! The connector.toml tree: typed, documented settings for every module, their built-in
//! defaults, the layered loader and the cross-field checks.
//!
//! Layers, lowest to highest: built-in defaults < the config file (`--config`, else
//! `./connector.toml` if it exists) < environment variables `STREAMTALLY__SECTION__KEY`
//! < command-line flags (dotted keys). `main` builds a [`ConfigSource`], calls
//! [`Config::load`] and hands the sections to ingest, store, stats, gateway and metrics;
//! this module talks to nothing else.
//!
//! The files: `kafka`, `store` (store, batching, stats), `gateway` (gateway, auth,
//! metrics) and `scale_out` hold the sections' structs with their defaults and the typed
//! options callers read (`Duration`, `NonZeroUsize`); `validate` holds the rules that make
//! those options safe to read without a clamp; `layers` the loader; `error` what can go
//! wrong.

mod alerts;
mod error;
mod gateway;
mod kafka;
mod layers;
mod rules;
mod scale_out;
mod store;
mod validate;

#[cfg(test)]
mod tests;

use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};

pub use alerts::AlertsConfig;
pub use error::{ConfigError, Origin};
pub use gateway::{AuthConfig, AuthToken, GatewayConfig, MetricsConfig, ReadinessConfig};
pub use kafka::{AutoOffsetReset, DeadLetterConfig, DeadLetterPolicy, KafkaConfig, Subscription};
#[cfg(test)]
use layers::defaults_table;
pub use layers::ConfigSource;
pub use scale_out::{host_name, ScaleOutConfig};
pub use store::{BatchingConfig, RetentionConfig, StatsConfig, StoreConfig};

/// Prefix of the environment variables that override settings:
/// `STREAMTALLY__KAFKA__BROKERS`, `STREAMTALLY__KAFKA__CLIENT__SECURITY.PROTOCOL`.
pub const ENV_PREFIX: &str = "STREAMTALLY__";

/// The config file read when no `--config` is given (relative to the working directory).
pub const DEFAULT_CONFIG_FILE: &str = "connector.toml";

/// What secret values are replaced with in [`Config::to_masked_toml`] and in errors.
pub const MASK: &str = "***";

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
    /// Several connectors in one consumer group.
    pub scale_out: ScaleOutConfig,
    /// Threshold rules per org, evaluated on the live stats, delivered by WebSocket and webhook.
    pub alerts: AlertsConfig,
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

impl Config {
    /// The effective configuration as TOML, with secret `[kafka.client]` values and
    /// `scale_out.cluster_secret` as `***`.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        for (key, value) in masked.kafka.client.iter_mut() {
            if is_secret_client_key(key) {
                *value = MASK.to_string();
            }
        }
        if !masked.scale_out.cluster_secret.is_empty() {
            masked.scale_out.cluster_secret = MASK.to_string();
        }
        toml::to_string(&masked)
            .unwrap_or_else(|e| format!("# cannot render the configuration as TOML: {e}\n"))
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

/// A count that `validate` keeps >= 1, as the `NonZeroUsize` callers size things with. A
/// config built in code that skipped `validate` and holds 0 gets 1 rather than a panic
/// where the count sizes a channel; 64-bit values above `usize::MAX` get `usize::MAX`.
fn non_zero(n: u64) -> NonZeroUsize {
    NonZeroUsize::new(usize::try_from(n).unwrap_or(usize::MAX)).unwrap_or(NonZeroUsize::MIN)
}
