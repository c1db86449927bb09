//! Block files: `blocks/<no as 16 hex digits>.blk` under the store directory.

use super::super::StoreError;
use parking_lot::Mutex;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) struct BlockFiles {
    dir: PathBuf,
    /// Files written since the last [`BlockFiles::sync_written`], whose bytes the WAL still
    /// holds: they need an fsync before the WAL records naming them are dropped.
    unsynced: Mutex<Vec<u64>>,
    /// Blocks removed from the catalog, with when: their files stay a while for readers
    /// that took the catalog before (see [`BlockFiles::sweep`]).
    retired: Mutex<Vec<(u64, std::time::Instant)>>,
}

/// How long a removed block's file stays for readers that still hold it in their view of
/// the catalog.
pub const RETIRE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl BlockFiles {
    pub fn open(store_dir: &Path) -> Result<BlockFiles, StoreError> {
        let dir = store_dir.join("blocks");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            op: "create the blocks directory",
            path: dir.clone(),
            source,
        })?;
        Ok(BlockFiles {
            dir,
            unsynced: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// The store directory the blocks directory is in.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    pub fn path(&self, no: u64) -> PathBuf {
        self.dir.join(Self::file_name(no))
    }

    /// The file name of block `no` (in any store's `blocks/`, a backup's included).
    pub fn file_name(no: u64) -> String {
        format!("{no:016x}.blk")
    }

    fn io(&self, op: &'static str, no: u64) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            op,
            path: self.path(no),
            source,
        }
    }

    /// Writes block `no` without an fsync: the caller's WAL record holds the same bytes.
    pub fn write(&self, no: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.dir.join(format!("{no:016x}.tmp"));
        let mut f = File::create(&tmp).map_err(self.io("create a block file", no))?;
        f.write_all(bytes)
            .map_err(self.io("write a block file", no))?;
        drop(f);
        std::fs::rename(&tmp, self.path(no)).map_err(self.io("rename a block file", no))?;
        self.unsynced.lock().push(no);
        Ok(())
    }

    pub fn read(&self, no: u64) -> Result<Vec<u8>, StoreError> {
        std::fs::read(self.path(no)).map_err(self.io("read a block file", no))
    }

    /// Marks block `no` removed from the catalog: its file goes at a [`BlockFiles::sweep`]
    /// at least `grace` later.
    pub fn retire(&self, no: u64) {
        self.retired.lock().push((no, std::time::Instant::now()));
    }

    pub fn is_retired(&self, no: u64) -> bool {
        self.retired.lock().iter().any(|(n, _)| *n == no)
    }

    /// Removes the files of blocks retired at least `grace` ago.
    pub fn sweep(&self, grace: std::time::Duration) -> Result<(), StoreError> {
        let due: Vec<u64> = {
            let mut retired = self.retired.lock();
            let (due, keep): (Vec<_>, Vec<_>) =
                retired.drain(..).partition(|(_, at)| at.elapsed() >= grace);
            *retired = keep;
            due.into_iter().map(|(no, _)| no).collect()
        };
        for no in due {
            self.remove(no)?;
        }
        Ok(())
    }

    pub fn remove(&self, no: u64) -> Result<(), StoreError> {
        match std::fs::remove_file(self.path(no)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("remove a block file", no)(e)),
        }
    }

    /// Fsyncs every file written since the last call, and the directory.
    pub fn sync_written(&self) -> Result<(), StoreError> {
        let written: Vec<u64> = std::mem::take(&mut *self.unsynced.lock());
        if written.is_empty() {
            return Ok(());
        }
        for no in &written {
            match File::open(self.path(*no)) {
                Ok(f) => f.sync_all().map_err(self.io("fsync a block file", *no))?,
                // Removed since (rewritten or merged): nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("open a block file", *no)(e)),
            }
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::Io {
                op: "fsync the blocks directory",
                path: self.dir.clone(),
                source,
            })
    }

    /// Numbers of the block files present, and removes leftover temporary files.
    pub fn list(&self) -> Result<Vec<u64>, StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            op: "list the blocks directory",
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(".blk") {
                if let Ok(no) = u64::from_str_radix(hex, 16) {
                    out.push(no);
                }
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}
