//! The rollup-backed REST routes: timeseries, top events, unique users, counters. Each
//! parses its parameters, asks [`crate::stats::query::StatsReader`] on a blocking thread,
//! and shapes the answer as docs/API.md says.

use super::error::ApiError;
use super::params::{fmt_time, Params, TOP_EVENTS_LIMIT};
use super::{read, GatewayState, OrgAccess, INLINE_READ_BUCKETS};
use crate::stats::query::{Counters, Point, HOUR_US};
use axum::extract::State;
use axum::Json as JsonBody;
use chrono::Utc;
use serde_json::{json, Value as Json};

/// `GET /api/v1/orgs/{org}/timeseries?from=&to=&granularity=hour|day&event_type=`
/// (parameters: [`Params::view`])
pub async fn timeseries(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<JsonBody<Timeseries>, ApiError> {
    let view = params.view(st.cfg.gateway.max_range_days)?;
    let (from, to, g) = (view.from_us, view.to_us, view.granularity);
    let stats = st.stats.clone();
    let et = view.event_type.clone();
    let org = access.org_bytes();
    let small = view.points <= INLINE_READ_BUCKETS;
    let points = read(small, move || {
        stats.timeseries(org, from, to, g, et.as_deref())
    })
    .await??;
    Ok(JsonBody(Timeseries {
        org_id: access.org.to_string(),
        from: fmt_time(from),
        to: fmt_time(to),
        granularity: g.as_str(),
        event_type: view.event_type,
        points: points.iter().map(PointOut::from).collect(),
    }))
}

/// The timeseries body (typed: a week of hourly points as `serde_json::Value` maps cost
/// more than reading them).
#[derive(serde::Serialize)]
pub struct Timeseries {
    org_id: String,
    from: String,
    to: String,
    granularity: &'static str,
    event_type: Option<String>,
    points: Vec<PointOut>,
}

/// One point as the API shows it.
#[derive(serde::Serialize)]
pub struct PointOut {
    t: String,
    events: i64,
    unique_users: i64,
    unique_sessions: i64,
}

impl From<&Point> for PointOut {
    fn from(p: &Point) -> Self {
        PointOut {
            t: fmt_time(p.t_us),
            events: p.events,
            unique_users: p.unique_users,
            unique_sessions: p.unique_sessions,
        }
    }
}

/// `GET /api/v1/orgs/{org}/top-events?date=YYYY-MM-DD&limit=10` (date: default today, UTC)
pub async fn top_events(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<JsonBody<Json>, ApiError> {
    let date = params.date("date", Utc::now().date_naive())?;
    let limit = params.limit(TOP_EVENTS_LIMIT)?;
    let stats = st.stats.clone();
    let org = access.org_bytes();
    let top = read(true, move || stats.top_events(org, date, limit)).await??;
    Ok(JsonBody(json!({
        "org_id": access.org.to_string(),
        "date": date.format("%Y-%m-%d").to_string(),
        "events": top.iter().map(|t| json!({"event_name": t.event_name, "count": t.count}))
            .collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/orgs/{org}/unique-users?from=&to=`
pub async fn unique_users(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<JsonBody<Json>, ApiError> {
    let (from, to) = params.range(st.cfg.gateway.max_range_days)?;
    let stats = st.stats.clone();
    let org = access.org_bytes();
    // A whole day is one row, so hours are the most rows a range of this length reads.
    let small = (to - from) / HOUR_US <= INLINE_READ_BUCKETS;
    let u = read(small, move || stats.unique(org, from, to)).await??;
    Ok(JsonBody(json!({
        "org_id": access.org.to_string(),
        "from": fmt_time(from),
        "to": fmt_time(to),
        "unique_users": u.users,
        "unique_sessions": u.sessions,
        "exact": u.exact,
    })))
}

/// The counters body (also what a WebSocket update carries).
pub fn counters_json(org: uuid::Uuid, c: &Counters) -> Json {
    let five = c.windows.iter().find(|w| w.window_seconds == 300);
    let pick = |f: fn(&crate::stats::realtime::WindowValues) -> i64| five.map(f).unwrap_or(0);
    json!({
        "org_id": org.to_string(),
        "events_5m": pick(|w| w.events),
        "active_users_5m": pick(|w| w.active_users),
        "prev_events_5m": pick(|w| w.prev_events),
        "prev_active_users_5m": pick(|w| w.prev_active_users),
        "events_today": c.events_today,
        "unique_users_today": c.unique_users_today,
        "windows": c.windows.iter().map(|w| json!({
            "window_seconds": w.window_seconds,
            "events": w.events,
            "active_users": w.active_users,
            "prev_events": w.prev_events,
            "prev_active_users": w.prev_active_users,
        })).collect::<Vec<_>>(),
        "updated_at": c.updated_at_us.map(fmt_time),
    })
}

/// `GET /api/v1/orgs/{org}/counters`
pub async fn counters(
    State(st): State<GatewayState>,
    access: OrgAccess,
) -> Result<JsonBody<Json>, ApiError> {
    let stats = st.stats.clone();
    let windows = st.cfg.stats.realtime_windows_s.clone();
    let org = access.org_bytes();
    let now = Utc::now().timestamp_micros();
    let c = read(true, move || stats.counters(org, &windows, now)).await??;
    Ok(JsonBody(counters_json(access.org, &c)))
}
