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
}

impl BlockCache {
    pub fn new(budget: usize) -> Self {
        BlockCache {
            blocks: Mutex::new(BudgetCache::new(budget, Eviction::Lru)),
        }
    }

    /// The bytes of block `no`, from memory or its file.
    pub fn bytes(&self, files: &BlockFiles, no: u64) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(b) = self.blocks.lock().get(&no) {
            return Ok(b.clone());
        }
        let bytes = Arc::new(files.read(no)?);
        self.blocks.lock().insert(no, bytes.clone(), bytes.len());
        Ok(bytes)
    }

    /// Keeps `bytes` as block `no`'s (within the budget).
    pub fn keep(&self, no: u64, bytes: Arc<Vec<u8>>) {
        let len = bytes.len();
        self.blocks.lock().insert(no, bytes, len);
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
    let mut rows = reader.rows_all().map_err(|err| corrupt(meta, err))?;
    Ok(Some((at, rows.swap_remove(at))))
}

fn corrupt(meta: &BlockMeta, err: StoreError) -> StoreError {
    match err {
        StoreError::Corrupt { what } => StoreError::Corrupt {
            what: format!("block {:016x}: {what}", meta.no),
        },
        other => other,
    }
}
