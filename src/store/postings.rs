//! `@postings` indexes: batch-granular index entries.
//!
//! A regular `@index` writes one tree entry per row, and each sled insert costs ~10 us here:
//! three indexes on events were half of the committer's time. A posting index writes one
//! entry per distinct key per commit instead: `[index no][key components][commit u64 BE]`,
//! whose value lists what happened to rows under that key in that commit:
//!
//! ```text
//! entry := 1 id[16] feed_values   (the row is under this key, with these @feed values)
//!        | 0 id[16]               (the row left this key: moved to another key or deleted)
//! ```
//!
//! `feed_values` are the entity's `@feed` fields, encoded like index components, so counts,
//! distinct counts, group counts and range filters over them need no row reads. A reader
//! replays a key's entries in commit order, later entries winning; the key's rows are what
//! is left. A trailing timestamp key field is bucketed to the minute, so events of one org and
//! minute share a key and a time range is a range of buckets.

use super::codec::component_len;
use super::layout::EntityLayout;
use super::StoreError;

const SET: u8 = 1;
const REMOVE: u8 = 0;

/// Appends "row `id` is under this key with `feed_values`".
pub fn push_set(body: &mut Vec<u8>, id: &[u8; 16], feed_values: &[u8]) {
    body.push(SET);
    body.extend_from_slice(id);
    body.extend_from_slice(feed_values);
}

/// Appends "row `id` left this key".
pub fn push_remove(body: &mut Vec<u8>, id: &[u8; 16]) {
    body.push(REMOVE);
    body.extend_from_slice(id);
}

/// The stored key of a posting entry: its key prefix and the commit that wrote it.
pub fn entry_key(prefix: &[u8], commit: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&commit.to_be_bytes());
    key
}

/// Splits a stored key into its key prefix (index number and components) and commit.
pub fn split_key(key: &[u8]) -> Result<(&[u8], u64), StoreError> {
    if key.len() < 9 {
        return Err(StoreError::Corrupt {
            what: format!("posting index key of {} bytes", key.len()),
        });
    }
    let (prefix, commit) = key.split_at(key.len() - 8);
    Ok((
        prefix,
        u64::from_be_bytes(commit.try_into().expect("8 bytes")),
    ))
}

/// `@feed` values as (field position, encoded component).
pub type Comps = Vec<(usize, Vec<u8>)>;

/// One row under a key: its id and its encoded `@feed` values, borrowed from the entries.
pub struct Posted<'a> {
    pub id: [u8; 16],
    pub feed: &'a [u8],
}

/// The length of the encoded `@feed` values at the front of `body`.
fn feed_len(e: &EntityLayout, body: &[u8]) -> Option<usize> {
    let mut n = 0;
    for &pos in &e.feed_fields {
        n += component_len(e.fields[pos].ty, body.get(n..)?)?;
    }
    Some(n)
}

/// Replays the entries of one key, given in commit order, into the rows under it, sorted by
/// id (so that results do not depend on hashing).
pub fn resolve<'a>(
    e: &EntityLayout,
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Posted<'a>>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: format!("a posting entry of {} does not decode", e.name),
    };
    // (id, order of the change, the row's values or None once it left the key)
    type Change<'a> = ([u8; 16], usize, Option<&'a [u8]>);
    let mut changes: Vec<Change<'a>> = Vec::new();
    for mut body in entries {
        while let Some((&tag, rest)) = body.split_first() {
            let id: [u8; 16] = rest
                .get(..16)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(corrupt)?;
            body = &rest[16..];
            let feed = match tag {
                SET => {
                    let n = feed_len(e, body).ok_or_else(corrupt)?;
                    let (feed, after) = body.split_at(n);
                    body = after;
                    Some(feed)
                }
                REMOVE => None,
                _ => return Err(corrupt()),
            };
            changes.push((id, changes.len(), feed));
        }
    }
    // The last change of each id wins.
    changes.sort_unstable_by_key(|(id, n, _)| (*id, std::cmp::Reverse(*n)));
    changes.dedup_by_key(|(id, _, _)| *id);
    Ok(changes
        .into_iter()
        .filter_map(|(id, _, feed)| feed.map(|feed| Posted { id, feed }))
        .collect())
}

/// The components of `feed` (a row's encoded `@feed` values) at the positions `wanted`.
pub fn comps(e: &EntityLayout, feed: &[u8], wanted: &[usize]) -> Comps {
    let mut out = Vec::with_capacity(wanted.len());
    let mut rest = feed;
    for &pos in &e.feed_fields {
        let Some(n) = component_len(e.fields[pos].ty, rest) else {
            break;
        };
        if wanted.contains(&pos) {
            out.push((pos, rest[..n].to_vec()));
        }
        rest = &rest[n..];
    }
    out
}
