//! `[gateway]`, `[auth]` and `[metrics]`: what the HTTP/WebSocket gateway serves and to
//! whom, with the typed options its sessions read.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{non_zero, parse_sha256_hex};

/// The shortest `gateway.push_interval_ms`: the sessions share their reads for half of it
/// and the real-time worker publishes every quarter of it, which should stay >= 20 ms and
/// >= 10 ms (faster adds load and no visible freshness).
pub(super) const MIN_PUSH_INTERVAL_MS: u64 = 40;

/// The shortest `gateway.ws_ping_interval_ms`.
pub(super) const MIN_WS_PING_INTERVAL_MS: u64 = 10;

/// `[gateway]`: the HTTP API and WebSocket push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the gateway listens on (`ip:port`).
    pub listen: SocketAddr,
    /// How often WebSocket clients get an update (only when something changed); at least 40.
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
    /// How often an idle WebSocket connection is pinged; at least 10.
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
    /// The URL other instances of the group reach this gateway at (`http://host:port` or
    /// `https://...`), announced with `[scale_out]`; empty = `http://<host name>:<listen
    /// port>`.
    pub advertised_url: String,
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
            advertised_url: String::new(),
        }
    }
}

impl GatewayConfig {
    /// `push_interval_ms` (`validate` keeps it >= 40 ms).
    pub fn push_interval(&self) -> Duration {
        Duration::from_millis(self.push_interval_ms)
    }

    /// How long the WebSocket sessions share one read (counters, a view's data): half a
    /// push interval, so >= 20 ms.
    pub fn push_read_shared_for(&self) -> Duration {
        self.push_interval() / 2
    }

    /// How often the real-time worker publishes new events to the sessions: a quarter of
    /// the push interval (an event waits at most that much longer than the push itself),
    /// so >= 10 ms.
    pub fn live_publish_interval(&self) -> Duration {
        self.push_interval() / 4
    }

    /// `ws_ping_interval_ms` (`validate` keeps it >= 10 ms).
    pub fn ws_ping_interval(&self) -> Duration {
        Duration::from_millis(self.ws_ping_interval_ms)
    }

    /// `ws_send_queue` (`validate` keeps it >= 1).
    pub fn ws_send_queue(&self) -> NonZeroUsize {
        non_zero(self.ws_send_queue)
    }

    /// `recent_events_cap` (`validate` keeps it >= 1).
    pub fn recent_events_cap(&self) -> NonZeroUsize {
        non_zero(self.recent_events_cap)
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
