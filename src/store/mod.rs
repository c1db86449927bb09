//! The store: the only module that touches ormdb-core.
//!
//! Rows live in ormdb-core's own trees and record format (`data`, `meta` latest pointers,
//! `index:entity_type`), so ormdb-core's readers (`StorageEngine::get_latest`,
//! `scan_entity_type`, `QueryExecutor`) see them. On top of that the store owns:
//! - the write path ([`WriteBatch`] -> one WAL record -> sled trees), with group commit: a
//!   single committer thread takes every batch waiting, appends them to the write-ahead log,
//!   fsyncs once, applies them, and acknowledges each (`wal`, `commit`);
//! - secondary indexes for every `@index` and batch-granular ones for every `@postings`
//!   (tree `streamtally:index`, `postings`), upsert by `@unique` key (deterministic ids),
//!   consumer offsets and feed cursors as rows, all inside that one atomic write;
//! - the durable change feed (tree `streamtally:feed`, `feed`);
//! - the reads the gateway needs over those indexes (`query`).

mod batch;
pub mod blocks;
pub use backup::Backup;
mod backup;
mod cache;
pub mod codec;
mod commit;
mod feed;
mod feed_log;
mod layout;
pub mod migrate;
mod postings;
mod query;
mod wal;

pub use batch::{CommitInfo, Duplicate, IdScope, Mutation, Row, WriteBatch};
pub use feed::{ChangeEntry, ChangeOp};
pub use layout::{FieldLayout, Layout, Values, UNFED_ENTITIES};
pub use migrate::Migration;
pub use ormdb_core::proto::Value;
pub use query::{Filter, Order, Query};

use crate::schema::Schema;
use commit::{Committer, Request};
use ormdb_core::storage::VersionedKey;
use ormdb_core::{Catalog, StorageConfig, StorageEngine};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of the store. Each names the path, entity, field or value it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: cannot {op} at {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store at {path}: ormdb-core failed to {op}: {message}")]
    Engine {
        path: PathBuf,
        op: &'static str,
        message: String,
    },
    #[error("store schema: {0}")]
    Schema(String),
    #[error("unknown entity '{entity}' (schema.ormdb declares: {known})")]
    UnknownEntity { entity: String, known: String },
    #[error("{entity}: unknown field '{field}'")]
    UnknownField { entity: String, field: String },
    #[error("{entity}.{field}: expected {expected}, got {got} {value}")]
    FieldType {
        entity: String,
        field: String,
        expected: &'static str,
        got: &'static str,
        value: String,
    },
    #[error("{entity}.{field}: required field is missing")]
    MissingField { entity: String, field: String },
    #[error("{entity}.{field}: value {value} is not valid JSON: {error}")]
    InvalidJson {
        entity: String,
        field: String,
        value: String,
        error: String,
    },
    #[error("{entity}: cannot {op} row {id}: it does not exist")]
    NotFound {
        entity: String,
        id: String,
        op: &'static str,
    },
    #[error("{entity}: upsert needs a @unique key and schema.ormdb declares none for it")]
    NoUniqueKey { entity: String },
    #[error("{entity}: id {given} does not match {derived}, the id derived from its @unique key")]
    IdMismatch {
        entity: String,
        given: String,
        derived: String,
    },
    #[error("{entity}: the row carries id {row_id} but the update targets {target}")]
    IdConflict {
        entity: String,
        row_id: String,
        target: String,
    },
    /// The WAL's fsync failed: whether its last records are on disk is unknown (the kernel
    /// may have dropped the dirty pages), so only a reopen, which replays what is there, can
    /// tell. Fatal: the store refuses every write until then.
    #[error("store: fsync of the write-ahead log {path} failed: {source}; the store refuses writes until it is reopened")]
    WalFsync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store at {path} is closed")]
    Closed { path: PathBuf },
    /// A write refused because an earlier one failed: `fatal` when only a reopen recovers
    /// (a failed fsync, a durable commit that could not be applied), else the writer calls
    /// [`Store::resume_writes`] and writes again.
    #[error("store at {path} stopped accepting writes after a failure ({message}); {}", recovery(*.fatal))]
    Failed {
        path: PathBuf,
        message: String,
        fatal: bool,
    },
    #[error("store: corrupt data: {what}")]
    Corrupt { what: String },
    #[error("change feed: sequence {requested} was truncated; the oldest kept is {oldest}")]
    FeedTruncated { requested: u64, oldest: u64 },
    #[error("query on {entity}: {message}")]
    Query { entity: String, message: String },
    /// A write planned on a state of the store that changed before it committed (a block
    /// merge whose source was rewritten meanwhile); nothing was written.
    #[error("store: {what}")]
    Stale { what: String },
}

/// `STREAMTALLY_FAULT=wal_fsync_error_on:<Entity>` (one of several comma-separated faults).
#[cfg(feature = "fault-injection")]
fn fsync_fault_from_env() -> Option<String> {
    crate::fault::arg("wal_fsync_error_on")
}

fn recovery(fatal: bool) -> &'static str {
    if fatal {
        "reopen it to recover from the write-ahead log"
    } else {
        "writes resume after the failed batches are written again"
    }
}

impl StoreError {
    /// Whether the same operation may succeed if tried again (after
    /// [`Store::resume_writes`] for a write): a refused or failed WAL append, an I/O or
    /// ormdb-core error. Not retryable: a failed fsync or any failure that needs a reopen, a
    /// closed store, and errors of the request itself (schema, types, ids, corrupt data).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Io { .. } | StoreError::Engine { .. } => true,
            StoreError::Failed { fatal, .. } => !fatal,
            StoreError::WalFsync { .. }
            | StoreError::Closed { .. }
            | StoreError::Schema(_)
            | StoreError::UnknownEntity { .. }
            | StoreError::UnknownField { .. }
            | StoreError::FieldType { .. }
            | StoreError::MissingField { .. }
            | StoreError::InvalidJson { .. }
            | StoreError::NotFound { .. }
            | StoreError::NoUniqueKey { .. }
            | StoreError::IdMismatch { .. }
            | StoreError::IdConflict { .. }
            | StoreError::Corrupt { .. }
            | StoreError::FeedTruncated { .. }
            | StoreError::Query { .. }
            | StoreError::Stale { .. } => false,
        }
    }
}

/// A submitted batch: poll it with `try_take`, or block with `wait`.
pub struct WriteTicket {
    rx: tokio::sync::oneshot::Receiver<Result<CommitInfo, StoreError>>,
    path: PathBuf,
}

impl WriteTicket {
    /// The outcome if the write finished.
    pub fn try_take(&mut self) -> Option<Result<CommitInfo, StoreError>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                Some(Err(StoreError::Closed {
                    path: self.path.clone(),
                }))
            }
        }
    }

    /// Blocks until the write finished (usable inside and outside async runtimes' threads
    /// that may block).
    pub fn wait(self) -> Result<CommitInfo, StoreError> {
        let path = self.path;
        futures::executor::block_on(self.rx).map_err(|_| StoreError::Closed { path })?
    }

    /// Waits until the write finished.
    pub async fn finished(self) -> Result<CommitInfo, StoreError> {
        let path = self.path;
        self.rx.await.map_err(|_| StoreError::Closed { path })?
    }
}

/// Tuning of a store; `StoreOptions::new(path)` gives the defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    /// sled page cache.
    pub cache_capacity_bytes: u64,
    /// Most batches one fsync may carry (group commit).
    pub group_commit_max_batches: usize,
    /// WAL segment size before rotation.
    pub wal_segment_bytes: u64,
    /// How often sled is flushed and old WAL segments and feed entries are dropped.
    pub checkpoint_interval: Duration,
    /// Memory for the latest rows of entities chosen with [`Store::cache_rows`] (0: none),
    /// and as much again for recently read blocks.
    pub row_cache_bytes: usize,
    /// How often blocks due for a merge are merged (None: never, for tests that count
    /// blocks).
    pub merge_interval: Option<Duration>,
    /// How long an id of a `@blocks` row is remembered so that an insert of it again is a
    /// duplicate, and how many ids at most (see `blocks::index`).
    pub dedup_window: Duration,
    pub dedup_max_ids: usize,
    /// Rows of a store written before `@blocks` moved into blocks per atomic write when it
    /// is opened (see `migrate`).
    pub migrate_chunk_rows: usize,
    /// Whole UTC days of events kept before today's (None: forever); older blocks are
    /// dropped in the background (see `blocks::retention`).
    pub events_retention_days: Option<u32>,
    /// A checkpoint seals the change-feed segment being appended once it holds this many
    /// bytes; truncation below the lowest cursor deletes whole sealed segments (see
    /// `feed_log`).
    pub feed_seal_bytes: u64,
}

impl StoreOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreOptions {
            path: path.into(),
            cache_capacity_bytes: 64 << 20,
            group_commit_max_batches: 16,
            wal_segment_bytes: 64 << 20,
            checkpoint_interval: Duration::from_secs(5),
            row_cache_bytes: 64 << 20,
            merge_interval: Some(Duration::from_secs(1)),
            dedup_window: Duration::from_secs(86_400),
            dedup_max_ids: 6_000_000,
            migrate_chunk_rows: migrate::DEFAULT_CHUNK_ROWS,
            events_retention_days: None,
            feed_seal_bytes: feed_log::SEAL_FROM_BYTES,
        }
    }

    pub fn from_config(cfg: &crate::config::StoreConfig) -> Self {
        StoreOptions {
            path: cfg.path.clone(),
            cache_capacity_bytes: cfg.cache_capacity_mb << 20,
            group_commit_max_batches: cfg.group_commit_max_batches().get(),
            wal_segment_bytes: cfg.wal_segment_bytes(),
            checkpoint_interval: cfg.checkpoint_interval(),
            row_cache_bytes: (cfg.row_cache_mb << 20) as usize,
            merge_interval: Some(Duration::from_secs(1)),
            dedup_window: cfg.dedup_window(),
            dedup_max_ids: cfg.dedup_max_ids as usize,
            migrate_chunk_rows: cfg.migrate_chunk_rows().get(),
            events_retention_days: cfg.retention.events_days(),
            feed_seal_bytes: feed_log::SEAL_FROM_BYTES,
        }
    }
}

/// sled trees the store writes; the first three are ormdb-core's own.
pub(crate) struct Trees {
    pub data: sled::Tree,
    pub meta: sled::Tree,
    pub types: sled::Tree,
    pub index: sled::Tree,
    pub feed: sled::Tree,
    pub stmeta: sled::Tree,
}

pub(crate) const TREE_DATA: u8 = 0;
pub(crate) const TREE_META: u8 = 1;
pub(crate) const TREE_TYPES: u8 = 2;
pub(crate) const TREE_INDEX: u8 = 3;
pub(crate) const TREE_FEED: u8 = 4;
pub(crate) const TREE_STMETA: u8 = 5;
/// Not a tree: a block file of a `@blocks` entity (key: block number, big-endian).
pub(crate) const TREE_BLOCKS: u8 = 6;
/// Not a tree: a resident block (see `blocks::Resident`; key: block number, big-endian;
/// value: `blocks::ReplayedResident`), or its removal.
pub(crate) const TREE_RESIDENT: u8 = 7;

impl Trees {
    pub fn get(&self, id: u8) -> &sled::Tree {
        match id {
            TREE_DATA => &self.data,
            TREE_META => &self.meta,
            TREE_TYPES => &self.types,
            TREE_INDEX => &self.index,
            TREE_FEED => &self.feed,
            _ => &self.stmeta,
        }
    }
}

/// Why the store refuses writes: a failed WAL append (cleared by `resume_writes`), or a
/// failure after which only a reopen can recover (`fatal`).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub message: String,
    pub fatal: bool,
}

pub(crate) struct Inner {
    pub path: PathBuf,
    pub layout: Layout,
    pub engine: StorageEngine,
    pub catalog: Catalog,
    pub trees: Trees,
    pub requests: Mutex<Option<crossbeam_channel::Sender<Request>>>,
    /// Next change-feed sequence number: every entry below it is durable and readable.
    pub feed_head: tokio::sync::watch::Sender<u64>,
    /// Highest commit applied to the sled trees.
    pub applied_commit: AtomicU64,
    /// Lowest feed sequence still kept (entries below were truncated).
    pub feed_floor: AtomicU64,
    /// The change feed's records (segment files beside the database).
    pub feed_log: feed_log::FeedLog,
    /// Whether the change feed is kept whole while no reader has a cursor (for one that
    /// registers later); see [`Store::release_feed_readers`].
    pub feed_kept_for_new_readers: AtomicBool,
    pub failure: Mutex<Option<Failure>>,
    pub wal: Mutex<wal::Wal>,
    /// Latest rows of chosen entities, invalidated by the apply thread.
    pub row_cache: cache::RowCache,
    /// The blocks of `@blocks` entities: catalog, files, id index, read cache.
    pub blocks: blocks::Blocks,
    /// Held by the committer while it logs a group, and by a backup while it copies.
    pub commit_gate: Mutex<()>,
    /// Last commit logged in the WAL (it may not be applied yet).
    pub logged_commit: AtomicU64,
    /// Held by a checkpoint, and by a backup while it copies the WAL.
    pub checkpointing: Mutex<()>,
    /// Number of the next block (taken by the committer and by merges).
    pub next_block: AtomicU64,
    /// Test-only: the first WAL group that writes a row of this entity fails its fsync.
    #[cfg(feature = "fault-injection")]
    pub fsync_fault_entity: Mutex<Option<String>>,
}

/// An open store. Cheap to clone; every clone shares one committer. When the last clone is
/// dropped the store's threads stop (without the checkpoint `close` makes: the next open
/// replays the write-ahead log).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    handle: Arc<Handle>,
}

struct Handle {
    inner: Arc<Inner>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stop: std::sync::atomic::AtomicBool,
}

impl Handle {
    fn shutdown(&self) {
        self.inner.requests.lock().take();
        self.stop.store(true, Ordering::SeqCst);
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for t in threads {
            // The last handle may be dropped by one of the store's own threads (a merge or
            // checkpoint that held it): that thread ends by itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

const STMETA_CHECKPOINT: &[u8] = b"checkpoint";
const STMETA_LAST_COMMIT: &[u8] = b"last_commit";
const STMETA_NEXT_SEQ: &[u8] = b"next_seq";
const STMETA_NEXT_BLOCK: &[u8] = b"next_block";
/// The oldest commit whose WAL record an open must read for resident blocks.
const STMETA_RESIDENT_FROM: &[u8] = b"resident_from";
/// [`Layout::index_description`] of the schema the index tree was built for.
const STMETA_INDEX_LAYOUT: &[u8] = b"index_layout";
/// The change feed's first sequence number in a new store.
pub const FIRST_SEQ: u64 = 1;

/// Rebuilds every `@index` and `@postings` entry from the live rows, for a store whose index
/// tree was built for other index declarations (an older schema or release). Posting entries
/// are written as of `last_commit`, so later commits replay after them.
fn rebuild_index_tree(
    engine: &StorageEngine,
    trees: &Trees,
    layout: &Layout,
    last_commit: u64,
    db_path: &Path,
) -> Result<(), StoreError> {
    let sled_err = |err: sled::Error| StoreError::Engine {
        path: db_path.to_path_buf(),
        op: "rebuild the index tree",
        message: err.to_string(),
    };
    let started = Instant::now();
    let had_entries = !trees.index.is_empty();
    trees.index.clear().map_err(sled_err)?;
    let mut rows = 0u64;
    let mut posted: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
    let flush_posted = |posted: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>| {
        for (prefix, body) in std::mem::take(posted) {
            let key = postings::entry_key(&prefix, last_commit);
            let mut value = (trees.index.get(&key).map_err(sled_err)?)
                .map(|v| v.to_vec())
                .unwrap_or_default();
            value.extend_from_slice(&body);
            trees.index.insert(key, value).map_err(sled_err)?;
        }
        Ok::<(), StoreError>(())
    };
    for e in &layout.entities {
        if e.indexes.is_empty() && e.postings.is_empty() {
            continue;
        }
        for id in entity_ids(&trees.types, &e.name) {
            let id = id.map_err(sled_err)?;
            let latest = engine.get_latest(&id).map_err(|err| StoreError::Engine {
                path: db_path.to_path_buf(),
                op: "read a row to rebuild the index tree",
                message: err.to_string(),
            })?;
            let Some((_, record)) = latest else {
                continue;
            };
            if record.deleted {
                continue;
            }
            let Ok(values) = e.decode_record(&record.data) else {
                tracing::warn!(entity = %e.name, id = %uuid::Uuid::from_bytes(id),
                    "row does not decode; left out of the rebuilt indexes");
                continue;
            };
            for idx in &e.indexes {
                (trees.index)
                    .insert(e.index_key(idx, &values, &id), Vec::new())
                    .map_err(sled_err)?;
            }
            for p in &e.postings {
                postings::push_set(
                    posted.entry(e.posting_key(p, &values)).or_default(),
                    &id,
                    &e.feed_values(&values),
                );
            }
            rows += 1;
            if rows.is_multiple_of(100_000) {
                flush_posted(&mut posted)?;
                tracing::info!(rows, "rebuilding the index tree");
            }
        }
    }
    flush_posted(&mut posted)?;
    if had_entries || rows > 0 {
        tracing::info!(
            rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index declarations changed: index tree rebuilt from the rows"
        );
    }
    Ok(())
}

/// The ids of `entity`'s rows, from ormdb-core's type index (`index:entity_type`).
pub(crate) fn entity_ids<'a>(
    types: &'a sled::Tree,
    entity: &str,
) -> impl Iterator<Item = Result<[u8; 16], sled::Error>> + 'a {
    let prefix = commit::type_key(entity, &[0; 16]);
    let len = prefix.len() - 16;
    types
        .scan_prefix(&prefix[..len])
        .filter_map(move |item| match item {
            Ok((k, _)) => <[u8; 16]>::try_from(&k[len..]).ok().map(Ok),
            Err(e) => Some(Err(e)),
        })
}

/// Names of the `@latest_only` entities whose old versions have been removed.
const STMETA_LATEST_ONLY: &[u8] = b"latest_only";

/// Removes every version but the latest of the rows of `@latest_only` entities, once for a
/// store written before they were declared so (writes remove them from then on).
fn prune_old_versions(
    engine: &StorageEngine,
    trees: &Trees,
    layout: &Layout,
    db_path: &Path,
) -> Result<(), StoreError> {
    let engine_err = |op: &'static str| {
        move |err: sled::Error| StoreError::Engine {
            path: db_path.to_path_buf(),
            op,
            message: err.to_string(),
        }
    };
    let names: Vec<&str> = layout
        .entities
        .iter()
        .filter(|e| e.latest_only)
        .map(|e| e.name.as_str())
        .collect();
    let description = names.join(",");
    let done = trees
        .stmeta
        .get(STMETA_LATEST_ONLY)
        .map_err(engine_err("read the pruned entities"))?;
    if done.as_deref() == Some(description.as_bytes()) {
        return Ok(());
    }
    let started = Instant::now();
    let (mut rows, mut removed) = (0u64, 0u64);
    for name in &names {
        for id in entity_ids(&trees.types, name) {
            let id = id.map_err(engine_err("list rows to prune"))?;
            let latest = read_u64(&trees.meta, &commit::latest_key(&id))
                .map_err(engine_err("read a row's latest version"))?;
            let Some(latest) = latest else {
                continue;
            };
            let (from, to) = (
                VersionedKey::new(id, 0).encode(),
                VersionedKey::new(id, u64::MAX).encode(),
            );
            for item in trees.data.range(from.as_slice()..=to.as_slice()) {
                let (k, _) = item.map_err(engine_err("list a row's versions"))?;
                if VersionedKey::decode(&k).is_some_and(|v| v.version_ts != latest) {
                    trees
                        .data
                        .remove(k)
                        .map_err(engine_err("remove an old version"))?;
                    removed += 1;
                }
            }
            rows += 1;
        }
    }
    engine.flush().map_err(|err| StoreError::Engine {
        path: db_path.to_path_buf(),
        op: "flush after pruning old versions",
        message: err.to_string(),
    })?;
    trees
        .stmeta
        .insert(STMETA_LATEST_ONLY, description.as_bytes())
        .map_err(engine_err("record the pruned entities"))?;
    if removed > 0 {
        tracing::info!(entities = %description, rows, removed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "removed old versions of @latest_only rows");
    }
    Ok(())
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<Option<u64>, sled::Error> {
    Ok(tree
        .get(key)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
}

impl Inner {
    /// The latest version of a row and its record (None if absent or deleted).
    ///
    /// ormdb-core's `get_latest` reads the `latest:` pointer, then the version it names;
    /// a batch replacing a `latest_only` row moves the pointer and then removes the version
    /// it named (`commit::apply_ops`), so a reader between the two lookups can find that
    /// version gone. It then reads the pointer again and follows the new one.
    pub(crate) fn latest_record(
        &self,
        id: &[u8; 16],
    ) -> Result<Option<(u64, ormdb_core::Record)>, StoreError> {
        let trees = &self.trees;
        let err = |op: &'static str| {
            let path = self.path.clone();
            move |err: sled::Error| StoreError::Engine {
                path,
                op,
                message: err.to_string(),
            }
        };
        let pointer = || read_u64(&trees.meta, &commit::latest_key(id)).map_err(err("read a row"));
        let Some(mut version) = pointer()? else {
            return Ok(None);
        };
        loop {
            let raw = trees
                .data
                .get(VersionedKey::new(*id, version).encode())
                .map_err(err("read a row"))?;
            if let Some(raw) = raw {
                let record =
                    ormdb_core::Record::from_bytes(&raw).map_err(|e| StoreError::Corrupt {
                        what: format!("row {}: {e}", uuid::Uuid::from_bytes(*id)),
                    })?;
                return Ok((!record.deleted).then_some((version, record)));
            }
            match pointer()? {
                Some(moved) if moved != version => version = moved,
                // Unchanged: the version is missing (`verify` reports it), or the row left.
                _ => return Ok(None),
            }
        }
    }

    /// Calls `f` with the id, latest version and record of every row of `entity` (not of
    /// `@blocks` entities), through [`Inner::latest_record`]: a row replaced meanwhile is
    /// read at its new version, never skipped.
    pub(crate) fn for_each_latest(
        &self,
        entity: &str,
        mut f: impl FnMut([u8; 16], u64, ormdb_core::Record) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for id in entity_ids(&self.trees.types, entity) {
            let id = id.map_err(|err| StoreError::Engine {
                path: self.path.clone(),
                op: "scan an entity",
                message: err.to_string(),
            })?;
            if let Some((version, record)) = self.latest_record(&id)? {
                f(id, version, record)?;
            }
        }
        Ok(())
    }
}

impl Store {
    /// Opens (or creates) the store at `opts.path` for `schema`, replaying the write-ahead log
    /// and moving the rows of `@blocks` entities that an earlier release kept as ORMDB rows
    /// into blocks (see `migrate`; logged every chunk) before it returns.
    pub fn open(opts: StoreOptions, schema: &Schema) -> Result<Store, StoreError> {
        Self::open_with_progress(opts, schema, &mut |_| {})
    }

    /// `open`, calling `progress` when a migration of rows into blocks starts and after every
    /// chunk of it (never for a store with nothing to migrate).
    pub fn open_with_progress(
        opts: StoreOptions,
        schema: &Schema,
        progress: &mut dyn FnMut(&Migration),
    ) -> Result<Store, StoreError> {
        let started = Instant::now();
        let path = opts.path.clone();
        std::fs::create_dir_all(&path).map_err(|source| StoreError::Io {
            op: "create store directory",
            path: path.clone(),
            source,
        })?;
        let layout = Layout::new(schema)?;
        let db_path = path.join("ormdb");
        let engine_err = |op: &'static str| {
            let p = db_path.clone();
            move |e: ormdb_core::Error| StoreError::Engine {
                path: p,
                op,
                message: e.to_string(),
            }
        };
        // sled's own background flush. Durability comes from the WAL, so this only bounds
        // how much an open replays; measured, 1 s against 10 s moved throughput ~10%.
        let engine = StorageEngine::open(engine_config(
            db_path.clone(),
            opts.cache_capacity_bytes,
            Some(2000),
        ))
        .map_err(engine_err("open the database"))?;
        let catalog = Catalog::open(engine.db()).map_err(engine_err("open the catalog"))?;
        sync_catalog(&catalog, schema).map_err(engine_err("store the schema in the catalog"))?;

        let sled_err = |op: &'static str| {
            let p = db_path.clone();
            move |e: sled::Error| StoreError::Engine {
                path: p,
                op,
                message: e.to_string(),
            }
        };
        let db = engine.db();
        let open = |name: &str| db.open_tree(name).map_err(sled_err("open a tree"));
        let trees = Trees {
            data: open("data")?,
            meta: open("meta")?,
            types: open("index:entity_type")?,
            index: open("streamtally:index")?,
            feed: open("streamtally:feed")?,
            stmeta: open("streamtally:meta")?,
        };
        let checkpoint = read_u64(&trees.stmeta, STMETA_CHECKPOINT)
            .map_err(sled_err("read the checkpoint"))?
            .unwrap_or(0);
        // Records up to the checkpoint are in the trees; those from the oldest commit with a
        // block still resident are read again for their resident blocks only.
        let resident_from = read_u64(&trees.stmeta, STMETA_RESIDENT_FROM)
            .map_err(sled_err("read the resident blocks' first commit"))?
            .unwrap_or(checkpoint + 1);
        let (mut wal, records) = wal::Wal::open(
            &path.join("wal"),
            opts.wal_segment_bytes,
            checkpoint.min(resident_from.saturating_sub(1)),
            checkpoint,
        )?;
        let block_files = blocks::BlockFiles::open(&path)?;
        let feed_log = feed_log::FeedLog::open(&path, opts.feed_seal_bytes)?;
        move_feed_out_of_database(&engine, &trees, &feed_log, &db_path)?;
        let mut resident = std::collections::BTreeMap::new();
        let (mut replayed, mut last_replayed) = (0, checkpoint);
        for rec in records {
            let (held, ops): (Vec<_>, Vec<_>) = commit::decode_ops(&rec.payload)?
                .into_iter()
                .partition(|op| op.tree == TREE_RESIDENT);
            for op in held {
                let no = commit::key_number(&op)?;
                match op.value {
                    Some(v) => {
                        resident.insert(no, blocks::ReplayedResident::decode(rec.commit, v)?);
                    }
                    None => {
                        resident.remove(&no);
                    }
                }
            }
            if rec.commit > checkpoint {
                commit::apply_ops(&trees, &block_files, &feed_log, ops)?;
                replayed += 1;
                last_replayed = rec.commit;
            }
        }
        if replayed > 0 {
            block_files.sync_written()?;
            feed_log.sync()?;
        }
        // Nobody reads yet: the files of blocks the replay removed can go now.
        block_files.sweep(Duration::ZERO)?;
        if replayed > 0 {
            let keep_from = wal_kept_from(last_replayed, resident.values().map(|r| r.commit).min());
            record_checkpoint(&trees, last_replayed, keep_from)
                .map_err(sled_err("write the checkpoint"))?;
            engine.flush().map_err(engine_err("flush after replay"))?;
            wal.remove_through(keep_from - 1)?;
        }
        let last_commit = read_u64(&trees.stmeta, STMETA_LAST_COMMIT)
            .map_err(sled_err("read the last commit"))?
            .unwrap_or(0);
        let next_seq = read_u64(&trees.stmeta, STMETA_NEXT_SEQ)
            .map_err(sled_err("read the feed head"))?
            .unwrap_or(FIRST_SEQ);
        let next_block = read_u64(&trees.stmeta, STMETA_NEXT_BLOCK)
            .map_err(sled_err("read the next block number"))?
            .unwrap_or(1);
        let feed_floor = feed_log.first_seq().unwrap_or(next_seq);
        if let Some(end) = feed_log.end_seq().filter(|&end| end != next_seq) {
            return Err(StoreError::Corrupt {
                what: format!(
                    "the change feed's files end at sequence {end} but the store's head is {next_seq}"
                ),
            });
        }
        let description = layout.index_description();
        let built_for = trees
            .stmeta
            .get(STMETA_INDEX_LAYOUT)
            .map_err(sled_err("read the index layout"))?;
        if built_for.as_deref() != Some(description.as_bytes()) {
            rebuild_index_tree(&engine, &trees, &layout, last_commit, &db_path)?;
            engine
                .flush()
                .map_err(engine_err("flush the rebuilt indexes"))?;
            trees
                .stmeta
                .insert(STMETA_INDEX_LAYOUT, description.as_bytes())
                .map_err(sled_err("write the index layout"))?;
            engine
                .flush()
                .map_err(engine_err("flush the index layout"))?;
        }
        prune_old_versions(&engine, &trees, &layout, &db_path)?;
        tracing::info!(path = %path.display(), replayed_commits = replayed, last_commit, next_seq,
            elapsed_ms = started.elapsed().as_millis() as u64, "store opened");

        let (tx, rx) = crossbeam_channel::bounded(1024);
        let row_cache = cache::RowCache::new(layout.entities.len(), opts.row_cache_bytes);
        let blocks = blocks::Blocks::load(&engine, &layout, block_files, &opts)?;
        blocks.restore_resident(&layout, resident)?;
        for e in layout.entities.iter().filter(|e| e.blocks.is_some()) {
            let key = blocks::retention::stmeta_key(&e.name);
            let stored = (trees.stmeta.get(&key))
                .map_err(sled_err("read the retained-from time"))?
                .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes));
            if let Some(t) = stored {
                blocks.retained_from.write().insert(e.no, t);
            }
        }
        let inner = Arc::new(Inner {
            path: path.clone(),
            layout,
            engine,
            catalog,
            trees,
            requests: Mutex::new(Some(tx)),
            feed_head: tokio::sync::watch::channel(next_seq).0,
            applied_commit: AtomicU64::new(last_commit),
            commit_gate: Mutex::new(()),
            logged_commit: AtomicU64::new(last_commit),
            checkpointing: Mutex::new(()),
            feed_floor: AtomicU64::new(feed_floor),
            feed_log,
            feed_kept_for_new_readers: AtomicBool::new(true),
            failure: Mutex::new(None),
            wal: Mutex::new(wal),
            row_cache,
            blocks,
            next_block: AtomicU64::new(next_block),
            #[cfg(feature = "fault-injection")]
            fsync_fault_entity: Mutex::new(fsync_fault_from_env()),
        });
        let handle = Arc::new(Handle {
            inner: inner.clone(),
            threads: Mutex::new(Vec::new()),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let committer = Committer::new(
            inner.clone(),
            rx,
            last_commit + 1,
            next_seq,
            opts.group_commit_max_batches,
        );
        let mut threads = vec![std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || committer.run())
            .map_err(|source| StoreError::Io {
                op: "start the committer thread",
                path: path.clone(),
                source,
            })?];
        let (ck_handle, interval) = (Arc::downgrade(&handle), opts.checkpoint_interval);
        threads.push(
            std::thread::Builder::new()
                .name("store-checkpoint".into())
                .spawn(move || checkpoint_loop(ck_handle, interval))
                .map_err(|source| StoreError::Io {
                    op: "start the checkpoint thread",
                    path: path.clone(),
                    source,
                })?,
        );
        if let Some(every) = opts.merge_interval {
            let merge_handle = Arc::downgrade(&handle);
            let retention = opts.events_retention_days;
            threads.push(
                std::thread::Builder::new()
                    .name("store-merge".into())
                    .spawn(move || merge_loop(merge_handle, every, retention))
                    .map_err(|source| StoreError::Io {
                        op: "start the merge thread",
                        path: path.clone(),
                        source,
                    })?,
            );
        }
        *handle.threads.lock() = threads;
        let store = Store { inner, handle };
        // Through the committer, before anyone else can write or read.
        migrate::run(&store, opts.migrate_chunk_rows, progress)?;
        Ok(store)
    }

    /// Rows of `@blocks` entities still kept as ORMDB rows, per entity (none once open
    /// returned, unless the store is being migrated).
    pub fn rows_to_migrate(&self) -> Result<Vec<(String, u64)>, StoreError> {
        migrate::pending(self)
    }

    /// Whether a close or drop has told the store's threads to stop.
    pub(crate) fn is_stopping(&self) -> bool {
        self.handle.stop.load(Ordering::SeqCst)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Commits `batch` atomically; returns once it is durable (fsynced) and readable.
    pub async fn write(&self, batch: WriteBatch) -> Result<CommitInfo, StoreError> {
        let rx = self.submit_inner(batch)?;
        rx.await.map_err(|_| self.closed())?
    }

    /// `write` for threads outside an async runtime.
    pub fn write_blocking(&self, batch: WriteBatch) -> Result<CommitInfo, StoreError> {
        let rx = self.submit_inner(batch)?;
        futures::executor::block_on(rx).map_err(|_| self.closed())?
    }

    fn submit_inner(
        &self,
        mut batch: WriteBatch,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<CommitInfo, StoreError>>, StoreError> {
        if let Some(failure) = self.inner.failure.lock().clone() {
            return Err(StoreError::Failed {
                path: self.inner.path.clone(),
                message: failure.message,
                fatal: failure.fatal,
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = self
            .inner
            .requests
            .lock()
            .clone()
            .ok_or_else(|| self.closed())?;
        batch.prepare(&self.inner.layout, chrono::Utc::now().timestamp_micros());
        sender
            .send(Request { batch, reply: tx })
            .map_err(|_| self.closed())?;
        Ok(rx)
    }

    /// Why the store refuses every write until it is reopened (a failed fsync, a durable
    /// commit that could not be applied), if it does. `/readyz` reports it.
    pub fn fatal_failure(&self) -> Option<String> {
        self.inner
            .failure
            .lock()
            .as_ref()
            .filter(|f| f.fatal)
            .map(|f| f.message.clone())
    }

    /// Test-only fault: the first group of writes from now on that writes a row of `entity`
    /// is appended to the WAL but its fsync fails, a fatal store error. The environment can
    /// arm the same fault at open: `STREAMTALLY_FAULT=wal_fsync_error_on:<Entity>`.
    #[cfg(feature = "fault-injection")]
    pub fn inject_wal_fsync_error_on(&self, entity: &str) {
        *self.inner.fsync_fault_entity.lock() = Some(entity.to_string());
    }

    /// After a failed write, accepts writes again (the failed batches must be written again,
    /// in order, by the caller). Errors if the failure needs a reopen (a failed fsync or a
    /// durable commit that could not be applied).
    pub fn resume_writes(&self) -> Result<(), StoreError> {
        let mut failure = self.inner.failure.lock();
        match failure.as_ref() {
            Some(f) if f.fatal => Err(StoreError::Failed {
                path: self.inner.path.clone(),
                message: f.message.clone(),
                fatal: true,
            }),
            _ => {
                *failure = None;
                Ok(())
            }
        }
    }

    /// Submits a batch now (in order with every other submission) and returns the ticket to
    /// wait on: lets a writer keep several batches in flight for group commit. A refused
    /// submission gives a ticket that holds the error.
    pub fn submit(&self, batch: WriteBatch) -> WriteTicket {
        let rx = match self.submit_inner(batch) {
            Ok(rx) => rx,
            Err(e) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = tx.send(Err(e));
                rx
            }
        };
        WriteTicket {
            rx,
            path: self.inner.path.clone(),
        }
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.inner.path.clone(),
        }
    }

    /// The latest version of a row, or None if it does not exist or was deleted.
    pub fn get(&self, entity: &str, id: &[u8; 16]) -> Result<Option<Row>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        Ok(self.get_values(entity, id)?.map(|v| e.to_row(v)))
    }

    /// The latest rows of `entity` with ids `ids`, by id (absent ids are left out): for
    /// `@blocks` entities each block holding some of them is decoded once.
    pub fn get_many(
        &self,
        entity: &str,
        ids: &[[u8; 16]],
    ) -> Result<std::collections::HashMap<[u8; 16], Row>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        if e.blocks.is_some() {
            let rows = self.inner.block_rows_of(e, ids)?;
            return Ok(rows.into_iter().map(|(id, v)| (id, e.to_row(v))).collect());
        }
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = self.get(entity, id)? {
                out.insert(*id, row);
            }
        }
        Ok(out)
    }

    pub(crate) fn get_values(
        &self,
        entity: &str,
        id: &[u8; 16],
    ) -> Result<Option<Vec<Value>>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        if e.blocks.is_some() {
            return Ok(self.inner.block_row(e, id)?.map(|(_, values)| values));
        }
        self.with_latest(e.no, id, |_, data| e.decode_record(data))
    }

    /// Whether a [`WriteBatch::insert_scoped`] of `row` would be a duplicate of a stored row
    /// (of the same content or not), as the store stands now (writes not yet acknowledged
    /// are not seen).
    pub fn scoped_duplicate(
        &self,
        entity: &str,
        row: &Row,
        scope: &IdScope,
    ) -> Result<Option<Duplicate>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        let values = e.validate(row, 0)?;
        // Within the dedup window for `@blocks` rows, as the committer checks.
        let read = |id: &[u8; 16]| {
            let values = match e.blocks {
                Some(_) => self.inner.recent_block_row(e, id)?.map(|(_, v)| v),
                None => self.get_values(entity, id)?,
            };
            Ok((values.map(Arc::new), ()))
        };
        Ok(match commit::scoped_slot(e, &values, scope, read)? {
            commit::ScopedSlot::Duplicate(kind) => Some(kind),
            commit::ScopedSlot::Free { .. } => None,
        })
    }

    /// Keep the latest rows of `entity` in memory (up to `StoreOptions::row_cache_bytes`
    /// for all such entities): for rows read far more often than they are written.
    pub fn cache_rows(&self, entity: &str) -> Result<(), StoreError> {
        let e = self.inner.layout.entity(entity)?;
        self.inner.row_cache.enable(e.no);
        Ok(())
    }

    /// Calls `f` with the latest version and record bytes of a row of entity number `no`
    /// (None if it does not exist or was deleted), through the row cache when the entity's
    /// rows are cached; other rows are read in place, without a copy.
    fn with_latest<T>(
        &self,
        no: u16,
        id: &[u8; 16],
        f: impl FnOnce(u64, &[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let cache = &self.inner.row_cache;
        if !cache.enabled(no) {
            return self
                .inner
                .latest_record(id)?
                .map(|(version, record)| f(version, &record.data))
                .transpose();
        }
        let latest = match cache.get(id) {
            Ok(hit) => hit,
            Err(miss) => {
                let read: cache::Cached = self
                    .inner
                    .latest_record(id)?
                    .map(|(version, record)| (version, Arc::from(record.data)));
                cache.keep(miss, *id, read.clone());
                read
            }
        };
        latest.map(|(version, data)| f(version, &data)).transpose()
    }

    /// The latest version of a row (None if it does not exist or was deleted): with
    /// [`Store::get_version_fields`], lets a reader keep what it derived from a row until
    /// the row changes.
    pub fn latest_version(&self, entity: &str, id: &[u8; 16]) -> Result<Option<u64>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        if e.blocks.is_some() {
            return Ok(self.inner.block_row(e, id)?.map(|(meta, _)| meta.version));
        }
        self.with_latest(e.no, id, |version, _| Ok(version))
    }

    /// A specific version of a row (as named by a change-feed entry). Rows of `@blocks`
    /// entities keep no old versions: their current row, whatever `version` names.
    pub fn get_version(
        &self,
        entity: &str,
        id: &[u8; 16],
        version: u64,
    ) -> Result<Option<Row>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        if e.blocks.is_some() {
            return self.get(entity, id);
        }
        match self.version_record(id, version)? {
            Some(record) => Ok(Some(e.to_row(e.decode_record(&record.data)?))),
            None => Ok(None),
        }
    }

    fn version_record(
        &self,
        id: &[u8; 16],
        version: u64,
    ) -> Result<Option<ormdb_core::Record>, StoreError> {
        self.inner
            .engine
            .get(id, version)
            .map_err(|err| StoreError::Engine {
                path: self.inner.path.clone(),
                op: "read a row version",
                message: err.to_string(),
            })
    }

    /// The `@feed` fields of `entity`, in the order change-feed entries carry their values.
    pub fn feed_fields(&self, entity: &str) -> Result<Vec<String>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        Ok(e.feed_fields
            .iter()
            .map(|&p| e.fields[p].name.clone())
            .collect())
    }

    /// Chosen fields of the latest version of a row (None if it does not exist), decoding
    /// nothing else.
    pub fn get_fields(
        &self,
        entity: &str,
        id: &[u8; 16],
        fields: &[&str],
    ) -> Result<Option<Vec<Value>>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        if e.blocks.is_some() {
            return self.block_fields(e, id, fields);
        }
        self.with_latest(e.no, id, |_, data| project(entity, data, fields))
    }

    /// `get_fields` of a `@blocks` row.
    fn block_fields(
        &self,
        e: &layout::EntityLayout,
        id: &[u8; 16],
        fields: &[&str],
    ) -> Result<Option<Vec<Value>>, StoreError> {
        let Some((_, values)) = self.inner.block_row(e, id)? else {
            return Ok(None);
        };
        Ok(Some(
            fields
                .iter()
                .map(|f| {
                    e.field_pos(f)
                        .map(|p| values[p].clone())
                        .unwrap_or(Value::Null)
                })
                .collect(),
        ))
    }

    /// Chosen fields of a specific row version, in the order asked (Null where absent),
    /// decoding nothing else: for readers that need a few fields of many rows.
    pub fn get_version_fields(
        &self,
        entity: &str,
        id: &[u8; 16],
        version: u64,
        fields: &[&str],
    ) -> Result<Option<Vec<Value>>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        if e.blocks.is_some() {
            return self.block_fields(e, id, fields);
        }
        let Some(record) = self.version_record(id, version)? else {
            return Ok(None);
        };
        Ok(Some(project(entity, &record.data, fields)?))
    }

    /// The stored next offset of `topic`/`partition`, if any batch recorded one.
    pub fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let e = self.inner.layout.entity("ConsumerOffset")?;
        let key = [Value::String(topic.to_string()), Value::Int32(partition)];
        let id = codec::upsert_id(&e.name, &key.iter().collect::<Vec<_>>());
        Ok(self.get_values("ConsumerOffset", &id)?.and_then(|v| {
            match v[e.field_pos("next_offset").ok()?] {
                Value::Int64(n) => Some(n),
                _ => None,
            }
        }))
    }

    /// Every stored (topic, partition, next offset).
    pub fn offsets(&self) -> Result<Vec<(String, i32, i64)>, StoreError> {
        let rows = self.scan_all("ConsumerOffset")?;
        Ok(rows
            .into_iter()
            .filter_map(
                |r| match (r.get("topic"), r.get("partition"), r.get("next_offset")) {
                    (Some(Value::String(t)), Some(Value::Int32(p)), Some(Value::Int64(o))) => {
                        Some((t.clone(), *p, *o))
                    }
                    _ => None,
                },
            )
            .collect())
    }

    /// Stops keeping the change feed for readers that will not run (the stats workers of
    /// a connector with `stats.enabled = false`): removes the cursors of `names` that are
    /// registered, in one write, and from then on a checkpoint drops the feed below the
    /// lowest remaining cursor, or all of it when none remains. Returns the removed cursors
    /// with their positions. A reader registering afterwards finds the feed's start gone.
    pub fn release_feed_readers(&self, names: &[&str]) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner
            .feed_kept_for_new_readers
            .store(false, Ordering::SeqCst);
        let mut removed = Vec::new();
        let mut batch = WriteBatch::new();
        for name in names {
            if let Some(at) = self.cursor(name)? {
                batch.delete("FeedCursor", cursor_id(name));
                removed.push((name.to_string(), at));
            }
        }
        if !batch.is_empty() {
            self.write_blocking(batch)?;
        }
        Ok(removed)
    }

    /// The stored position of change-feed reader `name`, if it registered one.
    pub fn cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let e = self.inner.layout.entity("FeedCursor")?;
        Ok(self
            .get_values("FeedCursor", &cursor_id(name))?
            .and_then(|v| match v[e.field_pos("next_seq").ok()?] {
                Value::Int64(n) => Some(n as u64),
                _ => None,
            }))
    }

    /// A setting streamtally keeps about what the store holds (such as how its rollups are
    /// keyed), if set. Settings live beside the store's own bookkeeping, not in rows.
    pub fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let key = format!("setting:{name}");
        let value = self
            .inner
            .trees
            .stmeta
            .get(key.as_bytes())
            .map_err(|e| self.engine_error("read a setting", e))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets a [`Store::setting`], durably (flushed before it returns).
    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let key = format!("setting:{name}");
        self.inner
            .trees
            .stmeta
            .insert(key.as_bytes(), value.as_bytes())
            .map_err(|e| self.engine_error("write a setting", e))?;
        self.inner
            .engine
            .flush()
            .map_err(|e| self.engine_error("flush a setting", e))?;
        Ok(())
    }

    fn engine_error(&self, op: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Engine {
            path: self.inner.path.clone(),
            op,
            message: e.to_string(),
        }
    }

    /// Every row of `entity` (through ormdb-core's type index). For small entities and tests.
    pub fn scan_all(&self, entity: &str) -> Result<Vec<Row>, StoreError> {
        let mut rows = Vec::new();
        self.for_each_row(entity, |r| rows.push(r))?;
        Ok(rows)
    }

    /// Calls `f` with every row of `entity`, one at a time (through ormdb-core's type
    /// index): for whole-table passes that must not hold every row in memory.
    pub fn for_each_row(&self, entity: &str, mut f: impl FnMut(Row)) -> Result<(), StoreError> {
        let e = self.inner.layout.entity(entity)?;
        if e.blocks.is_some() {
            for meta in self.inner.blocks.catalog.select(e.no, |_| true) {
                for values in self.inner.block_rows(e, &meta)? {
                    f(e.to_row(values));
                }
            }
            return Ok(());
        }
        self.inner.for_each_latest(entity, |_, _, record| {
            f(e.to_row(e.decode_record(&record.data)?));
            Ok(())
        })
    }

    /// The ormdb-core engine and catalog underneath, for ormdb-core's own readers.
    pub fn ormdb(&self) -> (&StorageEngine, &Catalog) {
        (&self.inner.engine, &self.inner.catalog)
    }

    /// How many rows of `entity` exist: for `@blocks` entities from the block catalog, for
    /// others through ormdb-core's type index (no row is decoded).
    pub fn count_rows(&self, entity: &str) -> Result<u64, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        if e.blocks.is_some() {
            return Ok(self.inner.blocks.catalog.totals(e.no).1);
        }
        let mut n = 0;
        for id in entity_ids(&self.inner.trees.types, entity) {
            let id = id.map_err(|err| StoreError::Engine {
                path: self.inner.path.clone(),
                op: "count rows",
                message: err.to_string(),
            })?;
            if self.latest_version(entity, &id)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Blocks, rows and bytes of the blocks of `entity` (a `@blocks` entity), from the
    /// catalog alone.
    pub fn block_totals(&self, entity: &str) -> Result<(u64, u64, u64), StoreError> {
        let e = self.inner.layout.entity(entity)?;
        Ok(self.inner.blocks.catalog.totals(e.no))
    }

    /// Resident blocks (see `blocks::Resident`) and their bytes.
    pub fn resident_blocks(&self) -> (usize, usize) {
        self.inner.blocks.resident_totals()
    }

    /// Bytes the store occupies on disk (database and write-ahead log).
    pub fn disk_bytes(&self) -> u64 {
        dir_size(&self.inner.path)
    }

    /// Rows of a per-row entity and the bytes of their latest records (keys included),
    /// read through the type index (`store info`'s catalog and rollup figures).
    pub fn row_bytes(&self, entity: &str) -> Result<(u64, u64), StoreError> {
        self.inner.layout.entity(entity)?;
        let (mut rows, mut bytes) = (0u64, 0u64);
        self.inner.for_each_latest(entity, |_, _, record| {
            rows += 1;
            // The record, its versioned key, its `latest:` pointer and its type entry.
            bytes += record.data.len() as u64 + 24 + 31 + entity.len() as u64 + 17;
            Ok(())
        })?;
        Ok((rows, bytes))
    }

    /// What the store's disk holds, by kind (file sizes: no row is read).
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let path = &self.inner.path;
        Ok(DiskUsage {
            total: dir_size(path),
            blocks: dir_size(&path.join("blocks")),
            wal: dir_size(&path.join("wal")),
            database: dir_size(&path.join("ormdb")),
            feed: dir_size(self.inner.feed_log.dir()),
        })
    }

    /// The blocks of a `@blocks` entity in files, summed per (org, UTC day of their first
    /// row's time), from the catalog (no block is read); resident blocks are not in it.
    pub fn block_days(&self, entity: &str) -> Result<Vec<BlockDay>, StoreError> {
        let e = self.inner.layout.entity(entity)?;
        let mut days: std::collections::BTreeMap<(String, Option<i64>), BlockDay> =
            std::collections::BTreeMap::new();
        for m in self.inner.blocks.catalog.select(e.no, |m| !m.mixed) {
            let org = match &m.org {
                Value::Uuid(u) => uuid::Uuid::from_bytes(*u).to_string(),
                Value::Null => String::new(),
                other => codec::display_value(other),
            };
            let day = m.min_time.map(|t| t.div_euclid(86_400_000_000));
            let d = days.entry((org.clone(), day)).or_insert_with(|| BlockDay {
                org,
                day,
                ..BlockDay::default()
            });
            d.blocks += 1;
            d.rows += m.rows;
            d.bytes += m.bytes;
            d.min_time = [d.min_time, m.min_time].into_iter().flatten().min();
            d.max_time = [d.max_time, m.max_time].into_iter().flatten().max();
        }
        Ok(days.into_values().collect())
    }

    /// Checks that every index agrees with the rows and the change feed is contiguous and
    /// names existing row versions. Returns the problems found (empty = consistent).
    pub fn verify(&self) -> Result<Vec<String>, StoreError> {
        query::verify(self)
    }

    /// Flushes sled, records a checkpoint and drops the WAL segments it covers.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        checkpoint(&self.inner)
    }

    /// Removes the files of blocks retired (merged, rewritten, dropped) at least `min_age`
    /// ago; the merge thread does it every second with a grace of 30 s (a reader that took
    /// the catalog before may still open one). For benchmarks that compress time.
    pub fn sweep_retired_files(&self, min_age: Duration) -> Result<(), StoreError> {
        self.inner.blocks.files.sweep(min_age)
    }

    /// Forgets the ids written before the dedup window (or beyond `dedup_max_ids`), as the
    /// merge thread does every tick; the number forgotten. For benchmarks that compress time
    /// with no merge thread.
    pub fn forget_expired_ids(&self) -> Result<usize, StoreError> {
        self.inner.evict_ids()
    }

    /// Seals the resident blocks into files, stops the committer after the batches already
    /// submitted, checkpoints, and joins.
    pub fn close(&self) -> Result<(), StoreError> {
        if self.inner.failure.lock().is_none() {
            if let Err(error) = blocks::merge::seal_all(self) {
                // The WAL keeps them: the next open puts them back.
                tracing::warn!(%error, "sealing resident blocks at close failed");
            }
        }
        self.handle.shutdown();
        if self.inner.failure.lock().is_none() {
            checkpoint(&self.inner)?;
        }
        Ok(())
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

/// Moves the change-feed records an earlier release kept in the database's
/// `streamtally:feed` tree into the feed's files (fsynced), then empties the tree. A crash
/// midway repeats it: records already in the files are skipped.
fn move_feed_out_of_database(
    engine: &StorageEngine,
    trees: &Trees,
    feed_log: &feed_log::FeedLog,
    db_path: &Path,
) -> Result<(), StoreError> {
    let sled_err = |op: &'static str| {
        move |e: sled::Error| StoreError::Engine {
            path: db_path.to_path_buf(),
            op,
            message: e.to_string(),
        }
    };
    if trees.feed.is_empty() {
        return Ok(());
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    for item in trees.feed.iter() {
        let (k, v) = item.map_err(sled_err("read the change feed"))?;
        let first = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            what: format!("change-feed key of {} bytes", k.len()),
        })?);
        feed_log.append(first, feed::record_entries(&v), &v)?;
        records += 1;
        bytes += v.len() as u64;
    }
    feed_log.sync()?;
    trees
        .feed
        .clear()
        .map_err(sled_err("empty the old change-feed tree"))?;
    trees
        .stmeta
        .remove(b"feed_floor")
        .map_err(sled_err("remove the old feed floor"))?;
    engine.flush().map_err(|e| StoreError::Engine {
        path: db_path.to_path_buf(),
        op: "flush after moving the change feed",
        message: e.to_string(),
    })?;
    tracing::info!(
        records,
        bytes,
        "change feed moved out of the database into feed/"
    );
    Ok(())
}

fn sync_catalog(catalog: &Catalog, schema: &Schema) -> Result<(), ormdb_core::Error> {
    let current = catalog.current_schema()?;
    let version = current.as_ref().map(|c| c.version).unwrap_or(0);
    let wanted = schema.to_bundle(version);
    let same = match &current {
        Some(c) => c.to_bytes()? == wanted.to_bytes()?,
        None => false,
    };
    if !same {
        catalog.apply_schema(wanted)?;
    }
    Ok(())
}

fn checkpoint(inner: &Inner) -> Result<(), StoreError> {
    let _one = inner.checkpointing.lock();
    checkpoint_locked(inner)
}

/// [`checkpoint`] by a caller that holds `inner.checkpointing`.
fn checkpoint_locked(inner: &Inner) -> Result<(), StoreError> {
    let sled_err = |op: &'static str| {
        let p = inner.path.clone();
        move |e: sled::Error| StoreError::Engine {
            path: p,
            op,
            message: e.to_string(),
        }
    };
    let applied = inner.applied_commit.load(Ordering::SeqCst);
    // Read after `applied`: a block resident then and merged since has its merge at or
    // before the checkpoint or replayed after it; one resident now is kept from its commit.
    let keep_from = wal_kept_from(applied, inner.blocks.resident_floor());
    // The block files and feed records of the commits about to leave the WAL must be on
    // disk first.
    inner.blocks.files.sync_written()?;
    inner.feed_log.sync()?;
    feed::truncate(inner)?;
    record_checkpoint(&inner.trees, applied, keep_from)
        .map_err(sled_err("write the checkpoint"))?;
    inner.engine.flush().map_err(|e| StoreError::Engine {
        path: inner.path.clone(),
        op: "flush",
        message: e.to_string(),
    })?;
    inner.wal.lock().remove_through(keep_from - 1)?;
    Ok(())
}

/// The first commit the WAL must keep once everything through `applied` is in the trees:
/// the one after it, or the oldest commit that wrote a block still resident.
fn wal_kept_from(applied: u64, resident_floor: Option<u64>) -> u64 {
    resident_floor.map_or(applied + 1, |floor| floor.min(applied + 1))
}

/// Records in the trees that commits through `applied` are in them and that an open must
/// read the WAL from `keep_from` for resident blocks (flushed by the caller).
fn record_checkpoint(trees: &Trees, applied: u64, keep_from: u64) -> Result<(), sled::Error> {
    trees
        .stmeta
        .insert(STMETA_RESIDENT_FROM, &keep_from.to_be_bytes())?;
    trees
        .stmeta
        .insert(STMETA_CHECKPOINT, &applied.to_be_bytes())?;
    Ok(())
}

/// Calls `work` with the store every `every` until it stops or its last handle is gone (the
/// store's own threads hold it only while they work).
fn every_tick(handle: std::sync::Weak<Handle>, every: Duration, mut work: impl FnMut(&Store)) {
    let mut last = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20).min(every));
        let Some(handle) = handle.upgrade() else {
            return;
        };
        if handle.stop.load(Ordering::SeqCst) {
            return;
        }
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        let store = Store {
            inner: handle.inner.clone(),
            handle,
        };
        work(&store);
    }
}

/// Merges the blocks due (see `blocks::merge`) every `every`, forgets ids out of the dedup
/// window, and removes the files of blocks retired long enough ago.
/// With `retention_days`, also drops the blocks older than that (see `blocks::retention`),
/// at the first tick and every [`RETENTION_EVERY`] after.
fn merge_loop(handle: std::sync::Weak<Handle>, every: Duration, retention_days: Option<u32>) {
    let mut retained_at: Option<Instant> = None;
    every_tick(handle, every, |store| {
        if let Some(days) = retention_days {
            if retained_at.is_none_or(|at| at.elapsed() >= RETENTION_EVERY) {
                retained_at = Some(Instant::now());
                let now = chrono::Utc::now().timestamp_micros();
                match store.apply_retention(now, days) {
                    Ok(x) if x.blocks > 0 => tracing::info!(
                        blocks = x.blocks,
                        rows = x.rows,
                        bytes = x.bytes,
                        days,
                        "retention: dropped events older than the cutoff"
                    ),
                    Ok(_) => {}
                    Err(StoreError::Closed { .. } | StoreError::Failed { .. }) => {}
                    Err(error) => tracing::warn!(%error, "retention failed; will retry"),
                }
            }
        }
        // Ids are forgotten after every plan: a tick's rounds can take seconds, and the index
        // must not outgrow `dedup_max_ids` meanwhile (its table doubles past it).
        let evict = || match store.inner.evict_ids() {
            Ok(n) if n > 0 => tracing::debug!(ids = n, "dedup window: ids forgotten"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "forgetting old ids failed; will retry"),
        };
        if let Err(error) = blocks::merge::merge_due_then(store, evict) {
            if !matches!(error, StoreError::Closed { .. } | StoreError::Failed { .. }) {
                tracing::warn!(%error, "block merge failed; will retry");
            }
        }
        if let Err(error) = store.inner.blocks.files.sweep(blocks::RETIRE_GRACE) {
            tracing::warn!(%error, "removing retired block files failed; will retry");
        }
    });
}

fn checkpoint_loop(handle: std::sync::Weak<Handle>, every: Duration) {
    every_tick(handle, every, |store| {
        if let Err(error) = checkpoint(&store.inner) {
            tracing::warn!(%error, "store checkpoint failed; will retry");
        }
    });
}

/// How often the merge thread applies retention.
const RETENTION_EVERY: Duration = Duration::from_secs(10);

/// The values of `fields` in an encoded record, in that order (Null where absent).
fn project(entity: &str, data: &[u8], fields: &[&str]) -> Result<Vec<Value>, StoreError> {
    let pairs =
        ormdb_core::query::get_fields_fast(data, fields).map_err(|e| StoreError::Corrupt {
            what: format!("{entity}: cannot decode row: {e}"),
        })?;
    let mut out = vec![Value::Null; fields.len()];
    for (name, v) in pairs {
        if let Some(p) = fields.iter().position(|f| *f == name) {
            out[p] = v;
        }
    }
    Ok(out)
}

/// How a store's ORMDB database is opened (by `Store::open`, and by a backup creating its
/// copy, so the copy opens the same way).
fn engine_config(path: PathBuf, cache_capacity: u64, flush_every_ms: Option<u64>) -> StorageConfig {
    StorageConfig {
        path,
        cache_capacity,
        flush_every_ms,
        compression: false,
        temporary: false,
        retention: ormdb_core::storage::RetentionPolicy::keep_all(),
        compaction_interval: None,
    }
}

/// The id of reader `name`'s `FeedCursor` row (derived from its `@unique([name])` key).
fn cursor_id(name: &str) -> [u8; 16] {
    codec::upsert_id("FeedCursor", &[&Value::String(name.to_string())])
}

/// See [`Store::disk_usage`]; bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Everything under the store's directory.
    pub total: u64,
    /// The block files (`blocks/`).
    pub blocks: u64,
    /// The write-ahead log (`wal/`).
    pub wal: u64,
    /// The ORMDB database (`ormdb/`): block catalog, rollups, offsets, cursors.
    pub database: u64,
    /// The change feed's segment files (`feed/`).
    pub feed: u64,
}

/// See [`Store::block_days`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDay {
    /// The org id as text (empty for blocks of rows without one).
    pub org: String,
    /// Days since 1970-01-01 (UTC) of the blocks' first row time, if they have times.
    pub day: Option<i64>,
    pub blocks: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Oldest and newest row time (microseconds).
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
