//! Retention of `@blocks` rows (events): whole blocks whose newest event time is before a
//! cutoff are dropped, with no change-feed entries (the rollups keep what their events
//! added), and the entity's *retained-from* time is raised to the cutoff: reads of raw rows
//! over a range before it are answered as incomplete, never silently partial.
//!
//! Blocks in files hold the rows of one UTC day (a seal splits resident blocks by day and a
//! merge keeps its group's day), so a cutoff at a day's start drops whole days exactly.
//! Resident blocks (seconds old) are left for the next pass, once sealed.
//!
//! Crash safety: one pass's drops commit as store writes like a merge's: the catalog rows
//! removed and the retained-from time raised in one WAL record; the files go once no
//! reader can hold them (see `BlockFiles::sweep`). A crash before the record is durable
//! changes nothing; after it, the replay redoes the drop.

use super::BlockMeta;
use crate::store::{Store, StoreError, WriteBatch};
use std::sync::Arc;

/// Blocks dropped by one store write: bounds the size of its WAL record.
const BLOCKS_PER_WRITE: usize = 4096;

const DAY_US: i64 = 86_400_000_000;

/// The blocks a retention write drops, and the cutoff it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    pub entity_no: u16,
    /// Event time (microseconds) before which rows may be gone once the write commits.
    pub before: i64,
    pub blocks: Vec<u64>,
}

/// What a retention pass dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub blocks: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// The `streamtally:meta` key of an entity's retained-from time.
pub(crate) fn stmeta_key(entity: &str) -> Vec<u8> {
    format!("retained_from:{entity}").into_bytes()
}

/// The cutoff that keeps `days` whole UTC days before the day of `now_us`.
pub fn cutoff(now_us: i64, days: u32) -> i64 {
    now_us.div_euclid(DAY_US) * DAY_US - days as i64 * DAY_US
}

impl Store {
    /// Drops every block of `entity` (a `@blocks` entity with a time field) whose events
    /// are all older than `before_us` (event time), and raises its retained-from time to
    /// `before_us` (it never goes back). Blocks a merge or rewrite replaces meanwhile are
    /// looked at again. Returns what was dropped.
    pub fn expire_before(&self, entity: &str, before_us: i64) -> Result<Expired, StoreError> {
        let inner = self.inner();
        let e = inner.layout.entity(entity)?;
        let Some(keys) = &e.blocks else {
            return Err(StoreError::Schema(format!(
                "retention applies to @blocks entities only, not {entity}"
            )));
        };
        if keys.time.is_none() {
            return Err(StoreError::Schema(format!(
                "retention of {entity} needs a timestamp field to cut on"
            )));
        }
        let previous = self.retained_from(entity);
        let before = before_us.max(previous.unwrap_or(i64::MIN));
        // Raised before the blocks leave: a raw read meanwhile says it may be incomplete.
        inner.blocks.retained_from.write().insert(e.no, before);
        let mut done = Expired::default();
        for _ in 0..64 {
            let due: Vec<Arc<BlockMeta>> = inner.blocks.catalog.select(e.no, |m| {
                m.max_time.is_some_and(|t| t < before) && !inner.blocks.is_resident(m.no)
            });
            if due.is_empty() {
                if done.blocks == 0 && previous != Some(before) {
                    // Nothing to drop: still record the cutoff (it says what reads may see).
                    let mut batch = WriteBatch::new();
                    batch.expired.push(Expiry {
                        entity_no: e.no,
                        before,
                        blocks: Vec::new(),
                    });
                    self.write_blocking(batch)?;
                }
                return Ok(done);
            }
            let mut stale = false;
            for chunk in due.chunks(BLOCKS_PER_WRITE) {
                let mut batch = WriteBatch::new();
                batch.expired.push(Expiry {
                    entity_no: e.no,
                    before,
                    blocks: chunk.iter().map(|m| m.no).collect(),
                });
                match self.write_blocking(batch) {
                    Ok(_) => {
                        for m in chunk {
                            done.blocks += 1;
                            done.rows += m.rows;
                            done.bytes += m.bytes;
                        }
                    }
                    Err(StoreError::Stale { .. }) => {
                        stale = true;
                        break;
                    }
                    Err(err) => return Err(err),
                }
            }
            if !stale {
                return Ok(done);
            }
        }
        Ok(done)
    }

    /// The event time before which `entity`'s raw rows may have been dropped by retention
    /// (None: nothing was ever dropped).
    pub fn retained_from(&self, entity: &str) -> Option<i64> {
        let inner = self.inner();
        let no = inner.layout.entity(entity).ok()?.no;
        inner.blocks.retained_from.read().get(&no).copied()
    }

    /// Applies retention `days` to every `@blocks` entity with a time field, as of `now_us`
    /// (see [`cutoff`]); returns what was dropped.
    pub fn apply_retention(&self, now_us: i64, days: u32) -> Result<Expired, StoreError> {
        let mut total = Expired::default();
        let before = cutoff(now_us, days);
        let names: Vec<String> = (self.inner().layout.entities.iter())
            .filter(|e| e.blocks.as_ref().is_some_and(|k| k.time.is_some()))
            .map(|e| e.name.clone())
            .collect();
        for name in names {
            let x = self.expire_before(&name, before)?;
            total.blocks += x.blocks;
            total.rows += x.rows;
            total.bytes += x.bytes;
        }
        Ok(total)
    }
}
