//! The rollup-backed REST routes: timeseries, top events, unique users, counters. Each
//! parses its parameters ([`super::params`]), asks [`super::group`] (this instance's
//! [`crate::stats::query::StatsReader`], and in a scaled-out group the other instances),
//! and answers with the body of [`super::wire`] that WebSocket messages carry too.

use super::error::ApiError;
use super::params::{Params, TOP_EVENTS_LIMIT};
use super::wire::{CountersBody, TimeseriesBody, TopEventsBody, UniqueUsersBody};
use super::{group, GatewayState, OrgAccess};
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
    let et = view.event_type.clone();
    let (points, coverage) =
        group::timeseries(&st, access.org, (from, to), g, et, view.points).await?;
    Ok(JsonBody(
        TimeseriesBody::new(access.org, &view, (from, to), &points).covering(coverage),
    ))
}

/// `GET /api/v1/orgs/{org}/top-events?date=YYYY-MM-DD&limit=10` (date: default today, UTC)
pub async fn top_events(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<JsonBody<TopEventsBody>, ApiError> {
    let date = params.date("date", Utc::now().date_naive())?;
    let limit = params.limit(TOP_EVENTS_LIMIT)?;
    let (top, coverage) = group::top_events(&st, access.org, date, limit).await?;
    Ok(JsonBody(
        TopEventsBody::new(access.org, date, &top).covering(coverage),
    ))
}

/// `GET /api/v1/orgs/{org}/unique-users?from=&to=`
pub async fn unique_users(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<JsonBody<UniqueUsersBody>, ApiError> {
    let (from, to) = params.range(st.cfg.gateway.max_range_days)?;
    let (u, coverage) = group::unique(&st, access.org, (from, to)).await?;
    Ok(JsonBody(
        UniqueUsersBody::new(access.org, (from, to), &u).covering(coverage),
    ))
}

/// `GET /api/v1/orgs/{org}/counters`
pub async fn counters(
    State(st): State<GatewayState>,
    access: OrgAccess,
) -> Result<JsonBody<CountersBody>, ApiError> {
    let (c, coverage) = group::counters(&st, access.org).await?;
    Ok(JsonBody(
        CountersBody::new(access.org, &c).covering(coverage),
    ))
}
