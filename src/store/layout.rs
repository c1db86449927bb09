//! The schema compiled for the write and read paths: field positions, index numbers, and row
//! validation (types, required fields, defaults, JSON).

use super::codec::{display_value, encode_component, upsert_id, value_type_name};
use super::{Row, StoreError};
use crate::schema::{Entity, FieldDefault, FieldType, Schema};
use ormdb_core::proto::Value;
use rustc_hash::FxHashMap as HashMap;

/// Entities whose writes are bookkeeping and stay out of the change feed (a feed reader
/// writing its cursor must not produce feed entries for itself to read; the rollups' state
/// parts change with their rows, whose entries say so).
pub const UNFED_ENTITIES: &[&str] = &[
    "ConsumerOffset",
    "FeedCursor",
    "EventBlock",
    "RollupStatePart",
    "AlertRule",
    "AlertState",
    "AlertFiring",
    "AlertDelivery",
    "OrgSettings",
];

#[derive(Debug, Clone)]
pub struct FieldLayout {
    pub name: String,
    pub ty: FieldType,
    pub optional: bool,
    pub default: Option<FieldDefault>,
}

#[derive(Debug, Clone)]
pub struct IndexLayout {
    /// Key prefix of this index in the index tree (global across entities).
    pub no: u8,
    /// Positions of the indexed fields, in key order.
    pub fields: Vec<usize>,
}

/// A `@postings` index: per key and commit, one tree entry listing the rows that entered or
/// left that key in the commit, each with the entity's `@feed` fields. Readers replay a key's
/// entries in commit order (later entries win) to get its rows, so a batch of 1,000 events
/// writes one entry per distinct key rather than one per event.
#[derive(Debug, Clone)]
pub struct PostingLayout {
    /// Key prefix of this index in the index tree (numbered with the `@index`es).
    pub no: u8,
    /// Positions of the key fields, in key order.
    pub fields: Vec<usize>,
    /// The last key field is a timestamp, bucketed in the key to [`POSTING_BUCKET_US`].
    pub bucketed: bool,
}

/// Width of the timestamp buckets of a `@postings` key: one minute. Live batches span
/// seconds of event time, so a batch writes about one entry per org; a read of the newest
/// events replays at most a minute of an org's entries before it can stop.
pub const POSTING_BUCKET_US: i64 = 60_000_000;

#[derive(Debug, Clone)]
pub struct EntityLayout {
    pub no: u16,
    pub name: String,
    pub fields: Vec<FieldLayout>,
    pub by_name: HashMap<String, usize>,
    pub id_pos: usize,
    pub unique: Option<Vec<usize>>,
    pub indexes: Vec<IndexLayout>,
    pub fed: bool,
    /// Positions of the `@feed` fields, whose values each change-feed entry carries.
    pub feed_fields: Vec<usize>,
    pub postings: Vec<PostingLayout>,
    /// `@latest_only`: a write removes the row's previous version.
    pub latest_only: bool,
    /// `@blocks`: rows live in columnar blocks (see `store::blocks`), not as ORMDB rows.
    pub blocks: Option<BlockKeys>,
}

/// Fields of a `@blocks` entity that shape its blocks, found by name: a block holds rows of
/// one `org_id`, `topic` and `partition` (those the entity has), and the catalog keeps each
/// block's range of `offset` and `timestamp`.
#[derive(Debug, Clone, Default)]
pub struct BlockKeys {
    pub org: Option<usize>,
    pub topic: Option<usize>,
    pub partition: Option<usize>,
    pub offset: Option<usize>,
    pub time: Option<usize>,
    /// The entity registering the blocks: `<Entity>Block`.
    pub catalog: String,
}

impl BlockKeys {
    /// The values a block's rows share.
    pub fn key_of(&self, values: &Values) -> Vec<u8> {
        let mut key = Vec::new();
        for pos in [self.org, self.topic, self.partition].into_iter().flatten() {
            super::codec::encode_component(&mut key, &values[pos]);
        }
        key
    }
}

/// Values of one row in schema field order (`Value::Null` for an absent optional field).
pub type Values = Vec<Value>;

#[derive(Debug)]
pub struct Layout {
    pub entities: Vec<EntityLayout>,
    by_name: HashMap<String, usize>,
}

impl Layout {
    pub fn new(schema: &Schema) -> Result<Layout, StoreError> {
        let mut entities = Vec::new();
        let mut index_no: u16 = 0;
        for (no, e) in schema.entities.iter().enumerate() {
            entities.push(compile_entity(no as u16, e, &mut index_no)?);
        }
        if index_no > 255 {
            return Err(StoreError::Schema(format!(
                "schema declares {index_no} indexes; the store supports at most 255"
            )));
        }
        let by_name = entities
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        let layout = Layout { entities, by_name };
        for e in &layout.entities {
            if let Some(keys) = &e.blocks {
                let catalog = layout.entity(&keys.catalog).map_err(|_| {
                    StoreError::Schema(format!(
                        "entity {} is @blocks but schema.ormdb declares no entity {} to register its blocks",
                        e.name, keys.catalog
                    ))
                })?;
                for field in ["block_no", "row_count", "bytes", "level", "version"] {
                    catalog.field_pos(field).map_err(|_| {
                        StoreError::Schema(format!(
                            "entity {}: missing field '{field}'",
                            keys.catalog
                        ))
                    })?;
                }
                if !e.postings.is_empty() || !e.indexes.is_empty() {
                    return Err(StoreError::Schema(format!(
                        "entity {} is @blocks: its blocks are found through {}, so it declares no @index or @postings",
                        e.name, keys.catalog
                    )));
                }
            }
        }
        Ok(layout)
    }

    /// What the index tree's layout depends on: every index's number, kind and fields. A
    /// store opened with a different description rebuilds its index tree.
    pub fn index_description(&self) -> String {
        let mut out = String::from("v1");
        for e in &self.entities {
            let names = |ps: &[usize]| {
                ps.iter()
                    .map(|&p| e.fields[p].name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for idx in &e.indexes {
                out += &format!(";{}:index#{}[{}]", e.name, idx.no, names(&idx.fields));
            }
            for p in &e.postings {
                out += &format!(
                    ";{}:postings#{}[{}]carry[{}]",
                    e.name,
                    p.no,
                    names(&p.fields),
                    names(&e.feed_fields)
                );
            }
        }
        out
    }

    pub fn entity(&self, name: &str) -> Result<&EntityLayout, StoreError> {
        self.by_name
            .get(name)
            .map(|&i| &self.entities[i])
            .ok_or_else(|| StoreError::UnknownEntity {
                entity: name.to_string(),
                known: self
                    .entities
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn by_no(&self, no: u16) -> Option<&EntityLayout> {
        self.entities.get(no as usize)
    }
}

fn compile_entity(no: u16, e: &Entity, index_no: &mut u16) -> Result<EntityLayout, StoreError> {
    let fields: Vec<FieldLayout> = e
        .fields
        .iter()
        .map(|f| FieldLayout {
            name: f.name.clone(),
            ty: f.ty,
            optional: f.optional,
            default: f.default.clone(),
        })
        .collect();
    let by_name: HashMap<String, usize> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), i))
        .collect();
    let pos = |name: &str| {
        by_name.get(name).copied().ok_or_else(|| {
            StoreError::Schema(format!(
                "entity {}: index names unknown field '{name}'",
                e.name
            ))
        })
    };
    let id_pos = e
        .fields
        .iter()
        .position(|f| f.is_id)
        .ok_or_else(|| StoreError::Schema(format!("entity {} has no @id field", e.name)))?;
    let mut unique = None;
    let mut indexes = Vec::new();
    for idx in &e.indexes {
        let positions = idx
            .fields
            .iter()
            .map(|f| pos(f))
            .collect::<Result<Vec<_>, _>>()?;
        if idx.unique {
            // The unique key becomes the row id; no separate index is needed to enforce it.
            if unique.is_none() {
                unique = Some(positions);
            }
        } else {
            indexes.push(IndexLayout {
                no: (*index_no).min(255) as u8,
                fields: positions,
            });
            *index_no += 1;
        }
    }
    let feed_fields = e
        .feed
        .iter()
        .map(|f| pos(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut postings = Vec::new();
    for key in &e.postings {
        let positions = key.iter().map(|f| pos(f)).collect::<Result<Vec<_>, _>>()?;
        if let Some(f) = key.iter().find(|f| !e.feed.contains(f)) {
            return Err(StoreError::Schema(format!(
                "entity {}: @postings field '{f}' must also be a @feed field (posting entries carry the @feed fields)",
                e.name
            )));
        }
        let bucketed = positions
            .last()
            .is_some_and(|&p| fields[p].ty == FieldType::Timestamp);
        postings.push(PostingLayout {
            no: (*index_no).min(255) as u8,
            fields: positions,
            bucketed,
        });
        *index_no += 1;
    }
    let find = |name: &str| by_name.get(name).copied();
    let blocks = e.blocks.then(|| BlockKeys {
        org: find("org_id"),
        topic: find("topic"),
        partition: find("partition"),
        offset: find("offset"),
        time: find("timestamp"),
        catalog: format!("{}Block", e.name),
    });
    Ok(EntityLayout {
        no,
        name: e.name.clone(),
        fields,
        by_name,
        id_pos,
        unique,
        indexes,
        fed: !UNFED_ENTITIES.contains(&e.name.as_str()),
        feed_fields,
        postings,
        latest_only: e.latest_only,
        blocks,
    })
}

impl EntityLayout {
    pub fn field_pos(&self, name: &str) -> Result<usize, StoreError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| StoreError::UnknownField {
                entity: self.name.clone(),
                field: name.to_string(),
            })
    }

    /// Checks a row against the schema and returns its values in field order, with defaults
    /// applied and, for entities with a `@unique` key, the id derived from the key.
    pub fn validate(&self, row: &Row, now_us: i64) -> Result<Values, StoreError> {
        let positions = self.checked(row)?;
        let mut values: Vec<Option<Value>> = vec![None; self.fields.len()];
        for ((_, value), pos) in row.fields.iter().zip(positions) {
            values[pos] = Some(convert(self.fields[pos].ty, value.clone()));
        }
        self.complete(values, now_us)
    }

    /// [`Self::validate`] that moves the row's values instead of copying them; the row is
    /// only taken apart once `checked` found it valid, so on an error it is as it was.
    pub fn validate_owned(&self, row: &mut Row, now_us: i64) -> Result<Values, StoreError> {
        if self.unique.is_some() {
            // The id check needs the values in order: not worth a second path.
            return self.validate(row, now_us);
        }
        let positions = self.checked(row)?;
        let mut values: Vec<Option<Value>> = vec![None; self.fields.len()];
        for ((_, value), pos) in std::mem::take(&mut row.fields).into_iter().zip(positions) {
            values[pos] = Some(convert(self.fields[pos].ty, value));
        }
        self.complete(values, now_us)
    }

    /// The position of each of the row's fields, once every value is checked against its
    /// field's type and every required field is given (nothing is copied).
    fn checked(&self, row: &Row) -> Result<Vec<usize>, StoreError> {
        let positions = row
            .fields
            .iter()
            .map(|(name, value)| {
                let pos = self.field_pos(name)?;
                self.check_value(&self.fields[pos], value)?;
                Ok(pos)
            })
            .collect::<Result<Vec<usize>, StoreError>>()?;
        // Per field: absent (None), or whether its value is Null.
        let mut given: Vec<Option<bool>> = vec![None; self.fields.len()];
        for ((_, value), &pos) in row.fields.iter().zip(&positions) {
            given[pos] = Some(*value == Value::Null);
        }
        for (pos, (field, given)) in self.fields.iter().zip(given).enumerate() {
            // Null given, or absent with no default to fill it (see `complete`).
            let null = given.unwrap_or(field.default.is_none());
            // The id of an entity with a `@unique` key is derived from the key.
            let derived = pos == self.id_pos && self.unique.is_some();
            if null && !field.optional && !derived {
                return Err(StoreError::MissingField {
                    entity: self.name.clone(),
                    field: field.name.clone(),
                });
            }
        }
        Ok(positions)
    }

    /// Defaults and the derived id, over checked values in field order.
    fn complete(&self, values: Vec<Option<Value>>, now_us: i64) -> Result<Values, StoreError> {
        let mut out = Vec::with_capacity(values.len());
        for (pos, (slot, field)) in values.into_iter().zip(&self.fields).enumerate() {
            let v = match slot {
                Some(v) => v,
                None => match field.default {
                    Some(FieldDefault::Uuid) if pos != self.id_pos || self.unique.is_none() => {
                        Value::Uuid(*uuid::Uuid::new_v4().as_bytes())
                    }
                    Some(FieldDefault::Now) => Value::Timestamp(now_us),
                    // Optional, or the id that the key below derives.
                    _ => Value::Null,
                },
            };
            out.push(v);
        }
        if let Some(key) = &self.unique {
            let key_values: Vec<&Value> = key.iter().map(|&p| &out[p]).collect();
            let derived = Value::Uuid(upsert_id(&self.name, &key_values));
            if out[self.id_pos] != Value::Null && out[self.id_pos] != derived {
                return Err(StoreError::IdMismatch {
                    entity: self.name.clone(),
                    given: display_value(&out[self.id_pos]),
                    derived: display_value(&derived),
                });
            }
            out[self.id_pos] = derived;
        }
        Ok(out)
    }

    /// Whether `value` may be stored in `field` (see [`convert`] for the widenings).
    fn check_value(&self, field: &FieldLayout, value: &Value) -> Result<(), StoreError> {
        let fits = match (field.ty, value) {
            (_, Value::Null)
            | (FieldType::Uuid, Value::Uuid(_))
            | (FieldType::String, Value::String(_))
            | (FieldType::Timestamp, Value::Timestamp(_))
            | (FieldType::Int32, Value::Int32(_))
            | (FieldType::Int64, Value::Int32(_) | Value::Int64(_))
            | (FieldType::Float64, Value::Int32(_) | Value::Int64(_) | Value::Float64(_))
            | (FieldType::Bool, Value::Bool(_)) => true,
            (FieldType::Json, Value::String(s)) => {
                if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(s) {
                    return Err(StoreError::InvalidJson {
                        entity: self.name.clone(),
                        field: field.name.clone(),
                        value: display_value(value),
                        error: e.to_string(),
                    });
                }
                true
            }
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(StoreError::FieldType {
                entity: self.name.clone(),
                field: field.name.clone(),
                expected: field.ty.name(),
                got: value_type_name(value),
                value: display_value(value),
            })
        }
    }

    /// The id of a validated row.
    pub fn id_of(&self, values: &Values) -> [u8; 16] {
        match &values[self.id_pos] {
            Value::Uuid(u) => *u,
            _ => [0; 16],
        }
    }

    /// The key of `values` in index `idx`: prefix, components, then the row id.
    pub fn index_key(&self, idx: &IndexLayout, values: &Values, id: &[u8; 16]) -> Vec<u8> {
        let mut key = Vec::with_capacity(64);
        key.push(idx.no);
        for &p in &idx.fields {
            encode_component(&mut key, &values[p]);
        }
        key.extend_from_slice(id);
        key
    }

    /// The key of `values` in posting index `p`, without the commit that ends stored keys:
    /// prefix, then components (a trailing timestamp bucketed).
    pub fn posting_key(&self, p: &PostingLayout, values: &Values) -> Vec<u8> {
        let mut key = Vec::with_capacity(48);
        key.push(p.no);
        for (i, &pos) in p.fields.iter().enumerate() {
            match &values[pos] {
                Value::Timestamp(t) if p.bucketed && i + 1 == p.fields.len() => encode_component(
                    &mut key,
                    &Value::Timestamp(t.div_euclid(POSTING_BUCKET_US) * POSTING_BUCKET_US),
                ),
                v => encode_component(&mut key, v),
            }
        }
        key
    }

    /// The `@feed` fields of `values`, encoded one after another.
    pub fn feed_values(&self, values: &Values) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        for &pos in &self.feed_fields {
            encode_component(&mut out, &values[pos]);
        }
        out
    }

    /// Values in ormdb-core's record encoding (absent optional fields are left out).
    pub fn encode_record(&self, values: &Values) -> Result<Vec<u8>, StoreError> {
        let pairs: Vec<(String, Value)> = self
            .fields
            .iter()
            .zip(values)
            .filter(|(_, v)| **v != Value::Null)
            .map(|(f, v)| (f.name.clone(), v.clone()))
            .collect();
        ormdb_core::query::encode_entity(&pairs).map_err(|e| StoreError::Corrupt {
            what: format!("{}: cannot encode row: {e}", self.name),
        })
    }

    /// Decodes ormdb-core's record encoding into values in field order.
    pub fn decode_record(&self, data: &[u8]) -> Result<Values, StoreError> {
        let pairs = ormdb_core::query::decode_entity(data).map_err(|e| StoreError::Corrupt {
            what: format!("{}: cannot decode row: {e}", self.name),
        })?;
        let mut out = vec![Value::Null; self.fields.len()];
        for (name, v) in pairs {
            if let Some(&p) = self.by_name.get(&name) {
                out[p] = v;
            }
        }
        Ok(out)
    }

    /// Values as a `Row` with every field named.
    pub fn to_row(&self, values: Values) -> Row {
        Row {
            fields: self
                .fields
                .iter()
                .map(|f| f.name.clone())
                .zip(values)
                .collect(),
        }
    }
}

/// A checked value in its field's type: integers widen to int64 and float64 fields.
fn convert(ty: FieldType, value: Value) -> Value {
    match (ty, value) {
        (FieldType::Int64, Value::Int32(n)) => Value::Int64(n as i64),
        (FieldType::Float64, Value::Int32(n)) => Value::Float64(n as f64),
        (FieldType::Float64, Value::Int64(n)) => Value::Float64(n as f64),
        (_, v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `validate_owned` answers exactly as `validate` does, values or error, and leaves an
    /// invalid row as it was.
    #[test]
    fn owned_validation_matches_validation_and_keeps_invalid_rows() {
        let schema = Schema::parse(include_str!("../../schema.ormdb")).expect("schema");
        let layout = Layout::new(&schema).expect("layout");
        let e = layout.entity("Event").expect("Event");
        let valid = Row::new()
            .with("id", Value::Uuid([7; 16]))
            .with("org_id", Value::Uuid([1; 16]))
            .with("event_type", Value::String("track".into()))
            .with("event_name", Value::String("click".into()))
            .with("properties", Value::String(r#"{"a":[1,{"b":"ü"}]}"#.into()))
            .with("timestamp", Value::Timestamp(1_700_000_000_123_456))
            .with("date", Value::String("2023-11-14".into()))
            .with("hour", Value::Int32(22))
            .with("offset", Value::Int32(5));
        let cases = [
            valid.clone(),
            // Absent id: a fresh one is drawn, so only the outcome's kind is compared.
            {
                let mut r = valid.clone();
                r.fields.retain(|(n, _)| n != "id");
                r
            },
            valid.clone().with("event_type", Value::Null),
            {
                let mut r = valid.clone();
                r.fields.retain(|(n, _)| n != "event_name");
                r
            },
            valid.clone().with("hour", Value::String("22".into())),
            valid.clone().with("colour", Value::String("red".into())),
            valid
                .clone()
                .with("properties", Value::String("{not json".into())),
            valid.clone().with("user_id", Value::Null),
        ];
        for (n, row) in cases.into_iter().enumerate() {
            let by_ref = e.validate(&row, 42);
            let mut owned_row = row.clone();
            let owned = e.validate_owned(&mut owned_row, 42);
            match (&by_ref, &owned) {
                (Ok(a), Ok(b)) if n == 1 => {
                    assert_eq!(a.len(), b.len(), "case {n}");
                    assert!(
                        owned_row.fields.is_empty(),
                        "case {n}: a valid row is taken"
                    );
                }
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b, "case {n}");
                    assert!(
                        owned_row.fields.is_empty(),
                        "case {n}: a valid row is taken"
                    );
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a.to_string(), b.to_string(), "case {n}");
                    assert_eq!(
                        owned_row.fields, row.fields,
                        "case {n}: an invalid row is kept"
                    );
                }
                _ => panic!("case {n}: {by_ref:?} against {owned:?}"),
            }
        }
    }
}
