//! Where a rollup row's unique users and sessions live: in parts, so a write stores what
//! changed, not the whole set again.
//!
//! A busy day's exact set of 10,000 users is ~110 KB and a sketch 64 KB; rewriting them
//! with the row on every rollup write (once a second) was 31 MB a write at full ingest
//! speed, most of the stats workers' cost. Now a HourlyStats or DailyStats row names a
//! generation and a number of `RollupStatePart` rows: part 0 holds the sets whole as of the
//! generation's start ([`Uniq::encode`]), each later part what one write added: the new
//! values of an exact set, the raised registers of a sketch ([`Uniq::encode_delta`]). A set
//! that did not change writes nothing. After [`max_parts`] parts (9 to 16), a switch to a
//! sketch, or a recomputation (which every removal makes: sets keep no per-value counts),
//! the next write starts a new generation (part 0 whole) and deletes the old one's parts,
//! in the same atomic write as the row and the cursor.
//!
//! Rows written by releases before parts keep their sets inline (`users_state`,
//! `sessions_state`); they are read as before and move to parts on their next write.

use super::bucket::{RollupKey, RollupState};
use super::sketch::{Added, Uniq};
use super::StatsError;
use crate::store::{codec, Row, Store, Value, WriteBatch};

/// The entity of the parts (schema.ormdb).
pub const PARTS: &str = "RollupStatePart";
/// Most parts a generation grows to before a write rewrites the sets whole: bounds what a
/// read merges and the bytes stored twice, while a busy bucket's set is rewritten once every
/// 9 to 16 writes instead of on every one ([`max_parts`]).
pub const MAX_PARTS: i32 = 16;

/// The parts `bucket`'s generations grow to: 9 to [`MAX_PARTS`], by its id. Buckets touched
/// by every write (a day's rows, at full speed) would otherwise all be rewritten whole in
/// the same write, every 16th one: a ~20 MB write in the benchmark's shape, ~100 MB of
/// transient memory through the write-ahead log and the trees.
pub fn max_parts(bucket: &[u8; 16]) -> i32 {
    MAX_PARTS - (bucket[15] % 8) as i32
}

/// A stored row's parts: generation `generation`, parts `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub generation: i64,
    pub count: i32,
}

/// What changed in a bucket's sets since they were last written.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// Value hashes [`Uniq::add`] answered [`Added::Grew`] for.
    pub users: Vec<u64>,
    pub sessions: Vec<u64>,
    /// The sets must be written whole (a new generation).
    pub rewrite: bool,
}

impl Pending {
    /// The sets are to be written whole (a rebuild's rows).
    pub fn whole() -> Pending {
        Pending {
            rewrite: true,
            ..Pending::default()
        }
    }

    /// Records what one [`RollupState::add`] did.
    pub fn note(
        &mut self,
        (users, sessions): (Added, Added),
        user: Option<u64>,
        session: Option<u64>,
    ) {
        for (added, value, list) in [
            (users, user, &mut self.users),
            (sessions, session, &mut self.sessions),
        ] {
            match (added, value) {
                (Added::Grew, Some(v)) => list.push(v),
                (Added::Converted, _) => self.rewrite = true,
                _ => {}
            }
        }
    }

    pub fn clear(&mut self) {
        self.users.clear();
        self.sessions.clear();
        self.rewrite = false;
    }

    /// About how much memory it holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.users.capacity() + self.sessions.capacity()) * 8
    }
}

/// The id of part `part` of `bucket`'s generation `generation`.
pub fn part_id(bucket: &[u8; 16], generation: i64, part: i32) -> [u8; 16] {
    codec::upsert_id(
        PARTS,
        &[
            &Value::Uuid(*bucket),
            &Value::Int64(generation),
            &Value::Int32(part),
        ],
    )
}

fn bad(key: &RollupKey, message: String) -> StatsError {
    StatsError::BadState {
        entity: key.entity(),
        key: super::rebuild::describe(key),
        message,
    }
}

/// The parts a stored row names; None if it keeps its sets inline (or none at all).
pub fn parts_of(key: &RollupKey, row: &Row) -> Result<Option<Parts>, StatsError> {
    match (row.get("state_generation"), row.get("state_parts")) {
        (Some(Value::Int64(generation)), Some(Value::Int32(count))) if *count >= 1 => {
            Ok(Some(Parts {
                generation: *generation,
                count: *count,
            }))
        }
        (None | Some(Value::Null), None | Some(Value::Null)) => Ok(None),
        (g, c) => Err(bad(
            key,
            format!("state_generation {g:?} and state_parts {c:?} do not name parts"),
        )),
    }
}

/// The error for a part that `parts` names but the store does not hold.
pub fn missing_part(key: &RollupKey, parts: Parts) -> StatsError {
    bad(
        key,
        format!(
            "a part of generation {} (of {}) is missing",
            parts.generation, parts.count
        ),
    )
}

/// Reads a stored rollup row's state and the parts it names.
pub fn read_state(
    store: &Store,
    key: &RollupKey,
    row: &Row,
) -> Result<(RollupState, Option<Parts>), StatsError> {
    let events = match row.get("event_count") {
        Some(Value::Int64(n)) => *n,
        other => return Err(bad(key, format!("event_count is {other:?}"))),
    };
    if matches!(key, RollupKey::Name { .. }) {
        return Ok((
            RollupState {
                events,
                ..Default::default()
            },
            None,
        ));
    }
    let parts = parts_of(key, row)?;
    let (users, sessions) = read_sets(store, key, row, parts)?
        .ok_or_else(|| missing_part(key, parts.expect("only parts can be missing")))?;
    Ok((
        RollupState {
            events,
            users,
            sessions,
        },
        parts,
    ))
}

/// A stored row's users and sessions: from `parts` (as [`parts_of`] reads them from the
/// row), else inline as releases before parts stored them. Ok(None) as [`read_parts`].
pub fn read_sets(
    store: &Store,
    key: &RollupKey,
    row: &Row,
    parts: Option<Parts>,
) -> Result<Option<(Uniq, Uniq)>, StatsError> {
    if let Some(p) = parts {
        return read_parts(store, key, p);
    }
    let inline = |name: &str| match row.get(name) {
        Some(Value::String(s)) => Uniq::decode(s).map_err(|e| bad(key, format!("{name}: {e}"))),
        None | Some(Value::Null) => Ok(Uniq::default()),
        Some(other) => Err(bad(key, format!("{name} is {other:?}"))),
    };
    Ok(Some((inline("users_state")?, inline("sessions_state")?)))
}

/// The users and sessions stored in `parts` of `key`'s row; Ok(None) when a part is missing,
/// which a reader that is not the rollup worker sees while a write that starts a new
/// generation is being applied (read the row again).
pub fn read_parts(
    store: &Store,
    key: &RollupKey,
    parts: Parts,
) -> Result<Option<(Uniq, Uniq)>, StatsError> {
    let bucket = key.row_id();
    let mut users: Option<Uniq> = None;
    let mut sessions: Option<Uniq> = None;
    for part in 0..parts.count {
        let id = part_id(&bucket, parts.generation, part);
        let Some(values) = store.get_fields(PARTS, &id, &["users_state", "sessions_state"])? else {
            return Ok(None);
        };
        for (value, set, name) in [
            (&values[0], &mut users, "users_state"),
            (&values[1], &mut sessions, "sessions_state"),
        ] {
            let Value::String(s) = value else { continue };
            let merged = match set {
                None => Uniq::decode(s).map(|u| *set = Some(u)),
                Some(u) => u.merge_stored(s),
            };
            merged.map_err(|e| {
                bad(
                    key,
                    format!(
                        "{PARTS} generation {} part {part}: {name}: {e}",
                        parts.generation
                    ),
                )
            })?;
        }
    }
    Ok(Some((
        users.unwrap_or_default(),
        sessions.unwrap_or_default(),
    )))
}

/// Adds to `batch` the writes that store one changed bucket: its row (or its deletion when
/// it counts no event any more) and its parts; returns the parts the row names after it.
/// `stored`: the row exists; `parts`: the parts it names now.
pub fn write_bucket(
    batch: &mut WriteBatch,
    key: &RollupKey,
    state: &RollupState,
    stored: bool,
    parts: Option<Parts>,
    pending: &Pending,
) -> Option<Parts> {
    let bucket = key.row_id();
    let drop_parts = |batch: &mut WriteBatch, p: Parts| {
        for part in 0..p.count {
            batch.delete(PARTS, part_id(&bucket, p.generation, part));
        }
    };
    if state.events == 0 {
        if stored {
            batch.delete(key.entity(), bucket);
        }
        if let Some(p) = parts {
            drop_parts(batch, p);
        }
        return None;
    }
    if matches!(key, RollupKey::Name { .. }) {
        batch.upsert(key.entity(), state.to_row(key, None));
        return None;
    }
    let part_row = |generation: i64, part: i32| {
        Row::new()
            .with("id", Value::Uuid(part_id(&bucket, generation, part)))
            .with("bucket_id", Value::Uuid(bucket))
            .with("generation", Value::Int64(generation))
            .with("part", Value::Int32(part))
    };
    let unchanged = pending.users.is_empty() && pending.sessions.is_empty();
    let next = match parts {
        Some(p) if !pending.rewrite && unchanged => p,
        Some(p) if !pending.rewrite && p.count < max_parts(&bucket) => {
            let mut row = part_row(p.generation, p.count);
            if !pending.users.is_empty() {
                row.set(
                    "users_state",
                    Value::String(state.users.encode_delta(&pending.users)),
                );
            }
            if !pending.sessions.is_empty() {
                row.set(
                    "sessions_state",
                    Value::String(state.sessions.encode_delta(&pending.sessions)),
                );
            }
            batch.upsert(PARTS, row);
            Parts {
                generation: p.generation,
                count: p.count + 1,
            }
        }
        _ => {
            let generation = parts.map_or(0, |p| p.generation + 1);
            if let Some(p) = parts {
                drop_parts(batch, p);
            }
            batch.upsert(
                PARTS,
                part_row(generation, 0)
                    .with("users_state", Value::String(state.users.encode()))
                    .with("sessions_state", Value::String(state.sessions.encode())),
            );
            Parts {
                generation,
                count: 1,
            }
        }
    };
    batch.upsert(key.entity(), state.to_row(key, Some(next)));
    Some(next)
}
