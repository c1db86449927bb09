//! A read-through cache of the latest stored bytes of rows of chosen entities (the rollups
//! the gateway reads on every request: a 7-day hourly series is 169 row reads, each two
//! sled lookups).
//!
//! The apply thread invalidates every row a batch changes after writing it to sled and
//! before acknowledging it, and bumps an epoch; a reader that missed keeps what it read
//! from sled only if no batch was applied meanwhile (else that batch may have changed the
//! row after the read, and the invalidation already ran). So the cache never serves a value
//! older than sled's, and a read after a write's acknowledgement sees the write.

use parking_lot::Mutex;
use std::collections::HashMap;
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

#[derive(Default)]
struct State {
    rows: HashMap<[u8; 16], Cached>,
    bytes: usize,
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
            state: Mutex::new(State::default()),
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
        let state = self.state.lock();
        match state.rows.get(id) {
            Some(c) => Ok(c.clone()),
            None => Err(Miss { epoch: state.epoch }),
        }
    }

    /// Keeps what a reader read from sled after `miss`, unless a batch was applied since.
    /// Over capacity the whole cache is dropped (rows come back on their next read).
    pub fn keep(&self, miss: Miss, id: [u8; 16], value: Cached) {
        let mut state = self.state.lock();
        if state.epoch != miss.epoch {
            return;
        }
        let size = 64 + value.as_ref().map_or(0, |(_, v)| v.len());
        if state.bytes + size > self.capacity_bytes {
            state.rows.clear();
            state.bytes = 0;
        }
        if let Some(old) = state.rows.insert(id, value) {
            state.bytes -= 64 + old.map_or(0, |(_, v)| v.len());
        }
        state.bytes += size;
    }

    /// Called by the apply thread once a batch is in sled, before it is acknowledged.
    pub fn invalidate<'a>(&self, ids: impl Iterator<Item = &'a [u8; 16]>) {
        let mut state = self.state.lock();
        state.epoch += 1;
        if state.rows.is_empty() {
            return;
        }
        for id in ids {
            if let Some(old) = state.rows.remove(id) {
                state.bytes -= 64 + old.map_or(0, |(_, v)| v.len());
            }
        }
    }
}
