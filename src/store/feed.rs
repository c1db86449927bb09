//! The durable change feed: every committed insert, update and delete, in commit order,
//! numbered by a contiguous sequence, written in the same atomic write as the rows.
//!
//! One feed record per commit, keyed by its first sequence number, lists the changes as
//! (entity, op, id, version, previous version): the rows themselves stay in ormdb-core's data
//! tree, whose versioned keys keep both the before and the after image.

use super::codec::decode_component;
use super::{Inner, Store, StoreError, Value};
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Insert,
    Update,
    Delete,
}

pub(crate) struct FeedItem {
    pub entity_no: u16,
    pub op: ChangeOp,
    pub id: [u8; 16],
    pub version: u64,
    pub prev_version: u64,
    /// The entity's `@feed` field values before and after the change, encoded with
    /// `codec::encode_component` one after the other (empty when it declares none).
    pub old_fields: Option<Vec<u8>>,
    pub new_fields: Option<Vec<u8>>,
}

const ITEM_BYTES: usize = 2 + 1 + 16 + 8 + 8;
/// Set in a record's item count when every item is followed by its `@feed` values:
/// `[old_len u32][old][new_len u32][new]`, a length of u32::MAX meaning none.
const WITH_FIELDS: u32 = 0x8000_0000;
const NO_FIELDS: u32 = u32::MAX;
/// Set in a record's item count when what follows the count is zstd-compressed (records of
/// more than [`COMPRESS_FROM`] bytes: a batch of events, whose org ids, names, versions and
/// nearby timestamps repeat).
const COMPRESSED: u32 = 0x4000_0000;
const COMPRESS_FROM: usize = 2048;

/// One change, as readers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEntry {
    pub seq: u64,
    pub entity: String,
    pub op: ChangeOp,
    pub id: [u8; 16],
    /// Version of the row after the change (for a delete: the tombstone's).
    pub version: u64,
    /// Version before the change, for updates and deletes.
    pub prev_version: Option<u64>,
    /// The entity's `@feed` field values (in `@feed` order) before the change (updates and
    /// deletes) and after it (inserts and updates); None when it declares no `@feed`.
    pub old_fields: Option<Vec<Value>>,
    pub new_fields: Option<Vec<Value>>,
}

pub(crate) fn encode_feed_record(items: &[FeedItem]) -> Vec<u8> {
    let extra: usize = items
        .iter()
        .map(|it| {
            8 + it.old_fields.as_ref().map_or(0, Vec::len)
                + it.new_fields.as_ref().map_or(0, Vec::len)
        })
        .sum();
    let mut out = Vec::with_capacity(4 + items.len() * ITEM_BYTES + extra);
    out.extend_from_slice(&(items.len() as u32 | WITH_FIELDS).to_le_bytes());
    for it in items {
        out.extend_from_slice(&it.entity_no.to_le_bytes());
        out.push(match it.op {
            ChangeOp::Insert => 0,
            ChangeOp::Update => 1,
            ChangeOp::Delete => 2,
        });
        out.extend_from_slice(&it.id);
        out.extend_from_slice(&it.version.to_le_bytes());
        out.extend_from_slice(&it.prev_version.to_le_bytes());
        for part in [&it.old_fields, &it.new_fields] {
            match part {
                Some(bytes) => {
                    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    out.extend_from_slice(bytes);
                }
                None => out.extend_from_slice(&NO_FIELDS.to_le_bytes()),
            }
        }
    }
    if out.len() > COMPRESS_FROM {
        if let Ok(body) = zstd::stream::encode_all(&out[4..], 1) {
            if body.len() + 4 < out.len() {
                let count = u32::from_le_bytes(out[..4].try_into().expect("4 bytes"));
                let mut packed = Vec::with_capacity(4 + body.len());
                packed.extend_from_slice(&(count | COMPRESSED).to_le_bytes());
                packed.extend_from_slice(&body);
                return packed;
            }
        }
    }
    out
}

fn record_header(value: &[u8]) -> (u64, bool) {
    let n = value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    (
        (n & !(WITH_FIELDS | COMPRESSED)) as u64,
        n & WITH_FIELDS != 0,
    )
}

/// A record as written by [`encode_feed_record`] before compression.
fn unpacked(value: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
    let n = value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    if n & COMPRESSED == 0 {
        return Ok(std::borrow::Cow::Borrowed(value));
    }
    let body = zstd::stream::decode_all(&value[4..]).map_err(|e| StoreError::Corrupt {
        what: format!("change-feed record does not decompress: {e}"),
    })?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(n & !COMPRESSED).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(std::borrow::Cow::Owned(out))
}

/// How many entries a record holds.
pub(crate) fn record_entries(value: &[u8]) -> u64 {
    record_header(value).0
}

impl Store {
    /// The next sequence number the feed will assign: entries `< head` exist.
    pub fn feed_head(&self) -> u64 {
        *self.inner().feed_head.borrow()
    }

    /// The oldest sequence number still kept.
    pub fn feed_floor(&self) -> u64 {
        self.inner().feed_floor.load(Ordering::SeqCst)
    }

    /// Up to `max` entries starting at `from_seq` (inclusive), in order.
    pub fn feed_read(&self, from_seq: u64, max: usize) -> Result<Vec<ChangeEntry>, StoreError> {
        let inner = self.inner();
        let floor = inner.feed_floor.load(Ordering::SeqCst);
        if from_seq < floor {
            return Err(StoreError::FeedTruncated {
                requested: from_seq,
                oldest: floor,
            });
        }
        let head = self.feed_head();
        let mut out = Vec::new();
        if from_seq >= head || max == 0 {
            return Ok(out);
        }
        let whole = inner.feed_log.read_from(from_seq, |first, record| {
            decode_record(inner, first, record, (from_seq, head, max), &mut out)
        })?;
        // Raised before a truncation removes records: a reader never silently skips one.
        let floor = inner.feed_floor.load(Ordering::SeqCst);
        if !whole || from_seq < floor {
            return Err(StoreError::FeedTruncated {
                requested: from_seq,
                oldest: floor,
            });
        }
        Ok(out)
    }

    /// Waits until entry `seq` exists (that is, until `feed_head() > seq`).
    pub async fn feed_wait_for(&self, seq: u64) {
        let mut rx = self.inner().feed_head.subscribe();
        let _ = rx.wait_for(|head| *head > seq).await;
    }
}

/// Decodes the entries of one feed record from `from_seq` on into `out`, up to `head` and
/// `max` entries; false once there are enough.
fn decode_record(
    inner: &Inner,
    first: u64,
    v: &[u8],
    (from_seq, head, max): (u64, u64, usize),
    out: &mut Vec<ChangeEntry>,
) -> Result<bool, StoreError> {
    let n = record_entries(v);
    if first.saturating_add(n) <= from_seq {
        return Ok(true);
    }
    let v = unpacked(v)?;
    let with_fields = record_header(&v).1;
    let corrupt = || StoreError::Corrupt {
        what: format!("change-feed record at {first} is short"),
    };
    let mut p = 4usize;
    for i in 0..n {
        let seq = first + i;
        let b = v.get(p..p + ITEM_BYTES).ok_or_else(corrupt)?;
        p += ITEM_BYTES;
        let mut parts: [Option<&[u8]>; 2] = [None, None];
        if with_fields {
            for part in &mut parts {
                let len = v
                    .get(p..p + 4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes)
                    .ok_or_else(corrupt)?;
                p += 4;
                if len != NO_FIELDS {
                    *part = Some(v.get(p..p + len as usize).ok_or_else(corrupt)?);
                    p += len as usize;
                }
            }
        }
        if seq < from_seq {
            continue;
        }
        if seq >= head || out.len() >= max {
            return Ok(false);
        }
        let entity_no = u16::from_le_bytes([b[0], b[1]]);
        let layout = inner
            .layout
            .by_no(entity_no)
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("change-feed entry {seq} names entity #{entity_no}"),
            })?;
        let fields = |part: Option<&[u8]>| -> Result<Option<Vec<Value>>, StoreError> {
            let Some(mut bytes) = part else {
                return Ok(None);
            };
            let mut values = Vec::with_capacity(layout.feed_fields.len());
            for &pos in &layout.feed_fields {
                if bytes.is_empty() {
                    // Written before this field was appended to the entity's `@feed`.
                    values.push(Value::Null);
                    continue;
                }
                let (value, rest) =
                    decode_component(layout.fields[pos].ty, bytes).ok_or_else(|| {
                        StoreError::Corrupt {
                            what: format!("change-feed entry {seq}: bad @feed values"),
                        }
                    })?;
                values.push(value);
                bytes = rest;
            }
            Ok(Some(values))
        };
        let prev = u64::from_le_bytes(b[27..35].try_into().unwrap_or_default());
        out.push(ChangeEntry {
            seq,
            entity: layout.name.clone(),
            op: match b[2] {
                0 => ChangeOp::Insert,
                1 => ChangeOp::Update,
                _ => ChangeOp::Delete,
            },
            id: b[3..19].try_into().unwrap_or_default(),
            version: u64::from_le_bytes(b[19..27].try_into().unwrap_or_default()),
            prev_version: (prev != 0).then_some(prev),
            old_fields: fields(parts[0])?,
            new_fields: fields(parts[1])?,
        });
    }
    Ok(true)
}

/// Drops the feed's segments entirely below the lowest registered cursor (see
/// `feed_log`); none registered: keeps
/// all (for a reader that registers later), or, once readers were released
/// (`Store::release_feed_readers`), drops all.
pub(crate) fn truncate(inner: &Inner) -> Result<(), StoreError> {
    let mut lowest: Option<u64> = None;
    let cursor = inner.layout.entity("FeedCursor")?;
    let pos = cursor.field_pos("next_seq")?;
    // Not ormdb-core's `scan_entity_type`: it skips a row replaced while it reads it, and a
    // skipped cursor would let the feed be truncated past what its reader has read.
    inner.for_each_latest("FeedCursor", |_, _, record| {
        if let ormdb_core::proto::Value::Int64(n) = cursor.decode_record(&record.data)?[pos] {
            lowest = Some(lowest.map_or(n as u64, |l| l.min(n as u64)));
        }
        Ok(())
    })?;
    let lowest = match lowest {
        Some(lowest) => lowest,
        None if inner.feed_kept_for_new_readers.load(Ordering::SeqCst) => return Ok(()),
        None => *inner.feed_head.borrow(),
    };
    inner.feed_log.truncate_below(lowest, &inner.feed_floor)?;
    Ok(())
}
