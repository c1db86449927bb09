//! Row id -> block, for the rows of `@blocks` entities written within the dedup window: what
//! lets an insert skip an id the store holds (an event re-sent by its producer), and a read,
//! update or delete find its row's block without scanning.
//!
//! Keyed by a 64-bit hash of the id, with the block number: 16 bytes an entry, ~20 with the
//! table's overhead. A hit is confirmed in the block's id column, so a hash collision only
//! costs a block read. Memory is bounded two ways: ids of blocks written longer than
//! `window` ago are forgotten, and so are the oldest blocks' ids beyond `max_ids`. Rows not
//! in the index are still found by reads, updates and deletes (by scanning the blocks), but
//! an insert of such an id is stored again: that is the window.

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::time::Duration;

/// The map is split in shards by hash, so that growing it copies one shard at a time (a
/// single table of 8M ids doubling holds both tables, ~400 MB by their sizes, at once).
const SHARDS: usize = 16;

pub(crate) struct IdIndex {
    shards: Vec<RwLock<FxHashMap<u64, u64>>>,
    /// The blocks whose ids are in `map`, by (write time, number), with their id counts.
    held: Mutex<Held>,
    window: Duration,
    max_ids: usize,
    /// Whether every stored row's id is here (nothing forgotten yet): a miss is then
    /// final, and reads need not scan the blocks.
    complete: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Held {
    blocks: BTreeMap<(u64, u64), usize>,
    by_no: FxHashMap<u64, u64>,
    ids: usize,
}

fn key(id: &[u8; 16]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id)
}

fn shard(k: u64) -> usize {
    (k >> 60) as usize % SHARDS
}

impl IdIndex {
    pub fn new(window: Duration, max_ids: usize) -> Self {
        IdIndex {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            held: Mutex::default(),
            window,
            max_ids: max_ids.max(1),
            complete: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Whether a block written at `version` (microseconds) is within the window at `now_us`.
    pub fn within_window(&self, version: u64, now_us: i64) -> bool {
        version as i64 >= now_us - self.window.as_micros() as i64
    }

    /// Records that block `no`, written at `version`, holds `ids`.
    pub fn insert(&self, ids: &[[u8; 16]], no: u64, version: u64) {
        let mut keys: Vec<u64> = ids.iter().map(key).collect();
        keys.sort_unstable_by_key(|k| shard(*k));
        for part in keys.chunk_by(|a, b| shard(*a) == shard(*b)) {
            let mut map = self.shards[shard(part[0])].write();
            for &k in part {
                map.insert(k, no);
            }
        }
        let mut held = self.held.lock();
        held.blocks.insert((version, no), ids.len());
        held.by_no.insert(no, version);
        held.ids += ids.len();
    }

    /// Block `no` left the catalog: its rows are in other blocks (inserted under them) or
    /// deleted (their entries then name a block that no longer exists, which reads treat as
    /// absent).
    pub fn forget_block(&self, no: u64) {
        let mut held = self.held.lock();
        if let Some(version) = held.by_no.remove(&no) {
            if let Some(n) = held.blocks.remove(&(version, no)) {
                held.ids -= n;
            }
        }
    }

    /// The block that last took a row with this id (it may have been removed since).
    pub fn get(&self, id: &[u8; 16]) -> Option<u64> {
        let k = key(id);
        self.shards[shard(k)].read().get(&k).copied()
    }

    /// The next block whose ids are due to be forgotten at `now_us` (out of the window, or
    /// the oldest while more than `max_ids` are held), if any.
    pub fn next_due(&self, now_us: i64) -> Option<u64> {
        let held = self.held.lock();
        let (&(version, no), _) = held.blocks.iter().next()?;
        (!self.within_window(version, now_us) || held.ids > self.max_ids).then_some(no)
    }

    /// Whether every stored row's id is in the index.
    pub fn is_complete(&self) -> bool {
        self.complete.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Notes that some stored rows' ids are not in the index.
    pub fn mark_incomplete(&self) {
        self.complete
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forgets block `no`'s `ids` (those still naming it).
    pub fn evict(&self, no: u64, ids: &[[u8; 16]]) {
        self.mark_incomplete();
        for id in ids {
            let k = key(id);
            let mut map = self.shards[shard(k)].write();
            if map.get(&k) == Some(&no) {
                map.remove(&k);
            }
        }
        for map in &self.shards {
            let mut map = map.write();
            if map.capacity() > 4 * map.len().max(1024) {
                map.shrink_to_fit();
            }
        }
        self.forget_block(no);
    }
}
