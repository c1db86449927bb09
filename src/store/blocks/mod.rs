//! Rows of `@blocks` entities (events) in immutable, compressed, columnar blocks.
//!
//! A block in a file holds the rows of one (org, topic, partition). A batch writes its rows
//! as one resident block: in memory and in the batch's WAL record only (see [`Resident`]),
//! in the same atomic store write as the rows' change-feed entries and the consumer
//! offsets. A seal splits the oldest resident blocks by (org, topic, partition, day) into
//! blocks in files `blocks/<no>.blk`, each registered by a catalog row (`<Entity>Block`, an
//! ordinary ORMDB row), and merges combine those further:
//! - the block's bytes travel in that write's WAL record (so one fsync covers them) and the
//!   apply step writes the file; a checkpoint fsyncs the files written since the last one
//!   before it drops the WAL records that carry them, so a crash either replays the record
//!   (rewriting the file) or finds the file durable;
//! - at open, files no catalog row names (a merge or rewrite that did not commit, a block
//!   whose removal committed) are deleted.
//!
//! The store keeps in memory the catalog (block metadata, a few hundred bytes a block) and
//! an index from row id to block (`index`), used for inserts that must not duplicate a
//! stored id, and for reads, updates and deletes of single rows.

pub mod codec;
pub mod erase;
mod files;
mod index;
pub mod merge;
mod read;
pub mod retention;
pub(crate) mod scan;

pub use codec::{
    encode_block, encode_block_with, BlockReader, ColumnInfo, Compression, Encoding, MAX_ROWS,
};
pub(crate) use files::{BlockFiles, RETIRE_GRACE};
pub(crate) use index::IdIndex;
pub(crate) use read::BlockCache;

use super::layout::{BlockKeys, EntityLayout, Values};
use super::{StoreError, Value};
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What the catalog knows of a block without reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockMeta {
    pub no: u64,
    /// Schema number of the entity whose rows it holds.
    pub entity_no: u16,
    pub org: Value,
    pub topic: Value,
    pub partition: Value,
    pub min_offset: Option<i64>,
    pub max_offset: Option<i64>,
    /// Event-time range (microseconds), when the entity has a `timestamp` field.
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
    pub rows: u64,
    pub bytes: u64,
    /// 0 for a block written by a batch; merges raise it.
    pub level: i32,
    /// The version every row of the block has (the commit time of the write that made it).
    pub version: u64,
    /// Its rows are of several (org, topic, partition): a resident block holds all of a
    /// batch's rows (see [`Resident`]); `org`, `topic` and `partition` are then Null.
    pub mixed: bool,
}

/// An integer or timestamp value as the catalog's offset and time ranges hold it.
pub(crate) fn int_of(v: &Value) -> Option<i64> {
    match *v {
        Value::Int64(n) | Value::Timestamp(n) => Some(n),
        Value::Int32(n) => Some(n as i64),
        _ => None,
    }
}

impl BlockMeta {
    /// The metadata of a new block of `rows` (all with the same block key).
    pub fn describe(
        e: &EntityLayout,
        keys: &BlockKeys,
        no: u64,
        rows: &[impl std::borrow::Borrow<Values>],
        bytes: u64,
        level: i32,
        version: u64,
    ) -> BlockMeta {
        let first: &Values = rows[0].borrow();
        let first_key = keys.key_of(first);
        let mixed = rows.iter().any(|r| keys.key_of(r.borrow()) != first_key);
        let key_value = |pos: Option<usize>| match pos {
            Some(p) if !mixed => first[p].clone(),
            _ => Value::Null,
        };
        let ints = |pos: Option<usize>| -> Vec<i64> {
            let Some(p) = pos else { return Vec::new() };
            rows.iter().filter_map(|r| int_of(&r.borrow()[p])).collect()
        };
        let (offsets, times) = (ints(keys.offset), ints(keys.time));
        BlockMeta {
            no,
            entity_no: e.no,
            org: key_value(keys.org),
            topic: key_value(keys.topic),
            partition: key_value(keys.partition),
            min_offset: offsets.iter().min().copied(),
            max_offset: offsets.iter().max().copied(),
            min_time: times.iter().min().copied(),
            max_time: times.iter().max().copied(),
            rows: rows.len() as u64,
            bytes,
            level,
            version,
            mixed,
        }
    }

    /// The catalog row registering this block (`<Entity>Block`).
    pub fn to_row(&self) -> super::Row {
        let opt = |v: Option<i64>| v.map(Value::Int64).unwrap_or(Value::Null);
        let ts = |v: Option<i64>| v.map(Value::Timestamp).unwrap_or(Value::Null);
        super::Row::new()
            .with("block_no", Value::Int64(self.no as i64))
            .with("org_id", self.org.clone())
            .with("topic", self.topic.clone())
            .with("partition", self.partition.clone())
            .with("min_offset", opt(self.min_offset))
            .with("max_offset", opt(self.max_offset))
            .with("min_time", ts(self.min_time))
            .with("max_time", ts(self.max_time))
            .with("row_count", Value::Int64(self.rows as i64))
            .with("bytes", Value::Int64(self.bytes as i64))
            .with("level", Value::Int32(self.level))
            .with("version", Value::Int64(self.version as i64))
    }

    /// The metadata a catalog row holds (see [`BlockMeta::to_row`]).
    pub fn from_values(
        catalog: &EntityLayout,
        entity_no: u16,
        v: &Values,
    ) -> Result<BlockMeta, StoreError> {
        let get = |name: &str| catalog.field_pos(name).map(|p| v[p].clone());
        let int = |name: &str| -> Result<Option<i64>, StoreError> {
            Ok(match get(name)? {
                Value::Int64(n) | Value::Timestamp(n) => Some(n),
                Value::Int32(n) => Some(n as i64),
                _ => None,
            })
        };
        let need = |name: &str| -> Result<i64, StoreError> {
            int(name)?.ok_or_else(|| StoreError::Corrupt {
                what: format!("{} row without {name}", catalog.name),
            })
        };
        Ok(BlockMeta {
            no: need("block_no")? as u64,
            entity_no,
            org: get("org_id")?,
            topic: get("topic")?,
            partition: get("partition")?,
            min_offset: int("min_offset")?,
            max_offset: int("max_offset")?,
            min_time: int("min_time")?,
            max_time: int("max_time")?,
            rows: need("row_count")? as u64,
            bytes: need("bytes")? as u64,
            level: need("level")? as i32,
            version: need("version")? as u64,
            mixed: false,
        })
    }

    /// Whether its time range meets [lower, upper] (None: open); blocks of an entity without
    /// a time field always do.
    pub fn meets_time(&self, lower: Option<i64>, upper: Option<i64>) -> bool {
        let (Some(min), Some(max)) = (self.min_time, self.max_time) else {
            return true;
        };
        lower.is_none_or(|l| max >= l) && upper.is_none_or(|u| min <= u)
    }
}

/// A change to the block catalog made by one commit, applied to the in-memory catalog and id
/// index once the commit is applied.
#[derive(Debug, Clone)]
pub enum BlockChange {
    Added {
        meta: Arc<BlockMeta>,
        ids: Vec<[u8; 16]>,
        /// The bytes of a resident block (see [`Resident`]); None for a block in a file.
        resident: Option<Arc<Vec<u8>>>,
    },
    Removed {
        no: u64,
    },
}

/// The blocks of every `@blocks` entity, as of the last applied commit.
#[derive(Default)]
pub struct Catalog {
    blocks: RwLock<BTreeMap<u64, Arc<BlockMeta>>>,
}

impl Catalog {
    pub fn insert(&self, meta: Arc<BlockMeta>) {
        self.blocks.write().insert(meta.no, meta);
    }

    pub fn remove(&self, no: u64) {
        self.blocks.write().remove(&no);
    }

    pub fn get(&self, no: u64) -> Option<Arc<BlockMeta>> {
        self.blocks.read().get(&no).cloned()
    }

    /// The blocks of entity `entity_no` that `keep` accepts, in block-number order.
    pub fn select(
        &self,
        entity_no: u16,
        mut keep: impl FnMut(&BlockMeta) -> bool,
    ) -> Vec<Arc<BlockMeta>> {
        self.blocks
            .read()
            .values()
            .filter(|m| m.entity_no == entity_no && keep(m))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.blocks.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Block count, row count and bytes of entity `entity_no`'s blocks.
    pub fn totals(&self, entity_no: u16) -> (u64, u64, u64) {
        self.blocks
            .read()
            .values()
            .filter(|m| m.entity_no == entity_no)
            .fold((0, 0, 0), |(b, r, s), m| (b + 1, r + m.rows, s + m.bytes))
    }
}

/// A resident block: one batch's rows of a `@blocks` entity, of whatever (org, topic,
/// partition), written by the batch's commit as a block that lives in memory and in that
/// commit's WAL record only, with no file and no catalog row, until a seal splits its rows
/// (with those of other resident blocks) into blocks in files per (org, topic, partition,
/// day). Batches thus cost neither a file nor a catalog row, nor an encode, per (org,
/// partition) they touch (a 1,000-event batch of 20 orgs and 6 partitions touched 120);
/// the WAL keeps every record from the oldest resident block's commit on (see
/// `Store::checkpoint`), and an open puts the resident blocks of those records back.
pub(crate) struct Resident {
    pub bytes: Arc<Vec<u8>>,
    /// The commit that wrote it.
    pub commit: u64,
}

/// How resident blocks are compressed: they live seconds and are recompressed when sealed,
/// and lz4 costs a third of zstd's time here (store bench, 1M events: 93k against 64k
/// events/s).
pub const RESIDENT_COMPRESSION: Compression = Compression::Lz4;

/// A resident block as its WAL operation holds it: `[version u64][entity u16][bytes]`
/// (little-endian), keyed by its number.
pub(crate) struct ReplayedResident {
    pub commit: u64,
    pub version: u64,
    pub entity_no: u16,
    pub bytes: Vec<u8>,
}

impl ReplayedResident {
    pub fn encode(version: u64, entity_no: u16, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + bytes.len());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&entity_no.to_le_bytes());
        out.extend_from_slice(bytes);
        out
    }

    pub fn decode(commit: u64, mut value: Vec<u8>) -> Result<ReplayedResident, StoreError> {
        if value.len() < 10 {
            return Err(StoreError::Corrupt {
                what: format!("resident block of {} bytes in the WAL", value.len()),
            });
        }
        let version = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
        let entity_no = u16::from_le_bytes([value[8], value[9]]);
        value.drain(..10);
        Ok(ReplayedResident {
            commit,
            version,
            entity_no,
            bytes: value,
        })
    }
}

/// Everything the store keeps for its blocks.
pub(crate) struct Blocks {
    pub catalog: Catalog,
    pub files: BlockFiles,
    pub ids: IdIndex,
    pub cache: BlockCache,
    pub resident: RwLock<std::collections::HashMap<u64, Resident>>,
    /// Per entity, the event time before which retention may have dropped rows (see
    /// `retention`).
    pub retained_from: RwLock<BTreeMap<u16, i64>>,
}

impl Blocks {
    /// Applies the block changes of commit `commit` to the catalog and id index. The catalog
    /// changes all at once (a merge's sources leave as its block arrives), and ids point to
    /// their new blocks first: a reader never finds a row in no block.
    pub fn apply(&self, changes: &[BlockChange], commit: u64) {
        {
            let mut resident = self.resident.write();
            for change in changes {
                if let BlockChange::Added {
                    meta,
                    resident: Some(bytes),
                    ..
                } = change
                {
                    let bytes = bytes.clone();
                    resident.insert(meta.no, Resident { bytes, commit });
                }
            }
        }
        {
            // Readers look an id up under the catalog's read lock (see
            // `Inner::recent_block_row`), so they see both or neither.
            let mut catalog = self.catalog.blocks.write();
            for change in changes {
                match change {
                    BlockChange::Added { meta, ids, .. } => {
                        self.ids.insert(ids, meta.no, meta.version);
                        catalog.insert(meta.no, meta.clone());
                    }
                    BlockChange::Removed { no } => {
                        catalog.remove(no);
                    }
                }
            }
        }
        for change in changes {
            if let BlockChange::Removed { no } = change {
                self.ids.forget_block(*no);
                match self.resident.write().remove(no) {
                    // A reader that took the catalog before may still ask for it.
                    Some(r) => self.cache.keep_retired(*no, r.bytes),
                    None => self.cache.forget(*no),
                }
            }
        }
    }

    /// The bytes of block `no`: resident, cached, or read from its file.
    pub fn bytes(&self, no: u64) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(r) = self.resident.read().get(&no) {
            return Ok(r.bytes.clone());
        }
        self.cache.bytes(&self.files, no)
    }

    /// [`Blocks::bytes`] of a block read once (merged, or its ids forgotten): not cached.
    pub fn bytes_once(&self, no: u64) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(r) = self.resident.read().get(&no) {
            return Ok(r.bytes.clone());
        }
        self.cache.bytes_once(&self.files, no)
    }

    pub fn is_resident(&self, no: u64) -> bool {
        self.resident.read().contains_key(&no)
    }

    /// The oldest commit that wrote a block still resident: the WAL must keep it.
    pub fn resident_floor(&self) -> Option<u64> {
        self.resident.read().values().map(|r| r.commit).min()
    }

    /// Resident blocks and their bytes.
    pub fn resident_totals(&self) -> (usize, usize) {
        let resident = self.resident.read();
        (
            resident.len(),
            resident.values().map(|r| r.bytes.len()).sum(),
        )
    }

    /// Puts back the resident blocks an open found in the WAL, as their commits left them.
    pub fn restore_resident(
        &self,
        layout: &super::layout::Layout,
        replayed: BTreeMap<u64, ReplayedResident>,
    ) -> Result<(), StoreError> {
        for (no, r) in replayed {
            let ReplayedResident {
                commit,
                version,
                entity_no,
                bytes,
            } = r;
            let reader = BlockReader::open(&bytes)?;
            let e = layout.by_no(entity_no).ok_or_else(|| StoreError::Corrupt {
                what: format!("resident block {no:016x} names entity #{entity_no}"),
            })?;
            let keys = e.blocks.as_ref().ok_or_else(|| StoreError::Corrupt {
                what: format!("resident block {no:016x} holds {}, not @blocks", e.name),
            })?;
            let rows = reader.rows_all()?;
            if rows.is_empty() {
                continue;
            }
            let meta = BlockMeta::describe(e, keys, no, &rows, bytes.len() as u64, 0, version);
            let ids: Vec<[u8; 16]> = rows.iter().map(|r| e.id_of(r)).collect();
            self.apply(
                &[BlockChange::Added {
                    meta: Arc::new(meta),
                    ids,
                    resident: Some(Arc::new(bytes)),
                }],
                commit,
            );
        }
        Ok(())
    }
}

impl Blocks {
    /// The catalog of every `@blocks` entity from its catalog rows, the id index from the
    /// blocks' id columns; removes block files no catalog row names (writes that did not
    /// commit, blocks whose removal did).
    pub fn load(
        engine: &ormdb_core::StorageEngine,
        layout: &super::layout::Layout,
        files: BlockFiles,
        opts: &super::StoreOptions,
    ) -> Result<Blocks, StoreError> {
        let blocks = Blocks {
            catalog: Catalog::default(),
            files,
            ids: IdIndex::new(opts.dedup_window, opts.dedup_max_ids),
            cache: BlockCache::new(opts.row_cache_bytes),
            resident: RwLock::default(),
            retained_from: RwLock::default(),
        };
        let now = chrono::Utc::now().timestamp_micros();
        for e in &layout.entities {
            let Some(keys) = &e.blocks else { continue };
            let catalog = layout.entity(&keys.catalog)?;
            for item in engine.scan_entity_type(&keys.catalog) {
                let (_, _, record) = item.map_err(|err| StoreError::Engine {
                    path: blocks.files.store_dir(),
                    op: "read the block catalog",
                    message: err.to_string(),
                })?;
                let values = catalog.decode_record(&record.data)?;
                let meta = Arc::new(BlockMeta::from_values(catalog, e.no, &values)?);
                blocks.catalog.insert(meta);
            }
            // The id index: blocks within the dedup window, newest first, up to its cap.
            let mut recent = blocks
                .catalog
                .select(e.no, |m| blocks.ids.within_window(m.version, now));
            recent.sort_by_key(|m| std::cmp::Reverse((m.version, m.no)));
            let all = blocks.catalog.select(e.no, |_| true).len();
            if recent.len() < all {
                blocks.ids.mark_incomplete();
            }
            let mut room = opts.dedup_max_ids as u64;
            let take = recent
                .iter()
                .take_while(|m| {
                    let fits = room >= m.rows;
                    room = room.saturating_sub(m.rows);
                    fits
                })
                .count();
            if take < recent.len() {
                blocks.ids.mark_incomplete();
            }
            blocks
                .ids
                .reserve(recent[..take].iter().map(|m| m.rows as usize).sum());
            // Two threads: reading and hashing the ids is most of an open's time.
            let load = |part: &[Arc<BlockMeta>]| -> Result<(), StoreError> {
                for meta in part {
                    let bytes = blocks.files.read(meta.no)?;
                    let ids = read::ids(e, meta, &bytes)?;
                    blocks.ids.insert(&ids, meta.no, meta.version);
                }
                Ok(())
            };
            let (a, b) = recent[..take].split_at(take / 2);
            std::thread::scope(|scope| {
                let other = scope.spawn(|| load(b));
                let mine = load(a);
                other.join().expect("id index loader panicked").and(mine)
            })?;
        }
        let mut orphans = 0;
        for no in blocks.files.list()? {
            if blocks.catalog.get(no).is_none() {
                blocks.files.remove(no)?;
                orphans += 1;
            }
        }
        if orphans > 0 {
            tracing::info!(orphans, "removed block files no catalog row names");
        }
        Ok(blocks)
    }
}

impl super::Inner {
    /// The row of a `@blocks` entity with id `id` among those written within the dedup
    /// window (what inserts check), with its block.
    pub(crate) fn recent_block_row(
        &self,
        e: &EntityLayout,
        id: &[u8; 16],
    ) -> Result<Option<(Arc<BlockMeta>, Values)>, StoreError> {
        // Under the catalog's read lock: a commit's id and catalog changes are applied
        // under its write lock, so the block found is the one the id's row is in.
        let found = {
            let catalog = self.blocks.catalog.blocks.read();
            self.blocks
                .ids
                .get(id)
                .and_then(|no| catalog.get(&no).cloned())
        };
        let Some(meta) = found else {
            return Ok(None);
        };
        let no = meta.no;
        let bytes = self.blocks.bytes(no)?;
        Ok(read::find_row(e, &meta, &bytes, id)?.map(|(_, values)| (meta, values)))
    }

    /// The rows of a `@blocks` entity with ids `ids`, by id: each block that holds some of
    /// them is read once (what reading them one by one would decode again per row). Ids
    /// not found among those written within the dedup window are looked for one by one.
    pub(crate) fn block_rows_of(
        &self,
        e: &EntityLayout,
        ids: &[[u8; 16]],
    ) -> Result<HashMap<[u8; 16], Values>, StoreError> {
        let mut by_block: HashMap<u64, (Arc<BlockMeta>, HashSet<[u8; 16]>)> = HashMap::new();
        let mut unplaced = Vec::new();
        {
            let catalog = self.blocks.catalog.blocks.read();
            for id in ids {
                match self.blocks.ids.get(id).and_then(|no| catalog.get(&no)) {
                    Some(meta) => {
                        by_block
                            .entry(meta.no)
                            .or_insert_with(|| (meta.clone(), HashSet::new()))
                            .1
                            .insert(*id);
                    }
                    None => unplaced.push(*id),
                }
            }
        }
        let mut out = HashMap::with_capacity(ids.len());
        for (no, (meta, wanted)) in by_block {
            let bytes = match self.blocks.bytes(no) {
                Ok(b) => b,
                // Merged away since: look for its rows one by one below.
                Err(_) if self.blocks.catalog.get(no).is_none() => {
                    unplaced.extend(wanted);
                    continue;
                }
                Err(err) => return Err(err),
            };
            out.extend(read::find_rows(e, &meta, &bytes, &wanted)?);
            unplaced.extend(wanted.into_iter().filter(|id| !out.contains_key(id)));
        }
        for id in unplaced {
            if let Some((_, values)) = self.block_row(e, &id)? {
                out.insert(id, values);
            }
        }
        Ok(out)
    }

    /// The row with id `id` if block `no` (still registered) holds it.
    pub(crate) fn located_block_row(
        &self,
        e: &EntityLayout,
        id: &[u8; 16],
        no: u64,
    ) -> Result<Option<(Arc<BlockMeta>, Values)>, StoreError> {
        let Some(meta) = self.blocks.catalog.get(no) else {
            return Ok(None);
        };
        let bytes = match self.blocks.bytes(no) {
            Ok(b) => b,
            Err(_) if self.blocks.catalog.get(no).is_none() => return Ok(None),
            Err(err) => return Err(err),
        };
        Ok(read::find_row(e, &meta, &bytes, id)?.map(|(_, values)| (meta, values)))
    }

    /// The stored row of a `@blocks` entity with id `id`, with its block: through the id
    /// index, else by reading every block's id column (a row older than the dedup window).
    pub(crate) fn block_row(
        &self,
        e: &EntityLayout,
        id: &[u8; 16],
    ) -> Result<Option<(Arc<BlockMeta>, Values)>, StoreError> {
        if let Some(found) = self.recent_block_row(e, id)? {
            return Ok(Some(found));
        }
        if self.blocks.ids.is_complete() {
            return Ok(None);
        }
        for meta in self.blocks.catalog.select(e.no, |_| true) {
            let bytes = match self.blocks.bytes(meta.no) {
                Ok(b) => b,
                Err(_) if self.blocks.catalog.get(meta.no).is_none() => continue,
                Err(err) => return Err(err),
            };
            if let Some((_, values)) = read::find_row(e, &meta, &bytes, id)? {
                return Ok(Some((meta, values)));
            }
        }
        Ok(None)
    }

    /// Forgets the ids of blocks out of the dedup window or beyond its cap.
    pub(crate) fn evict_ids(&self) -> Result<usize, StoreError> {
        let now = chrono::Utc::now().timestamp_micros();
        let mut evicted = 0;
        while let Some(no) = self.blocks.ids.next_due(now) {
            let ids = match self.blocks.catalog.get(no) {
                Some(meta) => {
                    let e =
                        self.layout
                            .by_no(meta.entity_no)
                            .ok_or_else(|| StoreError::Corrupt {
                                what: format!("block {no:016x} names entity #{}", meta.entity_no),
                            })?;
                    let bytes = self.blocks.bytes_once(no)?;
                    read::ids(e, &meta, &bytes)?
                }
                None => Vec::new(),
            };
            evicted += ids.len();
            self.blocks.ids.evict(no, &ids);
        }
        Ok(evicted)
    }

    /// Every row of a block.
    pub(crate) fn block_rows(
        &self,
        e: &EntityLayout,
        meta: &BlockMeta,
    ) -> Result<Vec<Values>, StoreError> {
        debug_assert!(e.blocks.is_some());
        let bytes = self.blocks.bytes(meta.no)?;
        read::all_rows(meta, &bytes)
    }
}

/// Blocks against their catalog: every registered block's file exists and decodes to the
/// rows the catalog describes (count, key, time and offset ranges), no row id is in two
/// blocks, and no file is unregistered.
pub(crate) fn verify(inner: &super::Inner) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let mut seen: std::collections::HashMap<[u8; 16], u64> = Default::default();
    for e in &inner.layout.entities {
        let Some(keys) = &e.blocks else { continue };
        for meta in inner.blocks.catalog.select(e.no, |_| true) {
            let rows = match inner.block_rows(e, &meta) {
                Ok(rows) => rows,
                Err(err) => {
                    problems.push(format!("{} block {:016x}: {err}", e.name, meta.no));
                    continue;
                }
            };
            if rows.is_empty() {
                problems.push(format!("{} block {:016x} holds no rows", e.name, meta.no));
                continue;
            }
            let again = BlockMeta::describe(
                e,
                keys,
                meta.no,
                &rows,
                meta.bytes,
                meta.level,
                meta.version,
            );
            if again != *meta {
                problems.push(format!(
                    "{} block {:016x}: its rows give {again:?} but the catalog holds {meta:?}",
                    e.name, meta.no
                ));
            }
            if !meta.mixed && rows.iter().any(|r| keys.key_of(r) != keys.key_of(&rows[0])) {
                problems.push(format!(
                    "{} block {:016x} mixes rows of several (org, topic, partition)",
                    e.name, meta.no
                ));
            }
            for r in &rows {
                if let Some(other) = seen.insert(e.id_of(r), meta.no) {
                    problems.push(format!(
                        "{} row {} is in blocks {other:016x} and {:016x}",
                        e.name,
                        uuid::Uuid::from_bytes(e.id_of(r)),
                        meta.no
                    ));
                }
            }
        }
    }
    // A file no catalog row names is left over only once it is older than any write or merge
    // in progress could be (they register theirs within seconds).
    for no in inner.blocks.files.list()? {
        let settled = std::fs::metadata(inner.blocks.files.path(no))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > std::time::Duration::from_secs(60));
        if settled && inner.blocks.catalog.get(no).is_none() && !inner.blocks.files.is_retired(no) {
            problems.push(format!(
                "block file {:?} is in no catalog row",
                inner.blocks.files.path(no)
            ));
        }
    }
    Ok(problems)
}
