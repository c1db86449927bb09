//! `streamtally stats rebuild` and `stats verify`: recompute the rollups from the raw events
//! and swap them in (one atomic write), or compare them with what is stored.
//!
//! Both run with the store opened exclusively (the connector stopped), after the rollup
//! worker has applied every pending change, so raw events and rollups describe the same
//! moment.

use super::bucket::{day_start_us, EventFacts, RollupKey, RollupState, ROLLUP_ENTITIES};
use super::parts::{self, Parts, Pending};
use super::rollup::{compute_states, stored_rows};
use super::{uuid_str, StatsError, ROLLUP_CURSOR};
use crate::store::{Query, Store, Value, WriteBatch};
use chrono::NaiveDate;
use indicatif::ProgressBar;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// Which rollups to recompute: every org and day by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub org: Option<[u8; 16]>,
    /// Inclusive UTC dates.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Scope {
    fn dates(&self) -> Option<(NaiveDate, NaiveDate)> {
        match (self.from, self.to) {
            (None, None) => None,
            (f, t) => Some((f.unwrap_or(NaiveDate::MIN), t.unwrap_or(NaiveDate::MAX))),
        }
    }

    fn holds(&self, f: &EventFacts) -> bool {
        let (org, date) = f.group();
        self.org.is_none_or(|o| o == org)
            && self.from.is_none_or(|d| date >= d)
            && self.to.is_none_or(|d| date <= d)
    }
}

/// The first UTC day whose raw events retention kept whole (None: nothing was dropped).
pub fn first_retained_day(store: &Store) -> Option<NaiveDate> {
    let from = store.retained_from("Event")?;
    let day = chrono::DateTime::from_timestamp_micros(from)?.date_naive();
    Some(if day_start_us(day) < from {
        day.succ_opt()?
    } else {
        day
    })
}

/// `scope` without the days whose raw events retention dropped: their rollups are kept as
/// they are, neither recomputed nor compared.
pub fn retained(store: &Store, scope: &Scope) -> Scope {
    let mut out = scope.clone();
    if let Some(first) = first_retained_day(store) {
        out.from = Some(out.from.map_or(first, |d| d.max(first)));
    }
    out
}

/// The rollups the raw events in `scope` imply (days retention dropped left out).
pub fn recompute(
    store: &Store,
    scope: &Scope,
    threshold: u64,
    progress: &ProgressBar,
) -> Result<BTreeMap<RollupKey, RollupState>, StatsError> {
    let scope = &retained(store, scope);
    let mut facts: HashMap<[u8; 16], EventFacts> = HashMap::new();
    let mut take = |f: EventFacts| {
        progress.inc(1);
        if scope.holds(&f) {
            facts.insert(f.id, f);
        }
    };
    match scope.org {
        Some(org) => {
            // An event's day is the UTC day of its timestamp: days are timestamp ranges.
            let q = Query::new("Event").eq("org_id", Value::Uuid(org)).range(
                "timestamp",
                match scope.from {
                    Some(d) => Bound::Included(Value::Timestamp(day_start_us(d))),
                    None => Bound::Unbounded,
                },
                match scope.to.and_then(|d| d.succ_opt()) {
                    Some(d) => Bound::Excluded(Value::Timestamp(day_start_us(d))),
                    None => Bound::Unbounded,
                },
            );
            let rows = store.query(&q)?;
            progress.set_length(rows.len() as u64);
            for row in &rows {
                if let Some(f) = EventFacts::from_row(row) {
                    take(f);
                }
            }
        }
        None => store.for_each_row("Event", |row| {
            if let Some(f) = EventFacts::from_row(&row) {
                take(f);
            }
        })?,
    }
    Ok(compute_states(facts.values(), threshold))
}

/// The rollups as stored, in `scope`.
pub fn stored(
    store: &Store,
    scope: &Scope,
) -> Result<BTreeMap<RollupKey, RollupState>, StatsError> {
    Ok(stored_with_parts(store, scope)?
        .into_iter()
        .map(|(key, (state, _))| (key, state))
        .collect())
}

/// The rollups as stored, in `scope` (days retention dropped left out), with the parts
/// their unique sets are stored in.
pub fn stored_with_parts(
    store: &Store,
    scope: &Scope,
) -> Result<BTreeMap<RollupKey, (RollupState, Option<Parts>)>, StatsError> {
    let scope = &retained(store, scope);
    let mut out = BTreeMap::new();
    for entity in ROLLUP_ENTITIES {
        for (key, row) in stored_rows(store, entity, scope.org, scope.dates())? {
            let stored = parts::read_state(store, &key, &row)?;
            out.insert(key, stored);
        }
    }
    Ok(out)
}

/// A rollup key for people: `HourlyStats org=.. date=.. hour=.. event_type=".."`.
pub fn describe(key: &RollupKey) -> String {
    match key {
        RollupKey::Hourly {
            org,
            date,
            hour,
            event_type,
        } => format!(
            "HourlyStats org={} date={date} hour={hour} event_type={event_type:?}",
            uuid_str(org)
        ),
        RollupKey::Daily {
            org,
            date,
            event_type,
        } => format!(
            "DailyStats org={} date={date} event_type={event_type:?}",
            uuid_str(org)
        ),
        RollupKey::Name {
            org,
            date,
            event_name,
        } => format!(
            "EventNameDaily org={} date={date} event_name={event_name:?}",
            uuid_str(org)
        ),
    }
}

fn summary(s: &RollupState) -> String {
    let kind = |u: &super::sketch::Uniq| if u.is_exact() { "exact" } else { "sketch" };
    format!(
        "events {}, users {} ({}), sessions {} ({})",
        s.events,
        s.users.count(),
        kind(&s.users),
        s.sessions.count(),
        kind(&s.sessions)
    )
}

/// Every difference between stored and recomputed rollups, one line each.
pub fn diff(
    stored: &BTreeMap<RollupKey, RollupState>,
    expected: &BTreeMap<RollupKey, RollupState>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, want) in expected {
        match stored.get(key) {
            None => out.push(format!(
                "{}: missing (expected {})",
                describe(key),
                summary(want)
            )),
            Some(have) if have != want => {
                let what = if have.events != want.events {
                    "event count differs"
                } else if have.users != want.users {
                    "users differ"
                } else {
                    "sessions differ"
                };
                out.push(format!(
                    "{}: {what}: stored {}, expected {}",
                    describe(key),
                    summary(have),
                    summary(want)
                ))
            }
            Some(_) => {}
        }
    }
    for (key, have) in stored {
        if !expected.contains_key(key) {
            out.push(format!(
                "{}: stored ({}) but no raw event belongs to it",
                describe(key),
                summary(have)
            ));
        }
    }
    out
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    pub written: usize,
    pub deleted: usize,
    /// Rows whose state was different before the rebuild.
    pub corrected: usize,
}

/// Replaces the rollups in `scope` with a recomputation, in one atomic write that also
/// moves the rollup cursor to the feed head (the caller has applied every pending change).
pub async fn rebuild(
    store: &Store,
    scope: &Scope,
    threshold: u64,
    progress: &ProgressBar,
) -> Result<RebuildReport, StatsError> {
    let fresh = recompute(store, scope, threshold, progress)?;
    let old = stored_with_parts(store, scope)?;
    let mut batch = WriteBatch::new();
    let mut report = RebuildReport {
        written: 0,
        deleted: 0,
        corrected: 0,
    };
    let whole = Pending {
        rewrite: true,
        ..Pending::default()
    };
    for (key, (_, parts)) in &old {
        if !fresh.contains_key(key) {
            parts::write_bucket(
                &mut batch,
                key,
                &RollupState::default(),
                true,
                *parts,
                &whole,
            );
            report.deleted += 1;
        }
    }
    for (key, state) in &fresh {
        let before = old.get(key);
        if before.map(|(s, _)| s) != Some(state) {
            report.corrected += 1;
        }
        let parts = before.and_then(|(_, p)| *p);
        parts::write_bucket(&mut batch, key, state, before.is_some(), parts, &whole);
        report.written += 1;
    }
    batch.set_cursor(ROLLUP_CURSOR, store.feed_head());
    store.write(batch).await?;
    Ok(report)
}
