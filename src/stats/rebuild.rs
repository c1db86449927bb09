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
    /// Recompute rows per source partition ([`super::rollup::RollupOptions::per_partition`]).
    pub per_partition: bool,
}

impl Scope {
    /// Every org and day (a rebuild of it may change how the rollups are keyed).
    pub fn is_everything(&self) -> bool {
        self.org.is_none() && self.from.is_none() && self.to.is_none()
    }

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
    Ok(compute_states(
        facts.values(),
        threshold,
        scope.per_partition,
    ))
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
            source,
        } => format!(
            "HourlyStats org={} date={date} hour={hour} event_type={event_type:?}{}",
            uuid_str(org),
            describe_source(source)
        ),
        RollupKey::Daily {
            org,
            date,
            event_type,
            source,
        } => format!(
            "DailyStats org={} date={date} event_type={event_type:?}{}",
            uuid_str(org),
            describe_source(source)
        ),
        RollupKey::Name {
            org,
            date,
            event_name,
            source,
        } => format!(
            "EventNameDaily org={} date={date} event_name={event_name:?}{}",
            uuid_str(org),
            describe_source(source)
        ),
    }
}

fn describe_source(source: &Option<super::bucket::Source>) -> String {
    match source {
        Some(s) => format!(" partition={s}"),
        None => String::new(),
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RebuildReport {
    pub written: usize,
    pub deleted: usize,
    /// Rows whose state was different before the rebuild.
    pub corrected: usize,
}

/// The store setting that says how the rollups are keyed.
pub const LAYOUT_SETTING: &str = "stats.rollup_layout";

fn layout_name(per_partition: bool) -> &'static str {
    if per_partition {
        "per_partition"
    } else {
        "whole"
    }
}

/// Whether the stored rollups are kept per source partition (a store that never said was
/// written before they could be: no).
pub fn stored_per_partition(store: &Store) -> Result<bool, StatsError> {
    Ok(store.setting(LAYOUT_SETTING)?.as_deref() == Some(layout_name(true)))
}

/// Err unless the stored rollups are keyed as `per_partition` says.
pub fn check_layout(store: &Store, per_partition: bool) -> Result<(), StatsError> {
    let stored = stored_per_partition(store)?;
    if stored == per_partition {
        return Ok(());
    }
    Err(StatsError::Invalid(format!(
        "the stored rollups are kept {}, and this configuration keeps them {} \
         (scale_out.enabled = {per_partition}); `streamtally run` recomputes them at start, \
         or run `streamtally stats rebuild` (every org and day)",
        describe_layout(stored),
        describe_layout(per_partition)
    )))
}

fn describe_layout(per_partition: bool) -> &'static str {
    if per_partition {
        "per source partition"
    } else {
        "for the whole store"
    }
}

/// Makes the stored rollups keyed as `per_partition` says: when they are keyed the other
/// way (scale-out was switched on or off), recomputes them from the raw events one (org,
/// UTC day) at a time (memory bounded by one day of one org; a write per day), then moves
/// the rollup cursor to the feed head and records the keying. Days that the raw-event
/// retention dropped keep their rows as they were (the other keying does not read them).
/// Run it before anything writes events; a crash part way leaves the old keying recorded,
/// so the next start does it again. `progress` counts (org, day) groups.
pub async fn switch_layout(
    store: &Store,
    per_partition: bool,
    threshold: u64,
    progress: &ProgressBar,
) -> Result<Option<RebuildReport>, StatsError> {
    if stored_per_partition(store)? == per_partition {
        return Ok(None);
    }
    let first = first_retained_day(store);
    // Every (org, day) with rollups or with stored events (changes the rollups have not
    // applied yet included).
    let mut groups: std::collections::BTreeSet<super::rollup::Group> = Default::default();
    store.for_each_row(super::bucket::DAILY, |row| {
        if let Some(key) = RollupKey::from_row(super::bucket::DAILY, &row) {
            groups.insert((key.org(), key.date()));
        }
    })?;
    for day in store.block_days("Event")? {
        let (Ok(org), Some(d)) = (uuid::Uuid::parse_str(&day.org), day.day) else {
            continue;
        };
        if let Some(date) = chrono::DateTime::from_timestamp(d * 86_400, 0) {
            groups.insert((*org.as_bytes(), date.date_naive()));
        }
    }
    groups.retain(|(_, date)| first.is_none_or(|f| *date >= f));
    progress.set_length(groups.len() as u64);
    let mut report = RebuildReport::default();
    for (org, date) in groups {
        let events = super::rollup::group_events_now(store, (org, date))?;
        let fresh = compute_states(events.values(), threshold, per_partition);
        let day = Scope {
            org: Some(org),
            from: Some(date),
            to: Some(date),
            per_partition,
        };
        // Rows of the other keying have other ids, so they are all replaced; rows of this
        // one exist only if an earlier switch stopped part way.
        let old = stored_with_parts(store, &day)?;
        let mut batch = WriteBatch::new();
        replace_rows(&mut batch, &old, &fresh, &mut report);
        store.write(batch).await?;
        progress.inc(1);
    }
    let mut batch = WriteBatch::new();
    batch.set_cursor(ROLLUP_CURSOR, store.feed_head());
    store.write(batch).await?;
    store.set_setting(LAYOUT_SETTING, layout_name(per_partition))?;
    Ok(Some(report))
}

/// Adds to `batch` what replaces the rows `old` (as stored, with their parts) by `fresh`:
/// the old rows `fresh` lacks are deleted, every fresh row is written whole; counts them in
/// `report`.
fn replace_rows(
    batch: &mut WriteBatch,
    old: &BTreeMap<RollupKey, (RollupState, Option<Parts>)>,
    fresh: &BTreeMap<RollupKey, RollupState>,
    report: &mut RebuildReport,
) {
    let whole = Pending::whole();
    for (key, (_, parts)) in old {
        if !fresh.contains_key(key) {
            parts::write_bucket(batch, key, &RollupState::default(), true, *parts, &whole);
            report.deleted += 1;
        }
    }
    for (key, state) in fresh {
        let before = old.get(key);
        if before.map(|(s, _)| s) != Some(state) {
            report.corrected += 1;
        }
        let parts = before.and_then(|(_, p)| *p);
        parts::write_bucket(batch, key, state, before.is_some(), parts, &whole);
        report.written += 1;
    }
}

/// Replaces the rollups in `scope` with a recomputation, in one atomic write that also
/// moves the rollup cursor to the feed head (the caller has applied every pending change).
/// A rebuild of everything keys the rows as the scope says and records that it does; a
/// smaller one must use the stored keying.
pub async fn rebuild(
    store: &Store,
    scope: &Scope,
    threshold: u64,
    progress: &ProgressBar,
) -> Result<RebuildReport, StatsError> {
    if !scope.is_everything() {
        check_layout(store, scope.per_partition)?;
    }
    let fresh = recompute(store, scope, threshold, progress)?;
    let old = stored_with_parts(store, scope)?;
    let mut batch = WriteBatch::new();
    let mut report = RebuildReport::default();
    replace_rows(&mut batch, &old, &fresh, &mut report);
    batch.set_cursor(ROLLUP_CURSOR, store.feed_head());
    store.write(batch).await?;
    if scope.is_everything() {
        store.set_setting(LAYOUT_SETTING, layout_name(scope.per_partition))?;
    }
    Ok(report)
}
