//! Deleting a person's events (GDPR Art. 17): every event of one (org, user id), found by
//! reading the org's blocks' id and user columns, deleted in ONE store write. The write
//! rewrites each affected block without those rows (the old files go once no reader can
//! hold them) and carries a change-feed delete per event, from which the stats workers take
//! the events out of the rollups (recomputing the days a unique set cannot take a removal
//! from) and the real-time counters. A crash leaves the store before or after the write,
//! never between. Later events of the same user are stored as usual: this is no block list.

use super::codec::BlockReader;
use super::read::corrupt;
use crate::store::{Store, StoreError, Value, WriteBatch};

/// What a delete of a person's events found (and, unless a dry run, deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    pub events: u64,
    /// Blocks that held them (each rewritten without them).
    pub blocks: u64,
    /// Their event-time range (microseconds).
    pub oldest: Option<i64>,
    pub newest: Option<i64>,
}

/// A row [`Store::find_block_rows`] found: its id, block and time (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundRow {
    pub id: [u8; 16],
    pub block: u64,
    pub time: Option<i64>,
}

impl Store {
    /// The rows of `@blocks` entity `entity` of org `org` whose `field` is `value`, reading
    /// only the blocks of that org (and resident ones, which hold every org).
    pub fn find_block_rows(
        &self,
        entity: &str,
        org: [u8; 16],
        field: &str,
        value: &Value,
    ) -> Result<Vec<FoundRow>, StoreError> {
        let inner = self.inner();
        let e = inner.layout.entity(entity)?;
        let Some(keys) = &e.blocks else {
            return Err(StoreError::Schema(format!(
                "{entity} is not kept in blocks (@blocks)"
            )));
        };
        let pos = e.field_pos(field)?;
        let org_value = Value::Uuid(org);
        let mut out = Vec::new();
        let blocks = inner.blocks.catalog.select(e.no, |m| {
            keys.org.is_none() || m.mixed || m.org == org_value || m.org == Value::Null
        });
        for meta in blocks {
            let bytes = match inner.blocks.bytes_once(meta.no) {
                Ok(b) => b,
                // Merged or dropped since the catalog was read: its rows are elsewhere now.
                Err(_) if inner.blocks.catalog.get(meta.no).is_none() => continue,
                Err(err) => return Err(err),
            };
            let reader = BlockReader::open(&bytes).map_err(|err| corrupt(&meta, err))?;
            let column = |p: usize| -> Result<Vec<Value>, StoreError> {
                if p < reader.columns().len() {
                    reader.column(p).map_err(|err| corrupt(&meta, err))
                } else {
                    Ok(vec![Value::Null; reader.len()])
                }
            };
            let values = column(pos)?;
            if !values.iter().any(|v| v == value) {
                continue;
            }
            let orgs = match keys.org {
                Some(p) => column(p)?,
                None => vec![org_value.clone(); reader.len()],
            };
            let ids = column(e.id_pos)?;
            let times = match keys.time {
                Some(p) => column(p)?,
                None => vec![Value::Null; reader.len()],
            };
            for i in 0..reader.len() {
                if values[i] == *value && orgs[i] == org_value {
                    if let Value::Uuid(id) = ids[i] {
                        out.push(FoundRow {
                            id,
                            block: meta.no,
                            time: super::int_of(&times[i]),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes every Event of `user_id` in `org` (see the module documentation), or with
    /// `dry_run` only counts them; returns what was found.
    pub fn delete_user_events(
        &self,
        org: [u8; 16],
        user_id: &str,
        dry_run: bool,
    ) -> Result<Erased, StoreError> {
        let user = Value::String(user_id.to_string());
        let found = self.find_block_rows("Event", org, "user_id", &user)?;
        let mut report = Erased {
            events: found.len() as u64,
            ..Erased::default()
        };
        let mut blocks: Vec<u64> = found.iter().map(|r| r.block).collect();
        blocks.sort_unstable();
        blocks.dedup();
        report.blocks = blocks.len() as u64;
        report.oldest = found.iter().filter_map(|r| r.time).min();
        report.newest = found.iter().filter_map(|r| r.time).max();
        if dry_run || found.is_empty() {
            return Ok(report);
        }
        let mut batch = WriteBatch::new();
        for r in &found {
            batch.delete("Event", r.id);
            batch.located.insert(r.id, r.block);
        }
        self.write_blocking(batch)?;
        Ok(report)
    }
}
