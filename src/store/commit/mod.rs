//! The committer: one thread that turns batches into tree operations, makes them durable in
//! the write-ahead log with one fsync per group of batches, applies them, and acknowledges.
//!
//! Batches are materialized one after another, each seeing the effects of those before it in
//! the same group (an overlay of row states), so a group is equivalent to its batches applied
//! in order. A batch that fails validation is answered with its error and leaves no trace.

mod draft;

use super::batch::{CommitInfo, Duplicate, IdScope, Mutation, WriteBatch};
use super::blocks::{BlockChange, BlockFiles};
use super::codec::display_value;
use super::feed::record_entries;
use super::feed_log::FeedLog;
use super::layout::{EntityLayout, Values};
use super::{
    Inner, StoreError, Trees, Value, TREE_BLOCKS, TREE_DATA, TREE_FEED, TREE_INDEX, TREE_META,
    TREE_RESIDENT, TREE_STMETA, TREE_TYPES,
};
use crate::schema::FieldType;
use ormdb_core::storage::{Record, VersionedKey};
use rustc_hash::FxHashMap as HashMap;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Request {
    pub batch: WriteBatch,
    pub reply: tokio::sync::oneshot::Sender<Result<CommitInfo, StoreError>>,
}

/// One tree operation: put (`Some`) or delete (`None`).
pub struct Op {
    pub tree: u8,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The state of a row id as of the batches materialized so far.
#[derive(Clone)]
enum RowState {
    Absent,
    Live { version: u64, values: Arc<Values> },
    Deleted { version: u64 },
}

impl RowState {
    fn version(&self) -> u64 {
        match self {
            RowState::Absent => 0,
            RowState::Live { version, .. } | RowState::Deleted { version } => *version,
        }
    }
}

/// Where a lookup looks for a row of a `@blocks` entity.
#[derive(Debug, Clone, Copy)]
pub enum Depth {
    /// Within the dedup window's id index (inserts).
    Recent,
    /// Anywhere (updates, deletes), first in the block `hint` names, if any.
    Anywhere { hint: Option<u64> },
}

pub struct Committer {
    inner: Arc<Inner>,
    rx: crossbeam_channel::Receiver<Request>,
    next_commit: u64,
    next_seq: u64,
    max_group: usize,
    /// A batch held back to start the next group (see [`needs_applied`]).
    held: Option<Request>,
    /// Row states written by groups that are durable but maybe not applied yet, with the
    /// last commit of each group, oldest first.
    unapplied: VecDeque<(u64, HashMap<[u8; 16], RowState>)>,
}

/// A group durable in the WAL, waiting to be applied and acknowledged.
struct Logged {
    batches: Vec<(Request, Materialized)>,
}

/// Applies logged groups in order and acknowledges their batches: only then are they
/// visible, to readers and to the writers waiting for them.
fn apply_loop(inner: &Inner, groups: crossbeam_channel::Receiver<Logged>) {
    for group in groups {
        for (req, m) in group.batches {
            let info = m.info;
            let failed = inner.failure.lock().as_ref().filter(|f| f.fatal).cloned();
            let already_failed = failed.is_some();
            let result = match failed {
                Some(f) => Err(f.message),
                None => apply_ops(&inner.trees, &inner.blocks.files, &inner.feed_log, m.ops)
                    .map_err(|e| format!("applying commit {} failed: {e}", info.commit)),
            };
            if result.is_ok() {
                inner.blocks.apply(&m.blocks, info.commit);
            }
            if let Err(message) = result {
                if !already_failed {
                    tracing::error!(%message, "store write is durable in the WAL but not applied");
                    *inner.failure.lock() = Some(super::Failure {
                        message: message.clone(),
                        fatal: true,
                    });
                }
                let _ = req.reply.send(Err(StoreError::Failed {
                    path: inner.path.clone(),
                    message,
                    fatal: true,
                }));
                continue;
            }
            // Before the acknowledgement: a read after it must not find the old row cached.
            inner.row_cache.invalidate(m.overlay.keys());
            inner.applied_commit.store(info.commit, Ordering::SeqCst);
            inner.feed_head.send_replace(info.next_seq);
            let _ = req.reply.send(Ok(info));
        }
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub fn latest_key(id: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(23);
    k.extend_from_slice(b"latest:");
    k.extend_from_slice(id);
    k
}

pub fn type_key(entity: &str, id: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(entity.len() + 17);
    k.extend_from_slice(entity.as_bytes());
    k.push(0);
    k.extend_from_slice(id);
    k
}

/// A batch turned into tree operations.
struct Materialized {
    ops: Vec<Op>,
    info: CommitInfo,
    overlay: HashMap<[u8; 16], RowState>,
    /// Blocks added and removed, for the in-memory catalog once applied.
    blocks: Vec<BlockChange>,
}

impl Committer {
    pub fn new(
        inner: Arc<Inner>,
        rx: crossbeam_channel::Receiver<Request>,
        next_commit: u64,
        next_seq: u64,
        max_group: usize,
    ) -> Self {
        Committer {
            inner,
            rx,
            next_commit,
            next_seq,
            max_group,
            held: None,
            unapplied: VecDeque::new(),
        }
    }

    /// Takes groups of waiting batches until the store closes. Materializing and logging a
    /// group (this thread) overlaps with applying the one before it (`store-apply`); the
    /// batches of groups logged but not yet applied stay in `unapplied` for lookups.
    pub fn run(mut self) {
        let (to_apply, applying) = crossbeam_channel::bounded::<Logged>(1);
        let inner = self.inner.clone();
        let applier = std::thread::Builder::new()
            .name("store-apply".into())
            .spawn(move || apply_loop(&inner, applying));
        let applier = match applier {
            Ok(handle) => handle,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the store's apply thread");
                *self.inner.failure.lock() = Some(super::Failure {
                    message: format!("cannot start the store's apply thread: {e}"),
                    fatal: true,
                });
                for req in self.rx.iter() {
                    self.refuse(vec![req]);
                }
                return;
            }
        };
        loop {
            let first = match self.held.take() {
                Some(r) => r,
                None => match self.rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            if needs_applied(&self.inner, &first.batch) {
                self.wait_applied();
            }
            let mut group = vec![first];
            while group.len() < self.max_group {
                match self.rx.try_recv() {
                    Ok(r) if needs_applied(&self.inner, &r.batch) => {
                        self.held = Some(r);
                        break;
                    }
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            // A backup holds the gate while it copies the store (see `Store::backup`): no
            // group is logged meanwhile, and every group logged before is applied.
            let inner = self.inner.clone();
            let gate = inner.commit_gate.lock();
            if let Some(logged) = self.commit_group(group) {
                self.inner
                    .logged_commit
                    .store(self.next_commit - 1, Ordering::SeqCst);
                if to_apply.send(logged).is_err() {
                    break;
                }
            }
            drop(gate);
        }
        drop(to_apply);
        let _ = applier.join();
    }

    /// Answers every request of `group` with the store's failure.
    fn refuse(&self, group: Vec<Request>) {
        let (message, fatal) = match self.inner.failure.lock().clone() {
            Some(failure) => (failure.message, failure.fatal),
            None => ("the store is failing".into(), false),
        };
        for req in group {
            let _ = req.reply.send(Err(StoreError::Failed {
                path: self.inner.path.clone(),
                message: message.clone(),
                fatal,
            }));
        }
    }

    /// Materializes a group and makes it durable in the WAL; returns it for the applier.
    fn commit_group(&mut self, group: Vec<Request>) -> Option<Logged> {
        if self.inner.failure.lock().is_some() {
            self.refuse(group);
            return None;
        }
        // Groups the applier has finished are in the trees now.
        let applied = self.inner.applied_commit.load(Ordering::SeqCst);
        while self
            .unapplied
            .front()
            .is_some_and(|(last, _)| *last <= applied)
        {
            self.unapplied.pop_front();
        }
        let now = now_us();
        let mut overlay: HashMap<[u8; 16], RowState> = HashMap::default();
        let mut commit = self.next_commit;
        let mut seq = self.next_seq;
        let mut accepted: Vec<(Request, Materialized)> = Vec::with_capacity(group.len());
        for mut req in group {
            let draft = draft::Draft::new(self, &overlay, commit, seq, now, req.batch.len());
            match draft.batch(&mut req.batch) {
                Ok(m) => {
                    overlay.extend(m.overlay.iter().map(|(k, v)| (*k, v.clone())));
                    commit += 1;
                    seq = m.info.next_seq;
                    accepted.push((req, m));
                }
                Err(e) => {
                    let _ = req.reply.send(Err(e));
                }
            }
        }
        if accepted.is_empty() {
            return None;
        }

        // Durable first: one WAL append + fsync for the whole group.
        let sync = {
            let mut wal = self.inner.wal.lock();
            #[cfg(feature = "fault-injection")]
            if self.fsync_fault_hits(&accepted) {
                wal.fail_next_fsync = true;
            }
            let mut payload = Vec::new();
            for (_, m) in &accepted {
                payload.clear();
                encode_ops(&m.ops, &mut payload);
                wal.append(m.info.commit, &payload);
            }
            wal.sync().and_then(|_| wal.maybe_rotate(commit))
        };
        if let Err(e) = sync {
            // Every later write fails too until the writer calls `Store::resume_writes`, so a
            // batch submitted after a failed one can never commit ahead of it (its offsets
            // would then cover events that are not stored). A failed fsync is fatal.
            let fatal = !e.is_retryable();
            tracing::error!(error = %e, fatal, "write-ahead log append failed; the group is not committed");
            let message = e.to_string();
            *self.inner.failure.lock() = Some(super::Failure {
                message: message.clone(),
                fatal,
            });
            let mut first = Some(e);
            for (req, _) in accepted {
                let err = first.take().unwrap_or_else(|| StoreError::Failed {
                    path: self.inner.path.clone(),
                    message: message.clone(),
                    fatal,
                });
                let _ = req.reply.send(Err(err));
            }
            return None;
        }
        self.next_commit = commit;
        self.next_seq = seq;
        self.unapplied.push_back((commit - 1, overlay));
        Some(Logged { batches: accepted })
    }

    /// Whether the armed fsync fault (`Store::inject_wal_fsync_error_on`) fires on this
    /// group; it fires once.
    #[cfg(feature = "fault-injection")]
    fn fsync_fault_hits(&self, group: &[(Request, Materialized)]) -> bool {
        let mut armed = self.inner.fsync_fault_entity.lock();
        let Some(entity) = armed.as_deref() else {
            return false;
        };
        let hit = group.iter().any(|(req, _)| {
            req.batch.mutations.iter().any(|m| match m {
                Mutation::Insert { entity: e, .. }
                | Mutation::InsertScoped { entity: e, .. }
                | Mutation::Upsert { entity: e, .. }
                | Mutation::Update { entity: e, .. }
                | Mutation::Delete { entity: e, .. } => e == entity,
            })
        });
        if hit {
            tracing::warn!(entity, "fault injection: this group's WAL fsync fails");
            *armed = None;
        }
        hit
    }

    fn lookup(
        &self,
        id: &[u8; 16],
        e: &EntityLayout,
        local: &HashMap<[u8; 16], RowState>,
        group: &HashMap<[u8; 16], RowState>,
        need_values: bool,
        depth: Depth,
    ) -> Result<RowState, StoreError> {
        let pending = local.get(id).or_else(|| group.get(id)).or_else(|| {
            // Newest first: a later group's state of a row replaces an earlier one's.
            self.unapplied
                .iter()
                .rev()
                .find_map(|(_, rows)| rows.get(id))
        });
        if let Some(s) = pending {
            return Ok(s.clone());
        }
        if e.blocks.is_some() {
            // Inserts check the ids of the dedup window; updates and deletes find any row.
            let found = match depth {
                Depth::Recent => self.inner.recent_block_row(e, id)?,
                Depth::Anywhere { hint: Some(no) } => {
                    match self.inner.located_block_row(e, id, no)? {
                        Some(found) => Some(found),
                        None => self.inner.block_row(e, id)?,
                    }
                }
                Depth::Anywhere { hint: None } => self.inner.block_row(e, id)?,
            };
            return Ok(match found {
                Some((meta, values)) => RowState::Live {
                    version: meta.version,
                    values: Arc::new(values),
                },
                None => RowState::Absent,
            });
        }
        let trees = &self.inner.trees;
        let engine_err = |op: &'static str| {
            let p = self.inner.path.clone();
            move |err: sled::Error| StoreError::Engine {
                path: p,
                op,
                message: err.to_string(),
            }
        };
        let Some(v) = trees
            .meta
            .get(latest_key(id))
            .map_err(engine_err("read a latest pointer"))?
        else {
            return Ok(RowState::Absent);
        };
        let version =
            u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                what: format!(
                    "latest pointer of {} is {} bytes",
                    uuid::Uuid::from_bytes(*id),
                    v.len()
                ),
            })?);
        let raw = trees
            .data
            .get(VersionedKey::new(*id, version).encode())
            .map_err(engine_err("read a row"))?
            .ok_or_else(|| StoreError::Corrupt {
                what: format!(
                    "row {} version {version} is named by its latest pointer but missing",
                    uuid::Uuid::from_bytes(*id)
                ),
            })?;
        let record = Record::from_bytes(&raw).map_err(|err| StoreError::Corrupt {
            what: format!("row {}: {err}", uuid::Uuid::from_bytes(*id)),
        })?;
        if record.deleted {
            return Ok(RowState::Deleted { version });
        }
        let values = if need_values {
            e.decode_record(&record.data)?
        } else {
            Vec::new()
        };
        Ok(RowState::Live {
            version,
            values: Arc::new(values),
        })
    }

    /// Where a scoped insert goes (see [`IdScope`]): under its own id, under the id derived
    /// from (id, scope value), or nowhere (a duplicate of a stored row).
    fn place_scoped(
        &self,
        e: &EntityLayout,
        mut values: Values,
        scope: &IdScope,
        local: &HashMap<[u8; 16], RowState>,
        group: &HashMap<[u8; 16], RowState>,
    ) -> Result<Placed, StoreError> {
        let read = |id: &[u8; 16]| {
            let state = self.lookup(id, e, local, group, true, Depth::Recent)?;
            let live = match &state {
                RowState::Live { values, .. } => Some(values.clone()),
                _ => None,
            };
            Ok((live, state))
        };
        match scoped_slot(e, &values, scope, read)? {
            ScopedSlot::Duplicate(kind) => Ok(Placed::Duplicate(kind)),
            ScopedSlot::Free { id, derived, prev } => {
                if derived {
                    let given = values[e.id_pos].clone();
                    values[e.id_pos] = Value::Uuid(id);
                    values[e.field_pos(&scope.original_id_field)?] = given;
                }
                Ok(Placed::New { id, values, prev })
            }
        }
    }
}

/// Where [`Committer::place_scoped`] put a row.
enum Placed {
    New {
        id: [u8; 16],
        values: Values,
        prev: RowState,
    },
    Duplicate(Duplicate),
}

/// Where a scoped insert of `values` belongs (see [`IdScope`]).
pub(crate) enum ScopedSlot<T> {
    /// A live row holds its (scope, id): the insert repeats it or contradicts it.
    Duplicate(Duplicate),
    /// It goes under `id`: its own, or (`derived`) the one derived from (id, scope value)
    /// because another scope holds its own. `prev` is what `read` kept of that row id.
    Free {
        id: [u8; 16],
        derived: bool,
        prev: T,
    },
}

/// The one rule of scoped inserts, for the committer and for the store's look-ahead alike:
/// `read` gives a row id's live values (None when absent or deleted) and whatever else the
/// caller keeps of it.
pub(crate) fn scoped_slot<T>(
    e: &EntityLayout,
    values: &Values,
    scope: &IdScope,
    mut read: impl FnMut(&[u8; 16]) -> Result<(Option<Arc<Values>>, T), StoreError>,
) -> Result<ScopedSlot<T>, StoreError> {
    let scope_pos = e.field_pos(&scope.scope_field)?;
    let id = e.id_of(values);
    let (live, prev) = read(&id)?;
    let Some(old) = live else {
        return Ok(ScopedSlot::Free {
            id,
            derived: false,
            prev,
        });
    };
    if old[scope_pos] == values[scope_pos] {
        return Ok(ScopedSlot::Duplicate(compare_content(
            e, scope, &old, values,
        )?));
    }
    // The id is another scope's: this scope's row lives under a derived id.
    let scoped = scoped_id(&id, &values[scope_pos]);
    let (live, prev) = read(&scoped)?;
    match live {
        Some(old) => Ok(ScopedSlot::Duplicate(compare_content(
            e, scope, &old, values,
        )?)),
        None => Ok(ScopedSlot::Free {
            id: scoped,
            derived: true,
            prev,
        }),
    }
}

/// The row id of `id` within scope `scope_value` when another scope holds `id` itself.
pub fn scoped_id(id: &[u8; 16], scope_value: &Value) -> [u8; 16] {
    let mut name = Vec::with_capacity(40);
    name.extend_from_slice(b"streamtally scoped id\0");
    name.extend_from_slice(id);
    match scope_value {
        Value::Uuid(u) => name.extend_from_slice(u),
        other => name.extend_from_slice(display_value(other).as_bytes()),
    }
    *uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &name).as_bytes()
}

/// Whether a scoped insert repeats the stored row (`Same`) or contradicts it (`Conflict`).
fn compare_content(
    e: &EntityLayout,
    scope: &IdScope,
    stored: &Values,
    new: &Values,
) -> Result<Duplicate, StoreError> {
    for name in &scope.content_fields {
        let pos = e.field_pos(name)?;
        let (a, b) = (&stored[pos], &new[pos]);
        let same = match (e.fields[pos].ty, a, b) {
            (FieldType::Json, Value::String(x), Value::String(y)) => {
                x == y
                    || serde_json::from_str::<serde_json::Value>(x).ok()
                        == serde_json::from_str::<serde_json::Value>(y).ok()
            }
            _ => a == b,
        };
        if !same {
            return Ok(Duplicate::Conflict);
        }
    }
    Ok(Duplicate::Same)
}

/// `[tree u8][put 1 | delete 0][key len u32][key][value len u32][value]...`
pub fn encode_ops(ops: &[Op], out: &mut Vec<u8>) {
    for op in ops {
        out.push(op.tree);
        out.push(op.value.is_some() as u8);
        out.extend_from_slice(&(op.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&op.key);
        if let Some(v) = &op.value {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
}

pub fn decode_ops(mut p: &[u8]) -> Result<Vec<Op>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: "write-ahead log record with a valid checksum does not decode".into(),
    };
    let take = |p: &mut &[u8], n: usize| -> Result<Vec<u8>, StoreError> {
        if p.len() < n {
            return Err(corrupt());
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Ok(a.to_vec())
    };
    let mut ops = Vec::new();
    while !p.is_empty() {
        let head = take(&mut p, 2)?;
        let klen = u32::from_le_bytes(take(&mut p, 4)?.try_into().map_err(|_| corrupt())?);
        let key = take(&mut p, klen as usize)?;
        let value = if head[1] == 1 {
            let vlen = u32::from_le_bytes(take(&mut p, 4)?.try_into().map_err(|_| corrupt())?);
            Some(take(&mut p, vlen as usize)?)
        } else {
            None
        };
        ops.push(Op {
            tree: head[0],
            key,
            value,
        });
    }
    Ok(ops)
}

/// Applies operations to the trees. Idempotent: replaying a record gives the same state.
///
/// Atomicity comes from the write-ahead log, not from sled, so plain inserts are used:
/// measured here, sled 0.34 takes ~98k single inserts/s against ~65k/s through `apply_batch`.
/// The order serves readers: rows before the pointers and indexes that lead to them, replaced
/// row versions after the pointers that named them, the feed record last, so a reader that
/// sees a feed entry finds its row. Within each of those
/// steps the inserts of a large record are split over two threads (sled's trees take
/// concurrent writers): an insert costs ~10 us, most of a batch's commit time.
pub fn apply_ops(
    trees: &Trees,
    files: &BlockFiles,
    feed: &FeedLog,
    ops: Vec<Op>,
) -> Result<(), StoreError> {
    // Resident blocks are in memory only (`Blocks::apply`, and an open's replay).
    // Block files first, so a catalog row never names a missing file; removed ones last.
    let (blocks, ops): (Vec<Op>, Vec<Op>) = ops
        .into_iter()
        .filter(|op| op.tree != TREE_RESIDENT)
        .partition(|op| op.tree == TREE_BLOCKS);
    // The feed record last: a reader that sees an entry finds its row.
    let (records, mut ops): (Vec<Op>, Vec<Op>) =
        ops.into_iter().partition(|op| op.tree == TREE_FEED);
    for op in &blocks {
        if let Some(bytes) = &op.value {
            files.write(key_number(op)?, bytes)?;
        }
    }
    let rank = |op: &Op| match op.tree {
        TREE_DATA if op.value.is_some() => 0,
        TREE_TYPES | TREE_INDEX | TREE_META => 1,
        // A replaced version of a `latest_only` row goes once no pointer names it.
        TREE_DATA => 2,
        TREE_STMETA => 3,
        _ => 4,
    };
    ops.sort_by_key(rank);
    let mut rest = ops.as_slice();
    while let Some(first) = rest.first() {
        let step = rest
            .iter()
            .position(|op| rank(op) != rank(first))
            .unwrap_or(rest.len());
        let (now, later) = rest.split_at(step);
        apply_step(trees, now).map_err(|e| StoreError::Engine {
            path: files.store_dir(),
            op: "apply a write to the trees",
            message: e.to_string(),
        })?;
        rest = later;
    }
    for op in &records {
        if let Some(record) = &op.value {
            feed.append(key_number(op)?, record_entries(record), record)?;
        }
    }
    for op in &blocks {
        if op.value.is_none() {
            files.retire(key_number(op)?);
        }
    }
    Ok(())
}

/// The number a block or feed operation is keyed by: the block's number, the record's first
/// sequence (big-endian).
pub(crate) fn key_number(op: &Op) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(op.key.as_slice().try_into().map_err(
        |_| StoreError::Corrupt {
            what: format!(
                "block or feed operation with a key of {} bytes",
                op.key.len()
            ),
        },
    )?))
}

/// Whether a batch updates or deletes rows of a `@blocks` entity: it rewrites stored blocks,
/// so it runs at the start of a group, once every earlier group is applied (their blocks
/// are then in files and the catalog).
fn needs_applied(inner: &Inner, batch: &WriteBatch) -> bool {
    !batch.merges.is_empty()
        || !batch.expired.is_empty()
        || batch.mutations.iter().any(|m| match m {
            Mutation::Update { entity, .. } | Mutation::Delete { entity, .. } => inner
                .layout
                .entity(entity)
                .is_ok_and(|e| e.blocks.is_some()),
            _ => false,
        })
}

impl Committer {
    /// Waits until every logged group is applied (or the store failed).
    fn wait_applied(&mut self) {
        let last = self.next_commit - 1;
        while self.inner.applied_commit.load(Ordering::SeqCst) < last
            && self.inner.failure.lock().is_none()
        {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        self.unapplied.clear();
    }
}

/// Fewer operations than this are applied on the calling thread alone.
const PARALLEL_APPLY_MIN: usize = 512;

/// Applies operations that need no order among themselves.
fn apply_step(trees: &Trees, ops: &[Op]) -> Result<(), sled::Error> {
    let apply = |ops: &[&Op]| -> Result<(), sled::Error> {
        for op in ops {
            let tree = trees.get(op.tree);
            match &op.value {
                Some(v) => tree.insert(op.key.as_slice(), v.as_slice())?,
                None => tree.remove(op.key.as_slice())?,
            };
        }
        Ok(())
    };
    let all: Vec<&Op> = ops.iter().collect();
    if ops.len() < PARALLEL_APPLY_MIN {
        return apply(&all);
    }
    // Split by key, not by position: a batch may write one key twice (a row changed twice
    // moves its `latest:` pointer twice), and those writes must land in their order.
    let (a, b): (Vec<&Op>, Vec<&Op>) = all.into_iter().partition(|op| key_half(&op.key));
    std::thread::scope(|scope| {
        let other = scope.spawn(|| apply(&b));
        let mine = apply(&a);
        let other = other.join().expect("apply thread panicked");
        mine.and(other)
    })
}

/// Which of two halves a key is applied by (FNV-1a, lowest bit).
fn key_half(key: &[u8]) -> bool {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    hash & 1 == 0
}
