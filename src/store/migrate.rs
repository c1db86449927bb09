//! Migration of `@blocks` entities written as ORMDB rows (releases before blocks kept each
//! event as one row in ormdb-core's `data`/`meta`/`index:entity_type` trees) into blocks.
//!
//! [`Store::open`](super::Store::open) runs it once the committer has started and before
//! it returns, so nothing else reads or writes while an entity is half rows, half blocks
//! (an insert would not see an id still kept as a row, a read would miss such rows).
//! It works in chunks of rows, each ONE atomic store write ([`WriteBatch::adopted`]) that
//! puts the rows into new blocks and removes their ORMDB rows (every data version, the
//! `latest:` pointer, the type-index entry; a deleted row's remains are just removed). A
//! crash between chunks leaves every row either still a row or in a block, never both, and
//! the next open continues with the rows left. Adopted rows keep their id and values and
//! make no change-feed entries: the feed's readers (the stats) counted them when they were
//! written. The `@postings` entries the rows had are gone already: `@blocks` entities
//! declare none, so the index tree was rebuilt without them earlier in the same open.
//!
//! A chunk's rows are grouped into blocks per (org, topic, partition) and UTC day of their
//! event time, sorted by it, so the blocks fit the merge groups (`blocks::merge`) and the
//! time ranges queries narrow by, whatever order the rows' ids put them in.

use super::commit::{latest_key, type_key};
use super::layout::{BlockKeys, EntityLayout, Values};
use super::{entity_ids, read_u64, Store, StoreError, Value, WriteBatch};
use ormdb_core::storage::{Record, VersionedKey};
use std::collections::HashSet;
use std::time::Instant;

/// Rows moved per store write unless `StoreOptions::migrate_chunk_rows` says otherwise.
pub const DEFAULT_CHUNK_ROWS: usize = 50_000;

/// A row of a `@blocks` entity kept as an ORMDB row, to move into a block.
#[derive(Debug, Clone)]
pub(crate) struct AdoptedRow {
    pub entity_no: u16,
    pub id: [u8; 16],
    /// Every version kept in the `data` tree (all removed).
    pub versions: Vec<u64>,
    /// The latest version's values; None for a deleted row (nothing goes into a block).
    pub values: Option<Values>,
}

/// The block a chunk's row goes to: its entity, block key and UTC day (see the module doc).
pub(crate) type AdoptedSlot = (u16, Vec<u8>, Option<i64>);

pub(crate) fn slot_of(e: &EntityLayout, keys: &BlockKeys, values: &Values) -> AdoptedSlot {
    (e.no, keys.key_of(values), Some(day_of(keys, values)))
}

fn day_of(keys: &BlockKeys, values: &Values) -> i64 {
    keys.time
        .and_then(|t| match values[t] {
            Value::Timestamp(us) => Some(us.div_euclid(86_400_000_000)),
            _ => None,
        })
        .unwrap_or(0)
}

/// How far the migration of one entity has come; reported after every chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migration {
    pub entity: String,
    /// ORMDB rows of the entity when this open started migrating it (deleted rows' remains
    /// included).
    pub rows_total: u64,
    /// Of those, how many are converted so far.
    pub rows_done: u64,
    /// Live rows moved into blocks (deleted rows are only removed).
    pub moved: u64,
    /// Blocks written (before the background merge combines them).
    pub blocks: u64,
}

/// How many rows of `@blocks` entities are still ORMDB rows, per entity (those with any).
pub(crate) fn pending(store: &Store) -> Result<Vec<(String, u64)>, StoreError> {
    let inner = store.inner();
    let mut out = Vec::new();
    for e in inner.layout.entities.iter().filter(|e| e.blocks.is_some()) {
        let mut n = 0u64;
        for id in entity_ids(&inner.trees.types, &e.name) {
            id.map_err(|err| engine_err(store, "count rows to migrate", err))?;
            n += 1;
        }
        if n > 0 {
            out.push((e.name.clone(), n));
        }
    }
    Ok(out)
}

/// Moves every ORMDB row of every `@blocks` entity into blocks, `chunk_rows` rows per store
/// write, calling `progress` after each write.
pub(crate) fn run(
    store: &Store,
    chunk_rows: usize,
    progress: &mut dyn FnMut(&Migration),
) -> Result<(), StoreError> {
    let chunk_rows = chunk_rows.max(1);
    for (entity, rows_total) in pending(store)? {
        let e = store.inner().layout.entity(&entity)?;
        let started = Instant::now();
        let mut m = Migration {
            entity: entity.clone(),
            rows_total,
            ..Default::default()
        };
        tracing::info!(
            entity,
            rows = rows_total,
            chunk_rows,
            "store written by an earlier release: moving its rows into blocks"
        );
        progress(&m);
        let mut chunks = 0u64;
        loop {
            let rows = read_chunk(store, e, chunk_rows)?;
            if rows.is_empty() {
                break;
            }
            let keys = e.blocks.as_ref().expect("a @blocks entity");
            let live: Vec<&Values> = rows.iter().filter_map(|r| r.values.as_ref()).collect();
            let slots: HashSet<AdoptedSlot> = live.iter().map(|v| slot_of(e, keys, v)).collect();
            let (n, moved, blocks) = (rows.len() as u64, live.len() as u64, slots.len() as u64);
            let mut batch = WriteBatch::new();
            batch.adopted = rows;
            store.write_blocking(batch)?;
            m.rows_done += n;
            m.moved += moved;
            m.blocks += blocks;
            chunks += 1;
            let elapsed = started.elapsed();
            tracing::info!(
                entity,
                rows_done = m.rows_done,
                rows_total,
                moved = m.moved,
                blocks = m.blocks,
                elapsed_ms = elapsed.as_millis() as u64,
                rows_per_s = (m.rows_done as f64 / elapsed.as_secs_f64().max(1e-3)) as u64,
                "migrating rows into blocks"
            );
            progress(&m);
            #[cfg(feature = "fault-injection")]
            if crate::fault::armed("migrate_crash_after_chunk", chunks) {
                crate::fault::kill("after a migration chunk is durable");
            }
        }
        tracing::info!(
            entity,
            rows = m.rows_done,
            moved = m.moved,
            blocks = m.blocks,
            chunks,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rows moved into blocks"
        );
    }
    Ok(())
}

/// The first `limit` ORMDB rows of `e` in its type index, each with its versions and latest
/// values, sorted by event time (so each block's rows are).
fn read_chunk(
    store: &Store,
    e: &EntityLayout,
    limit: usize,
) -> Result<Vec<AdoptedRow>, StoreError> {
    let trees = &store.inner().trees;
    let mut rows = Vec::with_capacity(limit.min(1 << 16));
    for id in entity_ids(&trees.types, &e.name).take(limit) {
        let id = id.map_err(|err| engine_err(store, "list rows to migrate", err))?;
        let latest = read_u64(&trees.meta, &latest_key(&id))
            .map_err(|err| engine_err(store, "read a latest pointer", err))?;
        let (from, to) = (
            VersionedKey::new(id, 0).encode(),
            VersionedKey::new(id, u64::MAX).encode(),
        );
        let mut versions = Vec::new();
        for item in trees.data.range(from.as_slice()..=to.as_slice()) {
            let (k, _) = item.map_err(|err| engine_err(store, "list a row's versions", err))?;
            if let Some(v) = VersionedKey::decode(&k) {
                versions.push(v.version_ts);
            }
        }
        let values = match latest {
            Some(version) => latest_values(store, e, &id, version)?,
            None => None,
        };
        rows.push(AdoptedRow {
            entity_no: e.no,
            id,
            versions,
            values,
        });
    }
    if let Some(t) = e.blocks.as_ref().and_then(|k| k.time) {
        rows.sort_by_key(|r| match r.values.as_ref().map(|v| &v[t]) {
            Some(Value::Timestamp(us)) => *us,
            _ => i64::MIN,
        });
    }
    Ok(rows)
}

/// The values of a row's latest version (None when it is a deletion).
fn latest_values(
    store: &Store,
    e: &EntityLayout,
    id: &[u8; 16],
    version: u64,
) -> Result<Option<Values>, StoreError> {
    let name = || format!("{} row {}", e.name, uuid::Uuid::from_bytes(*id));
    let raw = store
        .inner()
        .trees
        .data
        .get(VersionedKey::new(*id, version).encode())
        .map_err(|err| engine_err(store, "read a row to migrate", err))?
        .ok_or_else(|| StoreError::Corrupt {
            what: format!(
                "{}: version {version} is named by its latest pointer but missing",
                name()
            ),
        })?;
    let record = Record::from_bytes(&raw).map_err(|err| StoreError::Corrupt {
        what: format!("{}: {err}", name()),
    })?;
    if record.deleted {
        return Ok(None);
    }
    let values = e.decode_record(&record.data)?;
    if e.id_of(&values) != *id {
        return Err(StoreError::Corrupt {
            what: format!("{}: its id field holds {:?}", name(), values[e.id_pos]),
        });
    }
    Ok(Some(values))
}

fn engine_err(store: &Store, op: &'static str, err: sled::Error) -> StoreError {
    StoreError::Engine {
        path: store.path().to_path_buf(),
        op,
        message: err.to_string(),
    }
}

/// The change an adopted row makes to the trees besides its block: every trace of its ORMDB
/// row removed.
pub(crate) fn removals(e: &EntityLayout, row: &AdoptedRow) -> Vec<super::commit::Op> {
    use super::{TREE_DATA, TREE_META, TREE_TYPES};
    let remove = |tree, key: Vec<u8>| super::commit::Op {
        tree,
        key,
        value: None,
    };
    let mut ops: Vec<_> = row
        .versions
        .iter()
        .map(|&v| remove(TREE_DATA, VersionedKey::new(row.id, v).encode().to_vec()))
        .collect();
    ops.push(remove(TREE_META, latest_key(&row.id)));
    ops.push(remove(TREE_TYPES, type_key(&e.name, &row.id)));
    ops
}
