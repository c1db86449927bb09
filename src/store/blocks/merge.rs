//! Background merging of blocks: the small blocks that small batches write are merged per
//! (entity, org, topic, partition, day of their first event, level), so that blocks compress
//! well and a read touches few files.
//!
//! A batch writes resident blocks (see `blocks::Resident`), sealed into level-1 blocks in
//! files by [`SEAL_ROWS`], [`SETTLE`] or [`RESIDENT_BUDGET`]. Level 0 blocks in files (a
//! migration writes them) and higher levels merge by count: eight or more blocks of one group and level (or
//! any two level-0 blocks older than [`SETTLE`]) are merged into one block of the next level,
//! sorted by event time. A row is rewritten once per level and a level holds at least eight
//! times the rows of the one below, so write amplification grows with the log of a group's
//! size, not with it.
//!
//! Crash safety: the merges due are read and encoded off the committer, then committed as
//! ONE store write per round: the sources' catalog rows removed, the merged blocks' rows
//! added and their bytes, all in one WAL record (one fsync for the round; the apply step
//! writes the files, fsynced before a checkpoint drops the record). A crash before that
//! record is durable changes nothing; after it, the replay redoes the swap. The sources'
//! files go once no reader can hold them. Nothing is lost or stored twice either way.

use super::{BlockMeta, Value};
use crate::store::layout::{EntityLayout, Values};
use crate::store::{Store, StoreError, WriteBatch};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Blocks of one group and level merged together once there are this many.
pub const FANOUT: usize = 8;
/// At most this many blocks, and about this many rows, go into one merge: a merge holds
/// its rows decoded in memory (~0.5 KB each for seed-shaped events), so this bounds the
/// memory merging takes (store bench: 1M-row merges took the peak RSS to 1 GB).
const MAX_ROWS: u64 = 131_072;
const MAX_SOURCES: usize = 64;
/// Blocks with this many rows are full: merging them further would rewrite them again and
/// again for little gain in compression.
const FULL_ROWS: u64 = MAX_ROWS / 2;
/// Level-0 blocks older than this are merged even when fewer than [`FANOUT`].
pub const SETTLE: Duration = Duration::from_secs(10);
/// Resident blocks (see `blocks::Resident`) of one group are sealed into a block in a file
/// once they hold this many rows, once the oldest is [`SETTLE`] old, or, largest groups
/// first, while every resident block together holds more than [`RESIDENT_BUDGET`] bytes.
pub const SEAL_ROWS: u64 = 16_384;
pub const RESIDENT_BUDGET: usize = 48 << 20;
/// Most resident blocks one seal takes (a batch writes one per block key).
const MAX_RESIDENT_SOURCES: usize = 16_384;

/// A merge ready to commit: the merged block's bytes travel in the commit's WAL record
/// (one fsync for every merge of a round) and its file is written when it is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockMerge {
    pub entity_no: u16,
    pub sources: Vec<u64>,
    pub meta: Arc<BlockMeta>,
    pub ids: Vec<[u8; 16]>,
    pub bytes: Arc<Vec<u8>>,
}

/// Most merged bytes one merge write carries.
const MAX_ROUND_BYTES: usize = 64 << 20;

/// (entity, block key, day, level; -1 for resident blocks).
type GroupKey = (u16, Vec<u8>, i64, i32);

/// The groups of blocks due for a merge; `seal_all` takes every resident block (a close).
fn plan(store: &Store, now_us: i64, seal_all: bool) -> Vec<Vec<Arc<BlockMeta>>> {
    let inner = store.inner();
    let mut groups: BTreeMap<GroupKey, Vec<Arc<BlockMeta>>> = BTreeMap::new();
    for e in inner.layout.entities.iter().filter(|e| e.blocks.is_some()) {
        for m in inner.blocks.catalog.select(e.no, |_| true) {
            let mut key = Vec::new();
            for v in [&m.org, &m.topic, &m.partition] {
                crate::store::codec::encode_component(&mut key, v);
            }
            let day = m.min_time.unwrap_or(0).div_euclid(86_400_000_000);
            let level = if inner.blocks.is_resident(m.no) {
                -1
            } else if m.rows >= FULL_ROWS {
                continue;
            } else {
                m.level
            };
            groups.entry((e.no, key, day, level)).or_default().push(m);
        }
    }
    let settled = now_us - SETTLE.as_micros() as i64;
    let (_, mut resident_bytes) = inner.blocks.resident_totals();
    // Under memory pressure, the largest resident groups go first.
    let mut by_size: Vec<(u64, &GroupKey)> = groups
        .iter()
        .filter(|(k, _)| k.3 == -1)
        .map(|(k, blocks)| (blocks.iter().map(|m| m.rows).sum(), k))
        .collect();
    by_size.sort_by_key(|(rows, _)| std::cmp::Reverse(*rows));
    let mut pressed = std::collections::HashSet::new();
    for (_, k) in by_size {
        if resident_bytes <= RESIDENT_BUDGET / 2 {
            break;
        }
        if resident_bytes > RESIDENT_BUDGET || !pressed.is_empty() {
            resident_bytes -= groups[k].iter().map(|m| m.bytes as usize).sum::<usize>();
            pressed.insert(k.clone());
        }
    }
    let mut out = Vec::new();
    for (key, mut blocks) in groups {
        let level = key.3;
        let rows: u64 = blocks.iter().map(|m| m.rows).sum();
        let oldest = blocks.iter().map(|m| m.version as i64).min().unwrap_or(0);
        let (due, min_sources, max_sources) = if level == -1 {
            let due = seal_all || pressed.contains(&key) || rows >= SEAL_ROWS || oldest < settled;
            (due, 1, MAX_RESIDENT_SOURCES)
        } else {
            let old_enough = level == 0
                && blocks
                    .iter()
                    .filter(|m| (m.version as i64) < settled)
                    .count()
                    >= 2;
            (blocks.len() >= FANOUT || old_enough, 2, MAX_SOURCES)
        };
        if !due {
            continue;
        }
        blocks.sort_by_key(|m| m.no);
        let mut take = Vec::new();
        let mut rows = 0;
        for m in blocks {
            if take.len() >= max_sources || (rows + m.rows > MAX_ROWS && take.len() >= 2) {
                break;
            }
            rows += m.rows;
            take.push(m);
        }
        if take.len() >= min_sources {
            out.push(take);
        }
    }
    out
}

/// Merges every group due, in rounds of one store write each; returns how many merges
/// committed.
pub fn merge_due(store: &Store) -> Result<usize, StoreError> {
    merge_planned(store, false)
}

/// Seals every resident block into blocks in files (and merges what else is due): what a
/// close does, so that a store at rest needs no WAL to open.
pub fn seal_all(store: &Store) -> Result<usize, StoreError> {
    let mut done = 0;
    // A round the merge thread changed the catalog under does nothing; plan again.
    for _ in 0..8 {
        done += merge_planned(store, true)?;
        if store.inner().blocks.resident_totals().0 == 0 {
            break;
        }
    }
    Ok(done)
}

fn merge_planned(store: &Store, seal_all: bool) -> Result<usize, StoreError> {
    let now = chrono::Utc::now().timestamp_micros();
    let mut done = 0;
    let mut round: Vec<BlockMerge> = Vec::new();
    let mut bytes = 0;
    for sources in plan(store, now, seal_all) {
        let m = prepare(store, &sources)?;
        bytes += m.bytes.len();
        round.push(m);
        if bytes >= MAX_ROUND_BYTES {
            done += commit(store, std::mem::take(&mut round))?;
            bytes = 0;
        }
    }
    if !round.is_empty() {
        done += commit(store, round)?;
    }
    Ok(done)
}

/// Commits a round of merges; 0 if the catalog changed under it (a source rewritten by an
/// update or delete meanwhile): nothing is changed then, and the next round plans again.
fn commit(store: &Store, round: Vec<BlockMerge>) -> Result<usize, StoreError> {
    let n = round.len();
    let mut batch = WriteBatch::new();
    batch.merges = round;
    match store.write_blocking(batch) {
        Ok(_) => Ok(n),
        Err(StoreError::Stale { .. }) => Ok(0),
        Err(err) => Err(err),
    }
}

/// Reads `sources` (blocks of one entity and group) and encodes their rows, sorted by event
/// time, into one block.
pub fn prepare(store: &Store, sources: &[Arc<BlockMeta>]) -> Result<BlockMerge, StoreError> {
    let inner = store.inner();
    let e: &EntityLayout =
        inner
            .layout
            .by_no(sources[0].entity_no)
            .ok_or_else(|| StoreError::Corrupt {
                what: format!(
                    "block {:016x} names entity #{}",
                    sources[0].no, sources[0].entity_no
                ),
            })?;
    let keys = e.blocks.as_ref().expect("a @blocks entity");
    let mut rows: Vec<Values> = Vec::new();
    for m in sources {
        rows.extend(inner.block_rows(e, m)?);
    }
    if let Some(t) = keys.time {
        let micros = |r: &Values| match r[t] {
            Value::Timestamp(n) => n,
            _ => i64::MIN,
        };
        rows.sort_by_key(micros);
    }
    let bytes = super::codec::encode_block(&e.fields, &rows)?;
    let no = inner.next_block.fetch_add(1, Ordering::SeqCst);
    // Sealed resident blocks (level 0) make a level-1 block, like a merge of level-0 ones.
    let level = sources.iter().map(|m| m.level).max().unwrap_or(0) + 1;
    let version = sources.iter().map(|m| m.version).max().unwrap_or(0);
    let meta = BlockMeta::describe(e, keys, no, &rows, bytes.len() as u64, level, version);
    Ok(BlockMerge {
        entity_no: e.no,
        sources: sources.iter().map(|m| m.no).collect(),
        meta: Arc::new(meta),
        ids: rows.iter().map(|r| e.id_of(r)).collect(),
        bytes: Arc::new(bytes),
    })
}
