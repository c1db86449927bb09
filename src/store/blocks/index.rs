//! Row id -> block, for every row of a `@blocks` entity: what lets an insert skip an id the
//! store holds, and a read, update or delete find its row's block.
//!
//! Keyed by a 64-bit hash of the id (16 bytes an entry with the block number, plus the
//! table's overhead): a hit is confirmed in the block's id column, so a hash collision can
//! only cost a block read.

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

#[derive(Default)]
pub(crate) struct IdIndex {
    map: RwLock<FxHashMap<u64, u64>>,
}

fn key(id: &[u8; 16]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id)
}

impl IdIndex {
    pub fn insert(&self, ids: &[[u8; 16]], block: u64) {
        let mut map = self.map.write();
        map.reserve(ids.len());
        for id in ids {
            map.insert(key(id), block);
        }
    }

    /// The block that last took a row with this id (it may have been removed since).
    pub fn get(&self, id: &[u8; 16]) -> Option<u64> {
        self.map.read().get(&key(id)).copied()
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }
}
