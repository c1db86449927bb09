//! Online backup: a consistent copy of a running store in another directory, which opens
//! as a store of its own (`streamtally store backup DIR`, `POST /api/v1/admin/backup`).
//!
//! Block files are immutable: they are hard-linked (copied across filesystems) first,
//! while writes go on. Then, for a short pause, the committer logs nothing (it waits for the
//! commit gate) and every logged commit is applied; the store checkpoints, the ORMDB
//! database is copied tree by tree, the change feed's segment files and the WAL segments
//! (which then hold only the records of blocks still resident) are copied, and the block
//! files registered since the first pass are linked. The copy is thus the store as of one
//! commit: rows, blocks, consumer offsets and feed cursors together, so a connector started
//! on it resumes with nothing lost or stored twice. Its files are fsynced before the call returns.

use super::{Inner, Store, StoreError};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub dir: PathBuf,
    /// Block files in the copy, and their bytes.
    pub blocks: u64,
    pub block_bytes: u64,
    /// Of those, hard-linked (the rest were copied).
    pub linked: u64,
    /// Keys and bytes of the ORMDB database copied.
    pub database_keys: u64,
    pub database_bytes: u64,
    pub wal_bytes: u64,
    /// Bytes of the change feed's segment files copied.
    pub feed_bytes: u64,
    /// The last commit the copy holds.
    pub commit: u64,
    /// How long writes waited for the copy.
    pub paused: Duration,
    pub elapsed: Duration,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync a backup directory", dir))
}

/// Links `from` to `to` (copies it when a link is impossible, e.g. across filesystems);
/// whether it was linked.
fn link_or_copy(from: &Path, to: &Path) -> Result<bool, StoreError> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(true),
        Err(_) => {
            std::fs::copy(from, to).map_err(io("copy a block file into the backup", to))?;
            std::fs::File::open(to)
                .and_then(|f| f.sync_all())
                .map_err(io("fsync a copied block file", to))?;
            Ok(false)
        }
    }
}

impl Store {
    /// Writes a consistent copy of the store to `dir`, which must not exist or be empty
    /// (and not be inside the store). Writes wait only while the database and WAL are
    /// copied (see the module documentation).
    pub fn backup(&self, dir: &Path) -> Result<Backup, StoreError> {
        let started = Instant::now();
        let inner = self.inner();
        let refuse = |why: String| StoreError::Io {
            op: "write a backup",
            path: dir.to_path_buf(),
            source: std::io::Error::other(why),
        };
        if dir.exists() {
            let mut entries =
                std::fs::read_dir(dir).map_err(io("list the backup directory", dir))?;
            if entries.next().is_some() {
                return Err(refuse(
                    "the directory is not empty: give a new or empty directory".into(),
                ));
            }
        }
        std::fs::create_dir_all(dir).map_err(io("create the backup directory", dir))?;
        let (real, store_real) = (dir.canonicalize(), inner.path.canonicalize());
        if let (Ok(real), Ok(store_real)) = (real, store_real) {
            if real.starts_with(&store_real) {
                return Err(refuse(format!(
                    "it is inside the store's own directory {}",
                    store_real.display()
                )));
            }
        }
        let blocks_dir = dir.join("blocks");
        std::fs::create_dir_all(&blocks_dir).map_err(io("create the backup's blocks", dir))?;
        let mut report = Backup {
            dir: dir.to_path_buf(),
            blocks: 0,
            block_bytes: 0,
            linked: 0,
            database_keys: 0,
            database_bytes: 0,
            wal_bytes: 0,
            feed_bytes: 0,
            commit: 0,
            paused: Duration::ZERO,
            elapsed: Duration::ZERO,
        };

        // While writes go on: every block in a file now (a file a merge retires meanwhile
        // stays readable through its link; the catalog below decides what the copy keeps).
        let mut linked: BTreeSet<u64> = BTreeSet::new();
        for no in in_files(inner) {
            if let Ok(l) = link_block(inner, &blocks_dir, no) {
                linked.insert(no);
                report.linked += l as u64;
            }
        }

        // The pause: nothing is logged, everything logged is applied.
        let gate = inner.commit_gate.lock();
        let paused = Instant::now();
        let logged = inner.logged_commit.load(Ordering::SeqCst);
        while inner.applied_commit.load(Ordering::SeqCst) < logged {
            if let Some(f) = inner.failure.lock().clone() {
                return Err(StoreError::Failed {
                    path: inner.path.clone(),
                    message: f.message,
                    fatal: f.fatal,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        report.commit = inner.applied_commit.load(Ordering::SeqCst);
        let one = inner.checkpointing.lock();
        super::checkpoint_locked(inner)?;
        let (keys, bytes) = copy_database(inner, &dir.join("ormdb"))?;
        report.database_keys = keys;
        report.database_bytes = bytes;
        report.wal_bytes = copy_files(&inner.path.join("wal"), &dir.join("wal"))?;
        report.feed_bytes = copy_files(inner.feed_log.dir(), &dir.join("feed"))?;
        let now: BTreeSet<u64> = in_files(inner).into_iter().collect();
        for &no in now.difference(&linked) {
            report.linked += link_block(inner, &blocks_dir, no)? as u64;
        }
        drop(one);
        drop(gate);
        report.paused = paused.elapsed();

        // Links to blocks the copy does not register (merged meanwhile) go.
        for no in linked.difference(&now) {
            let path = blocks_dir.join(super::blocks::BlockFiles::file_name(*no));
            std::fs::remove_file(&path).map_err(io("remove an unregistered block link", &path))?;
            report.linked -= 1;
        }
        for no in &now {
            report.blocks += 1;
            report.block_bytes += inner.blocks.catalog.get(*no).map_or(0, |m| m.bytes);
        }
        fsync_dir(&blocks_dir)?;
        fsync_dir(&dir.join("wal"))?;
        fsync_dir(&dir.join("feed"))?;
        fsync_dir(dir)?;
        report.elapsed = started.elapsed();
        tracing::info!(dir = %dir.display(), commit = report.commit, blocks = report.blocks,
            paused_ms = report.paused.as_millis() as u64,
            elapsed_ms = report.elapsed.as_millis() as u64, "store backup written");
        Ok(report)
    }
}

/// The blocks in files (not resident), by number.
fn in_files(inner: &Inner) -> Vec<u64> {
    let mut out = Vec::new();
    for e in inner.layout.entities.iter().filter(|e| e.blocks.is_some()) {
        for m in inner.blocks.catalog.select(e.no, |_| true) {
            if !inner.blocks.is_resident(m.no) {
                out.push(m.no);
            }
        }
    }
    out
}

fn link_block(inner: &Inner, blocks_dir: &Path, no: u64) -> Result<bool, StoreError> {
    let from = inner.blocks.files.path(no);
    let to = blocks_dir.join(super::blocks::BlockFiles::file_name(no));
    link_or_copy(&from, &to)
}

/// Copies every tree of the ORMDB database into a new one at `to`; (keys, bytes).
fn copy_database(inner: &Inner, to: &Path) -> Result<(u64, u64), StoreError> {
    let engine_err = |op: &'static str| {
        let p = to.to_path_buf();
        move |e: sled::Error| StoreError::Engine {
            path: p,
            op,
            message: e.to_string(),
        }
    };
    let engine =
        ormdb_core::StorageEngine::open(super::engine_config(to.to_path_buf(), 16 << 20, None))
            .map_err(|e| StoreError::Engine {
                path: to.to_path_buf(),
                op: "create the backup's database",
                message: e.to_string(),
            })?;
    let target = engine.db();
    let source = inner.engine.db();
    let (mut keys, mut bytes) = (0u64, 0u64);
    for name in source.tree_names() {
        let from = source
            .open_tree(&name)
            .map_err(engine_err("open a tree to back up"))?;
        let into = target
            .open_tree(&name)
            .map_err(engine_err("create a tree in the backup"))?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for kv in from.iter() {
            let (k, v) = kv.map_err(engine_err("read a tree to back up"))?;
            keys += 1;
            bytes += (k.len() + v.len()) as u64;
            batch.insert(k, v);
            in_batch += 1;
            if in_batch == 10_000 {
                into.apply_batch(std::mem::take(&mut batch))
                    .map_err(engine_err("write the backup's database"))?;
                in_batch = 0;
            }
        }
        into.apply_batch(batch)
            .map_err(engine_err("write the backup's database"))?;
    }
    target
        .flush()
        .map_err(engine_err("flush the backup's database"))?;
    Ok((keys, bytes))
}

/// Copies the segment files of the WAL or of the change feed (complete: nothing is logged
/// or applied meanwhile); their bytes.
fn copy_files(from: &Path, to: &Path) -> Result<u64, StoreError> {
    std::fs::create_dir_all(to).map_err(io("create a directory of the backup", to))?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from).map_err(io("list a directory to back up", from))? {
        let entry = entry.map_err(io("list a directory to back up", from))?;
        let target = to.join(entry.file_name());
        bytes += std::fs::copy(entry.path(), &target).map_err(io("copy a segment", &target))?;
        std::fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .map_err(io("fsync a copied segment", &target))?;
    }
    Ok(bytes)
}
