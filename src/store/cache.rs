//! A read-through cache of the latest stored bytes of rows of chosen entities (the rollups
//! the gateway reads on every request: a 7-day hourly series is 169 row reads, each two
//! sled lookups).
//!
//! The apply thread invalidates every row a batch changes after writing it to sled and
//! before acknowledging it, and bumps an epoch; a reader that missed keeps what it read
//! from sled only if no batch was applied meanwhile (else that batch may have changed the
//! row after the read, and the invalidation already ran). So the cache never serves a value
//! older than sled's, and a read after a write's acknowledgement sees the write.
//!
//! The rows are kept in a FIFO [`BudgetCache`] of `capacity_bytes` (a row weighs its record
//! bytes plus [`ROW_OVERHEAD`]).

use crate::cache::{BudgetCache, Eviction};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A row's latest version and record bytes, or None: no such row (or deleted).
pub(crate) type Cached = Option<(u64, Arc<[u8]>)>;

pub(crate) struct RowCache {
    /// Per entity number: are its rows cached.
    enabled: Vec<AtomicBool>,
    capacity_bytes: usize,
    state: Mutex<State>,
}

/// What a cached row weighs beyond its record bytes (key, version, map entry).
const ROW_OVERHEAD: usize = 64;

struct State {
    rows: BudgetCache<[u8; 16], Cached>,
    /// Batches applied so far (see the module comment).
    epoch: u64,
}

/// What a reader saw before a miss, to keep what it reads only if nothing changed since.
pub(crate) struct Miss {
    epoch: u64,
}

impl RowCache {
    pub fn new(entities: usize, capacity_bytes: usize) -> Self {
        RowCache {
            enabled: (0..entities).map(|_| AtomicBool::new(false)).collect(),
            capacity_bytes,
            state: Mutex::new(State {
                rows: BudgetCache::new(capacity_bytes, Eviction::Fifo),
                epoch: 0,
            }),
        }
    }

    pub fn enable(&self, entity_no: u16) {
        if self.capacity_bytes > 0 {
            if let Some(flag) = self.enabled.get(entity_no as usize) {
                flag.store(true, Ordering::Relaxed);
            }
        }
    }

    pub fn enabled(&self, entity_no: u16) -> bool {
        self.enabled
            .get(entity_no as usize)
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// The cached bytes of `id`, or what a reader needs to [`RowCache::keep`] what it reads.
    pub fn get(&self, id: &[u8; 16]) -> Result<Cached, Miss> {
        let mut state = self.state.lock();
        match state.rows.get(id) {
            Some(c) => Ok(c.clone()),
            None => Err(Miss { epoch: state.epoch }),
        }
    }

    /// Keeps what a reader read from sled after `miss`, unless a batch was applied since.
    /// Over capacity the rows kept longest ago go (they come back on their next read).
    pub fn keep(&self, miss: Miss, id: [u8; 16], value: Cached) {
        let mut state = self.state.lock();
        if state.epoch != miss.epoch {
            return;
        }
        let size = ROW_OVERHEAD + value.as_ref().map_or(0, |(_, v)| v.len());
        state.rows.insert(id, value, size);
    }

    /// Called by the apply thread once a batch is in sled, before it is acknowledged.
    pub fn invalidate<'a>(&self, ids: impl Iterator<Item = &'a [u8; 16]>) {
        let mut state = self.state.lock();
        state.epoch += 1;
        if state.rows.is_empty() {
            return;
        }
        for id in ids {
            state.rows.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: u64) -> Cached {
        Some((version, Arc::from(&b"record"[..])))
    }

    #[test]
    fn a_read_is_kept_only_if_no_batch_was_applied_since_its_miss() {
        let cache = RowCache::new(1, 1 << 20);
        let Err(miss) = cache.get(&[1; 16]) else {
            panic!("hit on an empty cache");
        };
        cache.keep(miss, [1; 16], row(1));
        assert_eq!(cache.get(&[1; 16]).ok(), Some(row(1)));

        let Err(miss) = cache.get(&[2; 16]) else {
            panic!("hit on a row never kept");
        };
        cache.invalidate([[9; 16]].iter());
        cache.keep(miss, [2; 16], row(1));
        assert!(
            cache.get(&[2; 16]).is_err(),
            "kept a read older than a batch"
        );

        cache.invalidate([[1; 16]].iter());
        assert!(cache.get(&[1; 16]).is_err(), "served an invalidated row");
    }

    #[test]
    fn entities_are_cached_only_when_enabled_with_a_budget() {
        let cache = RowCache::new(2, 1 << 20);
        cache.enable(1);
        cache.enable(7);
        assert_eq!((cache.enabled(0), cache.enabled(1)), (false, true));
        let no_budget = RowCache::new(2, 0);
        no_budget.enable(1);
        assert!(!no_budget.enabled(1));
    }
}
