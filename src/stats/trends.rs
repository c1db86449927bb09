//! Trends: a measure (events, unique users, unique sessions) per minute, hour, local day or
//! local week of a time zone, over the events that match event names and conditions on
//! top-level fields and properties, optionally broken down by event name, event type or a
//! property (the top N values by total, the rest as one "other" series).
//!
//! Two ways to answer, chosen per question ([`Trend::source`] says which):
//! - **rollups**, when they hold the answer: no names, conditions or breakdown (an event
//!   type is fine), hours, days or weeks, and a zone whose offset is a whole number of hours
//!   over the range (so its buckets are whole UTC hours). A bucket is the merge of the hourly
//!   and daily rows it covers: counts add, distinct users and sessions are unions of the
//!   rows' sets (never sums);
//! - **events**, otherwise: the org's event blocks in the range are read column by column.
//!   Each block's columns are decoded once into a compact form ([`BlockCols`]: times,
//!   dictionary codes for names and types, value hashes for users and sessions, and per
//!   property key asked for, dictionary codes of its values), kept in a cache bounded by
//!   `stats.trends_cache_mb`; blocks are immutable, so an entry never goes stale.
//!
//! Distinct counts use the rollups' hash ([`hash_value`]) and sets ([`Uniq`]): exact up to
//! `stats.unique_exact_threshold` distinct values per bucket, then a sketch (standard error
//! 0.41%), so both ways give the same numbers.

use super::bucket::{Source, ALL_TYPES};
use super::partial::UniqState;
use super::query::{Granularity, Sources, StatsReader, DAY_US, HOUR_US};
use super::sketch::{hash_value, Uniq, UniqUnion};
use super::zone::{bucket_index, Step, Zone};
use super::StatsError;
use crate::cache::{BudgetCache, Eviction};
use crate::store::blocks::{BlockMeta, BlockReader};
use crate::store::{Query, Store, Value};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

/// What a trend counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Measure {
    Events,
    UniqueUsers,
    UniqueSessions,
}

impl Measure {
    pub fn parse(s: &str) -> Option<Measure> {
        Some(match s {
            "events" => Measure::Events,
            "unique_users" => Measure::UniqueUsers,
            "unique_sessions" => Measure::UniqueSessions,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Events => "events",
            Measure::UniqueUsers => "unique_users",
            Measure::UniqueSessions => "unique_sessions",
        }
    }
}

/// A field a condition or a breakdown reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    EventName,
    EventType,
    UserId,
    SessionId,
    /// A top-level key of `properties`.
    Property(String),
}

impl Field {
    /// `event_name`, `event_type`, `user_id`, `session_id` or `properties.<key>`.
    pub fn parse(s: &str) -> Result<Field, String> {
        Ok(match s {
            "event_name" => Field::EventName,
            "event_type" => Field::EventType,
            "user_id" => Field::UserId,
            "session_id" => Field::SessionId,
            _ => match s.strip_prefix("properties.") {
                Some(key) if !key.is_empty() && key.len() <= 200 => Field::Property(key.into()),
                _ => {
                    return Err(format!(
                        "field '{s}' is not event_name, event_type, user_id, session_id or properties.<key>"
                    ))
                }
            },
        })
    }
    pub fn name(&self) -> String {
        match self {
            Field::EventName => "event_name".into(),
            Field::EventType => "event_type".into(),
            Field::UserId => "user_id".into(),
            Field::SessionId => "session_id".into(),
            Field::Property(k) => format!("properties.{k}"),
        }
    }
}

/// How a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    IsSet,
    IsNotSet,
}

/// One condition an event must meet: `field cmp value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub field: Field,
    pub cmp: Cmp,
    /// The text compared with (`=`, `!=`); a number for `>`, `>=`, `<`, `<=`.
    pub text: String,
    pub number: Option<f64>,
}

impl Condition {
    /// `<field> <op> <value>`: op is `=`, `!=`, `>`, `>=`, `<`, `<=`, `is set` or
    /// `is not set` (no value); the value is the rest of the text, as is.
    pub fn parse(s: &str) -> Result<Condition, String> {
        let s = s.trim();
        let (field, rest) = s
            .split_once(char::is_whitespace)
            .ok_or("is not '<field> <op> <value>' (for example 'properties.plan = pro')")?;
        let field = Field::parse(field)?;
        let rest = rest.trim_start();
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words == ["is", "set"] {
            return Ok(Condition::new(field, Cmp::IsSet, ""));
        }
        if words == ["is", "not", "set"] {
            return Ok(Condition::new(field, Cmp::IsNotSet, ""));
        }
        let (op, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let value = value.trim();
        let cmp = match op {
            "=" => Cmp::Eq,
            "!=" => Cmp::Ne,
            ">" => Cmp::Gt,
            ">=" => Cmp::Ge,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            _ => {
                return Err(format!(
                    "operator '{op}' is not =, !=, >, >=, <, <=, 'is set' or 'is not set'"
                ))
            }
        };
        if value.is_empty() {
            return Err(format!("'{op}' needs a value after it"));
        }
        let c = Condition::new(field, cmp, value);
        if matches!(cmp, Cmp::Gt | Cmp::Ge | Cmp::Lt | Cmp::Le) {
            if !matches!(c.field, Field::Property(_)) {
                return Err(format!(
                    "'{op}' compares numbers: only a property can be compared so, not {}",
                    c.field.name()
                ));
            }
            if c.number.is_none() {
                return Err(format!(
                    "'{op}' compares numbers and '{value}' is not a number"
                ));
            }
        }
        Ok(c)
    }

    fn new(field: Field, cmp: Cmp, text: &str) -> Condition {
        Condition {
            field,
            cmp,
            text: text.to_string(),
            number: text.parse::<f64>().ok().filter(|n| n.is_finite()),
        }
    }

    /// Whether a value (its text and number, None when not set) meets it.
    fn holds(&self, v: Option<(&str, Option<f64>)>) -> bool {
        match (self.cmp, v) {
            (Cmp::IsSet, v) => v.is_some(),
            (Cmp::IsNotSet, v) => v.is_none(),
            (_, None) => self.cmp == Cmp::Ne,
            (Cmp::Eq, Some((t, n))) => t == self.text || num_eq(n, self.number),
            (Cmp::Ne, Some((t, n))) => !(t == self.text || num_eq(n, self.number)),
            (cmp, Some((_, Some(n)))) => {
                let x = self.number.unwrap_or(f64::NAN);
                match cmp {
                    Cmp::Gt => n > x,
                    Cmp::Ge => n >= x,
                    Cmp::Lt => n < x,
                    _ => n <= x,
                }
            }
            (_, Some((_, None))) => false,
        }
    }
}

fn num_eq(a: Option<f64>, b: Option<f64>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a == b)
}

/// What a trend is broken down by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Breakdown {
    EventName,
    EventType,
    Property(String),
}

impl Breakdown {
    pub fn parse(s: &str) -> Result<Breakdown, String> {
        match Field::parse(s)? {
            Field::EventName => Ok(Breakdown::EventName),
            Field::EventType => Ok(Breakdown::EventType),
            Field::Property(k) => Ok(Breakdown::Property(k)),
            f => Err(format!(
                "cannot break down by {} (event_name, event_type or properties.<key>)",
                f.name()
            )),
        }
    }
    pub fn name(&self) -> String {
        match self {
            Breakdown::EventName => "event_name".into(),
            Breakdown::EventType => "event_type".into(),
            Breakdown::Property(k) => format!("properties.{k}"),
        }
    }
}

/// A trend question.
#[derive(Debug, Clone)]
pub struct TrendSpec {
    pub org: [u8; 16],
    /// Event names (any of them); empty = every name.
    pub events: Vec<String>,
    pub event_type: Option<String>,
    pub conditions: Vec<Condition>,
    pub breakdown: Option<Breakdown>,
    /// Series kept besides "other" (top by total).
    pub breakdown_limit: usize,
    pub measure: Measure,
    pub step: Step,
    pub zone: Zone,
    /// The range's buckets: [`super::zone::boundaries`] of the asked range.
    pub boundaries: Vec<i64>,
}

impl TrendSpec {
    /// The property keys its conditions and breakdown read.
    pub fn property_keys(&self) -> Vec<&str> {
        let by = match &self.breakdown {
            Some(Breakdown::Property(k)) => Some(k.as_str()),
            _ => None,
        };
        property_keys(&self.conditions, by)
    }
}

/// A trend question as it travels to the other instances of a scaled-out group: the
/// question's parts, its zone by name and its buckets as the asking instance computed them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrendAsk {
    pub events: Vec<String>,
    pub event_type: Option<String>,
    pub conditions: Vec<Condition>,
    pub breakdown: Option<Breakdown>,
    pub measure: Measure,
    pub step: String,
    pub zone: String,
    pub boundaries: Vec<i64>,
}

impl TrendAsk {
    pub fn of(spec: &TrendSpec) -> TrendAsk {
        TrendAsk {
            events: spec.events.clone(),
            event_type: spec.event_type.clone(),
            conditions: spec.conditions.clone(),
            breakdown: spec.breakdown.clone(),
            measure: spec.measure,
            step: spec.step.as_str().to_string(),
            zone: spec.zone.name(),
            boundaries: spec.boundaries.clone(),
        }
    }

    /// The question for `org` (the breakdown's top N is the asker's to take: every series
    /// is kept).
    pub fn spec(&self, org: [u8; 16]) -> Result<TrendSpec, String> {
        if self.boundaries.len() < 2 {
            return Err("a trend part needs at least one bucket".into());
        }
        Ok(TrendSpec {
            org,
            events: self.events.clone(),
            event_type: self.event_type.clone(),
            conditions: self.conditions.clone(),
            breakdown: self.breakdown.clone(),
            breakdown_limit: MAX_BREAKDOWN_VALUES,
            measure: self.measure,
            step: Step::parse(&self.step).ok_or_else(|| format!("granularity '{}'", self.step))?,
            zone: Zone::parse(&self.zone).map_err(|e| format!("zone '{}' {e}", self.zone))?,
            boundaries: self.boundaries.clone(),
        })
    }
}

/// The property keys `conditions` (and a breakdown by property `by`) read, each once.
pub(super) fn property_keys<'a>(conditions: &'a [Condition], by: Option<&'a str>) -> Vec<&'a str> {
    let mut keys: Vec<&str> = conditions
        .iter()
        .filter_map(|c| match &c.field {
            Field::Property(k) => Some(k.as_str()),
            _ => None,
        })
        .chain(by)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Which series a line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesKey {
    /// No breakdown: every matching event.
    All,
    /// One breakdown value; None = the property is not set on these events.
    Value(Option<String>),
    /// The values past the top N, together (how many).
    Other(usize),
}

/// One line of a trend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub key: SeriesKey,
    /// One value per bucket.
    pub values: Vec<i64>,
    /// Over the whole range: the sum of events, or the distinct users or sessions (not the
    /// sum of the buckets').
    pub total: i64,
}

/// A trend's answer.
#[derive(Debug, Clone)]
pub struct Trend {
    pub series: Vec<Series>,
    /// `rollups` or `events`.
    pub source: &'static str,
    /// False when a sketch took part in a distinct count.
    pub exact: bool,
    /// Events read from blocks (0 from rollups).
    pub events_scanned: u64,
}

/// Most distinct breakdown values one answer tracks.
pub const MAX_BREAKDOWN_VALUES: usize = 100_000;
/// The decoded-column cache's default budget (`stats.trends_cache_mb`).
pub const COLUMN_CACHE_BYTES: usize = 512 << 20;

/// Decoded columns of blocks, by block number.
#[derive(Clone)]
pub struct ColumnCache(Arc<Mutex<BudgetCache<u64, Arc<BlockCols>>>>);

impl ColumnCache {
    pub fn new(budget_bytes: usize) -> Self {
        ColumnCache(Arc::new(Mutex::new(BudgetCache::new(
            budget_bytes,
            Eviction::Fifo,
        ))))
    }
}

impl Default for ColumnCache {
    fn default() -> Self {
        ColumnCache::new(COLUMN_CACHE_BYTES)
    }
}

/// Strings of a column as codes into their distinct values.
#[derive(Debug, Default)]
pub(super) struct Dict {
    pub(super) codes: Vec<u32>,
    pub(super) values: Vec<Arc<str>>,
}

impl Dict {
    fn of(column: Vec<Value>) -> Dict {
        let mut d = Dict::default();
        let mut at: HashMap<Arc<str>, u32> = HashMap::new();
        d.codes.reserve(column.len());
        for v in column {
            let s: Arc<str> = match v {
                Value::String(s) => s.into(),
                _ => "".into(),
            };
            let next = d.values.len() as u32;
            let code = *at.entry(s.clone()).or_insert_with(|| {
                d.values.push(s);
                next
            });
            d.codes.push(code);
        }
        d
    }
    fn bytes(&self) -> usize {
        self.codes.len() * 4 + self.values.iter().map(|v| v.len() + 24).sum::<usize>()
    }
}

/// A property's values in a block: code 0 = not set (absent or null), else `values[code-1]`.
#[derive(Debug, Default)]
struct PropCol {
    codes: Vec<u32>,
    values: Vec<(Arc<str>, Option<f64>)>,
}

/// The columns of one block a trend reads, decoded.
pub struct BlockCols {
    pub(super) ts: Vec<i64>,
    /// Per row, for a resident block that mixes orgs and partitions.
    org: Option<Vec<[u8; 16]>>,
    pub(super) topic: Option<Dict>,
    pub(super) partition: Option<Vec<i32>>,
    /// The Kafka offset of each row (-1: none).
    pub(super) offset: Vec<i64>,
    name: Dict,
    etype: Dict,
    /// Value hash, 0 = none.
    user: Vec<u64>,
    session: Vec<u64>,
    /// Properties asked for so far, by key.
    props: Mutex<HashMap<String, Arc<PropCol>>>,
    /// Bytes held without the properties.
    weight: usize,
}

/// A user or session id's hash, never 0 (0 stands for none).
fn id_hash(s: &str) -> u64 {
    hash_value(s).max(1)
}

fn hashes(column: Vec<Value>) -> Vec<u64> {
    column
        .into_iter()
        .map(|v| match v {
            Value::String(s) => id_hash(&s),
            _ => 0,
        })
        .collect()
}

/// The text a property value is compared and broken down by: a string as it is, other
/// JSON values as compact JSON (`12.5`, `true`, `["a"]`); null counts as not set.
fn prop_text(v: &serde_json::Value) -> Option<(String, Option<f64>)> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => {
            Some((s.clone(), s.parse::<f64>().ok().filter(|n| n.is_finite())))
        }
        serde_json::Value::Number(n) => Some((n.to_string(), n.as_f64())),
        other => Some((other.to_string(), None)),
    }
}

pub(super) struct Positions {
    ts: usize,
    offset: usize,
    org: usize,
    topic: usize,
    partition: usize,
    name: usize,
    etype: usize,
    user: usize,
    session: usize,
    props: usize,
}

impl Positions {
    pub(super) fn of(store: &Store) -> Result<Positions, StatsError> {
        let p = |f: &str| store.field_position("Event", f);
        Ok(Positions {
            ts: p("timestamp")?,
            offset: p("offset")?,
            org: p("org_id")?,
            topic: p("topic")?,
            partition: p("partition")?,
            name: p("event_name")?,
            etype: p("event_type")?,
            user: p("user_id")?,
            session: p("session_id")?,
            props: p("properties")?,
        })
    }
}

impl BlockCols {
    fn decode(
        reader: &BlockReader,
        meta: &BlockMeta,
        pos: &Positions,
    ) -> Result<BlockCols, StatsError> {
        let ts: Vec<i64> = reader
            .column(pos.ts)?
            .into_iter()
            .map(|v| match v {
                Value::Timestamp(t) | Value::Int64(t) => t,
                _ => i64::MIN,
            })
            .collect();
        let (org, topic, partition) = if meta.mixed {
            let org = reader
                .column(pos.org)?
                .into_iter()
                .map(|v| match v {
                    Value::Uuid(u) => u,
                    _ => [0; 16],
                })
                .collect::<Vec<_>>();
            let parts = reader
                .column(pos.partition)?
                .into_iter()
                .map(|v| match v {
                    Value::Int32(p) => p,
                    _ => -1,
                })
                .collect::<Vec<_>>();
            (
                Some(org),
                Some(Dict::of(reader.column(pos.topic)?)),
                Some(parts),
            )
        } else {
            (None, None, None)
        };
        let offset: Vec<i64> = reader
            .column(pos.offset)?
            .into_iter()
            .map(|v| match v {
                Value::Int64(o) => o,
                _ => -1,
            })
            .collect();
        let name = Dict::of(reader.column(pos.name)?);
        let etype = Dict::of(reader.column(pos.etype)?);
        let user = hashes(reader.column(pos.user)?);
        let session = hashes(reader.column(pos.session)?);
        let weight = 256
            + ts.len() * (8 + 8 + 8 + 8)
            + name.bytes()
            + etype.bytes()
            + org.as_ref().map_or(0, |o| o.len() * 20)
            + topic.as_ref().map_or(0, Dict::bytes);
        Ok(BlockCols {
            ts,
            org,
            topic,
            partition,
            offset,
            name,
            etype,
            user,
            session,
            props: Mutex::new(HashMap::new()),
            weight,
        })
    }

    /// Bytes held, the properties decoded so far included.
    fn weight_now(&self) -> usize {
        let props: usize = self
            .props
            .lock()
            .iter()
            .map(|(k, p)| {
                64 + k.len()
                    + p.codes.len() * 4
                    + p.values.iter().map(|(t, _)| t.len() + 40).sum::<usize>()
            })
            .sum();
        self.weight + props
    }

    /// Decodes the columns of the properties `keys` not decoded yet, reading the block's
    /// `properties` once for all of them.
    fn ensure_props(&self, keys: &[&str], bytes: &[u8], pos: &Positions) -> Result<(), StatsError> {
        let missing: Vec<&str> = {
            let props = self.props.lock();
            keys.iter()
                .copied()
                .filter(|k| !props.contains_key(*k))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let reader = BlockReader::open(bytes)?;
        let mut cols: Vec<PropCol> = missing.iter().map(|_| PropCol::default()).collect();
        let mut at: Vec<HashMap<String, u32>> = missing.iter().map(|_| HashMap::new()).collect();
        for v in reader.column(pos.props)? {
            let found = match &v {
                Value::String(text) => pick(text, &missing),
                _ => None,
            };
            for (k, col) in cols.iter_mut().enumerate() {
                let value = found
                    .as_ref()
                    .and_then(|f| f[k].as_ref())
                    .and_then(prop_text);
                let code = match value {
                    None => 0,
                    Some((text, num)) => {
                        let next = col.values.len() as u32 + 1;
                        *at[k].entry(text.clone()).or_insert_with(|| {
                            col.values.push((text.into(), num));
                            next
                        })
                    }
                };
                col.codes.push(code);
            }
        }
        let mut props = self.props.lock();
        for (k, col) in missing.into_iter().zip(cols) {
            props.insert(k.to_string(), Arc::new(col));
        }
        Ok(())
    }

    /// The column of property `key` ([`BlockCols::ensure_props`] decoded it).
    fn prop(&self, key: &str) -> Arc<PropCol> {
        self.props.lock().get(key).cloned().unwrap_or_default()
    }
}

/// The values of top-level `keys` in a JSON object's text (the last one if a key repeats,
/// as a parsed object keeps it), without building the object's other values; None when the
/// text is not a JSON object.
fn pick(text: &str, keys: &[&str]) -> Option<Vec<Option<serde_json::Value>>> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::borrow::Cow;
    use std::fmt;

    struct Key<'de>(Cow<'de, str>);
    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_string())))
                }
            }
            d.deserialize_str(V)
        }
    }
    struct Seed<'k>(&'k [&'k str]);
    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Vec<Option<serde_json::Value>>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Vec<Option<serde_json::Value>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut found = vec![None; self.0.len()];
            while let Some(k) = m.next_key::<Key<'de>>()? {
                match self.0.iter().position(|want| k.0 == *want) {
                    Some(i) => found[i] = Some(m.next_value::<serde_json::Value>()?),
                    None => {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Seed(keys).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(v)
}

/// Which events of one block a question reads: the org's (and, in a scaled-out group, the
/// held partitions'), with the names, type and conditions asked for. Built once per block:
/// names, types and property values are tested once per distinct value.
pub(super) struct Matcher<'c> {
    cols: &'c BlockCols,
    org: [u8; 16],
    held: Option<&'c [Source]>,
    tests: Vec<RowTest>,
}

/// Event names (any), an event type, conditions (all).
pub(super) type Selection<'a> = (&'a [String], Option<&'a str>, &'a [Condition]);

impl<'c> Matcher<'c> {
    pub(super) fn new(
        cols: &'c BlockCols,
        org: [u8; 16],
        (events, event_type, conditions): Selection<'_>,
        held: Option<&'c [Source]>,
    ) -> Matcher<'c> {
        let mut tests = Vec::new();
        if !events.is_empty() {
            tests.push(RowTest::Name(allowed(&cols.name.values, |n| {
                events.iter().any(|e| e == n)
            })));
        }
        if let Some(et) = event_type {
            tests.push(RowTest::Type(allowed(&cols.etype.values, |t| t == et)));
        }
        for c in conditions {
            let dict_test =
                |values: &[Arc<str>]| allowed(values, |v| c.holds(Some((v, v.parse().ok()))));
            tests.push(match &c.field {
                Field::EventName => RowTest::Name(dict_test(&cols.name.values)),
                Field::EventType => RowTest::Type(dict_test(&cols.etype.values)),
                Field::UserId => RowTest::User(id_hash(&c.text), c.cmp),
                Field::SessionId => RowTest::Session(id_hash(&c.text), c.cmp),
                Field::Property(key) => {
                    let col = cols.prop(key);
                    let mut ok = vec![c.holds(None)];
                    ok.extend(col.values.iter().map(|(t, n)| c.holds(Some((t, *n)))));
                    RowTest::Prop(col, ok)
                }
            });
        }
        Matcher {
            cols,
            org,
            held,
            tests,
        }
    }

    /// Whether row `i` is one of the events asked for (its time is not checked).
    #[inline]
    pub(super) fn matches(&self, i: usize) -> bool {
        let cols = self.cols;
        if let Some(org) = &cols.org {
            if org[i] != self.org {
                return false;
            }
            if let (Some(list), Some(topic), Some(part)) = (self.held, &cols.topic, &cols.partition)
            {
                let tn = &topic.values[topic.codes[i] as usize];
                if !list
                    .iter()
                    .any(|s| *s.topic == **tn && s.partition == part[i])
                {
                    return false;
                }
            }
        }
        self.tests.iter().all(|test| match test {
            RowTest::Name(ok) => ok[cols.name.codes[i] as usize],
            RowTest::Type(ok) => ok[cols.etype.codes[i] as usize],
            RowTest::Prop(col, ok) => ok[col.codes[i] as usize],
            RowTest::User(h, cmp) => hash_test(cols.user[i], *h, *cmp),
            RowTest::Session(h, cmp) => hash_test(cols.session[i], *h, *cmp),
        })
    }
}

/// Per-row tests of one block, from the conditions.
enum RowTest {
    /// Allowed codes of a dictionary column (indexed by code).
    Name(Vec<bool>),
    Type(Vec<bool>),
    Prop(Arc<PropCol>, Vec<bool>),
    /// A user or session hash test: (hash of the text, cmp).
    User(u64, Cmp),
    Session(u64, Cmp),
}

fn allowed(values: &[Arc<str>], f: impl Fn(&str) -> bool) -> Vec<bool> {
    values.iter().map(|v| f(v)).collect()
}

fn hash_test(h: u64, want: u64, cmp: Cmp) -> bool {
    match cmp {
        Cmp::Eq => h != 0 && h == want,
        Cmp::Ne => h != want,
        Cmp::IsSet => h != 0,
        Cmp::IsNotSet => h == 0,
        _ => false,
    }
}

/// A series while it is finished: label, values, total, and for distinct counts the sets
/// (per bucket and over the range) that an "other" series unions.
type Line = (Option<Arc<str>>, Vec<i64>, i64, Option<(Vec<Uniq>, Uniq)>);

/// Accumulated values of the series while blocks are read.
struct Acc {
    buckets: usize,
    measure: Measure,
    threshold: u64,
    /// Series id -> its label (None = not set); id 0 is "not set" / every event.
    labels: Vec<Option<Arc<str>>>,
    ids: HashMap<Arc<str>, u32>,
    counts: Vec<Vec<i64>>,
    sets: Vec<Vec<Uniq>>,
    totals: Vec<Uniq>,
    scanned: u64,
}

impl Acc {
    fn new(buckets: usize, measure: Measure, threshold: u64) -> Acc {
        let mut a = Acc {
            buckets,
            measure,
            threshold,
            labels: Vec::new(),
            ids: HashMap::new(),
            counts: Vec::new(),
            sets: Vec::new(),
            totals: Vec::new(),
            scanned: 0,
        };
        a.push_series(None);
        a
    }

    fn push_series(&mut self, label: Option<Arc<str>>) -> u32 {
        let id = self.labels.len() as u32;
        self.labels.push(label);
        match self.measure {
            Measure::Events => self.counts.push(vec![0; self.buckets]),
            _ => {
                self.sets.push(vec![Uniq::default(); self.buckets]);
                self.totals.push(Uniq::default());
            }
        }
        id
    }

    fn id_of(&mut self, label: &Arc<str>) -> Result<u32, StatsError> {
        if let Some(id) = self.ids.get(label) {
            return Ok(*id);
        }
        if self.labels.len() > MAX_BREAKDOWN_VALUES {
            return Err(StatsError::Invalid(format!(
                "the breakdown has more than {MAX_BREAKDOWN_VALUES} distinct values; add a condition or a shorter range"
            )));
        }
        let id = self.push_series(Some(label.clone()));
        self.ids.insert(label.clone(), id);
        Ok(id)
    }

    #[inline]
    fn add(&mut self, id: u32, bucket: usize, user: u64, session: u64) {
        let i = id as usize;
        match self.measure {
            Measure::Events => self.counts[i][bucket] += 1,
            Measure::UniqueUsers | Measure::UniqueSessions => {
                let h = if self.measure == Measure::UniqueUsers {
                    user
                } else {
                    session
                };
                if h != 0 {
                    self.sets[i][bucket].add(h, self.threshold);
                    self.totals[i].add(h, self.threshold);
                }
            }
        }
    }

    /// The series, top `limit` by total (ties by label), the rest as "other".
    fn finish(self, breakdown: bool, limit: usize) -> (Vec<Series>, bool) {
        let mut exact = true;
        let n = self.labels.len();
        let mut lines: Vec<Line> = Vec::with_capacity(n);
        match self.measure {
            Measure::Events => {
                for (label, counts) in self.labels.into_iter().zip(self.counts) {
                    let total = counts.iter().sum();
                    lines.push((label, counts, total, None));
                }
            }
            _ => {
                for ((label, sets), total) in
                    self.labels.into_iter().zip(self.sets).zip(self.totals)
                {
                    exact &= total.is_exact() && sets.iter().all(Uniq::is_exact);
                    let values = sets.iter().map(|u| u.count() as i64).collect();
                    let t = total.count() as i64;
                    lines.push((label, values, t, Some((sets, total))));
                }
            }
        }
        if !breakdown {
            let (_, values, total, _) = lines.swap_remove(0);
            return (
                vec![Series {
                    key: SeriesKey::All,
                    values,
                    total,
                }],
                exact,
            );
        }
        // Line 0 ("not set") is a value like any other, once it has events.
        lines.retain(|l| l.2 > 0 || l.1.iter().any(|v| *v > 0));
        lines.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        let rest = if lines.len() > limit {
            lines.split_off(limit)
        } else {
            Vec::new()
        };
        let mut out: Vec<Series> = lines
            .into_iter()
            .map(|(label, values, total, _)| Series {
                key: SeriesKey::Value(label.map(|l| l.to_string())),
                values,
                total,
            })
            .collect();
        if !rest.is_empty() {
            let k = rest.len();
            let buckets = rest[0].1.len();
            let (values, total) = match self.measure {
                Measure::Events => {
                    let mut v = vec![0; buckets];
                    for l in &rest {
                        for (a, b) in v.iter_mut().zip(&l.1) {
                            *a += b;
                        }
                    }
                    let t = v.iter().sum();
                    (v, t)
                }
                _ => {
                    let mut per: Vec<UniqUnion> = (0..buckets).map(|_| UniqUnion::new()).collect();
                    let mut all = UniqUnion::new();
                    for (_, _, _, sets) in &rest {
                        if let Some((sets, total)) = sets {
                            for (u, s) in per.iter_mut().zip(sets) {
                                u.add(s);
                            }
                            all.add(total);
                        }
                    }
                    let (t, e) = all.count();
                    exact &= e;
                    (per.iter().map(|u| u.count().0 as i64).collect(), t as i64)
                }
            };
            out.push(Series {
                key: SeriesKey::Other(k),
                values,
                total,
            });
        }
        (out, exact)
    }
}

/// One instance's part of a trend in a scaled-out group: every series it saw (before the
/// top N is taken) with its counts per bucket, or its distinct values per bucket and over the
/// range as sets or sketches; the parts of all instances merge exactly
/// ([`merge_trend_states`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TrendState {
    /// Series labels: None is "not set" (and, without a breakdown, every event).
    pub labels: Vec<Option<String>>,
    /// Events: per series, one count per bucket.
    #[serde(default)]
    pub counts: Vec<Vec<i64>>,
    /// Distinct measures: per series, one set per bucket, and one over the range.
    #[serde(default)]
    pub sets: Vec<Vec<UniqState>>,
    #[serde(default)]
    pub totals: Vec<UniqState>,
    pub scanned: u64,
}

impl Acc {
    fn into_state(self) -> TrendState {
        TrendState {
            labels: self
                .labels
                .into_iter()
                .map(|l| l.map(|s| s.to_string()))
                .collect(),
            counts: self.counts,
            sets: self
                .sets
                .into_iter()
                .map(|v| v.into_iter().map(UniqState).collect())
                .collect(),
            totals: self.totals.into_iter().map(UniqState).collect(),
            scanned: self.scanned,
        }
    }

    /// Adds another instance's part (same question, so the same buckets).
    fn merge(&mut self, part: TrendState) -> Result<(), StatsError> {
        let wrong = || StatsError::Invalid("a trend part with other buckets or measure".into());
        let union = |into: &mut Uniq, more: &Uniq| {
            let mut u = UniqUnion::new();
            u.add(into);
            u.add(more);
            *into = u.into_uniq();
        };
        let mut sets = part.sets.into_iter();
        let mut totals = part.totals.into_iter();
        let mut counts = part.counts.into_iter();
        for label in part.labels {
            let id = match label {
                None => 0,
                Some(l) => self.id_of(&Arc::from(l))?,
            } as usize;
            match self.measure {
                Measure::Events => {
                    let c = counts.next().ok_or_else(wrong)?;
                    if c.len() != self.buckets {
                        return Err(wrong());
                    }
                    for (a, b) in self.counts[id].iter_mut().zip(c) {
                        *a += b;
                    }
                }
                _ => {
                    let (s, t) = (
                        sets.next().ok_or_else(wrong)?,
                        totals.next().ok_or_else(wrong)?,
                    );
                    if s.len() != self.buckets {
                        return Err(wrong());
                    }
                    for (a, b) in self.sets[id].iter_mut().zip(&s) {
                        union(a, &b.0);
                    }
                    union(&mut self.totals[id], &t.0);
                }
            }
        }
        self.scanned += part.scanned;
        Ok(())
    }
}

/// The trend of a scaled-out group from its instances' parts ([`StatsReader::trend_state`]):
/// counts add, distinct values are unions of the parts' sets, then the top N is taken.
pub fn merge_trend_states(
    spec: &TrendSpec,
    parts: Vec<TrendState>,
    threshold: u64,
) -> Result<Trend, StatsError> {
    let mut acc = Acc::new(spec.boundaries.len() - 1, spec.measure, threshold);
    for p in parts {
        acc.merge(p)?;
    }
    let scanned = acc.scanned;
    let (series, exact) = acc.finish(spec.breakdown.is_some(), spec.breakdown_limit);
    Ok(Trend {
        series,
        source: "events",
        exact,
        events_scanned: scanned,
    })
}

impl StatsReader {
    /// Answers a trend: from the rollups when they hold the answer, else from the events.
    pub fn trend(&self, spec: &TrendSpec, threshold: u64) -> Result<Trend, StatsError> {
        if rollups_answer(spec) {
            return self.trend_from_rollups(spec);
        }
        // A block merged away while it was read: read again (its rows are in a newer block).
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.trend_from_events(spec, threshold)? {
                Some(t) => return Ok(t),
                None if attempt < 5 => continue,
                None => {
                    return Err(StatsError::Invalid(
                        "blocks kept being merged while the trend read them; ask again".into(),
                    ))
                }
            }
        }
    }

    fn trend_from_rollups(&self, spec: &TrendSpec) -> Result<Trend, StatsError> {
        let b = &spec.boundaries;
        let et = spec.event_type.as_deref().unwrap_or(ALL_TYPES);
        let sources = self.sources();
        let mut values = Vec::with_capacity(b.len().saturating_sub(1));
        for w in b.windows(2) {
            let keys = cover(spec.org, (w[0], w[1]), et, &sources);
            let p = self.merged_point(&keys, w[0])?;
            values.push(match spec.measure {
                Measure::Events => p.events,
                Measure::UniqueUsers => p.unique_users,
                Measure::UniqueSessions => p.unique_sessions,
            });
        }
        let (total, exact) = match spec.measure {
            Measure::Events => (values.iter().sum(), true),
            m => {
                let (first, last) = (b[0], *b.last().unwrap_or(&b[0]));
                let (users, sessions) = self.unique_unions(spec.org, first, last, et, &sources)?;
                let (n, exact) = if m == Measure::UniqueUsers {
                    users.count()
                } else {
                    sessions.count()
                };
                (n as i64, exact)
            }
        };
        Ok(Trend {
            series: vec![Series {
                key: SeriesKey::All,
                values,
                total,
            }],
            source: "rollups",
            exact,
            events_scanned: 0,
        })
    }

    /// None when a block went away while it was read.
    fn trend_from_events(
        &self,
        spec: &TrendSpec,
        threshold: u64,
    ) -> Result<Option<Trend>, StatsError> {
        let Some(acc) = self.scan_events(spec, threshold)? else {
            return Ok(None);
        };
        let scanned = acc.scanned;
        let (series, exact) = acc.finish(spec.breakdown.is_some(), spec.breakdown_limit);
        Ok(Some(Trend {
            series,
            source: "events",
            exact,
            events_scanned: scanned,
        }))
    }

    /// This reader's part of a trend for a scaled-out group (its partitions, from the
    /// events): every series, before the top N is taken, to merge with the other
    /// instances' ([`merge_trend_states`]).
    pub fn trend_state(&self, spec: &TrendSpec, threshold: u64) -> Result<TrendState, StatsError> {
        for _ in 0..5 {
            if let Some(acc) = self.scan_events(spec, threshold)? {
                return Ok(acc.into_state());
            }
        }
        Err(StatsError::Invalid(
            "blocks kept being merged while the trend read them; ask again".into(),
        ))
    }

    /// The org's events in the spec's range, counted into an [`Acc`]; None when a block
    /// went away while it was read.
    fn scan_events(&self, spec: &TrendSpec, threshold: u64) -> Result<Option<Acc>, StatsError> {
        let b = &spec.boundaries;
        let (first, last) = (b[0], *b.last().unwrap_or(&b[0]));
        let q = Query::new("Event")
            .eq("org_id", Value::Uuid(spec.org))
            .range(
                "timestamp",
                Bound::Included(Value::Timestamp(first)),
                Bound::Excluded(Value::Timestamp(last)),
            );
        let store = &self.store;
        let blocks = store.blocks_for(&q)?;
        let pos = Positions::of(store)?;
        let held = held_of(&self.sources());
        let blocks = held_blocks(blocks, held.as_deref());
        let keys = spec.property_keys();
        let Some(cols) = self.columns_of(&blocks, &pos, &keys)? else {
            return Ok(None);
        };
        let mut acc = Acc::new(b.len() - 1, spec.measure, threshold);
        for c in &cols {
            self.scan_block(spec, c, held.as_deref(), &mut acc)?;
        }
        Ok(Some(acc))
    }

    /// The decoded columns of `blocks` with the properties `keys`, from the cache or decoded
    /// now (blocks not in the cache are decoded on up to 4 threads); None when a block went
    /// away meanwhile.
    pub(super) fn columns_of(
        &self,
        blocks: &[Arc<BlockMeta>],
        pos: &Positions,
        keys: &[&str],
    ) -> Result<Option<Vec<Arc<BlockCols>>>, StatsError> {
        let one = |meta: &BlockMeta| -> Result<Option<Arc<BlockCols>>, StatsError> {
            let cached = self.columns.0.lock().get(&meta.no).cloned();
            let complete = cached.as_ref().is_some_and(|c| {
                let props = c.props.lock();
                keys.iter().all(|k| props.contains_key(*k))
            });
            if let (Some(c), true) = (&cached, complete) {
                return Ok(Some(c.clone()));
            }
            let Some(bytes) = self.store.block_bytes(meta.no)? else {
                return Ok(None);
            };
            let cols = match cached {
                Some(c) => c,
                None => Arc::new(BlockCols::decode(&BlockReader::open(&bytes)?, meta, pos)?),
            };
            cols.ensure_props(keys, &bytes, pos)?;
            self.columns
                .0
                .lock()
                .insert(meta.no, cols.clone(), cols.weight_now());
            Ok(Some(cols))
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(blocks.len().max(1));
        let results: Vec<Result<Option<Arc<BlockCols>>, StatsError>> = if threads <= 1 {
            blocks.iter().map(|m| one(m)).collect()
        } else {
            let mut slots: Vec<Option<Result<Option<Arc<BlockCols>>, StatsError>>> =
                (0..blocks.len()).map(|_| None).collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let one = &one;
                        scope.spawn(move || {
                            (t..blocks.len())
                                .step_by(threads)
                                .map(|i| (i, one(&blocks[i])))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                for h in handles {
                    if let Ok(done) = h.join() {
                        for (i, r) in done {
                            slots[i] = Some(r);
                        }
                    }
                }
            });
            slots
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(StatsError::Invalid(
                            "a block decoding thread panicked".into(),
                        ))
                    })
                })
                .collect()
        };
        let mut out = Vec::with_capacity(blocks.len());
        for r in results {
            match r? {
                Some(c) => out.push(c),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Adds one block's matching events.
    fn scan_block(
        &self,
        spec: &TrendSpec,
        cols: &BlockCols,
        held: Option<&[Source]>,
        acc: &mut Acc,
    ) -> Result<(), StatsError> {
        let m = Matcher::new(
            cols,
            spec.org,
            (&spec.events, spec.event_type.as_deref(), &spec.conditions),
            held,
        );
        // The breakdown: each code's series id.
        enum By {
            None,
            Name(Vec<u32>),
            Type(Vec<u32>),
            Prop(Arc<PropCol>, Vec<u32>),
        }
        let by = match &spec.breakdown {
            None => By::None,
            Some(Breakdown::EventName) => By::Name(
                cols.name
                    .values
                    .iter()
                    .map(|v| acc.id_of(v))
                    .collect::<Result<_, _>>()?,
            ),
            Some(Breakdown::EventType) => By::Type(
                cols.etype
                    .values
                    .iter()
                    .map(|v| acc.id_of(v))
                    .collect::<Result<_, _>>()?,
            ),
            Some(Breakdown::Property(key)) => {
                let col = cols.prop(key);
                let mut ids = vec![0];
                for (t, _) in &col.values {
                    ids.push(acc.id_of(t)?);
                }
                By::Prop(col, ids)
            }
        };
        let b = &spec.boundaries;
        let (first, last) = (b[0], b[b.len() - 1]);
        let mut bucket = 0usize;
        for i in 0..cols.ts.len() {
            let t = cols.ts[i];
            if t < first || t >= last {
                continue;
            }
            if !m.matches(i) {
                continue;
            }
            // Events of a block are mostly in time order: try the last bucket first.
            if !(b[bucket] <= t && t < b[bucket + 1]) {
                match bucket_index(b, t) {
                    Some(k) => bucket = k,
                    None => continue,
                }
            }
            let id = match &by {
                By::None => 0,
                By::Name(ids) => ids[cols.name.codes[i] as usize],
                By::Type(ids) => ids[cols.etype.codes[i] as usize],
                By::Prop(col, ids) => ids[col.codes[i] as usize],
            };
            acc.scanned += 1;
            acc.add(id, bucket, cols.user[i], cols.session[i]);
        }
        Ok(())
    }
}

/// The blocks that may hold events of the `held` partitions (all without a list; resident
/// blocks, which mix partitions, are checked row by row).
pub(super) fn held_blocks(
    blocks: Vec<Arc<BlockMeta>>,
    held: Option<&[Source]>,
) -> Vec<Arc<BlockMeta>> {
    blocks
        .into_iter()
        .filter(|meta| match (held, meta.mixed) {
            (Some(list), false) => matches!((&meta.topic, &meta.partition),
                (Value::String(t), Value::Int32(p)) if list.iter().any(|s| *s.topic == **t && s.partition == *p)),
            _ => true,
        })
        .collect()
}

/// The partitions a reader answers for (None: every one).
pub(super) fn held_of(sources: &Sources) -> Option<Vec<Source>> {
    match sources {
        Sources::Whole => None,
        Sources::Partitions(list) => Some(list.clone()),
    }
}

/// Whether the rollups hold the answer to `spec` (see the module's doc).
pub fn rollups_answer(spec: &TrendSpec) -> bool {
    spec.events.is_empty()
        && spec.conditions.is_empty()
        && spec.breakdown.is_none()
        && spec.step != Step::Minute
        && spec.boundaries.iter().all(|t| t.rem_euclid(HOUR_US) == 0)
}

/// The rollup keys covering [start, end) (whole UTC hours): whole UTC days as daily rows,
/// the other hours as hourly rows, one per source.
fn cover(
    org: [u8; 16],
    (start, end): (i64, i64),
    et: &str,
    sources: &Sources,
) -> Vec<super::bucket::RollupKey> {
    let mut keys = Vec::new();
    let mut t = start;
    while t < end {
        let g = if t.rem_euclid(DAY_US) == 0 && t + DAY_US <= end {
            Granularity::Day
        } else {
            Granularity::Hour
        };
        keys.extend(sources.keys(StatsReader::bucket_key(org, t, g, et)));
        t += g.step_us();
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_name_what_is_wrong() {
        let c = Condition::parse("properties.plan = pro").unwrap();
        assert_eq!(
            (c.field.clone(), c.cmp, c.text.as_str()),
            (Field::Property("plan".into()), Cmp::Eq, "pro")
        );
        let c = Condition::parse("properties.amount >= 10.5").unwrap();
        assert_eq!(c.number, Some(10.5));
        assert_eq!(
            Condition::parse("properties.coupon is not set")
                .unwrap()
                .cmp,
            Cmp::IsNotSet
        );
        assert_eq!(Condition::parse("user_id = u 1").unwrap().text, "u 1");
        let err = |s: &str| Condition::parse(s).unwrap_err();
        assert!(err("plan = pro").contains("field 'plan'"));
        assert!(err("properties.plan ~ pro").contains("operator '~'"));
        assert!(err("properties.amount > ten").contains("not a number"));
        assert!(err("event_name > 3").contains("only a property"));
        assert!(err("properties.plan =").contains("needs a value"));
    }

    #[test]
    fn pick_finds_top_level_keys_only() {
        let one = |t: &str, k: &str| pick(t, &[k]).and_then(|mut v| v.remove(0));
        let t = r#"{"a":{"plan":"x"},"plan":"pro","n":[1,2],"plan2":3}"#;
        assert_eq!(one(t, "plan"), Some(serde_json::json!("pro")));
        assert_eq!(one(t, "n"), Some(serde_json::json!([1, 2])));
        assert_eq!(one(t, "zz"), None);
        assert_eq!(
            one(r#"{"plan":1,"pl\u0061n":2}"#, "plan"),
            Some(serde_json::json!(2))
        );
        assert_eq!(
            one(r#"{"plan":1,"plan":2}"#, "plan"),
            Some(serde_json::json!(2))
        );
        assert_eq!(pick("[1,2]", &["plan"]), None);
        assert_eq!(pick(r#"{"plan":1"#, &["plan"]), None);
        assert_eq!(
            pick(t, &["n", "plan", "q"]),
            Some(vec![
                Some(serde_json::json!([1, 2])),
                Some(serde_json::json!("pro")),
                None
            ])
        );
    }

    #[test]
    fn conditions_compare_text_and_numbers() {
        let eq = Condition::parse("properties.n = 12").unwrap();
        assert!(eq.holds(Some(("12.0", Some(12.0)))));
        assert!(eq.holds(Some(("12", Some(12.0)))));
        assert!(!eq.holds(None));
        let ne = Condition::parse("properties.plan != pro").unwrap();
        assert!(ne.holds(None), "an unset property is not 'pro'");
        assert!(!ne.holds(Some(("pro", None))));
        let gt = Condition::parse("properties.n > 3").unwrap();
        assert!(gt.holds(Some(("4", Some(4.0)))));
        assert!(!gt.holds(Some(("abc", None))));
        assert!(!gt.holds(None));
    }

    #[test]
    fn other_unions_sets_and_top_is_by_total() {
        let mut acc = Acc::new(2, Measure::UniqueUsers, 1000);
        let a = acc.id_of(&Arc::from("a")).unwrap();
        let b = acc.id_of(&Arc::from("b")).unwrap();
        let c = acc.id_of(&Arc::from("c")).unwrap();
        for u in 1..=5 {
            acc.add(a, 0, u, 0);
        }
        // b and c share user 7: "other" counts it once.
        acc.add(b, 0, 7, 0);
        acc.add(c, 1, 7, 0);
        acc.add(c, 1, 8, 0);
        let (series, exact) = acc.finish(true, 1);
        assert!(exact);
        assert_eq!(series[0].key, SeriesKey::Value(Some("a".into())));
        assert_eq!(series[0].total, 5);
        assert_eq!(series[1].key, SeriesKey::Other(2));
        assert_eq!(series[1].values, vec![1, 2]);
        assert_eq!(series[1].total, 2);
    }
}
