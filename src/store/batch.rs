//! `WriteBatch`: everything one atomic store write carries.

use ormdb_core::proto::Value;

/// A row as the caller gives it: field names and values. Missing optional fields are null;
/// fields with `@default(..)` may be left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub fields: Vec<(String, Value)>,
}

impl Row {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field (builder style).
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.push((name.to_string(), value.into()));
        self
    }

    /// Adds a field.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.fields.push((name.to_string(), value.into()));
    }

    /// The value of a field, if present (the last one when a field was added twice, as the
    /// store reads it on write).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The 16-byte id in field `id`, if present.
    pub fn id(&self) -> Option<[u8; 16]> {
        match self.get("id") {
            Some(Value::Uuid(u)) => Some(*u),
            _ => None,
        }
    }
}

/// One operation in a batch.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Insert if absent: a row whose id already exists is skipped (counted as a duplicate),
    /// so a replayed event never becomes a second row.
    Insert { entity: String, row: Row },
    /// Insert if absent, where a row's id is unique only within its scope (see
    /// [`IdScope`]): the same id in two scopes gives two rows.
    InsertScoped {
        entity: String,
        row: Row,
        scope: std::sync::Arc<IdScope>,
    },
    /// Insert or replace by the entity's `@unique` key; the id is derived from the key.
    Upsert { entity: String, row: Row },
    /// Replace an existing row (error if it does not exist).
    Update {
        entity: String,
        id: [u8; 16],
        row: Row,
    },
    /// Delete an existing row (error if it does not exist).
    Delete { entity: String, id: [u8; 16] },
}

/// How [`Mutation::InsertScoped`] keeps ids unique per scope (for events: per org).
///
/// The first row to use an id is stored under it. A row with the same id and the same scope
/// value is a duplicate; one with another scope value is stored under an id derived from
/// (id, scope value) with the given id kept in `original_id_field`, so that readers still see
/// the id the producer chose. A store written before scopes existed reads the same way: its
/// rows are the first users of their ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdScope {
    /// The field whose value scopes the id (`org_id`).
    pub scope_field: String,
    /// Where a row stored under a derived id keeps the id it was given (`event_id`).
    pub original_id_field: String,
    /// The fields that tell a re-send (all equal) from a conflict; `json` fields are compared
    /// as JSON values (key order and whitespace aside).
    pub content_fields: Vec<String>,
}

/// A scoped insert that was not stored because its (scope, id) was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicate {
    /// Stored with the same content.
    Same,
    /// Stored with other content: the first write wins.
    Conflict,
}

/// Inserts, upserts, consumer offsets and change-feed cursors committed as ONE atomic,
/// durable write.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub(crate) mutations: Vec<Mutation>,
    /// (topic, partition, next offset to read)
    pub(crate) offsets: Vec<(String, i32, i64)>,
    /// (cursor name, next sequence number to read)
    pub(crate) cursors: Vec<(String, u64)>,
    /// Block merges to register (the store's own, see `blocks::merge`).
    pub(crate) merges: Vec<super::blocks::merge::BlockMerge>,
    /// For deletes of `@blocks` rows: the block each id was found in (a hint: a row merged
    /// since is looked for again), so the committer need not search for rows older than the
    /// dedup window's id index.
    pub(crate) located: std::collections::HashMap<[u8; 16], u64>,
    /// Blocks dropped by retention (the store's own, see `blocks::retention`).
    pub(crate) expired: Vec<super::blocks::retention::Expiry>,
    /// ORMDB rows of `@blocks` entities moved into blocks (the store's own, see `migrate`).
    pub(crate) adopted: Vec<super::migrate::AdoptedRow>,
    /// Per mutation, an insert of a `@blocks` row validated on the writer's thread (see
    /// [`WriteBatch::prepare`]); empty when not prepared.
    pub(crate) prepared: Vec<Option<Prepared>>,
    /// The prepared inserts as resident blocks, one per entity, encoded on the writer's
    /// thread; the committer uses one when its block ends up with exactly those rows (no
    /// duplicate dropped, no other change to the entity's rows in the batch).
    pub(crate) prepared_blocks: Vec<PreparedBlock>,
}

#[derive(Debug, Clone)]
pub(crate) struct PreparedBlock {
    pub entity_no: u16,
    pub ids: Vec<[u8; 16]>,
    pub bytes: Vec<u8>,
}

/// An insert validated before it reaches the committer: its values and `@feed` bytes.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub values: super::layout::Values,
    pub feed: Option<Vec<u8>>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, entity: &str, row: Row) -> &mut Self {
        self.mutations.push(Mutation::Insert {
            entity: entity.to_string(),
            row,
        });
        self
    }

    /// Adds a [`Mutation::InsertScoped`].
    pub fn insert_scoped(
        &mut self,
        entity: &str,
        row: Row,
        scope: &std::sync::Arc<IdScope>,
    ) -> &mut Self {
        self.mutations.push(Mutation::InsertScoped {
            entity: entity.to_string(),
            row,
            scope: scope.clone(),
        });
        self
    }

    pub fn upsert(&mut self, entity: &str, row: Row) -> &mut Self {
        self.mutations.push(Mutation::Upsert {
            entity: entity.to_string(),
            row,
        });
        self
    }

    pub fn update(&mut self, entity: &str, id: [u8; 16], row: Row) -> &mut Self {
        self.mutations.push(Mutation::Update {
            entity: entity.to_string(),
            id,
            row,
        });
        self
    }

    pub fn delete(&mut self, entity: &str, id: [u8; 16]) -> &mut Self {
        self.mutations.push(Mutation::Delete {
            entity: entity.to_string(),
            id,
        });
        self
    }

    /// Records that `next_offset` is the next offset to read from `topic`/`partition`.
    pub fn set_offset(&mut self, topic: &str, partition: i32, next_offset: i64) -> &mut Self {
        self.offsets
            .push((topic.to_string(), partition, next_offset));
        self
    }

    /// Records that change-feed reader `name` has consumed everything below `next_seq`.
    pub fn set_cursor(&mut self, name: &str, next_seq: u64) -> &mut Self {
        self.cursors.push((name.to_string(), next_seq));
        self
    }

    pub fn len(&self) -> usize {
        self.mutations.len()
            + self.offsets.len()
            + self.cursors.len()
            + self.merges.len()
            + self.expired.len()
            + self.adopted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn mutations(&self) -> &[Mutation] {
        &self.mutations
    }

    /// Validates the inserts of `@blocks` rows (events) and encodes their `@feed` values on
    /// the calling thread, so that the committer, one thread for every writer, only places
    /// them. A row that fails validation is left for the committer, which reports it.
    pub(crate) fn prepare(&mut self, layout: &super::layout::Layout, now_us: i64) {
        let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(self.mutations.len());
        // (entity, block key, mutation) of each prepared insert.
        let mut placed: Vec<(u16, Vec<u8>, usize)> = Vec::new();
        for (n, m) in self.mutations.iter_mut().enumerate() {
            let (entity, row, scope) = match m {
                Mutation::Insert { entity, row } => (entity, row, None),
                Mutation::InsertScoped { entity, row, scope } => (entity, row, Some(scope)),
                _ => {
                    prepared.push(None);
                    continue;
                }
            };
            let Some((e, keys)) = layout
                .entity(entity)
                .ok()
                .and_then(|e| Some((e, e.blocks.as_ref()?)))
            else {
                prepared.push(None);
                continue;
            };
            // The committer reads the prepared values: the row's are moved out (an invalid
            // row stays as it was, for the committer to report).
            let Ok(values) = e.validate_owned(row, now_us) else {
                prepared.push(None);
                continue;
            };
            // A scoped insert may move the id into another field: `@feed` values that name
            // either are left to the committer.
            let mut moved = scope
                .and_then(|s| e.field_pos(&s.original_id_field).ok())
                .into_iter()
                .chain([e.id_pos]);
            let fixed = moved.all(|p| !e.feed_fields.contains(&p));
            let feed = (fixed && !e.feed_fields.is_empty()).then(|| e.feed_values(&values));
            placed.push((e.no, keys.key_of(&values), n));
            prepared.push(Some(Prepared { values, feed }));
        }
        if placed.is_empty() {
            return;
        }
        // One block per entity, its rows in block-key order then batch order (a stable
        // sort): the order the committer gathers them in (`Draft::seal_blocks`).
        placed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for run in placed.chunk_by(|a, b| a.0 == b.0) {
            let entity_no = run[0].0;
            let Some(e) = layout.by_no(entity_no) else {
                continue;
            };
            let rows: Vec<&super::layout::Values> = run
                .iter()
                .filter_map(|(_, _, n)| prepared[*n].as_ref().map(|p| &p.values))
                .collect();
            let Ok(bytes) = super::blocks::codec::encode_block_with(
                &e.fields,
                &rows,
                super::blocks::RESIDENT_COMPRESSION,
            ) else {
                continue;
            };
            let ids = rows.iter().map(|r| e.id_of(r)).collect();
            self.prepared_blocks.push(PreparedBlock {
                entity_no,
                ids,
                bytes,
            });
        }
        self.prepared = prepared;
    }
}

/// What a committed batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit number (one per batch, contiguous).
    pub commit: u64,
    /// Rows inserted, updated (upserts that changed a row included) and deleted.
    pub inserted: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Inserts skipped because the id already existed, and upserts that changed nothing.
    pub unchanged: usize,
    /// The scoped inserts that were duplicates: (index of the mutation in the batch, kind).
    pub duplicates: Vec<(usize, Duplicate)>,
    /// The change-feed sequence numbers this batch produced: `first_seq..next_seq`.
    pub first_seq: u64,
    pub next_seq: u64,
}
