//! One batch turned into tree operations, feed entries and blocks: a [`Draft`] takes the
//! batch's mutations one at a time, each seeing the ones before it (`local`), then the
//! consumer offsets and feed cursors, then seals the rows of `@blocks` entities into blocks
//! registered by catalog rows, and finishes with the batch's posting entries and feed record.

use super::super::blocks::{codec, BlockChange, BlockMeta, ReplayedResident};
use super::super::feed::{encode_feed_record, ChangeOp, FeedItem};
use super::super::layout::{EntityLayout, Values};
use super::super::migrate::{self, AdoptedRow, AdoptedSlot};
use super::super::postings;
use super::super::{
    StoreError, STMETA_LAST_COMMIT, STMETA_NEXT_BLOCK, STMETA_NEXT_SEQ, TREE_BLOCKS, TREE_DATA,
    TREE_FEED, TREE_INDEX, TREE_META, TREE_RESIDENT, TREE_STMETA, TREE_TYPES,
};
use super::{latest_key, type_key, Committer, Materialized, Op, Placed, RowState};
use crate::store::batch::{CommitInfo, Mutation, Prepared, PreparedBlock, Row, WriteBatch};
use crate::store::codec::display_value;
use crate::store::Value;
use ormdb_core::storage::{Record, VersionedKey};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) struct Draft<'c> {
    c: &'c Committer,
    group: &'c HashMap<[u8; 16], RowState>,
    now: i64,
    commit: u64,
    local: HashMap<[u8; 16], RowState>,
    ops: Vec<Op>,
    feed: Vec<FeedItem>,
    /// Posting index entries of this batch, by key prefix.
    postings: BTreeMap<Vec<u8>, Vec<u8>>,
    info: CommitInfo,
    blocks: BlockDraft,
    /// The batch's inserts validated by its writer (see `WriteBatch::prepare`).
    prepared: Vec<Option<Prepared>>,
    prepared_blocks: Vec<PreparedBlock>,
    /// The batch's block hints for deletes (see `WriteBatch::located`).
    located: std::collections::HashMap<[u8; 16], u64>,
}

/// The rows of `@blocks` entities this batch writes, by (entity number, block key, and for
/// adopted rows their day: see `store::migrate`), and the stored blocks it takes rows out of
/// (updates and deletes rewrite their block).
#[derive(Default)]
struct BlockDraft {
    /// Shared with the batch's overlay (`local`), which holds the same values.
    rows: BTreeMap<AdoptedSlot, Vec<Option<Arc<Values>>>>,
    /// Where a row of this batch is in `rows`.
    at: HashMap<[u8; 16], (AdoptedSlot, usize)>,
    /// Stored blocks losing rows, with the ids that leave.
    leaving: BTreeMap<u64, (u16, HashSet<[u8; 16]>)>,
    changes: Vec<BlockChange>,
    /// Entities whose rows an update or delete changed within the batch: their writer's
    /// prepared block no longer holds them.
    tainted: HashSet<u16>,
}

/// A mutation resolved to the row it changes.
struct Resolved<'l> {
    entity: &'l EntityLayout,
    id: [u8; 16],
    new: Option<Values>,
    prev: RowState,
    /// The `@feed` bytes of `new`, when its writer encoded them.
    new_feed: Option<Vec<u8>>,
}

impl<'c> Draft<'c> {
    pub fn new(
        c: &'c Committer,
        group: &'c HashMap<[u8; 16], RowState>,
        commit: u64,
        first_seq: u64,
        now: i64,
        capacity: usize,
    ) -> Self {
        Draft {
            c,
            group,
            now,
            commit,
            local: HashMap::default(),
            ops: Vec::with_capacity(capacity * 7 + 4),
            feed: Vec::new(),
            postings: BTreeMap::new(),
            info: CommitInfo {
                commit,
                first_seq,
                ..Default::default()
            },
            blocks: BlockDraft::default(),
            prepared: Vec::new(),
            located: Default::default(),
            prepared_blocks: Vec::new(),
        }
    }

    /// The whole batch: its mutations, then its offsets and cursors as rows, then blocks.
    pub fn batch(mut self, batch: &mut WriteBatch) -> Result<Materialized, StoreError> {
        self.prepared = std::mem::take(&mut batch.prepared);
        self.prepared_blocks = std::mem::take(&mut batch.prepared_blocks);
        self.located = std::mem::take(&mut batch.located);
        for (n, m) in batch.mutations.iter().enumerate() {
            self.mutation(m, Some(n))?;
        }
        for m in internal_rows(batch, self.now) {
            self.mutation(&m, None)?;
        }
        for m in &batch.merges {
            self.merge(m)?;
        }
        for x in &batch.expired {
            self.expire(x)?;
        }
        for row in &batch.adopted {
            self.adopt(row)?;
        }
        self.seal_blocks()?;
        Ok(self.finish())
    }

    /// Applies one mutation; `n` is its index in the batch (None for the store's own rows,
    /// which the commit info does not count).
    fn mutation(&mut self, m: &Mutation, n: Option<usize>) -> Result<(), StoreError> {
        let counted = n.is_some() as usize;
        if let Some(r) = self.resolve(m, n)? {
            self.record(r, counted)?;
        }
        Ok(())
    }

    /// An insert's values and `@feed` bytes: prepared by its writer, or validated now.
    fn validated(
        &mut self,
        e: &EntityLayout,
        row: &Row,
        n: Option<usize>,
    ) -> Result<(Values, Option<Vec<u8>>), StoreError> {
        if let Some(p) = n
            .and_then(|n| self.prepared.get_mut(n))
            .and_then(Option::take)
        {
            return Ok((p.values, p.feed));
        }
        Ok((e.validate(row, self.now)?, None))
    }

    fn lookup(
        &self,
        id: &[u8; 16],
        e: &EntityLayout,
        values: bool,
    ) -> Result<RowState, StoreError> {
        // Values are needed by upserts, updates and deletes, which must find a row wherever
        // it is; inserts look within the dedup window.
        let depth = match values {
            true => super::Depth::Anywhere {
                hint: self.located.get(id).copied(),
            },
            false => super::Depth::Recent,
        };
        self.c.lookup(id, e, &self.local, self.group, values, depth)
    }

    /// The row a mutation changes and how, or None when it changes nothing.
    fn resolve(
        &mut self,
        m: &Mutation,
        n: Option<usize>,
    ) -> Result<Option<Resolved<'c>>, StoreError> {
        let layout = &self.c.inner.layout;
        let counted = n.is_some() as usize;
        match m {
            Mutation::Insert { entity, row } => {
                let e = layout.entity(entity)?;
                let (values, new_feed) = self.validated(e, row, n)?;
                let id = e.id_of(&values);
                let prev = self.lookup(&id, e, false)?;
                if matches!(prev, RowState::Live { .. }) {
                    self.info.unchanged += counted;
                    return Ok(None);
                }
                Ok(Some(Resolved {
                    entity: e,
                    id,
                    new: Some(values),
                    prev,
                    new_feed,
                }))
            }
            Mutation::InsertScoped { entity, row, scope } => {
                let e = layout.entity(entity)?;
                let (values, new_feed) = self.validated(e, row, n)?;
                match self
                    .c
                    .place_scoped(e, values, scope, &self.local, self.group)?
                {
                    Placed::New { id, values, prev } => Ok(Some(Resolved {
                        entity: e,
                        id,
                        new: Some(values),
                        prev,
                        new_feed,
                    })),
                    Placed::Duplicate(kind) => {
                        self.info.unchanged += counted;
                        if let Some(n) = n {
                            self.info.duplicates.push((n, kind));
                        }
                        Ok(None)
                    }
                }
            }
            Mutation::Upsert { entity, row } => {
                let e = layout.entity(entity)?;
                if e.unique.is_none() {
                    return Err(StoreError::NoUniqueKey {
                        entity: entity.clone(),
                    });
                }
                let values = e.validate(row, self.now)?;
                let id = e.id_of(&values);
                let prev = self.lookup(&id, e, true)?;
                if let RowState::Live { values: old, .. } = &prev {
                    if **old == values {
                        self.info.unchanged += counted;
                        return Ok(None);
                    }
                }
                Ok(Some(Resolved {
                    entity: e,
                    id,
                    new: Some(values),
                    prev,
                    new_feed: None,
                }))
            }
            Mutation::Update { entity, id, row } => self.resolve_update(entity, id, row).map(Some),
            Mutation::Delete { entity, id } => {
                let e = layout.entity(entity)?;
                let prev = self.lookup(id, e, true)?;
                if !matches!(prev, RowState::Live { .. }) {
                    return Err(StoreError::NotFound {
                        entity: entity.clone(),
                        id: uuid::Uuid::from_bytes(*id).to_string(),
                        op: "delete",
                    });
                }
                Ok(Some(Resolved {
                    entity: e,
                    id: *id,
                    new: None,
                    prev,
                    new_feed: None,
                }))
            }
        }
    }

    fn resolve_update(
        &self,
        entity: &str,
        id: &[u8; 16],
        row: &Row,
    ) -> Result<Resolved<'c>, StoreError> {
        let e = self.c.inner.layout.entity(entity)?;
        let mut row = row.clone();
        match row.id() {
            Some(given) if given != *id => {
                return Err(StoreError::IdConflict {
                    entity: entity.to_string(),
                    row_id: display_value(&Value::Uuid(given)),
                    target: display_value(&Value::Uuid(*id)),
                })
            }
            Some(_) => {}
            None if e.unique.is_none() => row.set("id", Value::Uuid(*id)),
            None => {}
        }
        let values = e.validate(&row, self.now)?;
        if e.id_of(&values) != *id {
            return Err(StoreError::IdMismatch {
                entity: entity.to_string(),
                given: display_value(&Value::Uuid(*id)),
                derived: display_value(&values[e.id_pos]),
            });
        }
        let prev = self.lookup(id, e, true)?;
        if !matches!(prev, RowState::Live { .. }) {
            return Err(StoreError::NotFound {
                entity: entity.to_string(),
                id: uuid::Uuid::from_bytes(*id).to_string(),
                op: "update",
            });
        }
        Ok(Resolved {
            entity: e,
            id: *id,
            new: Some(values),
            prev,
            new_feed: None,
        })
    }

    /// Writes a resolved change: its row (as an ORMDB row, or into this batch's blocks), its
    /// index and posting entries, and its feed entry.
    fn record(&mut self, r: Resolved<'c>, counted: usize) -> Result<(), StoreError> {
        let Resolved {
            entity,
            id,
            new,
            prev,
            new_feed: prepared_feed,
        } = r;
        let version = (self.now as u64).max(prev.version() + 1);
        let old = match &prev {
            RowState::Live { values, .. } => Some(values.clone()),
            _ => None,
        };
        let new = new.map(Arc::new);
        if entity.blocks.is_some() {
            self.record_blocked(entity, id, new.as_ref(), old.is_some())?;
        } else {
            self.record_row(entity, id, version, new.as_deref(), old.as_deref(), &prev)?;
        }
        let feed_of = |values: Option<&Values>| {
            values
                .filter(|_| !entity.feed_fields.is_empty())
                .map(|v| entity.feed_values(v))
        };
        let old_feed = feed_of(old.as_deref());
        let new_feed = match prepared_feed {
            Some(bytes) if new.is_some() => Some(bytes),
            _ => feed_of(new.as_deref()),
        };
        self.post(
            entity,
            id,
            old.as_deref(),
            new.as_deref(),
            &old_feed,
            &new_feed,
        );
        let change = match (&old, &new) {
            (None, Some(_)) => {
                self.info.inserted += counted;
                ChangeOp::Insert
            }
            (Some(_), Some(_)) => {
                self.info.updated += counted;
                ChangeOp::Update
            }
            _ => {
                self.info.deleted += counted;
                ChangeOp::Delete
            }
        };
        if entity.fed {
            self.feed.push(FeedItem {
                entity_no: entity.no,
                op: change,
                id,
                version,
                prev_version: old.as_ref().map(|_| prev.version()).unwrap_or(0),
                old_fields: old_feed,
                new_fields: new_feed,
            });
        }
        let state = match new {
            Some(values) => RowState::Live { version, values },
            None => RowState::Deleted { version },
        };
        self.local.insert(id, state);
        Ok(())
    }

    /// The ORMDB row of a change: its record, `latest:` pointer, type index and indexes.
    fn record_row(
        &mut self,
        entity: &EntityLayout,
        id: [u8; 16],
        version: u64,
        new: Option<&Values>,
        old: Option<&Values>,
        prev: &RowState,
    ) -> Result<(), StoreError> {
        let put = |tree, key: Vec<u8>, value: Option<Vec<u8>>| Op { tree, key, value };
        if new.is_none() && entity.latest_only {
            // A deleted `latest_only` row leaves nothing behind: no tombstone, pointer or
            // type entry (the block catalog deletes a row per block merged or dropped).
            if !matches!(prev, RowState::Absent) {
                self.ops.push(put(
                    TREE_DATA,
                    VersionedKey::new(id, prev.version()).encode().to_vec(),
                    None,
                ));
            }
            self.ops.push(put(TREE_META, latest_key(&id), None));
            self.ops
                .push(put(TREE_TYPES, type_key(&entity.name, &id), None));
            for idx in &entity.indexes {
                if let Some(v) = old {
                    self.ops
                        .push(put(TREE_INDEX, entity.index_key(idx, v, &id), None));
                }
            }
            return Ok(());
        }
        let record = match new {
            Some(values) => Record::with_timestamp(entity.encode_record(values)?, version),
            None => Record {
                data: Vec::new(),
                created_at: version,
                deleted: true,
            },
        };
        let record_bytes = record.to_bytes().map_err(|err| StoreError::Corrupt {
            what: format!("{}: cannot encode record: {err}", entity.name),
        })?;
        self.ops.push(put(
            TREE_DATA,
            VersionedKey::new(id, version).encode().to_vec(),
            Some(record_bytes),
        ));
        self.ops.push(put(
            TREE_META,
            latest_key(&id),
            Some(version.to_be_bytes().to_vec()),
        ));
        if entity.latest_only && !matches!(prev, RowState::Absent) {
            // The new version replaces the previous one (or its tombstone).
            self.ops.push(put(
                TREE_DATA,
                VersionedKey::new(id, prev.version()).encode().to_vec(),
                None,
            ));
        }
        // A deleted `latest_only` row has no type entry any more (see above).
        let typed = match prev {
            RowState::Absent => false,
            RowState::Deleted { .. } => !entity.latest_only,
            RowState::Live { .. } => true,
        };
        if !typed {
            self.ops.push(put(
                TREE_TYPES,
                type_key(&entity.name, &id),
                Some(Vec::new()),
            ));
        }
        for idx in &entity.indexes {
            let old_key = old.map(|v| entity.index_key(idx, v, &id));
            let new_key = new.map(|v| entity.index_key(idx, v, &id));
            if old_key == new_key {
                continue;
            }
            if let Some(k) = old_key {
                self.ops.push(put(TREE_INDEX, k, None));
            }
            if let Some(k) = new_key {
                self.ops.push(put(TREE_INDEX, k, Some(Vec::new())));
            }
        }
        Ok(())
    }

    /// The posting entries of a change (the `@feed` values before and after ride along).
    fn post(
        &mut self,
        entity: &EntityLayout,
        id: [u8; 16],
        old: Option<&Values>,
        new: Option<&Values>,
        old_feed: &Option<Vec<u8>>,
        new_feed: &Option<Vec<u8>>,
    ) {
        for p in &entity.postings {
            let old_key = old.map(|v| entity.posting_key(p, v));
            let new_key = new.map(|v| entity.posting_key(p, v));
            if old_key.is_some() && old_key == new_key && old_feed == new_feed {
                continue;
            }
            if let Some(k) = old_key.filter(|k| Some(k) != new_key.as_ref()) {
                postings::push_remove(self.postings.entry(k).or_default(), &id);
            }
            if let (Some(k), Some(f)) = (new_key, new_feed) {
                postings::push_set(self.postings.entry(k).or_default(), &id, f);
            }
        }
    }

    /// A change of a `@blocks` row: the new values join this batch's rows; the old ones leave
    /// this batch's rows or the stored block holding them.
    fn record_blocked(
        &mut self,
        entity: &EntityLayout,
        id: [u8; 16],
        new: Option<&Arc<Values>>,
        had_old: bool,
    ) -> Result<(), StoreError> {
        let keys = entity.blocks.as_ref().expect("a @blocks entity");
        if had_old {
            self.blocks.tainted.insert(entity.no);
            if let Some((slot_key, at)) = self.blocks.at.remove(&id) {
                if let Some(rows) = self.blocks.rows.get_mut(&slot_key) {
                    rows[at] = None;
                }
            } else {
                let no = self
                    .c
                    .inner
                    .blocks
                    .ids
                    .get(&id)
                    .ok_or_else(|| StoreError::Corrupt {
                        what: format!(
                            "{}: row {} is stored but in no block",
                            entity.name,
                            uuid::Uuid::from_bytes(id)
                        ),
                    })?;
                let leaving = self
                    .blocks
                    .leaving
                    .entry(no)
                    .or_insert_with(|| (entity.no, HashSet::default()));
                leaving.1.insert(id);
            }
        }
        if let Some(values) = new {
            let slot_key = (entity.no, keys.key_of(values), None);
            let rows = self.blocks.rows.entry(slot_key.clone()).or_default();
            rows.push(Some(Arc::clone(values)));
            self.blocks.at.insert(id, (slot_key, rows.len() - 1));
        }
        Ok(())
    }

    /// Rewrites the stored blocks that lose rows (their other rows join this batch's), then
    /// encodes this batch's rows into new blocks, each registered by a catalog row.
    fn seal_blocks(&mut self) -> Result<(), StoreError> {
        let layout = &self.c.inner.layout;
        for (no, (entity_no, leaving)) in std::mem::take(&mut self.blocks.leaving) {
            let e = layout.by_no(entity_no).expect("entity of a stored block");
            let keys = e.blocks.as_ref().expect("a @blocks entity");
            let meta = self
                .c
                .inner
                .blocks
                .catalog
                .get(no)
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("block {no:016x} holds rows but is not in the catalog"),
                })?;
            for values in self.c.inner.block_rows(e, &meta)? {
                if !leaving.contains(&e.id_of(&values)) {
                    self.blocks
                        .rows
                        .entry((entity_no, keys.key_of(&values), None))
                        .or_default()
                        .push(Some(Arc::new(values)));
                }
            }
            self.unregister(keys, no)?;
        }
        // A batch's rows make one resident block per entity (in block-key order, as its
        // writer prepared it); migrated ones (by day) are many and go to files.
        let mut resident: BTreeMap<u16, Vec<Arc<Values>>> = BTreeMap::new();
        for ((entity_no, _, day), rows) in std::mem::take(&mut self.blocks.rows) {
            let rows = rows.into_iter().flatten();
            if day.is_none() {
                resident.entry(entity_no).or_default().extend(rows);
                continue;
            }
            let rows: Vec<Arc<Values>> = rows.collect();
            if !rows.is_empty() {
                let e = layout.by_no(entity_no).expect("entity of a drafted block");
                self.register(e, &rows, false)?;
            }
        }
        for (entity_no, rows) in resident {
            if !rows.is_empty() {
                let e = layout.by_no(entity_no).expect("entity of a drafted block");
                self.register(e, &rows, true)?;
            }
        }
        Ok(())
    }

    /// An ORMDB row of a `@blocks` entity moved into this batch's blocks (see
    /// `store::migrate`): its id and values as they are, no change-feed entry, and every
    /// trace of the ORMDB row removed in the same write.
    fn adopt(&mut self, row: &AdoptedRow) -> Result<(), StoreError> {
        let e = self
            .c
            .inner
            .layout
            .by_no(row.entity_no)
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("adopted row names entity #{}", row.entity_no),
            })?;
        let keys = e.blocks.as_ref().ok_or_else(|| {
            StoreError::Schema(format!(
                "{} is not @blocks: its rows cannot move into blocks",
                e.name
            ))
        })?;
        self.ops.extend(migrate::removals(e, row));
        let Some(values) = &row.values else {
            return Ok(());
        };
        if let RowState::Live { .. } = self.lookup(&row.id, e, false)? {
            // Cannot happen while open migrates before anything else writes; if it did,
            // neither copy is dropped silently.
            return Err(StoreError::Corrupt {
                what: format!(
                    "{} row {} is stored both as an ORMDB row and in a block",
                    e.name,
                    uuid::Uuid::from_bytes(row.id)
                ),
            });
        }
        let slot = migrate::slot_of(e, keys, values);
        let values = Arc::new(values.clone());
        let rows = self.blocks.rows.entry(slot.clone()).or_default();
        rows.push(Some(Arc::clone(&values)));
        self.blocks.at.insert(row.id, (slot, rows.len() - 1));
        self.local.insert(
            row.id,
            RowState::Live {
                version: self.now as u64,
                values,
            },
        );
        Ok(())
    }

    /// The block its writer encoded for `rows`, if they are exactly its rows.
    fn prepared_block(&mut self, e: &EntityLayout, rows: &[Arc<Values>]) -> Option<Vec<u8>> {
        if self.blocks.tainted.contains(&e.no) {
            return None;
        }
        let at = self
            .prepared_blocks
            .iter()
            .position(|b| b.entity_no == e.no)?;
        let same = self.prepared_blocks[at].ids.len() == rows.len()
            && self.prepared_blocks[at]
                .ids
                .iter()
                .zip(rows)
                .all(|(id, r)| *id == e.id_of(r));
        same.then(|| self.prepared_blocks.swap_remove(at).bytes)
    }

    /// A new block of `rows`: resident (its bytes in this commit's WAL record only, see
    /// `blocks::Resident`), or in a file written when the commit is applied and registered
    /// by a catalog row.
    fn register(
        &mut self,
        e: &EntityLayout,
        rows: &[Arc<Values>],
        resident: bool,
    ) -> Result<(), StoreError> {
        let keys = e.blocks.as_ref().expect("a @blocks entity");
        let encode_resident = || {
            codec::encode_block_with(&e.fields, rows, super::super::blocks::RESIDENT_COMPRESSION)
        };
        let prepared = resident.then(|| self.prepared_block(e, rows)).flatten();
        #[cfg(debug_assertions)]
        if let Some(bytes) = &prepared {
            debug_assert!(
                *bytes == encode_resident()?,
                "a prepared block differs from its rows"
            );
        }
        let bytes = match prepared {
            Some(bytes) => bytes,
            None if resident => encode_resident()?,
            None => codec::encode_block(&e.fields, rows)?,
        };
        let no = self
            .c
            .inner
            .next_block
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let version = self.now as u64;
        let meta = BlockMeta::describe(e, keys, no, rows, bytes.len() as u64, 0, version);
        let ids = rows.iter().map(|r| e.id_of(r)).collect();
        if resident {
            self.ops.push(Op {
                tree: TREE_RESIDENT,
                key: no.to_be_bytes().to_vec(),
                value: Some(ReplayedResident::encode(version, e.no, &bytes)),
            });
            self.blocks.changes.push(BlockChange::Added {
                meta: Arc::new(meta),
                ids,
                resident: Some(Arc::new(bytes)),
            });
            return Ok(());
        }
        self.ops.push(Op {
            tree: TREE_BLOCKS,
            key: no.to_be_bytes().to_vec(),
            value: Some(bytes),
        });
        self.mutation(
            &Mutation::Upsert {
                entity: keys.catalog.clone(),
                row: meta.to_row(),
            },
            None,
        )?;
        self.blocks.changes.push(BlockChange::Added {
            meta: Arc::new(meta),
            ids,
            resident: None,
        });
        Ok(())
    }

    /// The `@blocks` entity `entity_no`, if every one of `blocks` is still registered (in a
    /// file, unless `resident_ok`) and untouched by this batch (else `Stale`: `what` planned
    /// on an older state).
    fn leaving_blocks(
        &self,
        entity_no: u16,
        blocks: &[u64],
        what: &str,
        resident_ok: bool,
    ) -> Result<&'c EntityLayout, StoreError> {
        let e = (self.c.inner.layout.by_no(entity_no)).ok_or_else(|| StoreError::Corrupt {
            what: format!("{what} names entity #{entity_no}"),
        })?;
        for &no in blocks {
            if self.c.inner.blocks.catalog.get(no).is_none()
                || self.blocks.leaving.contains_key(&no)
                || (!resident_ok && self.c.inner.blocks.is_resident(no))
            {
                return Err(StoreError::Stale {
                    what: format!(
                        "{what} of {} blocks: block {no:016x} changed meanwhile",
                        e.name
                    ),
                });
            }
        }
        Ok(e)
    }

    /// Swaps a merge's sources for its merged block (whose file is already durable), if every
    /// source is still registered and untouched by this batch.
    fn merge(&mut self, m: &crate::store::blocks::merge::BlockMerge) -> Result<(), StoreError> {
        let e = self.leaving_blocks(m.entity_no, &m.sources, "merge", true)?;
        let keys = e.blocks.as_ref().expect("a @blocks entity");
        for &no in &m.sources {
            self.unregister(keys, no)?;
        }
        #[cfg(feature = "fault-injection")]
        if crate::fault::arg("crash_in_merge_write").is_some() {
            crate::fault::kill("while a block merge is drafted, before its WAL record");
        }
        self.ops.push(Op {
            tree: TREE_BLOCKS,
            key: m.meta.no.to_be_bytes().to_vec(),
            value: Some(m.bytes.to_vec()),
        });
        self.mutation(
            &Mutation::Upsert {
                entity: keys.catalog.clone(),
                row: m.meta.to_row(),
            },
            None,
        )?;
        self.blocks.changes.push(BlockChange::Added {
            meta: m.meta.clone(),
            ids: m.ids.clone(),
            resident: None,
        });
        Ok(())
    }

    /// Drops the blocks retention expired (no change-feed entries: the rollups keep what
    /// the events added) and raises the entity's retained-from time, if every block is
    /// still registered and untouched by this batch.
    fn expire(&mut self, x: &crate::store::blocks::retention::Expiry) -> Result<(), StoreError> {
        let e = self.leaving_blocks(x.entity_no, &x.blocks, "retention", false)?;
        let keys = e.blocks.as_ref().expect("a @blocks entity");
        for &no in &x.blocks {
            self.unregister(keys, no)?;
        }
        self.ops.push(Op {
            tree: TREE_STMETA,
            key: crate::store::blocks::retention::stmeta_key(&e.name),
            value: Some(x.before.to_be_bytes().to_vec()),
        });
        Ok(())
    }

    /// Removes a stored block: its catalog row now, its file once the commit is applied (a
    /// resident block has neither: the commit's record says it leaves).
    fn unregister(
        &mut self,
        keys: &crate::store::layout::BlockKeys,
        no: u64,
    ) -> Result<(), StoreError> {
        self.blocks.changes.push(BlockChange::Removed { no });
        if self.c.inner.blocks.is_resident(no) {
            self.ops.push(Op {
                tree: TREE_RESIDENT,
                key: no.to_be_bytes().to_vec(),
                value: None,
            });
            return Ok(());
        }
        let catalog = self.c.inner.layout.entity(&keys.catalog)?;
        let id = crate::store::codec::upsert_id(&catalog.name, &[&Value::Int64(no as i64)]);
        self.mutation(
            &Mutation::Delete {
                entity: keys.catalog.clone(),
                id,
            },
            None,
        )?;
        self.ops.push(Op {
            tree: TREE_BLOCKS,
            key: no.to_be_bytes().to_vec(),
            value: None,
        });
        Ok(())
    }

    fn finish(mut self) -> Materialized {
        for (prefix, body) in std::mem::take(&mut self.postings) {
            self.ops.push(Op {
                tree: TREE_INDEX,
                key: postings::entry_key(&prefix, self.commit),
                value: Some(body),
            });
        }
        let first_seq = self.info.first_seq;
        self.info.next_seq = first_seq + self.feed.len() as u64;
        if !self.feed.is_empty() {
            self.ops.push(Op {
                tree: TREE_FEED,
                key: first_seq.to_be_bytes().to_vec(),
                value: Some(encode_feed_record(&self.feed)),
            });
        }
        let meta = |key: &[u8], n: u64| Op {
            tree: TREE_STMETA,
            key: key.to_vec(),
            value: Some(n.to_be_bytes().to_vec()),
        };
        self.ops.push(meta(STMETA_LAST_COMMIT, self.commit));
        self.ops.push(meta(STMETA_NEXT_SEQ, self.info.next_seq));
        if !self.blocks.changes.is_empty() {
            let next = self
                .c
                .inner
                .next_block
                .load(std::sync::atomic::Ordering::SeqCst);
            self.ops.push(meta(STMETA_NEXT_BLOCK, next));
        }
        Materialized {
            ops: self.ops,
            info: self.info,
            overlay: self.local,
            blocks: self.blocks.changes,
        }
    }
}

/// The batch's consumer offsets and feed cursors, as upserts of the store's own rows.
fn internal_rows(batch: &WriteBatch, now: i64) -> Vec<Mutation> {
    let offsets = batch
        .offsets
        .iter()
        .map(|(topic, partition, offset)| Mutation::Upsert {
            entity: "ConsumerOffset".into(),
            row: Row::new()
                .with("topic", Value::String(topic.clone()))
                .with("partition", Value::Int32(*partition))
                .with("next_offset", Value::Int64(*offset))
                .with("updated_at", Value::Timestamp(now)),
        });
    let cursors = batch.cursors.iter().map(|(name, seq)| Mutation::Upsert {
        entity: "FeedCursor".into(),
        row: Row::new()
            .with("name", Value::String(name.clone()))
            .with("next_seq", Value::Int64(*seq as i64))
            .with("updated_at", Value::Timestamp(now)),
    });
    offsets.chain(cursors).collect()
}
