//! The change feed's records on disk: append-only segment files `feed/<first seq as 16 hex
//! digits>.feed` under the store directory, outside the ORMDB database.
//!
//! A record is `[first_seq u64][len u32][crc32 u32][record]` (little-endian, the CRC covering
//! the record), the record being what `feed::encode_feed_record` made of one commit's
//! changes. Records are appended by the apply step without an fsync (the commit's WAL record
//! holds the same bytes) and fsynced by a checkpoint before the WAL records it covers go,
//! like block files; an open cuts a torn tail and the WAL replay appends what is missing,
//! skipping records already there. Truncation below the lowest cursor deletes whole
//! segments (a checkpoint starts a new one once the current one holds `feed_seal_bytes`),
//! so the space goes back to the filesystem at once (sled keeps the pages of removed keys:
//! a feed in a tree grew the database by every record ever written).

use super::wal::io_err as io;
use super::StoreError;
use parking_lot::Mutex;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const HEADER: usize = 16;
/// By default a checkpoint seals the segment being appended once it holds this much, so
/// truncation can delete it; smaller ones are fsynced and appended to further.
pub const SEAL_FROM_BYTES: u64 = 1 << 20;
/// An append starts a new segment past this size, checkpoint or not.
const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// An open checks the records of the last this many segments against their checksums (the
/// ones a crash may have left unsynced: one being appended, and one sealed by size since the
/// last checkpoint); of older ones it reads the headers.
const CHECKED_AT_OPEN: usize = 2;
/// One sparse index entry per this many bytes of a segment: a read starts at most this far
/// before the record it wants.
const INDEX_EVERY_BYTES: u64 = 64 << 10;

struct Segment {
    first_seq: u64,
    /// The sequence after its last record.
    end_seq: u64,
    /// Bytes of whole records.
    len: u64,
    /// (first sequence, offset) of a record every [`INDEX_EVERY_BYTES`], the first included.
    index: Vec<(u64, u64)>,
}

struct State {
    segments: Vec<Segment>,
    /// The last segment's file while it is appended to (None once sealed).
    active: Option<File>,
    /// Segments created since the last sync (the directory needs an fsync).
    created: bool,
    /// Sealed segments not fsynced yet (sealed by size between checkpoints).
    unsynced: Vec<u64>,
}

pub(crate) struct FeedLog {
    dir: PathBuf,
    seal_from_bytes: u64,
    state: Mutex<State>,
}

/// Where a read starts: a segment's file and the offset of a record at or before the wanted
/// sequence, and how many bytes of it are whole records.
struct ReadFrom {
    path: PathBuf,
    offset: u64,
    len: u64,
}

impl FeedLog {
    /// Opens the segments under `store_dir/feed`, cutting a torn or corrupt tail (and every
    /// segment after it: what follows a record that did not reach the disk was not fsynced
    /// either, so the WAL still holds it).
    pub fn open(store_dir: &Path, seal_from_bytes: u64) -> Result<FeedLog, StoreError> {
        let dir = store_dir.join("feed");
        std::fs::create_dir_all(&dir).map_err(io("create the change-feed directory", &dir))?;
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io("list the change feed", &dir))? {
            let entry = entry.map_err(io("list the change feed", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(".feed") {
                if let Ok(first) = u64::from_str_radix(hex, 16) {
                    firsts.push(first);
                }
            }
        }
        firsts.sort_unstable();
        let mut segments: Vec<Segment> = Vec::new();
        let mut cut = false;
        let checked_from = firsts.len().saturating_sub(CHECKED_AT_OPEN);
        for (i, first) in firsts.into_iter().enumerate() {
            let path = segment_path(&dir, first);
            let expected = segments.last().map(|s| s.end_seq);
            if cut || expected.is_some_and(|e| e != first) {
                // After a cut, or not continuing the one before: not fsynced, in the WAL.
                cut = true;
                std::fs::remove_file(&path).map_err(io("remove a change-feed segment", &path))?;
                continue;
            }
            let (segment, whole) = scan(&path, first, i >= checked_from)?;
            if !whole {
                tracing::warn!(path = %path.display(), kept_bytes = segment.len,
                    "change-feed segment ends in a torn record: cut (the WAL replays the rest)");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io("open a change-feed segment", &path))?;
                f.set_len(segment.len)
                    .and_then(|()| f.sync_all())
                    .map_err(io("cut a change-feed segment", &path))?;
                cut = true;
            }
            if segment.len == 0 {
                std::fs::remove_file(&path).map_err(io("remove a change-feed segment", &path))?;
                continue;
            }
            segments.push(segment);
        }
        Ok(FeedLog {
            dir,
            seal_from_bytes,
            state: Mutex::new(State {
                segments,
                active: None,
                created: false,
                unsynced: Vec::new(),
            }),
        })
    }

    /// The first sequence held, if any record is.
    pub fn first_seq(&self) -> Option<u64> {
        self.state.lock().segments.first().map(|s| s.first_seq)
    }

    /// The sequence after the last record held, if any record is.
    pub fn end_seq(&self) -> Option<u64> {
        self.state.lock().segments.last().map(|s| s.end_seq)
    }

    /// Appends the record of `count` entries starting at `first_seq`; one already held (a WAL
    /// replay of a commit whose record reached the file) is skipped.
    pub fn append(&self, first_seq: u64, count: u64, record: &[u8]) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let end = state.segments.last().map(|s| s.end_seq);
        match end {
            Some(end) if first_seq < end => return Ok(()),
            Some(end) if first_seq > end => {
                return Err(StoreError::Corrupt {
                    what: format!(
                        "change-feed record at {first_seq} does not follow the feed's end {end}"
                    ),
                })
            }
            _ => {}
        }
        let full = state
            .segments
            .last()
            .is_some_and(|s| s.len >= MAX_SEGMENT_BYTES);
        if full && state.active.take().is_some() {
            let first = state.segments.last().map_or(0, |s| s.first_seq);
            state.unsynced.push(first);
        }
        if state.active.is_none() {
            let path = segment_path(&self.dir, first_seq);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .map_err(io("create a change-feed segment", &path))?;
            state.active = Some(file);
            state.created = true;
            state.segments.push(Segment {
                first_seq,
                end_seq: first_seq,
                len: 0,
                index: Vec::new(),
            });
        }
        let mut bytes = Vec::with_capacity(HEADER + record.len());
        bytes.extend_from_slice(&first_seq.to_le_bytes());
        bytes.extend_from_slice(&(record.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
        bytes.extend_from_slice(record);
        let segment_first = state.segments.last().map_or(first_seq, |s| s.first_seq);
        let path = segment_path(&self.dir, segment_first);
        let file = state.active.as_mut().expect("an active segment");
        file.write_all(&bytes)
            .map_err(io("append to a change-feed segment", &path))?;
        let segment = state.segments.last_mut().expect("a segment");
        let indexed = segment.index.last().map(|&(_, at)| at);
        if indexed.is_none_or(|at| segment.len - at >= INDEX_EVERY_BYTES) {
            segment.index.push((first_seq, segment.len));
        }
        segment.len += bytes.len() as u64;
        segment.end_seq = first_seq + count;
        Ok(())
    }

    /// Makes every appended record durable; seals the segment being appended once it is
    /// large enough for truncation to delete it.
    pub fn sync(&self) -> Result<(), StoreError> {
        // The file is fsynced outside the lock (the apply step appends meanwhile: to this
        // file, or to a new segment when this one was sealed).
        let (active, sealed, created) = {
            let mut state = self.state.lock();
            let big = state
                .segments
                .last()
                .is_some_and(|s| s.len >= self.seal_from_bytes);
            let active = if big {
                state.active.take()
            } else {
                state
                    .active
                    .as_ref()
                    .map(File::try_clone)
                    .transpose()
                    .map_err(io("reopen a change-feed segment", &self.dir))?
            };
            let sealed: Vec<u64> = std::mem::take(&mut state.unsynced);
            (active, sealed, std::mem::take(&mut state.created))
        };
        if let Some(f) = active {
            f.sync_data()
                .map_err(io("fsync a change-feed segment", &self.dir))?;
        }
        for first in sealed {
            let path = segment_path(&self.dir, first);
            match File::open(&path) {
                Ok(f) => f
                    .sync_data()
                    .map_err(io("fsync a change-feed segment", &path))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("open a change-feed segment", &path)(e)),
            }
        }
        if created {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync the change-feed directory", &self.dir))
    }

    /// Deletes the segments whose records all lie below `lowest` (the one being appended
    /// too: the next append starts a new one), raising `floor` to the first sequence still
    /// held first (a reader checks it after its read).
    pub fn truncate_below(&self, lowest: u64, floor: &AtomicU64) -> Result<(), StoreError> {
        let doomed: Vec<u64> = {
            let mut state = self.state.lock();
            let n = (state.segments.iter())
                .take_while(|s| s.end_seq <= lowest)
                .count();
            if n == 0 {
                return Ok(());
            }
            if n == state.segments.len() {
                state.active = None;
            }
            // Appends continue at the end of the last segment.
            let kept_from = state
                .segments
                .get(n)
                .map_or(state.segments[n - 1].end_seq, |s| s.first_seq);
            floor.fetch_max(kept_from, Ordering::SeqCst);
            state.segments.drain(..n).map(|s| s.first_seq).collect()
        };
        for first in doomed {
            let path = segment_path(&self.dir, first);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove a change-feed segment", &path)(e)),
            }
        }
        // Durable before the checkpoint that follows: after a power loss an open must not
        // find an old segment back without the ones after it.
        self.sync_dir()
    }

    /// Calls `f` with each record (first sequence, bytes) from the one holding `from_seq` on,
    /// while it returns true. `Ok(false)`: records from `from_seq` on were truncated (before
    /// the walk, or a segment was deleted during it).
    pub fn read_from(
        &self,
        from_seq: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let starts: Vec<ReadFrom> = {
            let state = self.state.lock();
            if state
                .segments
                .first()
                .is_some_and(|s| s.first_seq > from_seq)
            {
                return Ok(false);
            }
            let at = state.segments.partition_point(|s| s.end_seq <= from_seq);
            state.segments[at..]
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let offset = if i == 0 {
                        let k = s.index.partition_point(|&(seq, _)| seq <= from_seq);
                        s.index[..k].last().map_or(0, |&(_, at)| at)
                    } else {
                        0
                    };
                    ReadFrom {
                        path: segment_path(&self.dir, s.first_seq),
                        offset,
                        len: s.len,
                    }
                })
                .collect()
        };
        let mut body = Vec::new();
        for start in starts {
            let file = match File::open(&start.path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io("open a change-feed segment", &start.path)(e)),
            };
            let mut reader = std::io::BufReader::with_capacity(256 << 10, file);
            reader
                .seek(SeekFrom::Start(start.offset))
                .map_err(io("read a change-feed segment", &start.path))?;
            let mut pos = start.offset;
            while pos < start.len {
                let mut header = [0u8; HEADER];
                reader
                    .read_exact(&mut header)
                    .map_err(io("read a change-feed segment", &start.path))?;
                let (first, len, crc) = parse_header(&header);
                body.resize(len as usize, 0);
                reader
                    .read_exact(&mut body)
                    .map_err(io("read a change-feed segment", &start.path))?;
                if crc32fast::hash(&body) != crc {
                    return Err(StoreError::Corrupt {
                        what: format!(
                            "change-feed record at {first} in {} fails its checksum",
                            start.path.display()
                        ),
                    });
                }
                pos += (HEADER + body.len()) as u64;
                if first + super::feed::record_entries(&body) <= from_seq {
                    continue;
                }
                if !f(first, &body)? {
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:016x}.feed"))
}

fn parse_header(header: &[u8; HEADER]) -> (u64, u32, u32) {
    (
        u64::from_le_bytes(header[..8].try_into().expect("8 bytes")),
        u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")),
        u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")),
    )
}

/// Reads a segment's records from the start: the segment as far as its records are whole
/// and contiguous (and, with `checksums`, pass their checksum), and whether that is the
/// whole file. Without `checksums` only each record's header and entry count are read
/// (older segments, fsynced when sealed: an open reads ~20 bytes a commit of them, not the
/// whole feed; a read still checks every record it returns).
fn scan(path: &Path, first_seq: u64, checksums: bool) -> Result<(Segment, bool), StoreError> {
    let mut file = File::open(path).map_err(io("open a change-feed segment", path))?;
    let file_len = file
        .metadata()
        .map_err(io("read a change-feed segment's size", path))?
        .len();
    let mut segment = Segment {
        first_seq,
        end_seq: first_seq,
        len: 0,
        index: Vec::new(),
    };
    let mut record = Vec::new();
    while segment.len < file_len {
        let mut header = [0u8; HEADER + 4];
        if segment.len + header.len() as u64 > file_len {
            return Ok((segment, false));
        }
        file.seek(SeekFrom::Start(segment.len))
            .and_then(|_| file.read_exact(&mut header))
            .map_err(io("read a change-feed segment", path))?;
        let (first, len, crc) = parse_header(header[..HEADER].try_into().expect("16 bytes"));
        let end = segment.len + (HEADER + len as usize) as u64;
        if first != segment.end_seq || len < 4 || end > file_len {
            return Ok((segment, false));
        }
        if checksums {
            record.resize(len as usize, 0);
            file.seek(SeekFrom::Start(segment.len + HEADER as u64))
                .and_then(|_| file.read_exact(&mut record))
                .map_err(io("read a change-feed segment", path))?;
            if crc32fast::hash(&record) != crc {
                return Ok((segment, false));
            }
        }
        let indexed = segment.index.last().map(|&(_, at)| at);
        if indexed.is_none_or(|at| segment.len - at >= INDEX_EVERY_BYTES) {
            segment.index.push((first, segment.len));
        }
        segment.end_seq = first + super::feed::record_entries(&header[HEADER..]);
        segment.len = end;
    }
    Ok((segment, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Vec<u8> {
        // The count in the low bits of the first four bytes, as the feed encodes it.
        let mut r = (n as u32).to_le_bytes().to_vec();
        r.extend(std::iter::repeat_n(7u8, 100));
        r
    }

    fn seqs(log: &FeedLog, from: u64) -> Vec<u64> {
        let mut out = Vec::new();
        log.read_from(from, |first, _| {
            out.push(first);
            Ok(true)
        })
        .unwrap();
        out
    }

    #[test]
    fn appends_skip_replayed_records_refuse_gaps_and_survive_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = FeedLog::open(dir.path(), SEAL_FROM_BYTES).unwrap();
        log.append(1, 3, &record(3)).unwrap();
        log.append(4, 2, &record(2)).unwrap();
        log.append(1, 3, &record(3)).unwrap();
        assert!(log.append(9, 1, &record(1)).is_err());
        log.sync().unwrap();
        assert_eq!(seqs(&log, 5), vec![4]);
        assert_eq!(log.end_seq(), Some(6));
        drop(log);
        // A torn record at the end: cut at open, appended again by the replay.
        let path = segment_path(&dir.path().join("feed"), 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&6u64.to_le_bytes()).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        let log = FeedLog::open(dir.path(), SEAL_FROM_BYTES).unwrap();
        assert_eq!(log.end_seq(), Some(6));
        log.append(6, 1, &record(1)).unwrap();
        assert_eq!(seqs(&log, 1), vec![1, 4, 6]);
    }

    #[test]
    fn truncation_deletes_whole_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = FeedLog::open(dir.path(), SEAL_FROM_BYTES).unwrap();
        let big = vec![0u8; (SEAL_FROM_BYTES as usize) + 10];
        let mut seq = 1;
        for _ in 0..3 {
            let mut r = 1u32.to_le_bytes().to_vec();
            r.extend_from_slice(&big);
            log.append(seq, 1, &r).unwrap();
            seq += 1;
            log.sync().unwrap();
        }
        log.append(seq, 1, &record(1)).unwrap();
        assert_eq!(std::fs::read_dir(log.dir()).unwrap().count(), 4);
        let floor = AtomicU64::new(1);
        log.truncate_below(3, &floor).unwrap();
        assert_eq!(floor.load(Ordering::SeqCst), 3);
        assert_eq!(seqs(&log, 3), vec![3, 4]);
        // Below the first record held: a reader learns it was truncated.
        assert!(!log.read_from(1, |_, _| Ok(true)).unwrap());
        // The segment being appended stays while it holds a record a reader needs.
        log.truncate_below(4, &floor).unwrap();
        assert_eq!(floor.load(Ordering::SeqCst), 4);
        assert_eq!(std::fs::read_dir(log.dir()).unwrap().count(), 1);
        drop(log);
        let log = FeedLog::open(dir.path(), SEAL_FROM_BYTES).unwrap();
        assert_eq!((log.first_seq(), log.end_seq()), (Some(4), Some(5)));
        // All read: everything goes, and appends go on in a new segment.
        log.truncate_below(5, &floor).unwrap();
        assert_eq!(floor.load(Ordering::SeqCst), 5);
        assert_eq!(std::fs::read_dir(log.dir()).unwrap().count(), 0);
        log.append(5, 2, &record(2)).unwrap();
        assert_eq!(seqs(&log, 5), vec![5]);
    }
}
