//! The event explorer: an org's stored events newest first, one page at a time, filtered by
//! event names, type and the trends' conditions (user id, session id, property values), read
//! from the event blocks' decoded columns (the trends' cache, [`super::trends`]).
//!
//! Order: event time descending, then topic, partition and offset descending, so that every
//! event has one place. A page ends with a cursor naming its last event; the next page holds
//! the events strictly after it in that order. Events stored meanwhile with an older time
//! than the cursor appear on later pages; newer ones do not move the pages already read.

use super::query::StatsReader;
use super::trends::{held_blocks, held_of, property_keys, Condition, Matcher, Positions};
use super::StatsError;
use crate::store::{Query, Row, Value};
use base64::Engine as _;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Bound;

/// Where a page ended: its last event's place in the order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub t_us: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl Cursor {
    /// `<t_us>.<partition>.<offset>.<topic in base64url>`: opaque to clients.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.t_us,
            self.partition,
            self.offset,
            B64.encode(self.topic.as_bytes())
        )
    }

    pub fn parse(s: &str) -> Option<Cursor> {
        let mut it = s.splitn(4, '.');
        let t_us = it.next()?.parse().ok()?;
        let partition = it.next()?.parse().ok()?;
        let offset = it.next()?.parse().ok()?;
        let topic = String::from_utf8(B64.decode(it.next()?).ok()?).ok()?;
        Some(Cursor {
            t_us,
            topic,
            partition,
            offset,
        })
    }
}

/// An explorer question.
#[derive(Debug, Clone)]
pub struct ExploreSpec {
    pub org: [u8; 16],
    pub events: Vec<String>,
    pub event_type: Option<String>,
    pub conditions: Vec<Condition>,
    /// Event times [from, to); None = unbounded.
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    /// Only events after this one (in the explorer's order).
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// An explorer question as it travels to the other instances of a scaled-out group (the
/// cursor in its encoded form).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExploreAsk {
    pub events: Vec<String>,
    pub event_type: Option<String>,
    pub conditions: Vec<Condition>,
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    pub after: Option<String>,
    pub limit: usize,
}

impl ExploreAsk {
    pub fn of(spec: &ExploreSpec) -> ExploreAsk {
        ExploreAsk {
            events: spec.events.clone(),
            event_type: spec.event_type.clone(),
            conditions: spec.conditions.clone(),
            from_us: spec.from_us,
            to_us: spec.to_us,
            after: spec.after.as_ref().map(Cursor::encode),
            limit: spec.limit,
        }
    }

    pub fn spec(&self, org: [u8; 16]) -> Result<ExploreSpec, String> {
        let after = match &self.after {
            Some(c) => Some(Cursor::parse(c).ok_or_else(|| format!("cursor '{c}'"))?),
            None => None,
        };
        Ok(ExploreSpec {
            org,
            events: self.events.clone(),
            event_type: self.event_type.clone(),
            conditions: self.conditions.clone(),
            from_us: self.from_us,
            to_us: self.to_us,
            after,
            limit: self.limit,
        })
    }
}

/// One page: the events, newest first, and where the next page starts (None: no more).
#[derive(Debug)]
pub struct Page {
    pub rows: Vec<Row>,
    pub next: Option<Cursor>,
}

/// A candidate: its place (ordered so the heap's top is the one to drop: the oldest) and
/// where it is (block number, row).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Found(std::cmp::Reverse<Cursor>, u64, usize);

impl StatsReader {
    /// One page of the explorer.
    pub fn explore(&self, spec: &ExploreSpec) -> Result<Page, StatsError> {
        for _ in 0..5 {
            if let Some(page) = self.explore_once(spec)? {
                return Ok(page);
            }
        }
        Err(StatsError::Invalid(
            "blocks kept being merged while the explorer read them; ask again".into(),
        ))
    }

    /// None when a block went away while it was read.
    fn explore_once(&self, spec: &ExploreSpec) -> Result<Option<Page>, StatsError> {
        let upper = match (&spec.after, spec.to_us) {
            (Some(c), Some(to)) => Some(to.min(c.t_us + 1)),
            (Some(c), None) => Some(c.t_us + 1),
            (None, to) => to,
        };
        let mut q = Query::new("Event").eq("org_id", Value::Uuid(spec.org));
        if spec.from_us.is_some() || upper.is_some() {
            let b = |t: Option<i64>, incl: bool| match (t, incl) {
                (None, _) => Bound::Unbounded,
                (Some(t), true) => Bound::Included(Value::Timestamp(t)),
                (Some(t), false) => Bound::Excluded(Value::Timestamp(t)),
            };
            q = q.range("timestamp", b(spec.from_us, true), b(upper, false));
        }
        let held = held_of(&self.sources());
        let mut blocks = held_blocks(self.store.blocks_for(&q)?, held.as_deref());
        blocks.sort_by_key(|m| std::cmp::Reverse((m.max_time, m.no)));
        let pos = Positions::of(&self.store)?;
        let keys = property_keys(&spec.conditions, None);
        let (from, to) = (spec.from_us.unwrap_or(i64::MIN), upper.unwrap_or(i64::MAX));
        // The newest `limit` events found so far; the heap's top is the oldest of them.
        let mut kept: BinaryHeap<Found> = BinaryHeap::new();
        for meta in &blocks {
            if kept.len() >= spec.limit {
                let oldest = &kept.peek().map(|f| f.0 .0.t_us).unwrap_or(i64::MIN);
                if meta.max_time.is_some_and(|m| m < *oldest) {
                    break;
                }
            }
            let Some(cols) = self.columns_of(std::slice::from_ref(meta), &pos, &keys)? else {
                return Ok(None);
            };
            let cols = &cols[0];
            let m = Matcher::new(
                cols,
                spec.org,
                (&spec.events, spec.event_type.as_deref(), &spec.conditions),
                held.as_deref(),
            );
            for i in 0..cols.ts.len() {
                let t = cols.ts[i];
                if t < from || t >= to || !m.matches(i) {
                    continue;
                }
                let (topic, partition) =
                    match (&cols.topic, &cols.partition, &meta.topic, &meta.partition) {
                        (Some(d), Some(p), _, _) => {
                            (d.values[d.codes[i] as usize].to_string(), p[i])
                        }
                        (_, _, Value::String(t), Value::Int32(p)) => (t.clone(), *p),
                        _ => (String::new(), -1),
                    };
                let place = Cursor {
                    t_us: t,
                    topic,
                    partition,
                    offset: cols.offset[i],
                };
                if spec.after.as_ref().is_some_and(|a| place >= *a) {
                    continue;
                }
                if kept.len() < spec.limit {
                    kept.push(Found(std::cmp::Reverse(place), meta.no, i));
                } else if kept.peek().is_some_and(|top| place > top.0 .0) {
                    kept.pop();
                    kept.push(Found(std::cmp::Reverse(place), meta.no, i));
                }
            }
        }
        let mut found: Vec<Found> = kept.into_vec();
        found.sort();
        let full = found.len() >= spec.limit;
        // Read the rows, block by block.
        let mut by_block: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for f in &found {
            by_block.entry(f.1).or_default().push(f.2);
        }
        let mut rows: BTreeMap<(u64, usize), Row> = BTreeMap::new();
        for (no, at) in by_block {
            let Some(list) = self.store.block_rows("Event", no, &at)? else {
                return Ok(None);
            };
            for (i, r) in at.into_iter().zip(list) {
                rows.insert((no, i), r);
            }
        }
        let next = if full {
            found.last().map(|f| f.0 .0.clone())
        } else {
            None
        };
        let rows = found
            .iter()
            .filter_map(|f| rows.remove(&(f.1, f.2)))
            .collect();
        Ok(Some(Page { rows, next }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_order_newest_first() {
        let c = Cursor {
            t_us: 1_700_000_000_000_000,
            topic: "events.a-b".into(),
            partition: 3,
            offset: 42,
        };
        assert_eq!(Cursor::parse(&c.encode()), Some(c.clone()));
        for bad in ["", "1.2.3", "x.1.2.dGVzdA", "1.2.3.@@@"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
        let older = Cursor {
            t_us: c.t_us - 1,
            ..c.clone()
        };
        let mut heap = BinaryHeap::new();
        heap.push(Found(std::cmp::Reverse(c.clone()), 1, 0));
        heap.push(Found(std::cmp::Reverse(older.clone()), 1, 1));
        assert_eq!(
            heap.peek().map(|f| f.0 .0.clone()),
            Some(older),
            "the top is the oldest"
        );
    }
}
