//! Trends (`GET /api/v1/orgs/{org}/trends`) end to end against brute force: a seeded set of
//! ~35,000 native JSON events of three orgs, with explicit timestamps around the Europe/Berlin
//! DST change of 2026-03-29 (01:00 UTC), the America/New_York one of 2026-03-08 and a +05:30
//! midnight, is produced to Tansu (a real, independent Kafka-compatible broker, out of
//! process), ingested by the connector in this process ([`common::Connector`]) with its
//! stats workers and gateway ([`streamtally::app::Services`]) on a real socket, and every
//! answer is compared with what this file computes from the events it generated: its own
//! bucket arithmetic (chrono + chrono-tz), its own filter semantics, its own breakdown
//! ranking ("other" as the union of the rest), exact distinct counts.
//!
//! Covered:
//! - every measure x breakdown (none, event_name, event_type, properties.plan, a
//!   high-cardinality property with breakdown_limit=3) x granularity (hour, day, week) x zone
//!   (UTC, Europe/Berlin, +05:30, America/New_York), minutes over short ranges around the DST
//!   change and a +05:30 midnight, America/New_York's 23-hour day, org 2 apart from org 1;
//! - filters (=, !=, >, >=, <, <=, is set, is not set on properties and top-level fields),
//!   repeated `event`, `event_type`, and their combinations with a breakdown;
//! - `compare=previous`, the default granularity, `source` (rollups vs events);
//! - refused requests name the parameter and the value; 401 / 403;
//! - the org's time-zone setting as the default zone.
//!
//! The tests share one fixture (broker, connector, events, ~5 s to build): the first test
//! builds it, tests running meanwhile use it too, and the last one running tears it down
//! (a test starting after that builds it again, e.g. with `--test-threads=1`).
//! Outside CI the tests skip (saying so) when the Tansu binary is missing
//! (`bash .ci/install-tansu.sh`).

mod common;

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, Offset, SecondsFormat, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;
use common::broker::{produce, random_name, TestBroker, TestRecord};
use common::http;
use common::{test_org as org, Connector};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Map, Value as Json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use streamtally::config::AuthToken;
use streamtally::gateway::auth::token_sha256_hex;

const MIN_US: i64 = 60_000_000;
const HOUR_US: i64 = 60 * MIN_US;
const PARTITIONS: i32 = 3;

/// Org `n`'s token (orgs 1, 2 and 3).
/// A refused request: its parameters, and the error's code, parameter and value.
type BadCase<'a> = (Vec<(&'a str, String)>, &'a str, &'a str, &'a str);

fn token(n: u128) -> String {
    format!("trends-test-token-of-org-{n}")
}

fn us(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .timestamp_micros()
}

fn utc(t_us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(t_us).expect("a time in range")
}

fn rfc(t_us: i64) -> String {
    utc(t_us).to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------
// Time zones and buckets, computed here independently of src/stats/zone.rs.

#[derive(Debug, Clone, Copy)]
enum Z {
    Named(Tz),
    Fixed(FixedOffset),
}

impl Z {
    fn named(name: &str) -> Z {
        Z::Named(name.parse().unwrap_or_else(|e| panic!("{name}: {e}")))
    }

    fn fixed(secs: i32) -> Z {
        Z::Fixed(FixedOffset::east_opt(secs).expect("offset"))
    }

    fn utc() -> Z {
        Z::Named(chrono_tz::UTC)
    }

    /// The `tz` parameter, and the `time_zone` the answer names.
    fn param(&self) -> String {
        match self {
            Z::Named(tz) => tz.name().to_string(),
            Z::Fixed(f) => {
                let s = f.local_minus_utc();
                let a = s.abs();
                let sign = if s < 0 { '-' } else { '+' };
                format!("{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
            }
        }
    }

    fn offset_s(&self, t_us: i64) -> i32 {
        match self {
            Z::Named(tz) => tz
                .offset_from_utc_datetime(&utc(t_us).naive_utc())
                .fix()
                .local_minus_utc(),
            Z::Fixed(f) => f.local_minus_utc(),
        }
    }

    fn local(&self, t_us: i64) -> NaiveDateTime {
        utc(t_us).naive_utc() + chrono::Duration::seconds(self.offset_s(t_us) as i64)
    }

    /// The instant of local midnight of `d` (none of the zones here skips a midnight).
    fn midnight(&self, d: NaiveDate) -> i64 {
        let l = d.and_hms_opt(0, 0, 0).unwrap();
        let t = match self {
            Z::Named(tz) => tz
                .from_local_datetime(&l)
                .earliest()
                .map(|t| t.timestamp_micros()),
            Z::Fixed(f) => f
                .from_local_datetime(&l)
                .earliest()
                .map(|t| t.timestamp_micros()),
        };
        t.unwrap_or_else(|| panic!("no local midnight of {d} in {}", self.param()))
    }

    /// Local RFC 3339 with the offset (`+00:00` for UTC: answers' `Z` is normalised).
    fn fmt(&self, t_us: i64) -> String {
        let off = FixedOffset::east_opt(self.offset_s(t_us)).unwrap();
        utc(t_us)
            .with_timezone(&off)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G {
    Minute,
    Hour,
    Day,
    Week,
}

impl G {
    fn as_str(self) -> &'static str {
        match self {
            G::Minute => "minute",
            G::Hour => "hour",
            G::Day => "day",
            G::Week => "week",
        }
    }

    fn parse(s: &str) -> Option<G> {
        [G::Minute, G::Hour, G::Day, G::Week]
            .into_iter()
            .find(|g| g.as_str() == s)
    }
}

/// The start of the local minute / hour / day / week (Monday) holding `t`.
fn bucket_start(z: Z, g: G, t: i64) -> i64 {
    let l = z.local(t);
    let sub = (l.nanosecond() / 1000) as i64;
    match g {
        G::Minute => t - l.second() as i64 * 1_000_000 - sub,
        G::Hour => t - (l.minute() as i64 * 60 + l.second() as i64) * 1_000_000 - sub,
        G::Day => z.midnight(l.date()),
        G::Week => {
            z.midnight(l.date() - chrono::Duration::days(l.weekday().num_days_from_monday() as i64))
        }
    }
}

fn next_start(z: Z, g: G, start: i64) -> i64 {
    match g {
        G::Minute => start + MIN_US,
        G::Hour => start + HOUR_US,
        G::Day => z.midnight(z.local(start).date() + chrono::Duration::days(1)),
        G::Week => z.midnight(z.local(start).date() + chrono::Duration::days(7)),
    }
}

/// The bucket starts of [from, to) widened to whole buckets, then the end of the last one.
fn boundaries(z: Z, g: G, from: i64, to: i64) -> Vec<i64> {
    let mut b = vec![bucket_start(z, g, from)];
    while *b.last().unwrap() < to {
        let next = next_start(z, g, *b.last().unwrap());
        b.push(next);
    }
    b
}

/// The `n` buckets right before `first`, then `first`.
fn previous_boundaries(z: Z, g: G, first: i64, n: usize) -> Vec<i64> {
    let mut b = vec![first];
    for _ in 0..n {
        let t = bucket_start(z, g, b.last().unwrap() - 1);
        b.push(t);
    }
    b.reverse();
    b
}

// ---------------------------------------------------------------------------------------
// Events.

#[derive(Debug, Clone)]
struct Ev {
    org: u128,
    /// µs, whole milliseconds.
    ts: i64,
    name: &'static str,
    etype: &'static str,
    user: Option<String>,
    session: Option<String>,
    props: Option<Map<String, Json>>,
}

impl Ev {
    /// The native JSON payload; the time as epoch ms or as RFC 3339 text.
    fn payload(&self, time_as_text: bool) -> String {
        let mut o = Map::new();
        o.insert("org_id".into(), json!(org(self.org).to_string()));
        o.insert("event_type".into(), json!(self.etype));
        o.insert("event_name".into(), json!(self.name));
        if let Some(u) = &self.user {
            o.insert("user_id".into(), json!(u));
        }
        if let Some(s) = &self.session {
            o.insert("session_id".into(), json!(s));
        }
        let ts = if time_as_text {
            json!(rfc(self.ts))
        } else {
            json!(self.ts / 1000)
        };
        o.insert("timestamp".into(), ts);
        if let Some(p) = &self.props {
            o.insert("properties".into(), Json::Object(p.clone()));
        }
        Json::Object(o).to_string()
    }

    /// A field as the contract reads it: text and number; None when not set (a property
    /// absent or JSON null). Strings as they are, numbers as their JSON text.
    fn field(&self, field: &str) -> Option<(String, Option<f64>)> {
        let text = |s: &str| {
            Some((
                s.to_string(),
                s.parse::<f64>().ok().filter(|n| n.is_finite()),
            ))
        };
        match field {
            "event_name" => text(self.name),
            "event_type" => text(self.etype),
            "user_id" => self.user.as_deref().and_then(text),
            "session_id" => self.session.as_deref().and_then(text),
            _ => {
                let key = field
                    .strip_prefix("properties.")
                    .unwrap_or_else(|| panic!("unknown field {field}"));
                match self.props.as_ref()?.get(key)? {
                    Json::Null => None,
                    Json::String(s) => text(s),
                    Json::Number(n) => Some((n.to_string(), n.as_f64())),
                    other => Some((other.to_string(), None)),
                }
            }
        }
    }
}

/// Event names, their type, and how often they come (out of 100).
const NAMES: [(&str, &str, u32); 12] = [
    ("page_view", "page", 28),
    ("click", "track", 17),
    ("login", "track", 10),
    ("add_to_cart", "track", 9),
    ("purchase", "track", 7),
    ("signup", "track", 6),
    ("search", "track", 6),
    ("identify", "identify", 5),
    ("logout", "track", 4),
    ("share", "track", 4),
    ("invite", "track", 2),
    ("refund", "track", 2),
];

fn random_props(rng: &mut StdRng) -> Map<String, Json> {
    let mut m = Map::new();
    let p: f64 = rng.gen();
    let plan = if p < 0.40 {
        Some(json!("free"))
    } else if p < 0.64 {
        Some(json!("pro"))
    } else if p < 0.80 {
        Some(json!("team"))
    } else if p < 0.85 {
        Some(Json::Null)
    } else {
        None
    };
    if let Some(v) = plan {
        m.insert("plan".into(), v);
    }
    let p: f64 = rng.gen();
    let amount = if p < 0.20 {
        // Whole numbers, 10 included (for `> 10`).
        Some(json!(rng.gen_range(0..=40)))
    } else if p < 0.38 {
        // Quarters as floats: 3.5, 4.0, 10.0 ... (JSON text `4.0`).
        Some(json!(rng.gen_range(0..=160) as f64 / 4.0))
    } else if p < 0.40 {
        Some(json!("unknown"))
    } else if p < 0.42 {
        Some(Json::Null)
    } else {
        None
    };
    if let Some(v) = amount {
        m.insert("amount".into(), v);
    }
    if rng.gen_bool(0.3) {
        m.insert("beta".into(), json!(rng.gen_bool(0.5)));
    }
    let p: f64 = rng.gen();
    if p < 0.10 {
        m.insert("coupon".into(), json!("SPRING"));
    } else if p < 0.15 {
        m.insert("coupon".into(), json!("WELCOME"));
    } else if p < 0.20 {
        m.insert("coupon".into(), Json::Null);
    }
    if rng.gen_bool(0.6) {
        let r: f64 = rng.gen();
        m.insert(
            "ref".into(),
            json!(format!("ref_{:03}", (r * r * r * 300.0) as u32)),
        );
    }
    if rng.gen_bool(0.2) {
        m.insert("qty".into(), json!(rng.gen_range(1..5)));
    }
    m
}

fn random_event(rng: &mut StdRng, o: u128, ts: i64, users: u32) -> Ev {
    let total: u32 = NAMES.iter().map(|n| n.2).sum();
    let mut pick = rng.gen_range(0..total);
    let (name, mut etype, _) = *NAMES
        .iter()
        .find(|n| {
            if pick < n.2 {
                true
            } else {
                pick -= n.2;
                false
            }
        })
        .unwrap();
    if name == "page_view" && rng.gen_bool(0.2) {
        etype = "screen";
    }
    let user = rng.gen_bool(0.88).then(|| {
        let r: f64 = rng.gen();
        format!("u{}", (r * r * users as f64) as u32)
    });
    let session = rng.gen_bool(0.85).then(|| match &user {
        Some(u) => format!("s{}_{}", &u[1..], rng.gen_range(0..3)),
        None => format!("anon{}", rng.gen_range(0..500)),
    });
    let props = rng.gen_bool(0.92).then(|| random_props(rng));
    Ev {
        org: o,
        ts,
        name,
        etype,
        user,
        session,
        props,
    }
}

/// `n` events of org `o` at random whole milliseconds of [from, to).
fn spread(rng: &mut StdRng, o: u128, n: usize, from: &str, to: &str, users: u32) -> Vec<Ev> {
    let (a, b) = (us(from) / 1000, us(to) / 1000);
    (0..n)
        .map(|_| {
            let ts = rng.gen_range(a..b) * 1000;
            random_event(rng, o, ts, users)
        })
        .collect()
}

/// Instants where buckets of some zone change, and where Berlin's and New York's clocks
/// jump: events land 1 ms before, on, and 1 ms after each.
const EDGES: [&str; 12] = [
    "2026-03-29T01:00:00Z", // Berlin: 02:00 CET becomes 03:00 CEST
    "2026-03-28T23:00:00Z", // Berlin: midnight of 29 March
    "2026-03-29T22:00:00Z", // Berlin: midnight of 30 March (a Monday)
    "2026-03-31T18:30:00Z", // +05:30: midnight of 1 April
    "2026-04-01T00:00:00Z",
    "2026-03-30T00:00:00Z", // UTC: a Monday
    "2026-03-26T04:00:00Z", // New York: midnight of 26 March (EDT)
    "2026-03-08T07:00:00Z", // New York: 02:00 EST becomes 03:00 EDT
    "2026-03-08T05:00:00Z", // New York: midnight of 8 March (EST)
    "2026-03-09T04:00:00Z", // New York: midnight of 9 March (EDT)
    "2026-03-25T10:17:23Z", // the matrix's `from`
    "2026-04-03T13:05:00Z", // the matrix's `to`
];

fn generate() -> Vec<Ev> {
    let mut rng = StdRng::seed_from_u64(20260329);
    let mut evs = Vec::new();
    // Org 1: ~19 days, a dense cluster over Berlin's DST change, one over a +05:30
    // midnight, and one over New York's DST change.
    evs.extend(spread(
        &mut rng,
        1,
        26_000,
        "2026-03-20T00:00:00Z",
        "2026-04-08T00:00:00Z",
        1200,
    ));
    evs.extend(spread(
        &mut rng,
        1,
        600,
        "2026-03-29T00:30:00Z",
        "2026-03-29T02:30:00Z",
        1200,
    ));
    evs.extend(spread(
        &mut rng,
        1,
        400,
        "2026-03-31T18:00:00Z",
        "2026-03-31T19:00:00Z",
        1200,
    ));
    evs.extend(spread(
        &mut rng,
        1,
        800,
        "2026-03-07T00:00:00Z",
        "2026-03-10T06:00:00Z",
        1200,
    ));
    // Org 2: fewer events, users with the same names as org 1's.
    evs.extend(spread(
        &mut rng,
        2,
        6_000,
        "2026-03-20T00:00:00Z",
        "2026-04-08T00:00:00Z",
        400,
    ));
    evs.extend(spread(
        &mut rng,
        2,
        300,
        "2026-03-29T00:30:00Z",
        "2026-03-29T02:30:00Z",
        400,
    ));
    // Org 3: the org whose time-zone setting changes.
    evs.extend(spread(
        &mut rng,
        3,
        400,
        "2026-03-24T00:00:00Z",
        "2026-04-04T00:00:00Z",
        100,
    ));
    for edge in EDGES {
        for delta_ms in [-1, 0, 1] {
            let ts = us(edge) + delta_ms * 1000;
            for o in [1, 1, 2] {
                evs.push(random_event(&mut rng, o, ts, 300));
            }
        }
    }
    evs
}

// ---------------------------------------------------------------------------------------
// Questions and their brute-force answers.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    Events,
    Users,
    Sessions,
}

impl M {
    fn as_str(self) -> &'static str {
        match self {
            M::Events => "events",
            M::Users => "unique_users",
            M::Sessions => "unique_sessions",
        }
    }
}

const MEASURES: [M; 3] = [M::Events, M::Users, M::Sessions];

#[derive(Debug, Clone)]
struct Filter {
    field: String,
    op: &'static str,
    value: String,
}

fn filter(field: &str, op: &'static str, value: &str) -> Filter {
    Filter {
        field: field.into(),
        op,
        value: value.into(),
    }
}

impl Filter {
    fn text(&self) -> String {
        if self.value.is_empty() {
            format!("{} {}", self.field, self.op)
        } else {
            format!("{} {} {}", self.field, self.op, self.value)
        }
    }

    /// The contract: `=` compares text, or numbers when both parse as numbers; `!=` is its
    /// negation (true when not set); `>`.. compare numbers (false for a value that is not a
    /// number, or not set); `is set` = present and not null.
    fn holds(&self, e: &Ev) -> bool {
        let v = e.field(&self.field);
        let wanted = self.value.parse::<f64>().ok();
        let eq = match &v {
            None => false,
            Some((t, n)) => {
                *t == self.value || matches!((n, wanted), (Some(a), Some(b)) if *a == b)
            }
        };
        match self.op {
            "=" => eq,
            "!=" => !eq,
            "is set" => v.is_some(),
            "is not set" => v.is_none(),
            op => match (v, wanted) {
                (Some((_, Some(n))), Some(x)) => match op {
                    ">" => n > x,
                    ">=" => n >= x,
                    "<" => n < x,
                    "<=" => n <= x,
                    _ => panic!("operator {op}"),
                },
                _ => false,
            },
        }
    }
}

/// A trend question.
#[derive(Debug, Clone)]
struct Q {
    org: u128,
    from: i64,
    to: i64,
    /// `from`/`to` sent as epoch milliseconds instead of RFC 3339.
    epoch_ms: bool,
    tz: Option<Z>,
    gran: Option<G>,
    measure: Option<M>,
    events: Vec<&'static str>,
    event_type: Option<&'static str>,
    filters: Vec<Filter>,
    breakdown: Option<String>,
    limit: Option<usize>,
    compare: bool,
}

fn q(o: u128, from: &str, to: &str) -> Q {
    Q {
        org: o,
        from: us(from),
        to: us(to),
        epoch_ms: false,
        tz: None,
        gran: None,
        measure: None,
        events: Vec::new(),
        event_type: None,
        filters: Vec::new(),
        breakdown: None,
        limit: None,
        compare: false,
    }
}

impl Q {
    fn tz(mut self, z: Z) -> Q {
        self.tz = Some(z);
        self
    }
    fn gran(mut self, g: G) -> Q {
        self.gran = Some(g);
        self
    }
    fn measure(mut self, m: M) -> Q {
        self.measure = Some(m);
        self
    }
    fn by(mut self, breakdown: &str, limit: Option<usize>) -> Q {
        self.breakdown = Some(breakdown.into());
        self.limit = limit;
        self
    }
    fn filter(mut self, f: Filter) -> Q {
        self.filters.push(f);
        self
    }
    fn compare(mut self) -> Q {
        self.compare = true;
        self
    }

    fn path(&self) -> String {
        let time = |t: i64| {
            if self.epoch_ms {
                (t / 1000).to_string()
            } else {
                rfc(t)
            }
        };
        let mut p: Vec<(&str, String)> = vec![("from", time(self.from)), ("to", time(self.to))];
        if let Some(z) = self.tz {
            p.push(("tz", z.param()));
        }
        if let Some(g) = self.gran {
            p.push(("granularity", g.as_str().into()));
        }
        if let Some(m) = self.measure {
            p.push(("measure", m.as_str().into()));
        }
        for e in &self.events {
            p.push(("event", e.to_string()));
        }
        if let Some(t) = self.event_type {
            p.push(("event_type", t.into()));
        }
        for f in &self.filters {
            p.push(("filter", f.text()));
        }
        if let Some(b) = &self.breakdown {
            p.push(("breakdown", b.clone()));
        }
        if let Some(l) = self.limit {
            p.push(("breakdown_limit", l.to_string()));
        }
        if self.compare {
            p.push(("compare", "previous".into()));
        }
        trends_path(self.org, &p)
    }

    fn matches(&self, e: &Ev) -> bool {
        e.org == self.org
            && (self.events.is_empty() || self.events.contains(&e.name))
            && self.event_type.is_none_or(|t| t == e.etype)
            && self.filters.iter().all(|f| f.holds(e))
    }
}

fn trends_path(o: u128, params: &[(&str, String)]) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    format!("/api/v1/orgs/{}/trends?{}", org(o), query.join("&"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Which line of an answer a series is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    All,
    Value(Option<String>),
    Other(usize),
}

impl Key {
    fn label(&self) -> String {
        match self {
            Key::All => "(all)".into(),
            Key::Value(Some(v)) => format!("{v:?}"),
            Key::Value(None) => "null".into(),
            Key::Other(n) => format!("other({n})"),
        }
    }
}

#[derive(Debug, Clone)]
struct Series {
    key: Key,
    values: Vec<i64>,
    total: i64,
}

/// One breakdown value's events per bucket: counts, and the distinct ids of the measure.
struct Line<'a> {
    counts: Vec<i64>,
    sets: Vec<HashSet<&'a str>>,
    all: HashSet<&'a str>,
}

impl<'a> Line<'a> {
    fn new(n: usize) -> Line<'a> {
        Line {
            counts: vec![0; n],
            sets: vec![HashSet::new(); n],
            all: HashSet::new(),
        }
    }

    fn series(&self, m: M, key: Key) -> Series {
        match m {
            M::Events => Series {
                key,
                values: self.counts.clone(),
                total: self.counts.iter().sum(),
            },
            _ => Series {
                key,
                values: self.sets.iter().map(|s| s.len() as i64).collect(),
                total: self.all.len() as i64,
            },
        }
    }
}

/// The brute-force answer to `q` over the buckets `b` of zone `z` and width `g`.
fn expect(evs: &[Ev], q: &Q, z: Z, g: G, b: &[i64]) -> Vec<Series> {
    let n = b.len() - 1;
    let m = q.measure.unwrap_or(M::Events);
    let at: HashMap<i64, usize> = b[..n].iter().enumerate().map(|(i, &s)| (s, i)).collect();
    let mut lines: BTreeMap<Option<String>, Line> = BTreeMap::new();
    for e in evs.iter().filter(|e| q.matches(e)) {
        let Some(&k) = at.get(&bucket_start(z, g, e.ts)) else {
            continue;
        };
        assert!(
            b[k] <= e.ts && e.ts < b[k + 1],
            "bucket arithmetic of this test"
        );
        let key = q
            .breakdown
            .as_ref()
            .and_then(|f| e.field(f).map(|(text, _)| text));
        let line = lines.entry(key).or_insert_with(|| Line::new(n));
        line.counts[k] += 1;
        let id = match m {
            M::Events => None,
            M::Users => e.user.as_deref(),
            M::Sessions => e.session.as_deref(),
        };
        if let Some(id) = id {
            line.sets[k].insert(id);
            line.all.insert(id);
        }
    }
    if q.breakdown.is_none() {
        return vec![match lines.get(&None) {
            Some(l) => l.series(m, Key::All),
            None => Series {
                key: Key::All,
                values: vec![0; n],
                total: 0,
            },
        }];
    }
    // Values with nothing to count are no series; the rest ranked by total, ties by value.
    let mut ranked: Vec<(Option<String>, Series, &Line)> = lines
        .iter()
        .map(|(k, l)| (k.clone(), l.series(m, Key::Value(k.clone())), l))
        .filter(|(_, s, _)| s.total > 0)
        .collect();
    ranked.sort_by(|a, b| b.1.total.cmp(&a.1.total).then_with(|| a.0.cmp(&b.0)));
    let limit = q.limit.unwrap_or(10);
    let rest = if ranked.len() > limit {
        ranked.split_off(limit)
    } else {
        Vec::new()
    };
    let mut out: Vec<Series> = ranked.into_iter().map(|(_, s, _)| s).collect();
    if !rest.is_empty() {
        let mut other = Line::new(n);
        for (_, _, l) in &rest {
            for k in 0..n {
                other.counts[k] += l.counts[k];
                other.sets[k].extend(l.sets[k].iter().copied());
            }
            other.all.extend(l.all.iter().copied());
        }
        out.push(other.series(m, Key::Other(rest.len())));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Comparing answers.

fn text_of(v: &Json) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// An answer's time, `Z` written as `+00:00`.
fn norm_time(v: &Json) -> String {
    let s = text_of(v);
    match s.strip_suffix('Z') {
        Some(head) => format!("{head}+00:00"),
        None => s,
    }
}

fn key_of(s: &Json) -> Key {
    if s["other"] == json!(true) {
        return Key::Other(s["other_values"].as_u64().unwrap_or(u64::MAX) as usize);
    }
    match s.get("breakdown_value") {
        None => Key::All,
        Some(Json::Null) if s.get("other").is_none() => Key::All,
        Some(Json::Null) => Key::Value(None),
        Some(v) => Key::Value(Some(text_of(v))),
    }
}

/// Compares one period of an answer (`what` is "" or "previous.") with the brute force.
fn check_period(what: &str, p: &Json, z: Z, b: &[i64], exp: &[Series], errs: &mut Vec<String>) {
    let n = b.len() - 1;
    if norm_time(&p["from"]) != z.fmt(b[0]) {
        errs.push(format!(
            "{what}from: expected {}, got {}",
            z.fmt(b[0]),
            p["from"]
        ));
    }
    if norm_time(&p["to"]) != z.fmt(b[n]) {
        errs.push(format!(
            "{what}to: expected {}, got {}",
            z.fmt(b[n]),
            p["to"]
        ));
    }
    let buckets: Vec<String> = p["buckets"]
        .as_array()
        .map(|a| a.iter().map(norm_time).collect())
        .unwrap_or_default();
    let want: Vec<String> = b[..n].iter().map(|&t| z.fmt(t)).collect();
    if buckets != want {
        let at = (0..want.len().max(buckets.len()))
            .find(|&i| want.get(i) != buckets.get(i))
            .unwrap_or(0);
        errs.push(format!(
            "{what}buckets: {} expected, {} answered; first difference at {at}: expected {:?}, got {:?}",
            want.len(),
            buckets.len(),
            want.get(at),
            buckets.get(at)
        ));
        return;
    }
    let got = p["series"].as_array().cloned().unwrap_or_default();
    let got_keys: Vec<Key> = got.iter().map(key_of).collect();
    let want_keys: Vec<Key> = exp.iter().map(|s| s.key.clone()).collect();
    if got_keys != want_keys {
        let show = |keys: &[Key], totals: Vec<String>| {
            keys.iter()
                .zip(totals)
                .map(|(k, t)| format!("{}={t}", k.label()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        errs.push(format!(
            "{what}series: expected [{}], got [{}]",
            show(
                &want_keys,
                exp.iter().map(|s| s.total.to_string()).collect()
            ),
            show(
                &got_keys,
                got.iter().map(|s| s["total"].to_string()).collect()
            ),
        ));
        return;
    }
    for (s, e) in got.iter().zip(exp) {
        let label = e.key.label();
        let values: Vec<i64> = s["values"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_i64().unwrap_or(-1)).collect())
            .unwrap_or_default();
        if values != e.values {
            let diffs: Vec<usize> = (0..n.max(values.len()))
                .filter(|&i| values.get(i) != e.values.get(i))
                .collect();
            let k = diffs[0];
            errs.push(format!(
                "{what}series {label}: {} of {n} buckets differ, first {} ({}): expected {:?}, got {:?}",
                diffs.len(),
                k,
                b.get(k).map(|&t| z.fmt(t)).unwrap_or_default(),
                e.values.get(k),
                values.get(k)
            ));
        }
        if s["total"].as_i64() != Some(e.total) {
            errs.push(format!(
                "{what}series {label}: total expected {}, got {}",
                e.total, s["total"]
            ));
        }
        if let Key::Value(_) = e.key {
            if s["other"] != json!(false) {
                errs.push(format!("{what}series {label}: other is {}", s["other"]));
            }
        }
    }
}

/// GETs `q`, compares it with the brute force, and returns the answer or what differs.
fn check(fx: &Fixture, q: &Q, zone: Z) -> Result<Json, String> {
    let path = q.path();
    let (status, j) = fx.get(&path, Some(&token(q.org)));
    if status != 200 {
        return Err(format!("{path}: status {status}: {j}"));
    }
    let mut errs = Vec::new();
    let g = match q.gran {
        Some(g) => g,
        None => G::parse(j["granularity"].as_str().unwrap_or(""))
            .ok_or_else(|| format!("{path}: granularity {}", j["granularity"]))?,
    };
    if j["time_zone"] != json!(zone.param()) {
        errs.push(format!(
            "time_zone: expected {}, got {}",
            zone.param(),
            j["time_zone"]
        ));
    }
    if j["granularity"] != json!(g.as_str()) {
        errs.push(format!(
            "granularity: expected {}, got {}",
            g.as_str(),
            j["granularity"]
        ));
    }
    let m = q.measure.unwrap_or(M::Events);
    if j["measure"] != json!(m.as_str()) {
        errs.push(format!(
            "measure: expected {}, got {}",
            m.as_str(),
            j["measure"]
        ));
    }
    if j["exact"] != json!(true) {
        errs.push(format!(
            "exact is {} (every distinct set is under the threshold)",
            j["exact"]
        ));
    }
    let b = boundaries(zone, g, q.from, q.to);
    check_period(
        "",
        &j,
        zone,
        &b,
        &expect(&fx.events, q, zone, g, &b),
        &mut errs,
    );
    match (q.compare, j.get("previous")) {
        (true, Some(p)) if p.is_object() => {
            let pb = previous_boundaries(zone, g, b[0], b.len() - 1);
            check_period(
                "previous.",
                p,
                zone,
                &pb,
                &expect(&fx.events, q, zone, g, &pb),
                &mut errs,
            );
        }
        (true, _) => errs.push("no previous period".into()),
        (false, Some(p)) if !p.is_null() => errs.push(format!("an unasked previous: {p}")),
        (false, _) => {}
    }
    if errs.is_empty() {
        Ok(j)
    } else {
        Err(format!(
            "{path} (source {}):\n    {}",
            j["source"],
            errs.join("\n    ")
        ))
    }
}

/// Checks every question; panics listing every one that differs.
fn check_all(fx: &Fixture, questions: &[(Q, Z)]) -> Vec<Json> {
    let mut failed = Vec::new();
    let mut answers = Vec::new();
    for (q, z) in questions {
        match check(fx, q, *z) {
            Ok(j) => answers.push(j),
            Err(e) => failed.push(e),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} trends differ from brute force:\n{}",
        failed.len(),
        questions.len(),
        failed
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    answers
}

// ---------------------------------------------------------------------------------------
// The fixture: Tansu, the connector with its stats workers and gateway, the events.

/// The broker lives on a thread of its own (a `TestBroker` stays on the thread that made
/// it); dropping this stops it.
struct BrokerKeeper {
    bootstrap: String,
    topic: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BrokerKeeper {
    fn start() -> Option<BrokerKeeper> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let broker = TestBroker::tansu();
            let topic = broker.as_ref().map(|b| {
                let topic = random_name("trends");
                b.create_topic(&topic, PARTITIONS);
                (b.bootstrap.clone(), topic)
            });
            let running = topic.is_some();
            let _ = ready_tx.send(topic);
            if running {
                let _ = stop_rx.recv();
            }
            drop(broker);
        });
        match ready_rx.recv() {
            Ok(Some((bootstrap, topic))) => Some(BrokerKeeper {
                bootstrap,
                topic,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(None) => {
                let _ = thread.join();
                None
            }
            Err(_) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => panic!("the broker thread ended without a word"),
            },
        }
    }
}

impl Drop for BrokerKeeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Fixture {
    addr: String,
    events: Vec<Ev>,
    services: Option<streamtally::app::Services>,
    connector: Option<Connector>,
    broker: Option<BrokerKeeper>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(c) = &self.connector {
            c.shutdown.cancel();
        }
        if let Some(s) = self.services.take() {
            let _ = s.join();
        }
        drop(self.connector.take());
        drop(self.broker.take());
    }
}

static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());

/// The shared fixture, built if no test holds it now; None (skip) without Tansu.
fn fixture() -> Option<Arc<Fixture>> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(fx) = shared.upgrade() {
        return Some(fx);
    }
    let fx = Arc::new(Fixture::start()?);
    *shared = Arc::downgrade(&fx);
    Some(fx)
}

impl Fixture {
    fn start() -> Option<Fixture> {
        let started = Instant::now();
        let broker = BrokerKeeper::start()?;
        let events = generate();
        let connector = Connector::start(
            &broker.bootstrap,
            &[&broker.topic],
            &random_name("trends"),
            |cfg| {
                cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
                cfg.batching.max_batch_delay_ms = 20;
                cfg.store.retention.events_days = 0;
                cfg.store.retention.rollups_days = 0;
                cfg.auth.tokens = (1..=3)
                    .map(|n| AuthToken {
                        org_id: org(n),
                        token_sha256: token_sha256_hex(&token(n)),
                        name: None,
                    })
                    .collect();
            },
        );
        let services = connector.services();
        let addr = services.gateway_addr.to_string();
        let records: Vec<TestRecord> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    e.user.clone().map(String::into_bytes),
                    Some(e.payload(i % 2 == 1).into_bytes()),
                    Vec::new(),
                    Some(i as i32 % PARTITIONS),
                )
            })
            .collect();
        produce(&broker.bootstrap, &broker.topic, &records);
        let fx = Fixture {
            addr,
            events,
            services: Some(services),
            connector: Some(connector),
            broker: Some(broker),
        };
        let topic = fx.broker.as_ref().unwrap().topic.clone();
        let n = fx.events.len() as i64;
        fx.connector.as_ref().unwrap().wait_for(
            "every event stored",
            Duration::from_secs(60),
            |c| c.stored(&topic, PARTITIONS) == n,
        );
        // The rollups caught up: each org's daily UTC trend (a rollup answer) counts every
        // event and every session.
        let waited = Instant::now();
        for o in 1..=3 {
            let mine: Vec<&Ev> = fx.events.iter().filter(|e| e.org == o).collect();
            let sessions: HashSet<&str> =
                mine.iter().filter_map(|e| e.session.as_deref()).collect();
            for (m, want) in [(M::Events, mine.len()), (M::Sessions, sessions.len())] {
                let question = q(o, "2026-03-01T00:00:00Z", "2026-04-15T00:00:00Z")
                    .tz(Z::utc())
                    .gran(G::Day)
                    .measure(m);
                loop {
                    let (s, j) = fx.get(&question.path(), Some(&token(o)));
                    assert_eq!(s, 200, "{}: {j}", question.path());
                    assert_eq!(j["source"], "rollups", "{}: {j}", question.path());
                    if j["series"][0]["total"] == json!(want) {
                        break;
                    }
                    assert!(
                        waited.elapsed() < Duration::from_secs(60),
                        "the rollups of org {o} did not catch up within 60 s: {} is {}, {want} expected",
                        m.as_str(),
                        j["series"][0]["total"]
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        eprintln!(
            "trends fixture: {} events produced, stored and rolled up in {:?}",
            n,
            started.elapsed()
        );
        Some(fx)
    }

    /// GET `path`: status and JSON body.
    fn get(&self, path: &str, token: Option<&str>) -> (u16, Json) {
        self.call("GET", path, token, None)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Json>,
    ) -> (u16, Json) {
        let text = body.map(Json::to_string);
        let r = http::request(&self.addr, method, path, token, text.as_deref())
            .unwrap_or_else(|| panic!("{method} {path}: no answer from {}", self.addr));
        let j = if r.body.trim().is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", r.body))
        };
        (r.status, j)
    }
}

// ---------------------------------------------------------------------------------------

/// The zones of the matrix.
fn zones() -> [Z; 4] {
    [
        Z::utc(),
        Z::named("Europe/Berlin"),
        Z::fixed(5 * 3600 + 1800),
        Z::named("America/New_York"),
    ]
}

/// The breakdowns of the matrix: none, names (12 of them: default limit 10 makes an
/// "other"), types, plan (with events without it), and the high-cardinality `ref` cut at 3.
fn breakdowns() -> [Option<(&'static str, Option<usize>)>; 5] {
    [
        None,
        Some(("event_name", None)),
        Some(("event_type", None)),
        Some(("properties.plan", None)),
        Some(("properties.ref", Some(3))),
    ]
}

fn with_breakdown(q: Q, b: Option<(&str, Option<usize>)>) -> Q {
    match b {
        Some((by, limit)) => q.by(by, limit),
        None => q,
    }
}

const FROM: &str = "2026-03-25T10:17:23Z";
const TO: &str = "2026-04-03T13:05:00Z";

#[test]
fn trends_1_every_measure_breakdown_granularity_and_zone_matches_brute_force() {
    let Some(fx) = fixture() else { return };
    let started = Instant::now();
    let mut questions = Vec::new();
    for z in zones() {
        for g in [G::Hour, G::Day, G::Week] {
            for m in MEASURES {
                for b in breakdowns() {
                    questions.push((
                        with_breakdown(q(1, FROM, TO).tz(z).gran(g).measure(m), b),
                        z,
                    ));
                }
            }
        }
    }
    // Minutes over Berlin's DST change and over a +05:30 midnight.
    for (from, to, z) in [
        (
            "2026-03-29T00:40:10Z",
            "2026-03-29T02:20:00Z",
            Z::named("Europe/Berlin"),
        ),
        (
            "2026-03-31T18:05:00Z",
            "2026-03-31T18:59:30Z",
            Z::fixed(5 * 3600 + 1800),
        ),
        ("2026-03-31T18:05:00Z", "2026-03-31T18:59:30Z", Z::utc()),
    ] {
        for m in MEASURES {
            for b in breakdowns() {
                questions.push((
                    with_breakdown(q(1, from, to).tz(z).gran(G::Minute).measure(m), b),
                    z,
                ));
            }
        }
    }
    // New York's 23-hour day (8 March), by day and hour.
    let ny = Z::named("America/New_York");
    for g in [G::Day, G::Hour] {
        for m in MEASURES {
            for b in [None, Some(("properties.plan", None))] {
                questions.push((
                    with_breakdown(
                        q(1, "2026-03-07T06:00:00Z", "2026-03-10T03:00:00Z")
                            .tz(ny)
                            .gran(g)
                            .measure(m),
                        b,
                    ),
                    ny,
                ));
            }
        }
    }
    // Org 2 is counted apart from org 1 (same user names, other events).
    for z in zones() {
        for m in MEASURES {
            for b in [
                None,
                Some(("properties.plan", None)),
                Some(("properties.ref", Some(3))),
            ] {
                questions.push((
                    with_breakdown(q(2, FROM, TO).tz(z).gran(G::Day).measure(m), b),
                    z,
                ));
            }
        }
    }
    let answers = check_all(&fx, &questions);

    // The local calendar shows through: Berlin's 29 March is 23 hours long, its hours skip
    // 02:00, New York's 8 March is 23 hours long, +05:30 days start at 18:30 UTC.
    let buckets_of = |path_has: &dyn Fn(&Json) -> bool| -> Vec<String> {
        answers
            .iter()
            .find(|a| path_has(a))
            .map(|a| {
                a["buckets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_str().unwrap().to_string())
                    .collect()
            })
            .expect("the answer looked for")
    };
    let days = |zone: &str, from: &str| {
        let (zone, from) = (zone.to_string(), from.to_string());
        move |a: &Json| {
            a["time_zone"] == zone
                && a["granularity"] == "day"
                && norm_time(&a["from"]).starts_with(&from)
        }
    };
    let berlin_days = buckets_of(&days("Europe/Berlin", "2026-03-25"));
    let i = berlin_days
        .iter()
        .position(|b| b == "2026-03-29T00:00:00+01:00")
        .unwrap_or_else(|| panic!("no 29 March in {berlin_days:?}"));
    assert_eq!(
        berlin_days[i + 1],
        "2026-03-30T00:00:00+02:00",
        "{berlin_days:?}"
    );
    assert_eq!(
        us(&berlin_days[i + 1]) - us(&berlin_days[i]),
        23 * HOUR_US,
        "Berlin's 29 March is 23 hours long: {berlin_days:?}"
    );
    let berlin_hours =
        buckets_of(&|a: &Json| a["time_zone"] == "Europe/Berlin" && a["granularity"] == "hour");
    let i = berlin_hours
        .iter()
        .position(|b| b == "2026-03-29T01:00:00+01:00")
        .expect("01:00 CET of 29 March");
    assert_eq!(
        berlin_hours[i + 1],
        "2026-03-29T03:00:00+02:00",
        "02:00 does not exist"
    );
    let ny_days = buckets_of(&days("America/New_York", "2026-03-07"));
    assert_eq!(
        ny_days,
        [
            "2026-03-07T00:00:00-05:00",
            "2026-03-08T00:00:00-05:00",
            "2026-03-09T00:00:00-04:00"
        ],
        "New York's 8 March is 23 hours long"
    );
    let ist_days = buckets_of(&days("+05:30", "2026-03-25"));
    assert_eq!(ist_days[0], "2026-03-25T00:00:00+05:30", "{ist_days:?}");
    assert_eq!(us(&ist_days[0]), us("2026-03-24T18:30:00Z"));
    // The high-cardinality property is cut into 3 values and an "other" of many.
    let cut = answers
        .iter()
        .find(|a| a["breakdown"] == "properties.ref" && a["measure"] == "unique_users")
        .expect("a ref breakdown");
    let series = cut["series"].as_array().unwrap();
    assert_eq!(series.len(), 4, "{cut}");
    assert!(series[3]["other_values"].as_u64().unwrap() > 50, "{cut}");
    eprintln!(
        "{} trends compared with brute force in {:?}",
        questions.len(),
        started.elapsed()
    );
}

#[test]
fn trends_2_filters_event_names_and_types_match_brute_force() {
    let Some(fx) = fixture() else { return };
    let started = Instant::now();
    // A frequent user of org 1.
    let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
    for e in fx.events.iter().filter(|e| e.org == 1) {
        if let Some(u) = &e.user {
            *per_user.entry(u).or_default() += 1;
        }
    }
    let user = per_user
        .iter()
        .max_by_key(|(u, n)| (**n, std::cmp::Reverse(**u)))
        .map(|(u, _)| u.to_string())
        .unwrap();
    let base = || q(1, FROM, TO);
    let one = |f: Filter| base().filter(f);
    let filtered: Vec<Q> = vec![
        one(filter("properties.plan", "=", "pro")),
        one(filter("properties.amount", ">", "10")),
        one(filter("properties.amount", "<=", "3.5")),
        one(filter("properties.amount", ">=", "20")),
        one(filter("properties.amount", "<", "0.5")),
        // 4 and 4.0 both: the numbers are equal.
        one(filter("properties.amount", "=", "4")),
        one(filter("properties.plan", "!=", "pro")),
        one(filter("properties.plan", "is not set", "")),
        one(filter("properties.coupon", "is set", "")),
        one(filter("properties.coupon", "is not set", "")),
        one(filter("properties.beta", "=", "true")),
        one(filter("properties.ref", "=", "ref_000")),
        one(filter("user_id", "=", &user)),
        one(filter("user_id", "!=", &user)),
        one(filter("user_id", "is set", "")),
        one(filter("session_id", "is not set", "")),
        one(filter("event_name", "!=", "page_view")),
        one(filter("event_type", "=", "screen")),
        Q {
            events: vec!["signup", "purchase"],
            ..base()
        },
        Q {
            event_type: Some("page"),
            ..base()
        },
        Q {
            events: vec!["purchase", "refund", "add_to_cart"],
            ..base()
        }
        .filter(filter("properties.plan", "=", "team"))
        .filter(filter("properties.amount", "<", "25.5")),
        Q {
            event_type: Some("track"),
            ..base()
        }
        .filter(filter("properties.amount", ">=", "20"))
        .filter(filter("properties.coupon", "is not set", "")),
    ];
    // Each selects some events of org 1, not all of them.
    let org1 = fx.events.iter().filter(|e| e.org == 1).count();
    for f in &filtered {
        let n = fx.events.iter().filter(|e| f.matches(e)).count();
        assert!(
            n > 0 && n < org1,
            "{} selects {n} of {org1} events",
            f.path()
        );
    }
    let mut questions = Vec::new();
    for f in &filtered {
        for z in [Z::utc(), Z::named("Europe/Berlin")] {
            for m in [M::Events, M::Users] {
                questions.push((f.clone().tz(z).gran(G::Day).measure(m), z));
            }
        }
        let ist = Z::fixed(5 * 3600 + 1800);
        questions.push((f.clone().tz(ist).gran(G::Hour).measure(M::Sessions), ist));
    }
    // Filters with breakdowns.
    let z = Z::named("Europe/Berlin");
    for m in MEASURES {
        questions.push((
            one(filter("properties.amount", ">", "10"))
                .by("properties.plan", None)
                .tz(z)
                .gran(G::Day)
                .measure(m),
            z,
        ));
        questions.push((
            one(filter("properties.plan", "!=", "pro"))
                .by("event_name", Some(4))
                .tz(z)
                .gran(G::Week)
                .measure(m),
            z,
        ));
        questions.push((
            Q {
                events: vec!["click", "page_view", "login"],
                ..base()
            }
            .filter(filter("properties.beta", "is set", ""))
            .by("properties.ref", Some(3))
            .tz(Z::utc())
            .gran(G::Hour)
            .measure(m),
            Z::utc(),
        ));
    }
    let answers = check_all(&fx, &questions);
    for a in &answers {
        // Rollups hold no properties: a condition is answered from the events (names and an
        // event type alone might be answered either way).
        if a["filters"] != json!([]) {
            assert_eq!(
                a["source"], "events",
                "conditions are answered from the events: {a}"
            );
        }
    }
    eprintln!(
        "{} filtered trends compared with brute force in {:?}",
        questions.len(),
        started.elapsed()
    );
}

#[test]
fn trends_3_compare_previous_default_granularity_and_source() {
    let Some(fx) = fixture() else { return };
    let berlin = Z::named("Europe/Berlin");
    let ist = Z::fixed(5 * 3600 + 1800);
    let mut questions = vec![
        // The previous 4 days of Berlin hold its 23-hour day.
        (
            q(1, "2026-03-30T00:00:00+02:00", "2026-04-03T00:00:00+02:00")
                .tz(berlin)
                .gran(G::Day)
                .compare(),
            berlin,
        ),
        (
            q(1, "2026-03-30T00:00:00+02:00", "2026-04-03T00:00:00+02:00")
                .tz(berlin)
                .gran(G::Day)
                .measure(M::Users)
                .compare(),
            berlin,
        ),
        (
            q(1, "2026-03-30T00:00:00Z", "2026-04-06T00:00:00Z")
                .tz(Z::utc())
                .gran(G::Week)
                .measure(M::Sessions)
                .by("event_name", None)
                .compare(),
            Z::utc(),
        ),
        (
            q(1, "2026-03-31T12:00:00Z", "2026-04-01T06:00:00Z")
                .tz(ist)
                .gran(G::Hour)
                .by("properties.plan", None)
                .compare(),
            ist,
        ),
        (
            q(1, "2026-03-29T01:30:00Z", "2026-03-29T02:10:00Z")
                .tz(berlin)
                .gran(G::Minute)
                .measure(M::Users)
                .compare(),
            berlin,
        ),
        (
            q(1, "2026-03-27T00:00:00Z", "2026-04-02T00:00:00Z")
                .tz(Z::utc())
                .gran(G::Day)
                .filter(filter("properties.plan", "=", "pro"))
                .compare(),
            Z::utc(),
        ),
        (
            q(2, "2026-03-30T00:00:00Z", "2026-04-03T00:00:00Z")
                .tz(Z::named("America/New_York"))
                .gran(G::Day)
                .measure(M::Users)
                .compare(),
            Z::named("America/New_York"),
        ),
    ];
    // Without `granularity`: whichever the answer names, its buckets must be right. `from`
    // and `to` as epoch milliseconds for some.
    for (from, to) in [
        ("2026-03-29T00:40:00Z", "2026-03-29T02:10:00Z"),
        ("2026-03-28T00:00:00Z", "2026-03-29T06:00:00Z"),
        (FROM, TO),
        ("2026-01-01T00:00:00Z", "2026-04-30T00:00:00Z"),
    ] {
        questions.push((q(1, from, to).tz(berlin), berlin));
        questions.push((
            Q {
                epoch_ms: true,
                ..q(1, from, to)
            }
            .tz(Z::utc()),
            Z::utc(),
        ));
    }
    let answers = check_all(&fx, &questions);
    let grans: Vec<&Json> = answers[answers.len() - 8..]
        .iter()
        .map(|a| &a["granularity"])
        .collect();
    eprintln!("default granularities (2 h, 30 h, 9 days, 4 months): {grans:?}");

    // The source: a plain UTC daily trend is read from the rollups, the same with a
    // condition from the events; both agree with brute force.
    let utc_day = |m: M| q(1, FROM, TO).tz(Z::utc()).gran(G::Day).measure(m);
    let source_of = |question: Q| -> String {
        let j = check(&fx, &question, Z::utc()).unwrap_or_else(|e| panic!("{e}"));
        j["source"].as_str().unwrap_or_default().to_string()
    };
    for m in MEASURES {
        assert_eq!(
            source_of(utc_day(m)),
            "rollups",
            "{} by UTC day",
            m.as_str()
        );
        assert_eq!(
            source_of(utc_day(m).filter(filter("properties.plan", "is set", ""))),
            "events",
            "{} by UTC day with a filter",
            m.as_str()
        );
        // A breakdown: whichever source answers, it agrees with brute force.
        source_of(utc_day(m).by("event_type", None));
    }
    // The same question both ways: an always-true condition sends it to the events.
    for m in MEASURES {
        let (_, rollups) = fx.get(&utc_day(m).path(), Some(&token(1)));
        let (_, events) = fx.get(
            &utc_day(m)
                .filter(filter("event_name", "!=", "no-such-event"))
                .path(),
            Some(&token(1)),
        );
        assert_eq!(events["source"], "events");
        assert_eq!(
            rollups["series"],
            events["series"],
            "{}: rollups and events disagree",
            m.as_str()
        );
        assert_eq!(rollups["buckets"], events["buckets"]);
    }
}

#[test]
fn trends_4_refuse_bad_requests_naming_the_parameter_and_value() {
    let Some(fx) = fixture() else { return };
    let range = |from: &str, to: &str| vec![("from", from.to_string()), ("to", to.to_string())];
    let with = |extra: &[(&'static str, &str)]| {
        let mut p = range(FROM, TO);
        p.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        p
    };
    let month = || range("2026-03-01T00:00:00Z", "2026-03-31T00:00:00Z");
    let mut minute_month = month();
    minute_month.push(("granularity", "minute".into()));
    let mut hour_year = range("2025-04-01T00:00:00Z", "2026-04-30T00:00:00Z");
    hour_year.extend([
        ("granularity", "hour".to_string()),
        ("breakdown", "event_name".into()),
        ("breakdown_limit", "100".into()),
    ]);
    // (params, code, parameter, value)
    let cases: Vec<BadCase> = vec![
        (
            with(&[("filters", "properties.plan = pro")]),
            "bad_parameter",
            "filters",
            "properties.plan = pro",
        ),
        (
            with(&[("timezone", "UTC")]),
            "bad_parameter",
            "timezone",
            "UTC",
        ),
        (
            with(&[("tz", "Mars/Base")]),
            "bad_parameter",
            "tz",
            "Mars/Base",
        ),
        (with(&[("tz", "+5:30")]), "bad_parameter", "tz", "+5:30"),
        (
            with(&[("tz", "UTC"), ("tz", "Europe/Berlin")]),
            "bad_parameter",
            "tz",
            "Europe/Berlin",
        ),
        (
            with(&[("filter", "properties.plan ~ pro")]),
            "bad_parameter",
            "filter",
            "properties.plan ~ pro",
        ),
        (
            with(&[("filter", "properties.amount > ten")]),
            "bad_parameter",
            "filter",
            "properties.amount > ten",
        ),
        (
            with(&[("filter", "plan = pro")]),
            "bad_parameter",
            "filter",
            "plan = pro",
        ),
        (
            with(&[("filter", "event_name > 3")]),
            "bad_parameter",
            "filter",
            "event_name > 3",
        ),
        (
            with(&[("filter", "properties.plan")]),
            "bad_parameter",
            "filter",
            "properties.plan",
        ),
        (
            with(&[("filter", "properties.plan =")]),
            "bad_parameter",
            "filter",
            "properties.plan =",
        ),
        (
            with(&[("breakdown", "user_id")]),
            "bad_parameter",
            "breakdown",
            "user_id",
        ),
        (
            with(&[("breakdown", "plan")]),
            "bad_parameter",
            "breakdown",
            "plan",
        ),
        (
            with(&[("breakdown", "event_name"), ("breakdown_limit", "0")]),
            "bad_parameter",
            "breakdown_limit",
            "0",
        ),
        (
            with(&[("breakdown", "event_name"), ("breakdown_limit", "101")]),
            "bad_parameter",
            "breakdown_limit",
            "101",
        ),
        (
            with(&[("breakdown_limit", "ten")]),
            "bad_parameter",
            "breakdown_limit",
            "ten",
        ),
        (
            with(&[("granularity", "fortnight")]),
            "bad_parameter",
            "granularity",
            "fortnight",
        ),
        (
            with(&[("measure", "sum")]),
            "bad_parameter",
            "measure",
            "sum",
        ),
        (
            with(&[("compare", "last_year")]),
            "bad_parameter",
            "compare",
            "last_year",
        ),
        (minute_month, "range_too_large", "granularity", "minute"),
        (hour_year, "range_too_large", "breakdown_limit", "100"),
        (range(TO, FROM), "bad_parameter", "to", FROM),
        (range(FROM, FROM), "bad_parameter", "to", FROM),
        (range("yesterday", TO), "bad_parameter", "from", "yesterday"),
        (vec![("to", TO.to_string())], "bad_parameter", "from", ""),
    ];
    let mut failed = Vec::new();
    for (params, code, parameter, value) in &cases {
        let path = trends_path(1, params);
        let (s, j) = fx.get(&path, Some(&token(1)));
        let e = &j["error"];
        let got = (
            s,
            text_of(&e["code"]),
            text_of(&e["parameter"]),
            text_of(&e["value"]),
        );
        let want = (
            400,
            code.to_string(),
            parameter.to_string(),
            value.to_string(),
        );
        if got != want || !e["message"].is_string() {
            failed.push(format!("{path}: expected {want:?}, got {got:?}: {j}"));
        }
    }
    assert!(failed.is_empty(), "refusals:\n{}", failed.join("\n"));

    // Tokens: another org's is refused (403), none or an unknown one is not authenticated.
    let path = q(1, FROM, TO).path();
    let (s, j) = fx.get(&path, Some(&token(2)));
    assert_eq!(s, 403, "org 2's token on org 1's trends: {j}");
    assert!(j["error"]["code"].is_string(), "{j}");
    let (s, j) = fx.get(&path, None);
    assert_eq!(s, 401, "no token: {j}");
    let (s, j) = fx.get(&path, Some("not-a-token-of-anyone"));
    assert_eq!(s, 401, "an unknown token: {j}");
    let (s, j) = fx.get(&path, Some(&token(1)));
    assert_eq!(s, 200, "org 1's own token: {j}");
}

#[test]
fn trends_5_follow_the_org_time_zone_setting() {
    let Some(fx) = fixture() else { return };
    let settings = format!("/api/v1/orgs/{}/settings", org(3));
    let t3 = token(3);
    let (s, j) = fx.get(&settings, Some(&t3));
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        (&j["time_zone"], &j["time_zone_set"]),
        (&json!("UTC"), &json!(false)),
        "{j}"
    );
    let berlin = Z::named("Europe/Berlin");
    let daily = || q(3, "2026-03-26T00:00:00Z", "2026-04-02T00:00:00Z").gran(G::Day);
    let hourly = || {
        q(3, "2026-03-28T20:00:00Z", "2026-03-29T06:00:00Z")
            .gran(G::Hour)
            .measure(M::Users)
    };
    let ok = |question: Q, z: Z| check(&fx, &question, z).unwrap_or_else(|e| panic!("{e}"));
    ok(daily(), Z::utc());

    let (s, j) = fx.call(
        "PUT",
        &settings,
        Some(&t3),
        Some(&json!({"time_zone": "Europe/Berlin"})),
    );
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        (&j["time_zone"], &j["time_zone_set"]),
        (&json!("Europe/Berlin"), &json!(true)),
        "{j}"
    );
    let j = ok(daily(), berlin);
    assert_eq!(j["buckets"][3], "2026-03-29T00:00:00+01:00", "{j}");
    assert_eq!(j["buckets"][4], "2026-03-30T00:00:00+02:00", "{j}");
    ok(hourly(), berlin);
    ok(
        daily()
            .by("properties.plan", None)
            .measure(M::Sessions)
            .compare(),
        berlin,
    );
    // `tz` still wins over the setting.
    ok(
        daily().tz(Z::fixed(5 * 3600 + 1800)),
        Z::fixed(5 * 3600 + 1800),
    );
    ok(daily().tz(Z::utc()), Z::utc());
    // Other orgs keep their own default.
    ok(q(1, FROM, TO).gran(G::Day), Z::utc());

    // A bad zone is refused, naming the setting, and changes nothing.
    for bad in [json!("Mars/Base"), json!("+25:00"), json!(42)] {
        let (s, j) = fx.call(
            "PUT",
            &settings,
            Some(&t3),
            Some(&json!({"time_zone": bad})),
        );
        assert_eq!(s, 400, "{bad}: {j}");
        assert_eq!(j["error"]["parameter"], "time_zone", "{bad}: {j}");
        assert_eq!(text_of(&j["error"]["value"]), text_of(&bad), "{bad}: {j}");
    }
    ok(daily(), berlin);
    // Another org's token cannot change it.
    let (s, j) = fx.call(
        "PUT",
        &settings,
        Some(&token(1)),
        Some(&json!({"time_zone": "Asia/Tokyo"})),
    );
    assert_eq!(s, 403, "{j}");
    ok(daily(), berlin);

    // An offset as the setting, then null: back to UTC.
    let (s, j) = fx.call(
        "PUT",
        &settings,
        Some(&t3),
        Some(&json!({"time_zone": "+05:30"})),
    );
    assert_eq!(s, 200, "{j}");
    ok(hourly(), Z::fixed(5 * 3600 + 1800));
    let (s, j) = fx.call(
        "PUT",
        &settings,
        Some(&t3),
        Some(&json!({"time_zone": null})),
    );
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        (&j["time_zone"], &j["time_zone_set"]),
        (&json!("UTC"), &json!(false)),
        "{j}"
    );
    let j = ok(daily(), Z::utc());
    assert_eq!(j["buckets"][0], "2026-03-26T00:00:00Z", "{j}");
    let (s, j) = fx.get(&settings, Some(&t3));
    assert_eq!((s, &j["time_zone"]), (200, &json!("UTC")), "{j}");
}

/// What the explorer shows of an event, to compare with the generated ones: time, name,
/// type, user, session, properties.
fn explorer_key(e: &Json) -> (i64, String, String, String, String, String) {
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_string();
    let t = DateTime::parse_from_rfc3339(e["timestamp"].as_str().expect("timestamp"))
        .expect("an RFC 3339 timestamp")
        .timestamp_micros();
    (
        t,
        s("event_name"),
        s("event_type"),
        s("user_id"),
        s("session_id"),
        if e["properties"].is_null() {
            "-".into()
        } else {
            e["properties"].to_string()
        },
    )
}

fn generated_key(e: &Ev) -> (i64, String, String, String, String, String) {
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    (
        e.ts,
        e.name.to_string(),
        e.etype.to_string(),
        o(&e.user),
        o(&e.session),
        e.props
            .as_ref()
            .map_or("-".into(), |p| Json::Object(p.clone()).to_string()),
    )
}

/// Pages through `GET .../events` with `params` until `next` is null: the events in order.
fn explore_all(fx: &Fixture, o: u128, params: &[(&str, String)], limit: usize) -> Vec<Json> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let mut seen = HashSet::new();
    for page in 0.. {
        assert!(page < 10_000, "the explorer does not end");
        let mut p: Vec<(&str, String)> = params.to_vec();
        p.push(("limit", limit.to_string()));
        if let Some(a) = &after {
            p.push(("after", a.clone()));
        }
        let query: Vec<String> = p.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
        let path = format!("/api/v1/orgs/{}/events?{}", org(o), query.join("&"));
        let (status, body) = fx.get(&path, Some(&token(o)));
        assert_eq!(status, 200, "{path}: {body}");
        let events = body["events"].as_array().expect("events").clone();
        assert!(
            events.len() <= limit,
            "{path}: {} events for limit {limit}",
            events.len()
        );
        for e in &events {
            let id = e["id"].as_str().expect("id").to_string();
            assert!(seen.insert(id.clone()), "{path}: event {id} on two pages");
        }
        out.extend(events);
        match body["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    out
}

#[test]
fn trends_6_explorer_pages_through_every_event_newest_first() {
    let Some(fx) = fixture() else { return };
    let check = |what: &str,
                 o: u128,
                 params: &[(&str, String)],
                 limit: usize,
                 keep: &dyn Fn(&Ev) -> bool| {
        let got = explore_all(&fx, o, params, limit);
        let times: Vec<i64> = got.iter().map(|e| explorer_key(e).0).collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "{what}: not newest first"
        );
        let mut got: Vec<_> = got.iter().map(explorer_key).collect();
        let mut want: Vec<_> = fx
            .events
            .iter()
            .filter(|e| e.org == o && keep(e))
            .map(generated_key)
            .collect();
        assert!(
            !want.is_empty(),
            "{what}: the generated events hold none to find"
        );
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len(), "{what}: events found");
        assert!(
            got == want,
            "{what}: the events found differ from the generated ones"
        );
    };
    check("org 1, every event", 1, &[], 1000, &|_| true);
    check("org 2, small pages", 2, &[], 137, &|_| true);
    let pro = filter("properties.plan", "=", "pro");
    let big = filter("properties.amount", ">", "10");
    check(
        "plan = pro and amount > 10",
        1,
        &[("filter", pro.text()), ("filter", big.text())],
        50,
        &|e| pro.holds(e) && big.holds(e),
    );
    let user = fx
        .events
        .iter()
        .find(|e| e.org == 1 && e.user.is_some())
        .and_then(|e| e.user.clone())
        .unwrap();
    check("one user", 1, &[("user_id", user.clone())], 7, &|e| {
        e.user.as_deref() == Some(user.as_str())
    });
    let name = fx
        .events
        .iter()
        .find(|e| e.org == 1)
        .map(|e| e.name)
        .unwrap();
    let (from, to) = (us(FROM) + 36 * HOUR_US, us(FROM) + 60 * HOUR_US);
    check(
        "one name within a range",
        1,
        &[
            ("event", name.to_string()),
            ("from", rfc(from)),
            ("to", rfc(to)),
        ],
        100,
        &|e| e.name == name && e.ts >= from && e.ts < to,
    );
    // Refusals name the parameter and its value.
    for (params, parameter, value) in [
        ("after=abc", "after", "abc"),
        ("limit=1001", "limit", "1001"),
        ("limit=0", "limit", "0"),
        ("filters=x", "filters", "x"),
        ("filter=plan%20%3D%201", "filter", "plan = 1"),
        (
            "from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
            "to",
            "2026-03-01T00:00:00Z",
        ),
    ] {
        let path = format!("/api/v1/orgs/{}/events?{params}", org(1));
        let (status, body) = fx.get(&path, Some(&token(1)));
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
        assert_eq!(body["error"]["value"], value, "{path}: {body}");
    }
    let (status, _) = fx.get(&format!("/api/v1/orgs/{}/events", org(1)), Some(&token(2)));
    assert_eq!(status, 403, "another org's token");
}
