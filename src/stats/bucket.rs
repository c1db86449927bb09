//! Rollup buckets: which rows an event counts in, and the state each row keeps.
//!
//! An event counts in five buckets: HourlyStats (org, date, hour, event_type) and the same
//! with every event type (`event_type = ""`, [`ALL_TYPES`]), DailyStats (org, date,
//! event_type) and its all-types row, and EventNameDaily (org, date, event_name). Dates and
//! hours are UTC calendar values of the event time.

use super::parts::Parts;
use super::sketch::{hash_value, Added, NeedsRecompute, Uniq};
use crate::store::{codec, Row, Value};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use std::sync::Arc;

/// A source partition: the Kafka topic and partition events were read from. Rollups are kept
/// per source when the group is scaled out (`scale_out.enabled`), so that a partition's
/// history can be answered by whichever instance owns it (docs/SCALE-OUT.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl Source {
    pub fn new(topic: &str, partition: i32) -> Source {
        Source {
            topic: topic.into(),
            partition,
        }
    }

    /// From an Event's `topic` and `partition` values (None unless both are set).
    fn from_values(topic: Option<&Value>, partition: Option<&Value>) -> Option<Source> {
        match (topic?, partition?) {
            (Value::String(t), Value::Int32(p)) => Some(Source::new(t, *p)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// The `event_type` of the rows that count every event type (ingest rejects empty types).
pub const ALL_TYPES: &str = "";

/// What the rollups need from one Event row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFacts {
    pub id: [u8; 16],
    pub org: [u8; 16],
    pub ts_us: i64,
    pub event_type: String,
    pub event_name: String,
    pub user: Option<u64>,
    pub session: Option<u64>,
    /// Where it was read from (None for events stored without a topic and partition, and
    /// for change-feed entries written before `@feed` carried them).
    pub source: Option<Source>,
}

impl EventFacts {
    /// Reads the facts from an Event row; None if a required field is missing.
    pub fn from_row(row: &Row) -> Option<EventFacts> {
        let s = |name: &str| match row.get(name) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        Some(EventFacts {
            id: row.id()?,
            org: match row.get("org_id")? {
                Value::Uuid(u) => *u,
                _ => return None,
            },
            ts_us: match row.get("timestamp")? {
                Value::Timestamp(t) | Value::Int64(t) => *t,
                _ => return None,
            },
            event_type: s("event_type")?.to_string(),
            event_name: s("event_name")?.to_string(),
            user: s("user_id").map(hash_value),
            session: s("session_id").map(hash_value),
            source: Source::from_values(row.get("topic"), row.get("partition")),
        })
    }

    /// The fields [`EventFacts::from_values`] reads, in its order.
    pub const FIELDS: [&'static str; 8] = [
        "org_id",
        "timestamp",
        "event_type",
        "event_name",
        "user_id",
        "session_id",
        "topic",
        "partition",
    ];

    /// The facts from the values of [`EventFacts::FIELDS`] (as read by
    /// `Store::get_version_fields`).
    pub fn from_values(id: [u8; 16], v: &[Value]) -> Option<EventFacts> {
        let s = |i: usize| match v.get(i) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        Some(EventFacts {
            id,
            org: match v.first()? {
                Value::Uuid(u) => *u,
                _ => return None,
            },
            ts_us: match v.get(1)? {
                Value::Timestamp(t) | Value::Int64(t) => *t,
                _ => return None,
            },
            event_type: s(2)?.to_string(),
            event_name: s(3)?.to_string(),
            user: s(4).map(hash_value),
            session: s(5).map(hash_value),
            source: Source::from_values(v.get(6), v.get(7)),
        })
    }

    /// The facts as counted: with their source when rollups are kept per partition,
    /// without it when one row counts every partition.
    pub fn counted(mut self, per_partition: bool) -> EventFacts {
        if !per_partition {
            self.source = None;
        }
        self
    }

    /// The (org, UTC date) group the event belongs to.
    pub fn group(&self) -> ([u8; 16], NaiveDate) {
        (self.org, utc_day_hour(self.ts_us).0)
    }
}

/// Microseconds since the epoch at the start (00:00 UTC) of `day`.
pub fn day_start_us(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

/// UTC calendar date and hour of a time in microseconds since the epoch (negative times
/// included: floor division, so -1 µs is 1969-12-31 23h).
pub fn utc_day_hour(ts_us: i64) -> (NaiveDate, u32) {
    let secs = ts_us.div_euclid(1_000_000);
    let dt = DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
    (dt.date_naive(), dt.hour())
}

/// The start of an hour bucket, in microseconds.
pub fn hour_start_us(date: NaiveDate, hour: u32) -> i64 {
    date.and_hms_opt(hour, 0, 0)
        .map(|d| d.and_utc().timestamp_micros())
        .unwrap_or(i64::MIN)
}

/// One rollup row's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RollupKey {
    Hourly {
        org: [u8; 16],
        date: NaiveDate,
        hour: u8,
        event_type: String,
        source: Option<Source>,
    },
    Daily {
        org: [u8; 16],
        date: NaiveDate,
        event_type: String,
        source: Option<Source>,
    },
    Name {
        org: [u8; 16],
        date: NaiveDate,
        event_name: String,
        source: Option<Source>,
    },
}

pub const HOURLY: &str = "HourlyStats";
pub const DAILY: &str = "DailyStats";
pub const NAMES: &str = "EventNameDaily";
/// The rollup entities, in the order rebuilds and verifies walk them.
pub const ROLLUP_ENTITIES: [&str; 3] = [HOURLY, DAILY, NAMES];

fn date_value(d: NaiveDate) -> Value {
    if (0..=9999).contains(&d.year()) {
        // As `%Y-%m-%d` formats it, without parsing the format on every call.
        Value::String(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()))
    } else {
        Value::String(d.format("%Y-%m-%d").to_string())
    }
}

impl RollupKey {
    /// The five keys an event counts in (with its source, if it has one: see
    /// [`EventFacts::counted`]).
    pub fn for_event(f: &EventFacts) -> [RollupKey; 5] {
        let (date, hour) = utc_day_hour(f.ts_us);
        let hour = hour as u8;
        let source = || f.source.clone();
        [
            RollupKey::Hourly {
                org: f.org,
                date,
                hour,
                event_type: f.event_type.clone(),
                source: source(),
            },
            RollupKey::Hourly {
                org: f.org,
                date,
                hour,
                event_type: ALL_TYPES.to_string(),
                source: source(),
            },
            RollupKey::Daily {
                org: f.org,
                date,
                event_type: f.event_type.clone(),
                source: source(),
            },
            RollupKey::Daily {
                org: f.org,
                date,
                event_type: ALL_TYPES.to_string(),
                source: source(),
            },
            RollupKey::Name {
                org: f.org,
                date,
                event_name: f.event_name.clone(),
                source: source(),
            },
        ]
    }

    /// The source partition the row counts (None: every partition of the store).
    pub fn source(&self) -> Option<&Source> {
        match self {
            RollupKey::Hourly { source, .. }
            | RollupKey::Daily { source, .. }
            | RollupKey::Name { source, .. } => source.as_ref(),
        }
    }

    /// The same bucket of another source.
    pub fn with_source(mut self, to: Option<Source>) -> RollupKey {
        match &mut self {
            RollupKey::Hourly { source, .. }
            | RollupKey::Daily { source, .. }
            | RollupKey::Name { source, .. } => *source = to,
        }
        self
    }

    pub fn entity(&self) -> &'static str {
        match self {
            RollupKey::Hourly { .. } => HOURLY,
            RollupKey::Daily { .. } => DAILY,
            RollupKey::Name { .. } => NAMES,
        }
    }

    pub fn org(&self) -> [u8; 16] {
        match self {
            RollupKey::Hourly { org, .. }
            | RollupKey::Daily { org, .. }
            | RollupKey::Name { org, .. } => *org,
        }
    }

    pub fn date(&self) -> NaiveDate {
        match self {
            RollupKey::Hourly { date, .. }
            | RollupKey::Daily { date, .. }
            | RollupKey::Name { date, .. } => *date,
        }
    }

    /// The key's fields as stored (the entity's `@unique` fields, in order; `topic` and
    /// `partition` only when it has a source, so rows without one keep their ids).
    pub fn key_fields(&self) -> Vec<(&'static str, Value)> {
        let mut fields = match self {
            RollupKey::Hourly {
                org,
                date,
                hour,
                event_type,
                ..
            } => vec![
                ("org_id", Value::Uuid(*org)),
                ("date", date_value(*date)),
                ("hour", Value::Int32(*hour as i32)),
                ("event_type", Value::String(event_type.clone())),
            ],
            RollupKey::Daily {
                org,
                date,
                event_type,
                ..
            } => vec![
                ("org_id", Value::Uuid(*org)),
                ("date", date_value(*date)),
                ("event_type", Value::String(event_type.clone())),
            ],
            RollupKey::Name {
                org,
                date,
                event_name,
                ..
            } => vec![
                ("org_id", Value::Uuid(*org)),
                ("date", date_value(*date)),
                ("event_name", Value::String(event_name.clone())),
            ],
        };
        if let Some(s) = self.source() {
            fields.push(("topic", Value::String(s.topic.to_string())));
            fields.push(("partition", Value::Int32(s.partition)));
        }
        fields
    }

    /// The row id (the upsert id of the `@unique` key).
    pub fn row_id(&self) -> [u8; 16] {
        let fields = self.key_fields();
        let values: Vec<&Value> = fields.iter().map(|(_, v)| v).collect();
        codec::upsert_id(self.entity(), &values)
    }

    /// Reads the key back from a stored rollup row of `entity`.
    pub fn from_row(entity: &str, row: &Row) -> Option<RollupKey> {
        let org = match row.get("org_id")? {
            Value::Uuid(u) => *u,
            _ => return None,
        };
        let date = match row.get("date")? {
            Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?,
            _ => return None,
        };
        let s = |name: &str| match row.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let source = Source::from_values(row.get("topic"), row.get("partition"));
        Some(match entity {
            HOURLY => RollupKey::Hourly {
                org,
                date,
                hour: match row.get("hour")? {
                    Value::Int32(h) if (0..24).contains(h) => *h as u8,
                    _ => return None,
                },
                event_type: s("event_type")?,
                source,
            },
            DAILY => RollupKey::Daily {
                org,
                date,
                event_type: s("event_type")?,
                source,
            },
            NAMES => RollupKey::Name {
                org,
                date,
                event_name: s("event_name")?,
                source,
            },
            _ => return None,
        })
    }
}

/// What one rollup row holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RollupState {
    pub events: i64,
    /// Distinct users / sessions (unused for EventNameDaily).
    pub users: Uniq,
    pub sessions: Uniq,
}

impl RollupState {
    /// About how much memory it holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        16 + self.users.memory_bytes() + self.sessions.memory_bytes()
    }

    /// Counts one event (`+1`) in this bucket; says what it did to the users and sessions.
    pub fn add(&mut self, key: &RollupKey, f: &EventFacts, threshold: u64) -> (Added, Added) {
        self.events += 1;
        if matches!(key, RollupKey::Name { .. }) {
            return (Added::Nothing, Added::Nothing);
        }
        let users = match f.user {
            Some(u) => self.users.add(u, threshold),
            None => Added::Nothing,
        };
        let sessions = match f.session {
            Some(s) => self.sessions.add(s, threshold),
            None => Added::Nothing,
        };
        (users, sessions)
    }

    /// Uncounts one event. Err: the event carries a user or session, which the bucket's
    /// distinct values cannot take out (they keep no per-value counts, see
    /// [`Uniq`]); recompute the bucket from the raw events.
    pub fn remove(&mut self, key: &RollupKey, f: &EventFacts) -> Result<(), NeedsRecompute> {
        if !matches!(key, RollupKey::Name { .. }) && (f.user.is_some() || f.session.is_some()) {
            return Err(NeedsRecompute);
        }
        self.events -= 1;
        Ok(())
    }

    /// The row to upsert for `key`; `parts` names where its unique sets are stored
    /// ([`super::parts`]; None for EventNameDaily, which keeps none).
    pub fn to_row(&self, key: &RollupKey, parts: Option<Parts>) -> Row {
        let mut row = Row::new().with("id", Value::Uuid(key.row_id()));
        for (name, value) in key.key_fields() {
            row.set(name, value);
        }
        row.set("event_count", Value::Int64(self.events));
        if !matches!(key, RollupKey::Name { .. }) {
            row.set("unique_users", Value::Int64(self.users.count() as i64));
            row.set(
                "unique_sessions",
                Value::Int64(self.sessions.count() as i64),
            );
            if let Some(p) = parts {
                row.set("state_generation", Value::Int64(p.generation));
                row.set("state_parts", Value::Int32(p.count));
            }
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn dates_format_as_chrono_formats_them() {
        for days in (-800_000..3_000_000).step_by(997) {
            let d = NaiveDate::from_num_days_from_ce_opt(days).unwrap();
            assert_eq!(
                date_value(d),
                Value::String(d.format("%Y-%m-%d").to_string()),
                "{d:?}"
            );
        }
    }

    #[test]
    fn day_boundaries_leap_days_and_negative_times() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            utc_day_hour(us("2024-02-28T23:59:59.999999Z")),
            (d("2024-02-28"), 23)
        );
        assert_eq!(
            utc_day_hour(us("2024-02-29T00:00:00Z")),
            (d("2024-02-29"), 0)
        );
        assert_eq!(
            utc_day_hour(us("2024-03-01T00:00:00Z")),
            (d("2024-03-01"), 0)
        );
        assert_eq!(
            utc_day_hour(us("2024-03-01T01:30:00+02:00")),
            (d("2024-02-29"), 23)
        );
        assert_eq!(utc_day_hour(-1), (d("1969-12-31"), 23));
        assert_eq!(
            hour_start_us(d("2024-02-29"), 5),
            us("2024-02-29T05:00:00Z")
        );
    }
}
