//! Reading blocks: the bytes of recently read blocks stay in memory (within a byte budget),
//! so that a dashboard polling the newest events does not reread their files.

use super::codec::BlockReader;
use super::{BlockFiles, BlockMeta};
use crate::cache::{BudgetCache, Eviction};
use crate::store::layout::{EntityLayout, Values};
use crate::store::StoreError;
use parking_lot::Mutex;
use std::sync::Arc;

pub(crate) struct BlockCache {
    blocks: Mutex<BudgetCache<u64, Arc<Vec<u8>>>>,
    /// Sealed resident blocks, for readers that took the catalog before the seal: they have
    /// no file, and a reader's window is short, so the newest [`RETIRED_BYTES`] do.
    retired: Mutex<BudgetCache<u64, Arc<Vec<u8>>>>,
}

/// Bytes of sealed resident blocks kept (~1 s of ingest at 140,000 events/s). They were
/// kept in the read cache, where they filled its 64 MiB budget with blocks nobody reads.
const RETIRED_BYTES: usize = 8 << 20;

impl BlockCache {
    pub fn new(budget: usize) -> Self {
        BlockCache {
            blocks: Mutex::new(BudgetCache::new(budget, Eviction::Lru)),
            retired: Mutex::new(BudgetCache::new(RETIRED_BYTES, Eviction::Fifo)),
        }
    }

    /// The bytes of block `no`, from memory or its file (then kept for the next read).
    pub fn bytes(&self, files: &BlockFiles, no: u64) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(b) = self.held(no) {
            return Ok(b);
        }
        let bytes = Arc::new(files.read(no)?);
        self.blocks.lock().insert(no, bytes.clone(), bytes.len());
        Ok(bytes)
    }

    /// [`BlockCache::bytes`] for a block read once (merged, or its ids forgotten): a read
    /// from its file is not kept.
    pub fn bytes_once(&self, files: &BlockFiles, no: u64) -> Result<Arc<Vec<u8>>, StoreError> {
        match self.held(no) {
            Some(b) => Ok(b),
            None => Ok(Arc::new(files.read(no)?)),
        }
    }

    fn held(&self, no: u64) -> Option<Arc<Vec<u8>>> {
        if let Some(b) = self.blocks.lock().get(&no) {
            return Some(b.clone());
        }
        self.retired.lock().get(&no).cloned()
    }

    /// Keeps the bytes of sealed resident block `no` (within [`RETIRED_BYTES`]).
    pub fn keep_retired(&self, no: u64, bytes: Arc<Vec<u8>>) {
        let len = bytes.len();
        self.retired.lock().insert(no, bytes, len);
    }

    pub fn forget(&self, no: u64) {
        self.blocks.lock().remove(&no);
    }
}

/// Every row of a block, in stored order.
pub(crate) fn all_rows(meta: &BlockMeta, bytes: &[u8]) -> Result<Vec<Values>, StoreError> {
    let reader = BlockReader::open(bytes).map_err(|err| corrupt(meta, err))?;
    reader.rows_all().map_err(|err| corrupt(meta, err))
}

/// The ids of a block's rows.
pub(crate) fn ids(
    e: &EntityLayout,
    meta: &BlockMeta,
    bytes: &[u8],
) -> Result<Vec<[u8; 16]>, StoreError> {
    let reader = BlockReader::open(bytes).map_err(|err| corrupt(meta, err))?;
    let column = reader.column(e.id_pos).map_err(|err| corrupt(meta, err))?;
    Ok(column
        .iter()
        .filter_map(|v| match v {
            crate::store::Value::Uuid(u) => Some(*u),
            _ => None,
        })
        .collect())
}

/// The row with id `id` in a block, with its position.
pub(crate) fn find_row(
    e: &EntityLayout,
    meta: &BlockMeta,
    bytes: &[u8],
    id: &[u8; 16],
) -> Result<Option<(usize, Values)>, StoreError> {
    let reader = BlockReader::open(bytes).map_err(|err| corrupt(meta, err))?;
    let ids = reader.column(e.id_pos).map_err(|err| corrupt(meta, err))?;
    let Some(at) = ids
        .iter()
        .position(|v| matches!(v, crate::store::Value::Uuid(u) if u == id))
    else {
        return Ok(None);
    };
    let row = reader.row(at).map_err(|err| corrupt(meta, err))?;
    Ok(Some((at, row)))
}

/// The rows with ids `wanted` that a block holds, by id: the id column and every other
/// column are decoded once for all of them.
pub(crate) fn find_rows(
    e: &EntityLayout,
    meta: &BlockMeta,
    bytes: &[u8],
    wanted: &std::collections::HashSet<[u8; 16]>,
) -> Result<Vec<([u8; 16], Values)>, StoreError> {
    let reader = BlockReader::open(bytes).map_err(|err| corrupt(meta, err))?;
    let ids = reader.column(e.id_pos).map_err(|err| corrupt(meta, err))?;
    let (found, at): (Vec<[u8; 16]>, Vec<usize>) = ids
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match v {
            crate::store::Value::Uuid(u) if wanted.contains(u) => Some((*u, i)),
            _ => None,
        })
        .unzip();
    if at.is_empty() {
        return Ok(Vec::new());
    }
    let rows = reader.rows_at(&at).map_err(|err| corrupt(meta, err))?;
    Ok(found.into_iter().zip(rows).collect())
}

/// `err` about block `meta`, naming it.
pub(super) fn corrupt(meta: &BlockMeta, err: StoreError) -> StoreError {
    match err {
        StoreError::Corrupt { what } => StoreError::Corrupt {
            what: format!("block {:016x}: {what}", meta.no),
        },
        other => other,
    }
}
