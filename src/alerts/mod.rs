//! Alerting (docs/ALERTS.md): threshold rules per org ([`rule`]), evaluated every second on
//! the live stats by one worker ([`eval`]) whose transitions and deliveries are written in
//! one store write, then sent to the org's WebSocket clients and webhooks ([`deliver`]).

pub mod deliver;
pub mod eval;
pub mod rule;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, Notify};

/// The change-feed cursor of the alert worker.
pub const ALERTS_CURSOR: &str = "alerts";

/// One alert message for the WebSocket clients of `org`: its JSON text.
#[derive(Debug)]
pub struct AlertMessage {
    pub org: [u8; 16],
    pub text: Arc<str>,
}

/// What the latest evaluation of a rule found (not persisted: the state is, at transitions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluated {
    pub value: f64,
    pub previous_value: f64,
    pub at_us: i64,
}

/// Shared by the alert worker and the gateway.
#[derive(Clone)]
pub struct Hub {
    /// Alert messages for WebSocket sessions.
    pub messages: broadcast::Sender<Arc<AlertMessage>>,
    /// The latest evaluation of every rule, by rule id.
    pub evaluated: Arc<Mutex<HashMap<[u8; 16], Evaluated>>>,
    /// Woken when the API changed a rule: the worker reloads the rules at once.
    pub rules_changed: Arc<Notify>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            messages: broadcast::channel(256).0,
            evaluated: Arc::default(),
            rules_changed: Arc::default(),
        }
    }
}

/// The idempotency key of a rule's firing `seq`.
pub fn idempotency_key(rule: &[u8; 16], seq: i64) -> String {
    format!("{}:{seq}", uuid::Uuid::from_bytes(*rule))
}
