//! Row id -> block, for the rows of `@blocks` entities written within the dedup window: what
//! lets an insert skip an id the store holds (an event re-sent by its producer), and a read,
//! update or delete find its row's block without scanning.
//!
//! Keyed by a 64-bit hash of the id, with the low 32 bits of the block number: 12 bytes an
//! entry, 13 a slot of the table (with its control byte; was 17 with the whole number, 71
//! MB at 2M ids against ~54). The whole number is the newest block's less the distance
//! between their low bits, which is exact while the index holds no block 2^32 blocks older
//! than the newest (at 100 blocks a second, over a year; the window forgets them long
//! before). A hit is confirmed in the block's id column, so a hash collision only
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
    /// Id hash -> the block number's low 32 bits ([`IdIndex::block_no`]).
    shards: Vec<RwLock<FxHashMap<u64, u32>>>,
    /// The highest block number inserted (raised before its ids go in).
    newest: std::sync::atomic::AtomicU64,
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
            newest: std::sync::atomic::AtomicU64::new(0),
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
        self.newest
            .fetch_max(no, std::sync::atomic::Ordering::SeqCst);
        let mut keys: Vec<u64> = ids.iter().map(key).collect();
        keys.sort_unstable_by_key(|k| shard(*k));
        for part in keys.chunk_by(|a, b| shard(*a) == shard(*b)) {
            let mut map = self.shards[shard(part[0])].write();
            if map.capacity() - map.len() < part.len() {
                // The table counts the slots of removed ids as taken until it rehashes, and
                // doubles when it runs out of slots with over half of them live: with ids
                // forgotten as fast as new ones come (at the cap) it doubled though the ids
                // fitted. A rebuilt table drops them, and is larger only if the ids need it.
                let mut fresh =
                    FxHashMap::with_capacity_and_hasher(map.len() + part.len(), Default::default());
                fresh.extend(map.drain());
                *map = fresh;
            }
            for &k in part {
                map.insert(k, no as u32);
            }
        }
        let mut held = self.held.lock();
        held.blocks.insert((version, no), ids.len());
        held.by_no.insert(no, version);
        held.ids += ids.len();
    }

    /// Makes room for `n` more ids spread over the shards, so that loading a known number
    /// of ids (an open) does not rebuild the tables as they fill.
    pub fn reserve(&self, n: usize) {
        let per_shard = n / SHARDS + n / SHARDS / 16 + 1;
        for shard in &self.shards {
            shard.write().reserve(per_shard);
        }
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
        let low = self.shards[shard(k)].read().get(&k).copied()?;
        Some(self.block_no(low))
    }

    /// The whole number of the block whose number's low 32 bits are `low`: the newest such
    /// number not above the newest block inserted.
    fn block_no(&self, low: u32) -> u64 {
        let newest = self.newest.load(std::sync::atomic::Ordering::SeqCst);
        newest.wrapping_sub(u64::from((newest as u32).wrapping_sub(low)))
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
            if map.get(&k) == Some(&(no as u32)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(block: u64, n: u64) -> Vec<[u8; 16]> {
        (0..n)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&block.to_le_bytes());
                id[8..].copy_from_slice(&i.to_le_bytes());
                id
            })
            .collect()
    }

    /// Ids the shards take before they grow: 7/8 of their slots, less those of removed ids
    /// (so it is at most what it was with the table full and nothing removed, unless the
    /// table grew).
    fn room(index: &IdIndex) -> usize {
        index.shards.iter().map(|s| s.read().capacity()).sum()
    }

    /// Ids forgotten as fast as new ones come leave the table's size alone: the removed
    /// ids' slots are reclaimed, not counted until the table doubles.
    #[test]
    fn the_table_does_not_grow_while_ids_come_and_go_at_the_cap() {
        let (per_block, cap) = (1_000u64, 40_000usize);
        let index = IdIndex::new(Duration::from_secs(3600), cap);
        let now = 1_000_000i64;
        let mut next = 0u64;
        let mut write = |index: &IdIndex| {
            index.insert(&ids(next, per_block), next, now as u64);
            next += 1;
            while let Some(no) = index.next_due(now) {
                index.evict(no, &ids(no, per_block));
            }
        };
        for _ in 0..cap as u64 / per_block {
            write(&index);
        }
        let full = room(&index);
        for _ in 0..400 {
            write(&index);
        }
        assert_eq!(index.held.lock().ids, cap);
        let now = room(&index);
        assert!(
            now <= full,
            "the table grew: room for {now} ids, was {full}"
        );
        // Every id held is found, in its block; forgotten ones are not.
        assert_eq!(index.get(&ids(next - 1, per_block)[7]), Some(next - 1));
        assert_eq!(index.get(&ids(0, per_block)[7]), None);
    }

    /// Block numbers are kept by their low 32 bits: numbers past 2^32, and older blocks on
    /// the other side of a wrap of the low bits, come back whole.
    #[test]
    fn block_numbers_past_32_bits_come_back_whole() {
        let index = IdIndex::new(Duration::from_secs(3600), 1 << 20);
        let older = (1u64 << 32) - 3;
        let newer = (1u64 << 32) + 5;
        let far = (7u64 << 32) + 11;
        index.insert(&ids(older, 10), older, 1);
        index.insert(&ids(newer, 10), newer, 2);
        assert_eq!(index.get(&ids(older, 10)[3]), Some(older));
        assert_eq!(index.get(&ids(newer, 10)[3]), Some(newer));
        index.insert(&ids(far, 10), far, 3);
        assert_eq!(index.get(&ids(far, 10)[9]), Some(far));
        assert_eq!(index.get(&ids(far - 1, 10)[9]), None);
        index.evict(newer, &ids(newer, 10));
        assert_eq!(index.get(&ids(newer, 10)[3]), None);
    }
}
