//! Change-feed workers that keep the rollups and real-time counters the dashboards read.
//!
//! - [`rollup::RollupWorker`] tails the store's change feed from the durable cursor
//!   `stats.rollups` and keeps HourlyStats, DailyStats and EventNameDaily. Its output rows and
//!   its cursor advance are ONE atomic store write, so a crash neither loses nor double-applies
//!   a change. Unique users/sessions are exact sets up to a threshold, then HyperLogLog
//!   sketches ([`sketch`]); ranges are unions, never sums.
//! - [`realtime::RealtimeWorker`] keeps per-org sliding-window counters (events and active
//!   users over 5 minutes and any extra windows) in memory, per second of event time,
//!   persists them to RealtimeCounter at least every second and rebuilds them after a restart
//!   from the last windows' worth of the feed (cursor `stats.realtime`).
//! - [`query::StatsReader`] answers the gateway's questions from rollups and indexes only.
//! - [`rebuild`] recomputes rollups from raw events (`streamtally stats rebuild|verify`).

pub mod bucket;
pub mod explore;
pub mod partial;
pub mod parts;
pub mod query;
pub mod realtime;
pub mod rebuild;
pub mod replica;
pub mod rollup;
pub mod sketch;
pub mod trailing;
pub mod trends;
pub mod zone;

use crate::store::StoreError;

/// The rollup worker's change-feed cursor.
pub const ROLLUP_CURSOR: &str = "stats.rollups";
/// The real-time worker's change-feed cursor (where a restart replays from).
pub const REALTIME_CURSOR: &str = "stats.realtime";

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "stats: the change feed no longer holds sequence {needed} (oldest kept: {oldest}); \
         the rollups cannot catch up from the feed: stop the connector and run \
         `streamtally stats rebuild`"
    )]
    FeedGone { needed: u64, oldest: u64 },
    #[error("stats: {entity} row for {key} holds an unreadable state ({message}); run `streamtally stats rebuild`")]
    BadState {
        entity: &'static str,
        key: String,
        message: String,
    },
    #[error(
        "stats: change-feed entry {seq} names Event {id} version {version}, which cannot be read"
    )]
    MissingVersion { seq: u64, id: String, version: u64 },
    #[error("stats: {0}")]
    Invalid(String),
}

impl StatsError {
    /// Whether a worker may retry from its durable cursor: only a store error the store
    /// calls retryable (see [`StoreError::is_retryable`]); the rest stop the worker.
    pub fn is_retryable(&self) -> bool {
        match self {
            StatsError::Store(e) => e.is_retryable(),
            StatsError::FeedGone { .. }
            | StatsError::BadState { .. }
            | StatsError::MissingVersion { .. }
            | StatsError::Invalid(_) => false,
        }
    }

    pub(crate) fn from_feed(e: StoreError) -> StatsError {
        match e {
            StoreError::FeedTruncated { requested, oldest } => StatsError::FeedGone {
                needed: requested,
                oldest,
            },
            other => StatsError::Store(other),
        }
    }
}

/// Formats a 16-byte id as a UUID.
pub(crate) fn uuid_str(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).to_string()
}
