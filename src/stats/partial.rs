//! Partial states: what one instance of a scaled-out group knows of a question, over the
//! partitions it is asked for, in a form that merges exactly with the other instances'
//! (docs/SCALE-OUT.md, "Queries"): counts add, distinct users and sessions travel as their
//! sets or sketches and are unioned, event names as full counts (not a top-k).

use super::bucket::{Source, ALL_TYPES};
use super::query::{Granularity, Point, Sources, StatsReader, TopEvent, Unique, DAY_US, HOUR_US};
use super::sketch::{Uniq, UniqUnion};
use super::StatsError;
use crate::store::{Order, Query, Row, Value};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Distinct values as they travel between instances: [`Uniq::encode`]'s text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UniqState(pub Uniq);

impl Serialize for UniqState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.encode())
    }
}

impl<'de> Deserialize<'de> for UniqState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Uniq::decode(&s)
            .map(UniqState)
            .map_err(serde::de::Error::custom)
    }
}

/// One bucket of a time series over some partitions. Buckets without events are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    pub t_us: i64,
    pub events: i64,
    pub users: UniqState,
    pub sessions: UniqState,
}

/// Distinct users and sessions over a range, as sets or sketches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UniqueState {
    pub users: UniqState,
    pub sessions: UniqState,
}

fn union_into(u: UniqUnion) -> UniqState {
    UniqState(u.into_uniq())
}

impl StatsReader {
    /// The buckets of [`StatsReader::timeseries`] over `sources`, with their sets.
    pub fn timeseries_state(
        &self,
        org: [u8; 16],
        (from_us, to_us): (i64, i64),
        g: Granularity,
        event_type: Option<&str>,
        sources: &Sources,
    ) -> Result<Vec<BucketState>, StatsError> {
        let step = g.step_us();
        Self::check_points(from_us, to_us, g)?;
        let et = event_type.unwrap_or(ALL_TYPES);
        let mut out = Vec::new();
        let mut t = from_us.div_euclid(step) * step;
        while t < to_us {
            let mut events = 0;
            let mut users = UniqUnion::new();
            let mut sessions = UniqUnion::new();
            for key in sources.keys(Self::bucket_key(org, t, g, et)) {
                let Some(n) = self.row_events(&key)? else {
                    continue;
                };
                events += n;
                if let Some(states) = self.states(&key)? {
                    users.add(&states.0);
                    sessions.add(&states.1);
                }
            }
            if events != 0 {
                out.push(BucketState {
                    t_us: t,
                    events,
                    users: union_into(users),
                    sessions: union_into(sessions),
                });
            }
            t += step;
        }
        Ok(out)
    }

    /// The sets of [`StatsReader::unique`] over `sources`.
    pub fn unique_state(
        &self,
        org: [u8; 16],
        (from_us, to_us): (i64, i64),
        sources: &Sources,
    ) -> Result<UniqueState, StatsError> {
        let (users, sessions) = self.unique_unions(org, from_us, to_us, ALL_TYPES, sources)?;
        Ok(UniqueState {
            users: union_into(users),
            sessions: union_into(sessions),
        })
    }

    /// Every event name's full count on `date` over `sources` (not a top-k: the counts of
    /// several instances add before the top is taken).
    pub fn name_counts(
        &self,
        org: [u8; 16],
        date: NaiveDate,
        sources: &Sources,
    ) -> Result<Vec<TopEvent>, StatsError> {
        self.top_events_over(org, date, usize::MAX, sources)
    }

    /// The newest `limit` events of an org read from `partitions` (newest first).
    pub fn recent_events_of(
        &self,
        org: [u8; 16],
        limit: usize,
        partitions: &[Source],
    ) -> Result<Vec<Row>, StatsError> {
        let held = |r: &Row| match (r.get("topic"), r.get("partition")) {
            (Some(Value::String(t)), Some(Value::Int32(p))) => partitions
                .iter()
                .any(|s| *s.topic == **t && s.partition == *p),
            _ => false,
        };
        // Read the org's newest events, more each time, until `limit` of them are of the
        // partitions asked for or the org has no more.
        let mut fetch = limit.max(16) * 2;
        loop {
            let rows = self.store.query(
                &Query::new("Event")
                    .eq("org_id", Value::Uuid(org))
                    .order_by("timestamp", Order::Desc)
                    .limit(fetch),
            )?;
            let all = rows.len() < fetch;
            let mine: Vec<Row> = rows.into_iter().filter(held).take(limit).collect();
            if mine.len() == limit || all || fetch >= limit.max(16) * 1024 {
                return Ok(mine);
            }
            fetch *= 4;
        }
    }
}

/// Buckets of several instances merged into a time series over [from, to) (zeros
/// included, as [`StatsReader::timeseries`] answers).
pub fn merge_timeseries(
    parts: Vec<Vec<BucketState>>,
    (from_us, to_us): (i64, i64),
    g: Granularity,
) -> Vec<Point> {
    let step = g.step_us();
    let start = from_us.div_euclid(step) * step;
    let mut merged: HashMap<i64, (i64, UniqUnion, UniqUnion)> = HashMap::new();
    for b in parts.into_iter().flatten() {
        let m = merged.entry(b.t_us).or_default();
        m.0 += b.events;
        m.1.add(&b.users.0);
        m.2.add(&b.sessions.0);
    }
    let mut out = Vec::new();
    let mut t = start;
    while t < to_us {
        let p = merged.get(&t);
        out.push(Point {
            t_us: t,
            events: p.map_or(0, |m| m.0),
            unique_users: p.map_or(0, |m| m.1.count().0 as i64),
            unique_sessions: p.map_or(0, |m| m.2.count().0 as i64),
        });
        t += step;
    }
    out
}

/// Distinct users and sessions of several instances: the union of their sets.
pub fn merge_unique(parts: &[UniqueState]) -> Unique {
    let mut users = UniqUnion::new();
    let mut sessions = UniqUnion::new();
    for p in parts {
        users.add(&p.users.0);
        sessions.add(&p.sessions.0);
    }
    let (u, ue) = users.count();
    let (s, se) = sessions.count();
    Unique {
        users: u,
        sessions: s,
        exact: ue && se,
    }
}

/// Full name counts of several instances added, the `limit` most frequent kept (count desc,
/// name asc, as [`StatsReader::top_events`] orders them).
pub fn merge_top(parts: Vec<Vec<TopEvent>>, limit: usize) -> Vec<TopEvent> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    for t in parts.into_iter().flatten() {
        *counts.entry(t.event_name).or_insert(0) += t.count;
    }
    let mut out: Vec<TopEvent> = counts
        .into_iter()
        .map(|(event_name, count)| TopEvent { event_name, count })
        .collect();
    super::query::sort_top(&mut out);
    out.truncate(limit);
    out
}

/// The unique-users range `[from, to)` as the reader rounds it: whole hours.
pub fn unique_span(from_us: i64, to_us: i64) -> (i64, i64) {
    let end = (to_us + HOUR_US - 1).div_euclid(HOUR_US) * HOUR_US;
    (from_us.div_euclid(HOUR_US) * HOUR_US, end)
}

/// Days in a unique-users span (the reader's limit is 3660).
pub fn span_days(from_us: i64, to_us: i64) -> i64 {
    let (a, b) = unique_span(from_us, to_us);
    (b - a) / DAY_US
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_travel_as_their_stored_form() {
        let mut u = Uniq::default();
        for h in [3u64, 1, 2] {
            u.add(h, 100);
        }
        let s = BucketState {
            t_us: 7,
            events: 3,
            users: UniqState(u.clone()),
            sessions: UniqState::default(),
        };
        let text = serde_json::to_string(&s).unwrap();
        let back: BucketState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let bad = text.replace("x2:", "zz:");
        assert!(serde_json::from_str::<BucketState>(&bad).is_err());
    }

    #[test]
    fn merged_buckets_union_sets_and_add_counts() {
        let set = |hs: &[u64]| {
            let mut u = Uniq::default();
            for &h in hs {
                u.add(h, 100);
            }
            UniqState(u)
        };
        let a = vec![BucketState {
            t_us: HOUR_US,
            events: 2,
            users: set(&[1, 2]),
            sessions: set(&[9]),
        }];
        let b = vec![BucketState {
            t_us: HOUR_US,
            events: 5,
            users: set(&[2, 3]),
            sessions: set(&[9]),
        }];
        let points = merge_timeseries(vec![a, b], (0, 3 * HOUR_US), Granularity::Hour);
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].events, 0);
        assert_eq!(
            (
                points[1].events,
                points[1].unique_users,
                points[1].unique_sessions
            ),
            (7, 3, 1)
        );
    }
}
