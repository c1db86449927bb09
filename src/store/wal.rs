//! The write-ahead log: the store's commit point.
//!
//! A commit is durable when its record is in the WAL and the WAL is fsynced. The same
//! operations are then applied to the sled trees, which sled persists on its own schedule; a
//! checkpoint (sled flushed, checkpoint number recorded inside sled) lets older WAL segments
//! go, except those from the oldest commit whose resident blocks are not yet merged into
//! files (see `blocks::Resident`). On open, every record after the checkpoint is applied
//! again, and the resident blocks of the records kept before it are put back. Applying is idempotent
//! (puts and deletes of fixed keys), so a record applied twice leaves the same state.
//!
//! Segment files are `wal-<first commit, 20 digits>.log`; a record is
//! `[len u32][crc32 u32][commit u64][payload]` (little-endian), the CRC covering commit and
//! payload. A torn or corrupt tail (a crash mid-append) ends the log: it was never acknowledged.

use super::StoreError;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const HEADER_BYTES: usize = 16;
/// The write buffer's capacity kept between group commits.
const KEPT_BUFFER_BYTES: usize = 4 << 20;

/// One committed record read back from the log.
pub struct WalRecord {
    pub commit: u64,
    pub payload: Vec<u8>,
}

pub struct Wal {
    dir: PathBuf,
    /// (first commit, path) of every segment, oldest first; the last one is open for append.
    segments: Vec<(u64, PathBuf)>,
    file: File,
    file_bytes: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
    /// Highest commit appended (durable once `sync` returned).
    last_commit: u64,
    synced_commit: u64,
    /// Test-only: the next `sync` writes but reports its fsync failed (see
    /// `Store::inject_wal_fsync_error_on`).
    #[cfg(feature = "fault-injection")]
    pub fail_next_fsync: bool,
}

fn segment_path(dir: &Path, first_commit: u64) -> PathBuf {
    dir.join(format!("wal-{first_commit:020}.log"))
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Wal {
    /// Opens the log in `dir`, returning it and every intact record with commit > `after`;
    /// `last_known` is the highest commit the store knows of (appends continue after it).
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        after: u64,
        last_known: u64,
    ) -> Result<(Wal, Vec<WalRecord>), StoreError> {
        fs::create_dir_all(dir).map_err(io_err("create WAL directory", dir))?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list WAL directory", dir))? {
            let entry = entry.map_err(io_err("list WAL directory", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("wal-")
                .and_then(|s| s.strip_suffix(".log"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                segments.push((n, entry.path()));
            }
        }
        segments.sort();

        let mut records = Vec::new();
        let mut last_commit = after;
        let mut torn = false;
        for (_, path) in segments.iter() {
            if torn {
                // Everything after a torn record was never acknowledged.
                fs::remove_file(path)
                    .map_err(io_err("remove WAL segment after torn tail", path))?;
                continue;
            }
            let mut data = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(io_err("read WAL segment", path))?;
            let mut pos = 0usize;
            while pos + HEADER_BYTES <= data.len() {
                let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or_default());
                let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
                let end = pos + 8 + len as usize;
                if len < 8 || end > data.len() || crc32fast::hash(&data[pos + 8..end]) != crc {
                    break;
                }
                let commit =
                    u64::from_le_bytes(data[pos + 8..pos + 16].try_into().unwrap_or_default());
                if commit > last_commit {
                    records.push(WalRecord {
                        commit,
                        payload: data[pos + 16..end].to_vec(),
                    });
                    last_commit = commit;
                }
                pos = end;
            }
            if pos < data.len() {
                torn = true;
                tracing::warn!(path = %path.display(), valid_bytes = pos, file_bytes = data.len(),
                    "WAL ends in a torn or corrupt record (crash mid-append); truncating it");
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err("open WAL segment for truncation", path))?;
                f.set_len(pos as u64)
                    .and_then(|_| f.sync_all())
                    .map_err(io_err("truncate WAL segment", path))?;
            }
        }

        let last_commit = last_commit.max(last_known);
        let next_commit = last_commit + 1;
        let path = segment_path(dir, next_commit);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create WAL segment", &path))?;
        if segments.last().map(|(_, p)| p) != Some(&path) {
            segments.push((next_commit, path));
        }
        sync_dir(dir)?;
        let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                segments,
                file,
                file_bytes,
                segment_bytes,
                buf: Vec::with_capacity(1 << 20),
                last_commit,
                synced_commit: last_commit,
                #[cfg(feature = "fault-injection")]
                fail_next_fsync: false,
            },
            records,
        ))
    }

    /// Buffers one record; `sync` writes and fsyncs everything buffered.
    pub fn append(&mut self, commit: u64, payload: &[u8]) {
        let len = (payload.len() + 8) as u32;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&commit.to_le_bytes());
        hasher.update(payload);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&hasher.finalize().to_le_bytes());
        self.buf.extend_from_slice(&commit.to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.last_commit = commit;
    }

    /// Writes the buffered records and waits until they are on disk. A failed write (disk
    /// full, say) is cut back off the file, so the log stays usable for a retry.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let path = self.current_path();
        let written = match injected_write_error() {
            Some(e) => Err(e),
            None => self.file.write_all(&self.buf),
        };
        if let Err(e) = written {
            self.buf.clear();
            self.last_commit = self.synced_commit;
            let _ = self.file.set_len(self.file_bytes);
            return Err(io_err("append to WAL", &path)(e));
        }
        self.fsync().map_err(|source| StoreError::WalFsync {
            path: path.clone(),
            source,
        })?;
        self.file_bytes += self.buf.len() as u64;
        self.buf.clear();
        // A group commit of many large batches grew the buffer (seen: 20 MiB in the ingest
        // benchmark); an ordinary one needs far less, so the memory goes back.
        if self.buf.capacity() > KEPT_BUFFER_BYTES {
            self.buf.shrink_to(KEPT_BUFFER_BYTES);
        }
        self.synced_commit = self.last_commit;
        Ok(())
    }

    /// Starts a new segment when the current one is full; `next_commit` names it.
    pub fn maybe_rotate(&mut self, next_commit: u64) -> Result<(), StoreError> {
        if self.file_bytes < self.segment_bytes {
            return Ok(());
        }
        let path = segment_path(&self.dir, next_commit);
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create WAL segment", &path))?;
        sync_dir(&self.dir)?;
        self.segments.push((next_commit, path));
        self.file_bytes = 0;
        Ok(())
    }

    /// Removes the segments whose every record has commit <= `checkpoint`; when that is
    /// every record, the open segment is replaced by an empty one too.
    pub fn remove_through(&mut self, checkpoint: u64) -> Result<usize, StoreError> {
        if checkpoint >= self.synced_commit && self.buf.is_empty() && self.file_bytes > 0 {
            self.file_bytes = self.segment_bytes;
            self.maybe_rotate(self.synced_commit + 1)?;
        }
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].0 <= checkpoint + 1 {
            let (_, path) = self.segments.remove(0);
            fs::remove_file(&path).map_err(io_err("remove checkpointed WAL segment", &path))?;
            removed += 1;
        }
        Ok(removed)
    }

    #[cfg(not(feature = "fault-injection"))]
    fn fsync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    #[cfg(feature = "fault-injection")]
    fn fsync(&mut self) -> std::io::Result<()> {
        if std::mem::take(&mut self.fail_next_fsync) {
            return Err(std::io::Error::other(
                "injected: input/output error (EIO) from fsync",
            ));
        }
        self.file.sync_data()
    }

    fn current_path(&self) -> PathBuf {
        self.segments
            .last()
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.dir.clone())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync WAL directory", dir))
}

/// Test-only fault hook: `STREAMTALLY_FAULT=wal_write_error:N` makes the first N WAL appends
/// fail like a full disk would.
#[cfg(feature = "fault-injection")]
fn injected_write_error() -> Option<std::io::Error> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static FAILED: AtomicU64 = AtomicU64::new(0);
    let n: u64 = crate::fault::arg("wal_write_error")?.parse().ok()?;
    (FAILED.fetch_add(1, Ordering::SeqCst) < n).then(|| {
        std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "injected: no space left on device",
        )
    })
}

#[cfg(not(feature = "fault-injection"))]
fn injected_write_error() -> Option<std::io::Error> {
    None
}
