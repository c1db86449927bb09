//! `[scale_out]`: several connectors in one consumer group (docs/SCALE-OUT.md).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[scale_out]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleOutConfig {
    /// Announce this instance, its gateway URL and its partitions on the members topic, and
    /// read everyone's announcements (`GET /api/v1/cluster`).
    pub enabled: bool,
    /// This instance's name in the group, unique among its instances; empty = the host name.
    pub instance_id: String,
    /// The topic of the announcements (one partition); empty = `<kafka.group_id>.members`.
    pub members_topic: String,
    /// How often an instance announces itself, in milliseconds; one not heard from for
    /// three intervals is gone.
    pub announce_interval_ms: u64,
    /// Shared by every instance of the group: signs the requests instances send each other
    /// for partial answers (HMAC-SHA256). At least 16 characters; required when enabled.
    pub cluster_secret: String,
    /// How long an instance waits for a peer's partial answer, in milliseconds; a peer that
    /// takes longer makes the answer incomplete (its partitions `unreachable`).
    pub peer_timeout_ms: u64,
}

/// The fewest characters of `cluster_secret`.
pub const MIN_SECRET_CHARS: usize = 16;

/// The fewest milliseconds between two announcements.
pub const MIN_ANNOUNCE_INTERVAL_MS: u64 = 100;
/// The most milliseconds between two announcements.
pub const MAX_ANNOUNCE_INTERVAL_MS: u64 = 60_000;

impl Default for ScaleOutConfig {
    fn default() -> Self {
        ScaleOutConfig {
            enabled: false,
            instance_id: String::new(),
            members_topic: String::new(),
            announce_interval_ms: 2_000,
            cluster_secret: String::new(),
            peer_timeout_ms: 2_000,
        }
    }
}

impl ScaleOutConfig {
    /// `announce_interval_ms` (`validate` keeps it within 100..=60000).
    pub fn announce_interval(&self) -> Duration {
        Duration::from_millis(self.announce_interval_ms)
    }

    /// `peer_timeout_ms`.
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }

    /// The members topic: `members_topic`, else `<group_id>.members`.
    pub fn members_topic(&self, group_id: &str) -> String {
        if self.members_topic.is_empty() {
            format!("{group_id}.members")
        } else {
            self.members_topic.clone()
        }
    }

    /// `instance_id`, else the host name.
    pub fn instance_id(&self) -> String {
        if self.instance_id.is_empty() {
            host_name()
        } else {
            self.instance_id.clone()
        }
    }
}

/// The machine's host name ("localhost" if it has none).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}
