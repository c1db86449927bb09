//! The rollup-backed REST routes: timeseries, top events, unique users, counters. Each
//! parses its parameters ([`super::params`]), asks [`crate::stats::query::StatsReader`],
//! and answers with the body of [`super::wire`] that WebSocket messages carry too.

use super::error::ApiError;
use super::params::{Params, TOP_EVENTS_LIMIT};
use super::wire::{CountersBody, TimeseriesBody, TopEventsBody, UniqueUsersBody};
use super::{read, GatewayState, OrgAccess, INLINE_READ_BUCKETS};
use crate::stats::query::HOUR_US;
use axum::extract::State;
use axum::Json as JsonBody;
use chrono::Utc;

/// `GET /api/v1/orgs/{org}/timeseries?from=&to=&granularity=hour|day&event_type=`
/// (parameters: [`Params::view`])
pub async fn timeseries(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<JsonBody<TimeseriesBody>, ApiError> {
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
    Ok(JsonBody(TimeseriesBody::new(
        access.org,
        &view,
        (from, to),
        &points,
    )))
}

/// `GET /api/v1/orgs/{org}/top-events?date=YYYY-MM-DD&limit=10` (date: default today, UTC)
pub async fn top_events(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<JsonBody<TopEventsBody>, ApiError> {
    let date = params.date("date", Utc::now().date_naive())?;
    let limit = params.limit(TOP_EVENTS_LIMIT)?;
    let stats = st.stats.clone();
    let org = access.org_bytes();
    let top = read(true, move || stats.top_events(org, date, limit)).await??;
    Ok(JsonBody(TopEventsBody::new(access.org, date, &top)))
}

/// `GET /api/v1/orgs/{org}/unique-users?from=&to=`
pub async fn unique_users(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<JsonBody<UniqueUsersBody>, ApiError> {
    let (from, to) = params.range(st.cfg.gateway.max_range_days)?;
    let stats = st.stats.clone();
    let org = access.org_bytes();
    // A whole day is one row, so hours are the most rows a range of this length reads.
    let small = (to - from) / HOUR_US <= INLINE_READ_BUCKETS;
    let u = read(small, move || stats.unique(org, from, to)).await??;
    Ok(JsonBody(UniqueUsersBody::new(access.org, (from, to), &u)))
}

/// `GET /api/v1/orgs/{org}/counters`
pub async fn counters(
    State(st): State<GatewayState>,
    access: OrgAccess,
) -> Result<JsonBody<CountersBody>, ApiError> {
    let stats = st.stats.clone();
    let windows = st.cfg.stats.realtime_windows_s.clone();
    let org = access.org_bytes();
    let now = Utc::now().timestamp_micros();
    let c = read(true, move || stats.counters(org, &windows, now)).await??;
    Ok(JsonBody(CountersBody::new(access.org, &c)))
}
