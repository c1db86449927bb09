//! `GET /api/v1/orgs/{org}/trends` (docs/API.md, "Trends"), the event explorer
//! (`GET /api/v1/orgs/{org}/events`) and the org settings that hold the trends' default time
//! zone (`GET`/`PUT /api/v1/orgs/{org}/settings`).
//!
//! Parameters are parsed one by one and a bad one is named with its value; unknown
//! parameters are refused (a misspelt `filters` would otherwise be silently ignored).
//! `event` and `filter` may repeat; every other parameter is given at most once.

use super::body::JsonBytes;
use super::error::ApiError;
use super::params::{parse_range, parse_time};
use super::{blocking, group, GatewayState, OrgAccess};
use crate::stats::explore::{Cursor, ExploreSpec};
use crate::stats::trends::{Breakdown, Condition, Measure, SeriesKey, Trend, TrendSpec};
use crate::stats::zone::{boundaries, bucket_start, Step, Zone};
use crate::stats::StatsError;
use crate::store::{Query as StoreQuery, Row, Store, StoreError, Value, WriteBatch};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::Json as JsonBody;
use serde_json::{json, Value as Json};

/// The first and last instants a bucket may touch (years 1..=9999).
const FIRST_US: i64 = -62_135_596_800_000_000;
const LAST_US: i64 = 253_402_300_799_999_999;

/// Most buckets of one series.
pub const MAX_BUCKETS: usize = 20_000;
/// Most numbers in one answer (series x buckets, the previous period included).
pub const MAX_CELLS: usize = 400_000;
/// `breakdown_limit`: 1..=100, default 10.
pub const BREAKDOWN_LIMIT_MAX: usize = 100;
pub const BREAKDOWN_LIMIT_DEFAULT: usize = 10;
/// Most `event` and `filter` parameters.
pub const MAX_EVENTS: usize = 50;
pub const MAX_FILTERS: usize = 20;

const KNOWN: [&str; 11] = [
    "from",
    "to",
    "event",
    "event_type",
    "filter",
    "breakdown",
    "breakdown_limit",
    "measure",
    "granularity",
    "tz",
    "compare",
];

/// Event names, an event type and conditions, as parsed.
type Selected = (Vec<String>, Option<String>, Vec<Condition>);

/// Every query parameter in order, repeats kept.
pub struct Pairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Pairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Query(pairs)) => Ok(Pairs(pairs)),
            Err(e) => Err(ApiError::bad_parameter(
                "query",
                parts.uri.query().unwrap_or(""),
                format!("is not a valid query string ({e})"),
            )),
        }
    }
}

impl Pairs {
    /// The one value of `name` (an empty value counts as absent); a repeat is refused.
    fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut it = self.0.iter().filter(|(k, v)| k == name && !v.is_empty());
        let first = it.next().map(|(_, v)| v.as_str());
        if let Some((_, v)) = it.next() {
            return Err(ApiError::bad_parameter(
                name,
                v,
                "is given twice; give it once",
            ));
        }
        Ok(first)
    }

    /// A whole number `name` in 1..=max, `default` when absent.
    fn count(&self, name: &str, max: usize, default: usize) -> Result<usize, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_parameter(
                        name,
                        v,
                        format!("is not a whole number from 1 to {max}"),
                    )
                }),
        }
    }

    /// Which events: `event` names (any), `event_type`, `filter` conditions (all).
    fn selection(&self) -> Result<Selected, ApiError> {
        let events: Vec<String> = self.all("event").into_iter().map(str::to_string).collect();
        if events.len() > MAX_EVENTS {
            return Err(ApiError::bad_parameter(
                "event",
                &events[MAX_EVENTS],
                format!("is one event name too many: at most {MAX_EVENTS}"),
            ));
        }
        let filters = self.all("filter");
        if filters.len() > MAX_FILTERS {
            return Err(ApiError::bad_parameter(
                "filter",
                filters[MAX_FILTERS],
                format!("is one filter too many: at most {MAX_FILTERS}"),
            ));
        }
        let conditions = filters
            .iter()
            .map(|f| Condition::parse(f).map_err(|e| ApiError::bad_parameter("filter", f, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let event_type = self.one("event_type")?.map(str::to_string);
        Ok((events, event_type, conditions))
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A parsed trend request: the question, and whether the previous period is asked too.
pub struct TrendRequest {
    pub spec: TrendSpec,
    pub compare: bool,
}

/// Parses a trend request; `default_zone` is the org's setting (else UTC).
/// `now`: a WebSocket trend may leave out `to` (live: the range ends now).
pub fn parse(
    org: [u8; 16],
    p: &Pairs,
    max_days: u64,
    default_zone: Zone,
    now: Option<i64>,
) -> Result<TrendRequest, ApiError> {
    if let Some((k, v)) = p.0.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_parameter(
            k,
            v,
            format!("is not a trends parameter ({})", KNOWN.join(", ")),
        ));
    }
    let (from, to) = parse_range(p.one("from")?, p.one("to")?, max_days, now)?;
    let zone = match p.one("tz")? {
        Some(z) => Zone::parse(z).map_err(|e| ApiError::bad_parameter("tz", z, e))?,
        None => default_zone,
    };
    let step = match p.one("granularity")? {
        Some(g) => Step::parse(g).ok_or_else(|| {
            ApiError::bad_parameter("granularity", g, "is not minute, hour, day or week")
        })?,
        None => default_step(to - from),
    };
    let measure = match p.one("measure")? {
        Some(m) => Measure::parse(m).ok_or_else(|| {
            ApiError::bad_parameter(
                "measure",
                m,
                "is not events, unique_users or unique_sessions",
            )
        })?,
        None => Measure::Events,
    };
    let (events, event_type, conditions) = p.selection()?;
    let breakdown = p
        .one("breakdown")?
        .map(|b| Breakdown::parse(b).map_err(|e| ApiError::bad_parameter("breakdown", b, e)))
        .transpose()?;
    let breakdown_limit = p.count(
        "breakdown_limit",
        BREAKDOWN_LIMIT_MAX,
        BREAKDOWN_LIMIT_DEFAULT,
    )?;
    let compare = match p.one("compare")? {
        None | Some("none") => false,
        Some("previous") => true,
        Some(v) => {
            return Err(ApiError::bad_parameter(
                "compare",
                v,
                "is not 'previous' or 'none'",
            ))
        }
    };
    let too_many = || {
        ApiError::range_too_large(
            "granularity",
            step.as_str(),
            format!(
                "the range holds more than {MAX_BUCKETS} {} buckets: choose a coarser granularity or a shorter range",
                step.as_str()
            ),
        )
    };
    let b = boundaries(&zone, step, (from, to), MAX_BUCKETS).ok_or_else(too_many)?;
    // Every bucket start and end formats as an RFC 3339 time (years 1..=9999), the
    // previous period's too.
    let span = b[b.len() - 1] - b[0];
    if b[b.len() - 1] > LAST_US || (compare && b[0] - span - 7 * 86_400_000_000 < FIRST_US) {
        let (name, value) = if compare && b[b.len() - 1] <= LAST_US {
            ("compare", "previous")
        } else {
            ("to", p.one("to")?.unwrap_or_default())
        };
        return Err(ApiError::bad_parameter(
            name,
            value,
            "makes a bucket start or end outside the years 1 to 9999",
        ));
    }
    let series = if breakdown.is_some() {
        breakdown_limit + 1
    } else {
        1
    };
    let cells = (b.len() - 1) * series * if compare { 2 } else { 1 };
    if cells > MAX_CELLS {
        return Err(ApiError::range_too_large(
            "breakdown_limit",
            &breakdown_limit.to_string(),
            format!(
                "{} buckets x {series} series{} is more than {MAX_CELLS} numbers: choose a coarser granularity, a shorter range or a smaller breakdown_limit",
                b.len() - 1,
                if compare { " x 2 periods" } else { "" }
            ),
        ));
    }
    Ok(TrendRequest {
        spec: TrendSpec {
            org,
            events,
            event_type,
            conditions,
            breakdown,
            breakdown_limit,
            measure,
            step,
            zone,
            boundaries: b,
        },
        compare,
    })
}

/// Minutes up to 3 hours, hours up to 2 days, days up to 92 days, then weeks.
fn default_step(span_us: i64) -> Step {
    const H: i64 = 3_600_000_000;
    match span_us {
        s if s <= 3 * H => Step::Minute,
        s if s <= 48 * H => Step::Hour,
        s if s <= 92 * 24 * H => Step::Day,
        _ => Step::Week,
    }
}

/// The `n` buckets right before `first` (the previous period, bucket for bucket).
pub fn previous_boundaries(zone: &Zone, step: Step, first: i64, n: usize) -> Vec<i64> {
    let mut out = vec![first];
    let mut t = first;
    for _ in 0..n {
        t = bucket_start(zone, step, t - 1);
        out.push(t);
    }
    out.reverse();
    out
}

fn series_json(t: &Trend) -> Json {
    Json::Array(
        t.series
            .iter()
            .map(|s| {
                let (value, other) = match &s.key {
                    SeriesKey::All => (Json::Null, Json::Null),
                    SeriesKey::Value(v) => (json!(v), Json::Null),
                    SeriesKey::Other(n) => (Json::Null, json!(n)),
                };
                let mut o = json!({
                    "values": s.values,
                    "total": s.total,
                });
                if !matches!(s.key, SeriesKey::All) {
                    o["breakdown_value"] = value;
                    o["other"] = json!(matches!(s.key, SeriesKey::Other(_)));
                    if !other.is_null() {
                        o["other_values"] = other;
                    }
                }
                o
            })
            .collect(),
    )
}

fn period_json(spec: &TrendSpec, t: &Trend) -> Json {
    let b = &spec.boundaries;
    json!({
        "from": spec.zone.format(b[0]),
        "to": spec.zone.format(b[b.len() - 1]),
        "buckets": b[..b.len() - 1].iter().map(|&t| spec.zone.format(t)).collect::<Vec<_>>(),
        "series": series_json(t),
        "source": t.source,
        "exact": t.exact,
        "events_scanned": t.events_scanned,
    })
}

/// The answer's JSON (REST and WebSocket alike).
pub fn trend_json(
    org: uuid::Uuid,
    spec: &TrendSpec,
    t: &Trend,
    previous: Option<(&TrendSpec, &Trend)>,
) -> Json {
    let mut o = period_json(spec, t);
    o["org"] = json!(org.to_string());
    o["measure"] = json!(spec.measure.as_str());
    o["granularity"] = json!(spec.step.as_str());
    o["time_zone"] = json!(spec.zone.name());
    o["events"] = json!(spec.events);
    o["event_type"] = json!(spec.event_type);
    o["filters"] = json!(spec
        .conditions
        .iter()
        .map(condition_text)
        .collect::<Vec<_>>());
    o["breakdown"] = json!(spec.breakdown.as_ref().map(Breakdown::name));
    o["breakdown_limit"] = json!(spec.breakdown_limit);
    if let Some((ps, pt)) = previous {
        o["previous"] = period_json(ps, pt);
    }
    o
}

fn condition_text(c: &Condition) -> String {
    use crate::stats::trends::Cmp;
    let op = match c.cmp {
        Cmp::Eq => "=",
        Cmp::Ne => "!=",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        Cmp::IsSet => return format!("{} is set", c.field.name()),
        Cmp::IsNotSet => return format!("{} is not set", c.field.name()),
    };
    format!("{} {op} {}", c.field.name(), c.text)
}

/// `GET /api/v1/orgs/{org}/trends?from=&to=&event=&event_type=&filter=&breakdown=&breakdown_limit=&measure=&granularity=&tz=&compare=`
pub async fn trends(
    State(st): State<GatewayState>,
    access: OrgAccess,
    pairs: Pairs,
) -> Result<JsonBody<Json>, ApiError> {
    let org = access.org_bytes();
    let default_zone = org_zone(&st, org).await?;
    let req = parse(
        org,
        &pairs,
        st.cfg.gateway.max_range_days,
        default_zone,
        None,
    )?;
    let body = answer(&st, access.org, req).await?;
    Ok(JsonBody(body.json))
}

/// A trend's answer: its JSON body, and the parts a WebSocket update compares.
#[derive(Clone)]
pub struct Answer {
    pub json: Json,
    pub boundaries: Vec<i64>,
}

/// Answers a parsed trend request for the whole group ([`group::trend`]); with `compare`,
/// the previous period too.
pub async fn answer(
    st: &GatewayState,
    org: uuid::Uuid,
    req: TrendRequest,
) -> Result<Answer, ApiError> {
    let spec = req.spec;
    let boundaries = spec.boundaries.clone();
    // The previous period is read at the same time as the range.
    let previous = req.compare.then(|| {
        let n = spec.boundaries.len() - 1;
        let b = previous_boundaries(&spec.zone, spec.step, spec.boundaries[0], n);
        TrendSpec {
            boundaries: b,
            ..spec.clone()
        }
    });
    let read_previous = async {
        match &previous {
            Some(ps) => group::trend(st, org, ps.clone())
                .await
                .map(|(t, _)| Some(t)),
            None => Ok(None),
        }
    };
    let ((t, coverage), pt) = tokio::try_join!(group::trend(st, org, spec.clone()), read_previous)?;
    let prev = previous.zip(pt);
    let mut body = trend_json(org, &spec, &t, prev.as_ref().map(|(s, t)| (s, t)));
    covering(&mut body, coverage);
    Ok(Answer {
        json: body,
        boundaries,
    })
}

/// A trend's read error as the API says it: too many breakdown values (or blocks merged
/// away too often) name the breakdown.
pub(super) fn trend_error(spec: &TrendSpec, e: StatsError) -> ApiError {
    match e {
        StatsError::Invalid(m) => ApiError::range_too_large(
            "breakdown",
            &spec
                .breakdown
                .as_ref()
                .map(Breakdown::name)
                .unwrap_or_default(),
            m,
        ),
        other => other.into(),
    }
}

/// A WebSocket `trend` command's params as query pairs: each value a string, a number or a
/// list of them.
pub fn pairs_of(params: &serde_json::Map<String, Json>) -> Result<Pairs, ApiError> {
    let mut out = Vec::new();
    for (k, v) in params {
        let mut one = |v: &Json| -> Result<(), ApiError> {
            match v {
                Json::String(s) => out.push((k.clone(), s.clone())),
                Json::Number(n) => out.push((k.clone(), n.to_string())),
                Json::Bool(b) => out.push((k.clone(), b.to_string())),
                Json::Null => {}
                other => {
                    return Err(ApiError::bad_parameter(
                        k,
                        &other.to_string(),
                        "is not a string, a number or a list of them",
                    ))
                }
            }
            Ok(())
        };
        match v {
            Json::Array(list) => {
                for item in list {
                    one(item)?;
                }
            }
            other => one(other)?,
        }
    }
    Ok(Pairs(out))
}

const EXPLORE_KNOWN: [&str; 8] = [
    "limit",
    "after",
    "event",
    "event_type",
    "filter",
    "user_id",
    "from",
    "to",
];
/// `limit` of the explorer: 1..=1000, default 50.
pub const EXPLORE_LIMIT_MAX: usize = 1000;
pub const EXPLORE_LIMIT_DEFAULT: usize = 50;

/// Parses an explorer request.
pub fn parse_explore(org: [u8; 16], p: &Pairs) -> Result<ExploreSpec, ApiError> {
    if let Some((k, v)) =
        p.0.iter()
            .find(|(k, _)| !EXPLORE_KNOWN.contains(&k.as_str()))
    {
        return Err(ApiError::bad_parameter(
            k,
            v,
            format!(
                "is not an explorer parameter ({})",
                EXPLORE_KNOWN.join(", ")
            ),
        ));
    }
    let limit = p.count("limit", EXPLORE_LIMIT_MAX, EXPLORE_LIMIT_DEFAULT)?;
    let after = p
        .one("after")?
        .map(|c| {
            Cursor::parse(c).ok_or_else(|| {
                ApiError::bad_parameter("after", c, "is not a cursor this API gave (`next`)")
            })
        })
        .transpose()?;
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        p.one(name)?.map(|v| parse_time(name, v)).transpose()
    };
    let (from_us, to_us) = (time("from")?, time("to")?);
    if let (Some(f), Some(t)) = (from_us, to_us) {
        if f >= t {
            return Err(ApiError::bad_parameter(
                "to",
                p.one("to")?.unwrap_or_default(),
                "is not after 'from'",
            ));
        }
    }
    let (events, event_type, mut conditions) = p.selection()?;
    if let Some(u) = p.one("user_id")? {
        conditions.push(
            Condition::parse(&format!("user_id = {u}"))
                .map_err(|e| ApiError::bad_parameter("user_id", u, e))?,
        );
    }
    Ok(ExploreSpec {
        org,
        events,
        event_type,
        conditions,
        from_us,
        to_us,
        after,
        limit,
    })
}

/// `GET /api/v1/orgs/{org}/events?limit=&after=&event=&event_type=&filter=&user_id=&from=&to=`:
/// the org's events newest first, one page (see docs/API.md, "Event explorer").
pub async fn explore(
    State(st): State<GatewayState>,
    access: OrgAccess,
    pairs: Pairs,
) -> Result<JsonBody<Json>, ApiError> {
    let spec = parse_explore(access.org_bytes(), &pairs)?;
    let (events, next, coverage) = group::explore(&st, spec).await?;
    let mut body = json!({
        "org_id": access.org.to_string(),
        "events": events,
        "next": next.as_ref().map(Cursor::encode),
    });
    covering(&mut body, coverage);
    Ok(JsonBody(body))
}

/// Adds what an answer covers (scale-out: `complete`, and `missing` when it is not).
fn covering(body: &mut Json, coverage: Option<group::Coverage>) {
    if let Some(c) = coverage {
        body["complete"] = json!(c.complete);
        if !c.missing.is_empty() {
            body["missing"] = json!(c.missing);
        }
    }
}

/// The org's default zone (its setting, else UTC).
pub async fn org_zone(st: &GatewayState, org: [u8; 16]) -> Result<Zone, ApiError> {
    let store = st.store.clone();
    let row = blocking(move || settings_row(&store, org)).await??;
    Ok(row
        .as_ref()
        .and_then(|r| match r.get("time_zone") {
            Some(Value::String(z)) => Zone::parse(z).ok(),
            _ => None,
        })
        .unwrap_or(Zone::UTC))
}

fn settings_row(store: &Store, org: [u8; 16]) -> Result<Option<Row>, StoreError> {
    Ok(store
        .query(&StoreQuery::new("OrgSettings").eq("org_id", Value::Uuid(org)))?
        .into_iter()
        .next())
}

fn settings_json(org: uuid::Uuid, row: Option<&Row>) -> Json {
    let zone = row.and_then(|r| match r.get("time_zone") {
        Some(Value::String(z)) => Some(z.clone()),
        _ => None,
    });
    let updated = row.and_then(|r| match r.get("updated_at") {
        Some(Value::Timestamp(t)) => Some(super::params::fmt_time(*t)),
        _ => None,
    });
    json!({
        "org": org.to_string(),
        "time_zone": zone.clone().unwrap_or_else(|| "UTC".into()),
        "time_zone_set": zone.is_some(),
        "updated_at": updated,
    })
}

/// `GET /api/v1/orgs/{org}/settings`
pub async fn get_settings(
    State(st): State<GatewayState>,
    access: OrgAccess,
) -> Result<JsonBody<Json>, ApiError> {
    let store = st.store.clone();
    let org = access.org_bytes();
    let row = blocking(move || settings_row(&store, org)).await??;
    Ok(JsonBody(settings_json(access.org, row.as_ref())))
}

/// `PUT /api/v1/orgs/{org}/settings` with `{"time_zone": "Europe/Berlin"}` (null: back to
/// UTC).
pub async fn put_settings(
    State(st): State<GatewayState>,
    access: OrgAccess,
    JsonBytes(body): JsonBytes,
) -> Result<JsonBody<Json>, ApiError> {
    let obj = super::body::json_object(&body)?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "time_zone") {
        return Err(ApiError::bad_parameter(
            k,
            &obj[k].to_string(),
            "is not a setting (time_zone)",
        ));
    }
    let zone = match obj.get("time_zone") {
        None => return Err(ApiError::missing_parameter("time_zone")),
        Some(Json::Null) => None,
        Some(Json::String(z)) => Some(
            Zone::parse(z)
                .map_err(|e| ApiError::bad_parameter("time_zone", z, e))?
                .name(),
        ),
        Some(other) => {
            return Err(ApiError::bad_parameter(
                "time_zone",
                &other.to_string(),
                "is not a string or null",
            ))
        }
    };
    let org = access.org_bytes();
    let now = chrono::Utc::now().timestamp_micros();
    let mut row = Row::new()
        .with("org_id", Value::Uuid(org))
        .with("updated_at", Value::Timestamp(now));
    row.set("time_zone", zone.map(Value::String).unwrap_or(Value::Null));
    let mut batch = WriteBatch::new();
    batch.upsert("OrgSettings", row.clone());
    st.store.write(batch).await?;
    Ok(JsonBody(settings_json(access.org, Some(&row))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Pairs {
        Pairs(
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    const RANGE: [(&str, &str); 2] = [
        ("from", "2026-03-01T00:00:00Z"),
        ("to", "2026-03-31T00:00:00Z"),
    ];

    #[test]
    fn a_full_request_parses() {
        let mut q = RANGE.to_vec();
        q.extend([
            ("event", "signup"),
            ("event", "login"),
            ("filter", "properties.plan = pro"),
            ("filter", "properties.amount > 3"),
            ("breakdown", "properties.country"),
            ("measure", "unique_users"),
            ("granularity", "week"),
            ("tz", "Asia/Kolkata"),
            ("compare", "previous"),
        ]);
        let r = parse([1; 16], &pairs(&q), 400, Zone::UTC, None).unwrap();
        assert!(r.compare);
        assert_eq!(r.spec.events, ["signup", "login"]);
        assert_eq!(r.spec.conditions.len(), 2);
        assert_eq!(r.spec.zone.name(), "Asia/Kolkata");
        assert_eq!(r.spec.step, Step::Week);
        assert_eq!(r.spec.measure, Measure::UniqueUsers);
    }

    #[test]
    fn bad_parameters_are_named_with_their_value() {
        let bad = |extra: (&str, &str)| {
            let mut q = RANGE.to_vec();
            q.push(extra);
            let e = parse([1; 16], &pairs(&q), 400, Zone::UTC, None)
                .err()
                .expect("refused");
            (e.parameter.unwrap_or_default(), e.value.unwrap_or_default())
        };
        assert_eq!(bad(("tz", "Mars/Base")), ("tz".into(), "Mars/Base".into()));
        assert_eq!(bad(("measure", "sum")), ("measure".into(), "sum".into()));
        assert_eq!(
            bad(("filters", "x = 1")),
            ("filters".into(), "x = 1".into())
        );
        assert_eq!(
            bad(("filter", "plan = 1")),
            ("filter".into(), "plan = 1".into())
        );
        assert_eq!(bad(("breakdown", "user_id")).0, "breakdown");
        assert_eq!(
            bad(("granularity", "minute")).0,
            "granularity",
            "43,200 minutes"
        );
        assert_eq!(bad(("compare", "last_year")).0, "compare");
        assert_eq!(
            bad(("from", "2026-01-01T00:00:00Z")).0,
            "from",
            "given twice"
        );
    }

    #[test]
    fn the_previous_period_is_as_many_buckets_right_before() {
        let z = Zone::parse("Europe/Berlin").unwrap();
        let b = boundaries(
            &z,
            Step::Day,
            (1_774_915_200_000_000, 1_775_001_600_000_000),
            10,
        )
        .unwrap();
        let p = previous_boundaries(&z, Step::Day, b[0], b.len() - 1);
        assert_eq!(p.len(), b.len());
        assert_eq!(*p.last().unwrap(), b[0]);
    }
}
