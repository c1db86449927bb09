//! Reading blocks: the bytes of recently read blocks stay in memory (within a byte budget),
//! so that a dashboard polling the newest events does not reread their files.

use super::codec::BlockReader;
use super::{BlockFiles, BlockMeta};
use crate::store::layout::{EntityLayout, Values};
use crate::store::StoreError;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub(crate) struct BlockCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    bytes: usize,
    blocks: HashMap<u64, Arc<Vec<u8>>>,
    order: VecDeque<u64>,
}

impl BlockCache {
    pub fn new(budget: usize) -> Self {
        BlockCache {
            budget,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The bytes of block `no`, from memory or its file.
    pub fn bytes(&self, files: &BlockFiles, no: u64) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(b) = self.inner.lock().blocks.get(&no) {
            return Ok(b.clone());
        }
        let bytes = Arc::new(files.read(no)?);
        if bytes.len() <= self.budget / 4 {
            let mut c = self.inner.lock();
            if c.blocks.insert(no, bytes.clone()).is_none() {
                c.bytes += bytes.len();
                c.order.push_back(no);
            }
            while c.bytes > self.budget {
                let Some(old) = c.order.pop_front() else {
                    break;
                };
                if let Some(b) = c.blocks.remove(&old) {
                    c.bytes -= b.len();
                }
            }
        }
        Ok(bytes)
    }

    pub fn forget(&self, no: u64) {
        let mut c = self.inner.lock();
        if let Some(b) = c.blocks.remove(&no) {
            c.bytes -= b.len();
            c.order.retain(|n| *n != no);
        }
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
