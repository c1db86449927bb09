//! `[store]`, `[batching]` and `[stats]`: the write path (the embedded store and the
//! consumer's batches) and the change-feed workers behind it, with typed options.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::non_zero;

/// The shortest `store.checkpoint_interval_ms`: checkpoints more often than this would
/// spend the store's time on checkpoints.
pub(super) const MIN_CHECKPOINT_INTERVAL_MS: u64 = 10;

/// The 5-minute window behind `RealtimeCounter.events_5m` and `active_users_5m`.
pub(super) const REQUIRED_REALTIME_WINDOW_S: u64 = 300;

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
    /// How often the store checkpoints and drops old WAL segments and change-feed entries;
    /// at least 10.
    pub checkpoint_interval_ms: u64,
    /// Memory for the latest rows of the rollups the gateway reads (0: no cache), in MiB.
    pub row_cache_mb: u64,
    /// How long (in ingest time) an event's (org, id) is remembered to drop a re-sent copy:
    /// `<n>s`, `<n>m`, `<n>h` or `<n>d`.
    pub dedup_window: String,
    /// Most ids remembered for deduplication (about 20 bytes of memory each); when more
    /// arrive within `dedup_window`, the oldest are forgotten first.
    pub dedup_max_ids: u64,
    /// Events moved per atomic write when a store written before events were kept in blocks
    /// is migrated (at open, or by `streamtally store migrate`); at least 1.
    pub migrate_chunk_rows: u64,
    /// `[store.retention]`: how long raw events and rollups are kept.
    pub retention: RetentionConfig,
}

/// `[store.retention]`: whole UTC days kept before today's; 0 keeps forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw events (by event time): older blocks are dropped in the background.
    pub events_days: u32,
    /// Hourly, daily and per-name rollups (by their date): older rows are deleted.
    pub rollups_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            events_days: 30,
            rollups_days: 400,
        }
    }
}

impl RetentionConfig {
    /// `events_days`, None for 0 (forever).
    pub fn events_days(&self) -> Option<u32> {
        (self.events_days > 0).then_some(self.events_days)
    }

    /// `rollups_days`, None for 0 (forever).
    pub fn rollups_days(&self) -> Option<u32> {
        (self.rollups_days > 0).then_some(self.rollups_days)
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("./data")
}
fn default_cache_capacity_mb() -> u64 {
    64
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
fn default_dedup_window() -> String {
    "24h".to_string()
}
/// The index's table grows by doubling its 16 shards: 6,000,000 ids (evenly hashed, 375,000
/// of each shard's 458,752 usable slots, the rest room for ids coming while old ones are
/// forgotten) fit the same ~109 MB as 3.7M do (143 MB when it kept whole block numbers),
/// where 8,000,000 took twice that (measured: peak RSS 1,085 MB of the 10M-event store
/// bench).
fn default_dedup_max_ids() -> u64 {
    6_000_000
}

/// A duration written `<n>s`, `<n>m`, `<n>h` or `<n>d` (n a whole number).
pub(super) fn parse_span(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].trim().parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(secs)?))
}

fn default_migrate_chunk_rows() -> u64 {
    crate::store::migrate::DEFAULT_CHUNK_ROWS as u64
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
            dedup_window: default_dedup_window(),
            dedup_max_ids: default_dedup_max_ids(),
            migrate_chunk_rows: default_migrate_chunk_rows(),
            retention: RetentionConfig::default(),
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

impl StoreConfig {
    /// `group_commit_max_batches` (`validate` keeps it >= 1).
    pub fn group_commit_max_batches(&self) -> NonZeroUsize {
        non_zero(self.group_commit_max_batches)
    }

    /// `wal_segment_mb` in bytes (`validate` keeps it >= 1 MiB).
    pub fn wal_segment_bytes(&self) -> u64 {
        self.wal_segment_mb << 20
    }

    /// `migrate_chunk_rows` (`validate` keeps it >= 1).
    pub fn migrate_chunk_rows(&self) -> NonZeroUsize {
        non_zero(self.migrate_chunk_rows)
    }

    /// `checkpoint_interval_ms` (`validate` keeps it >= 10 ms).
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }

    /// `dedup_window` (`validate` keeps it well-formed).
    pub fn dedup_window(&self) -> Duration {
        parse_span(&self.dedup_window).unwrap_or(Duration::from_secs(86_400))
    }
}

impl BatchingConfig {
    /// `max_batch_events` (`validate` keeps it >= 1).
    pub fn max_batch_events(&self) -> NonZeroUsize {
        non_zero(self.max_batch_events)
    }

    /// `max_batch_delay_ms` (`validate` keeps it >= 1 ms and below the session timeout).
    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_millis(self.max_batch_delay_ms)
    }

    /// `max_inflight_bytes` (`validate` keeps it >= `kafka.max_message_bytes` >= 1).
    pub fn max_inflight_bytes(&self) -> NonZeroUsize {
        non_zero(self.max_inflight_bytes)
    }
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
    /// Memory for event-block columns decoded by trends (MB; 0 = decode on every request).
    pub trends_cache_mb: u64,
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
fn default_trends_cache_mb() -> u64 {
    512
}

impl StatsConfig {
    /// `persist_interval_ms` (`validate` keeps it >= 1 ms).
    pub fn persist_interval(&self) -> Duration {
        Duration::from_millis(self.persist_interval_ms)
    }

    /// `rollup_flush_interval_ms` (`validate` keeps it >= 1 ms).
    pub fn rollup_flush_interval(&self) -> Duration {
        Duration::from_millis(self.rollup_flush_interval_ms)
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            enabled: default_stats_enabled(),
            unique_exact_threshold: default_unique_exact_threshold(),
            realtime_windows_s: default_realtime_windows_s(),
            persist_interval_ms: default_persist_interval_ms(),
            rollup_flush_interval_ms: default_rollup_flush_interval_ms(),
            trends_cache_mb: default_trends_cache_mb(),
        }
    }
}
