//! Background merging of blocks: the small blocks that small batches write are merged per
//! (entity, org, topic, partition, day of their first event, level), so that blocks compress
//! well and a read touches few files.
//!
//! A batch writes a resident block (see `blocks::Resident`); seals split resident blocks
//! into level-1 blocks in files (see [`SEAL_ROWS`]). Blocks in files merge by count: eight
//! or more of one group and level (or any two level-0 blocks, which a migration writes,
//! older than [`SETTLE`]) are merged into one block of the next level,
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

use super::codec::{BlockReader, BlockWriter, Compression};
use super::read::corrupt;
use super::{int_of, BlockMeta, Value};
use crate::store::layout::EntityLayout;
use crate::store::{Store, StoreError, WriteBatch};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Blocks of one group and level merged together once there are this many.
pub const FANOUT: usize = 8;
/// At most this many blocks, and about this many rows, go into one merge: a merge holds
/// its rows decoded in memory (~0.9 KB each for seed-shaped events), so this bounds the
/// memory merging takes (the cap was 1M rows; at 10M events the store bench's peak RSS
/// stayed ~1 GB with either, so that is not what dominates it).
const MAX_ROWS: u64 = 131_072;
const MAX_SOURCES: usize = 64;
/// Blocks with this many rows are full: merging them further would rewrite them again and
/// again for little gain in compression.
const FULL_ROWS: u64 = MAX_ROWS / 2;
/// Level-0 blocks older than this are merged even when fewer than [`FANOUT`].
pub const SETTLE: Duration = Duration::from_secs(10);
/// Resident blocks (see `blocks::Resident`) are sealed, oldest first and at most
/// [`SEAL_ROWS`] rows at a time (decoded in memory, ~0.9 KB a row), once they hold that
/// many rows, once the oldest is [`SETTLE`] old, or while they hold more than
/// [`RESIDENT_BUDGET`] bytes: their rows are split by (org, topic, partition, day) into
/// level-1 blocks in files.
pub const SEAL_ROWS: u64 = 65_536;
pub const RESIDENT_BUDGET: usize = 32 << 20;

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

/// Most merged bytes one merge write carries: a round is copied a few times on its way
/// through the WAL (its blocks, their operations, the WAL payload), so this bounds the
/// memory it takes (was 64 MiB; not measured apart from the other changes).
const MAX_ROUND_BYTES: usize = 8 << 20;

/// (entity, block key, day, level; -1 and no key for resident blocks).
type GroupKey = (u16, Vec<u8>, i64, i32);

/// The groups of blocks due for a merge or a seal; `seal_all` seals every resident block
/// (a close).
fn plan(store: &Store, now_us: i64, seal_all: bool) -> Vec<Vec<Arc<BlockMeta>>> {
    let inner = store.inner();
    let mut groups: BTreeMap<GroupKey, Vec<Arc<BlockMeta>>> = BTreeMap::new();
    for e in inner.layout.entities.iter().filter(|e| e.blocks.is_some()) {
        for m in inner.blocks.catalog.select(e.no, |_| true) {
            if inner.blocks.is_resident(m.no) {
                groups.entry((e.no, Vec::new(), 0, -1)).or_default().push(m);
                continue;
            }
            if m.rows >= FULL_ROWS {
                continue;
            }
            let mut key = Vec::new();
            for v in [&m.org, &m.topic, &m.partition] {
                crate::store::codec::encode_component(&mut key, v);
            }
            let day = m.min_time.unwrap_or(0).div_euclid(86_400_000_000);
            groups.entry((e.no, key, day, m.level)).or_default().push(m);
        }
    }
    let settled = now_us - SETTLE.as_micros() as i64;
    let (_, resident_bytes) = inner.blocks.resident_totals();
    let mut out = Vec::new();
    for ((_, _, _, level), mut blocks) in groups {
        let rows: u64 = blocks.iter().map(|m| m.rows).sum();
        let oldest = blocks.iter().map(|m| m.version as i64).min().unwrap_or(0);
        let (due, min_sources, max_sources, max_rows) = if level == -1 {
            let due = seal_all
                || rows >= SEAL_ROWS
                || oldest < settled
                || resident_bytes > RESIDENT_BUDGET;
            (due, 1, usize::MAX, SEAL_ROWS)
        } else {
            let old_enough = level == 0
                && blocks
                    .iter()
                    .filter(|m| (m.version as i64) < settled)
                    .count()
                    >= 2;
            (
                blocks.len() >= FANOUT || old_enough,
                2,
                MAX_SOURCES,
                MAX_ROWS,
            )
        };
        if !due {
            continue;
        }
        blocks.sort_by_key(|m| m.no);
        let mut take = Vec::new();
        let mut rows = 0;
        for m in blocks {
            if take.len() >= max_sources || (rows + m.rows > max_rows && !take.is_empty()) {
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

/// Most time one call of [`merge_due`] plans again for: the merge thread has other work.
const BUSY_FOR: Duration = Duration::from_secs(2);

/// Merges every group due, in rounds of one store write each, planning again while rounds
/// commit (a plan seals at most [`SEAL_ROWS`] resident rows, and the blocks a seal writes
/// may make merges due) for up to [`BUSY_FOR`], calling `between` after each plan; returns
/// how many merges committed.
pub fn merge_due_then(store: &Store, mut between: impl FnMut()) -> Result<usize, StoreError> {
    let started = std::time::Instant::now();
    let mut done = 0;
    loop {
        let n = merge_planned(store, false);
        between();
        let n = n?;
        done += n;
        if n == 0 || started.elapsed() >= BUSY_FOR || store.is_stopping() {
            return Ok(done);
        }
    }
}

/// [`merge_due_then`] with nothing between plans.
pub fn merge_due(store: &Store) -> Result<usize, StoreError> {
    merge_due_then(store, || {})
}

/// Seals every resident block into blocks in files (and merges what else is due): what a
/// close does, so that a store at rest needs no WAL to open.
pub fn seal_all(store: &Store) -> Result<usize, StoreError> {
    let mut done = 0;
    // A seal takes at most SEAL_ROWS rows; a round the merge thread changed the catalog
    // under does nothing: plan again.
    for _ in 0..1024 {
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
        for m in prepare(store, &sources)? {
            bytes += m.bytes.len();
            round.push(m);
        }
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
/// time, into one block per (org, topic, partition, day) they hold: one for a merge (its
/// sources share them), several for a seal of resident blocks. Only the first names the
/// sources: they all commit in one write.
///
/// Column by column: the key and time columns give every row its block and place, then each
/// column is decoded from every source, its values handed to the new blocks in their order,
/// and dropped, so a merge holds one column of its rows decoded at a time (the sources'
/// compressed bytes and the new blocks' encoded columns besides), not every row.
pub fn prepare(store: &Store, sources: &[Arc<BlockMeta>]) -> Result<Vec<BlockMerge>, StoreError> {
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
    let bytes = sources
        .iter()
        .map(|m| inner.blocks.bytes_once(m.no))
        .collect::<Result<Vec<_>, _>>()?;
    let readers = bytes
        .iter()
        .zip(sources)
        .map(|(b, m)| BlockReader::open(b).map_err(|err| corrupt(m, err)))
        .collect::<Result<Vec<_>, _>>()?;
    // Column `pos` of every source (all Null in a block written before the field existed).
    let column = |pos: Option<usize>| -> Result<Vec<Vec<Value>>, StoreError> {
        readers
            .iter()
            .zip(sources)
            .map(|(r, m)| match pos {
                Some(p) if p < r.columns().len() => r.column(p).map_err(|err| corrupt(m, err)),
                _ => Ok(vec![Value::Null; r.len()]),
            })
            .collect()
    };
    let key_positions: Vec<usize> = [keys.org, keys.topic, keys.partition]
        .into_iter()
        .flatten()
        .collect();
    let key_columns = key_positions
        .iter()
        .map(|&p| column(Some(p)))
        .collect::<Result<Vec<_>, _>>()?;
    let times = column(keys.time)?;
    let micros = |s: usize, i: usize| match times[s][i] {
        Value::Timestamp(n) => n,
        _ => i64::MIN,
    };

    // Every row's part (a new block), then the rows in part and time order (ties in source
    // and row order, as they were written).
    let sealing = sources.iter().any(|m| inner.blocks.is_resident(m.no));
    let mut parts: BTreeMap<(Vec<u8>, i64), Vec<Placed>> = BTreeMap::new();
    for (s, r) in readers.iter().enumerate() {
        for i in 0..r.len() {
            let mut key = Vec::new();
            for col in &key_columns {
                crate::store::codec::encode_component(&mut key, &col[s][i]);
            }
            // A merge keeps its group's day; a seal splits by the day of each event.
            let at = micros(s, i);
            let day = if sealing {
                at.div_euclid(86_400_000_000)
            } else {
                0
            };
            parts
                .entry((key, day))
                .or_default()
                .push((at, s as u32, i as u32));
        }
    }
    let mut parts: Vec<Vec<Placed>> = parts.into_values().collect();
    for rows in &mut parts {
        rows.sort_unstable();
    }

    let mut writers: Vec<BlockWriter> = parts
        .iter()
        .map(|rows| BlockWriter::new(e.fields.len(), rows.len(), Compression::DEFAULT))
        .collect();
    let mut ids: Vec<Vec<[u8; 16]>> = vec![Vec::new(); parts.len()];
    let mut offsets: Vec<(Option<i64>, Option<i64>)> = vec![(None, None); parts.len()];
    for (pos, field) in e.fields.iter().enumerate() {
        let decoded;
        let values = match key_positions.iter().position(|&p| p == pos) {
            Some(k) => &key_columns[k],
            None if Some(pos) == keys.time => &times,
            None => {
                decoded = column(Some(pos))?;
                &decoded
            }
        };
        let mut refs: Vec<&Value> = Vec::new();
        for (p, rows) in parts.iter().enumerate() {
            refs.clear();
            refs.extend(
                rows.iter()
                    .map(|&(_, s, i)| &values[s as usize][i as usize]),
            );
            if pos == e.id_pos {
                ids[p] = refs
                    .iter()
                    .map(|v| match v {
                        Value::Uuid(u) => *u,
                        _ => [0; 16],
                    })
                    .collect();
            }
            if Some(pos) == keys.offset {
                let ints = refs.iter().filter_map(|v| int_of(v));
                offsets[p] = ints.fold((None, None), |(lo, hi): (Option<i64>, Option<i64>), n| {
                    (
                        Some(lo.map_or(n, |l| l.min(n))),
                        Some(hi.map_or(n, |h| h.max(n))),
                    )
                });
            }
            writers[p].push(field, &refs)?;
        }
    }

    let level = sources.iter().map(|m| m.level).max().unwrap_or(0) + 1;
    let version = sources.iter().map(|m| m.version).max().unwrap_or(0);
    let mut names = Some(sources.iter().map(|m| m.no).collect::<Vec<_>>());
    let mut out = Vec::with_capacity(parts.len());
    for (((rows, writer), ids), (min_offset, max_offset)) in
        parts.iter().zip(writers).zip(ids).zip(offsets)
    {
        let bytes = writer.finish()?;
        let (_, s, i) = rows[0];
        let key_value = |pos: Option<usize>| match pos
            .and_then(|p| key_positions.iter().position(|&k| k == p))
        {
            Some(k) => key_columns[k][s as usize][i as usize].clone(),
            None => Value::Null,
        };
        let timed = |n: i64| (keys.time.is_some() && n != i64::MIN).then_some(n);
        let meta = BlockMeta {
            no: inner.next_block.fetch_add(1, Ordering::SeqCst),
            entity_no: e.no,
            org: key_value(keys.org),
            topic: key_value(keys.topic),
            partition: key_value(keys.partition),
            min_offset,
            max_offset,
            min_time: rows.iter().filter_map(|r| timed(r.0)).min(),
            max_time: rows.iter().filter_map(|r| timed(r.0)).max(),
            rows: rows.len() as u64,
            bytes: bytes.len() as u64,
            level,
            version,
            mixed: false,
        };
        out.push(BlockMerge {
            entity_no: e.no,
            sources: names.take().unwrap_or_default(),
            meta: Arc::new(meta),
            ids,
            bytes: Arc::new(bytes),
        });
    }
    Ok(out)
}

/// A row of a merge: (event time, source, row in the source).
type Placed = (i64, u32, u32);
