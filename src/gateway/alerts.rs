//! `/api/v1/orgs/{org}/alerts`: an org's alert rules (create, list, read, replace, delete),
//! their deliveries and firings (docs/ALERTS.md, "API"). Rules are AlertRule rows; a rule
//! is only ever read through its org, so another org's token never sees it.

use super::body::JsonBytes;
use super::error::ApiError;
use super::params::fmt_time;
use super::params::{Limit, Params};
use super::{blocking, GatewayState, OrgAccess};
use crate::alerts::eval::{firing_id, load_state, num, State};
use crate::alerts::rule::Rule;
use crate::alerts::Hub;
use crate::store::{Query, Row, Store, StoreError, Value, WriteBatch};
use axum::extract::{Path, State as St};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json as JsonBody;
use serde_json::{json, Value as Json};
use std::collections::HashMap;

/// The hub of the alert worker, or why this instance has none.
fn hub(st: &GatewayState) -> Result<&Hub, ApiError> {
    st.alerts.as_ref().ok_or_else(|| {
        ApiError::not_implemented(if st.cfg.scale_out.enabled {
            "alerting is not available in a scaled-out group yet (scale_out.enabled = true)"
                .to_string()
        } else if !st.cfg.stats.enabled {
            "alerting needs the stats workers (stats.enabled = false)".to_string()
        } else {
            "alerting is off (alerts.enabled = false)".to_string()
        })
    })
}

fn rule_id(raw: &str) -> Result<[u8; 16], ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| *u.as_bytes())
        .map_err(|_| ApiError::bad_parameter("id", raw, "is not a UUID"))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no alert rule {id} in this org"))
}

fn text(r: &Row, f: &str) -> Option<String> {
    match r.get(f) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn time(r: &Row, f: &str) -> Json {
    match r.get(f) {
        Some(Value::Timestamp(t)) => json!(fmt_time(*t)),
        _ => Json::Null,
    }
}

fn float(r: &Row, f: &str) -> Json {
    match r.get(f) {
        Some(Value::Float64(x)) => num(*x),
        _ => Json::Null,
    }
}

/// The rule `id` of `org`: its row and its spec.
fn load(store: &Store, org: [u8; 16], id: [u8; 16]) -> Result<Option<(Row, Rule)>, StoreError> {
    let Some(row) = store
        .get("AlertRule", &id)?
        .filter(|r| r.get("org_id") == Some(&Value::Uuid(org)))
    else {
        return Ok(None);
    };
    let rule = text(&row, "spec").and_then(|s| serde_json::from_str::<Rule>(&s).ok());
    Ok(rule.map(|rule| (row, rule)))
}

/// A rule as the API shows it: the spec without secrets, ids, times and its state.
fn rule_json(row: &Row, rule: &Rule, state: Option<&State>, hub: &Hub) -> Json {
    let id = row.id().unwrap_or_default();
    let mut out = rule.public_json();
    let now = chrono::Utc::now().timestamp_micros();
    let evaluated = hub.evaluated.lock().get(&id).copied();
    let state = match state {
        Some(s) => json!({
            "state": s.state,
            "since": fmt_time(s.since_us),
            "seq": s.seq,
            "value": evaluated.map(|e| num(e.value)).or(s.value.map(num)),
            "previous_value": evaluated.map(|e| num(e.previous_value)).or(s.previous_value.map(num)),
            "evaluated_at": fmt_time(evaluated.map_or(s.evaluated_at_us, |e| e.at_us)),
            "muted": rule.muted(now),
        }),
        None => json!({
            "state": "inactive", "since": time(row, "created_at"), "seq": 0,
            "value": evaluated.map(|e| num(e.value)),
            "previous_value": evaluated.map(|e| num(e.previous_value)),
            "evaluated_at": evaluated.map(|e| fmt_time(e.at_us)),
            "muted": rule.muted(now),
        }),
    };
    out["id"] = json!(uuid::Uuid::from_bytes(id).to_string());
    if let Some(Value::Uuid(org)) = row.get("org_id") {
        out["org_id"] = json!(uuid::Uuid::from_bytes(*org).to_string());
    }
    out["created_at"] = time(row, "created_at");
    out["updated_at"] = time(row, "updated_at");
    out["state"] = state;
    out
}

fn rule_row(id: [u8; 16], org: [u8; 16], rule: &Rule, created: i64, now: i64) -> Row {
    Row::new()
        .with("id", Value::Uuid(id))
        .with("org_id", Value::Uuid(org))
        .with("name", Value::String(rule.name.clone()))
        .with(
            "spec",
            Value::String(serde_json::to_string(rule).unwrap_or_default()),
        )
        .with("created_at", Value::Timestamp(created))
        .with("updated_at", Value::Timestamp(now))
}

/// `GET /api/v1/orgs/{org}/alerts` (by name)
pub async fn list(St(st): St<GatewayState>, access: OrgAccess) -> Result<JsonBody<Json>, ApiError> {
    let hub = hub(&st)?.clone();
    let store = st.store.clone();
    let org = access.org_bytes();
    let (rows, states) = blocking(move || -> Result<_, StoreError> {
        let rows = store.query(&Query::new("AlertRule").eq("org_id", Value::Uuid(org)))?;
        let states: HashMap<[u8; 16], State> = store
            .query(&Query::new("AlertState").eq("org_id", Value::Uuid(org)))?
            .iter()
            .filter_map(|r| match r.get("rule_id") {
                Some(Value::Uuid(id)) => Some((*id, State::from_row(r)?)),
                _ => None,
            })
            .collect();
        Ok((rows, states))
    })
    .await??;
    let mut rules: Vec<(Row, Rule)> = rows
        .into_iter()
        .filter_map(|r| {
            let rule = serde_json::from_str::<Rule>(&text(&r, "spec")?).ok()?;
            Some((r, rule))
        })
        .collect();
    rules.sort_by(|a, b| {
        a.1.name
            .cmp(&b.1.name)
            .then_with(|| a.0.id().cmp(&b.0.id()))
    });
    Ok(JsonBody(json!({
        "alerts": rules
            .iter()
            .map(|(row, rule)| rule_json(row, rule, row.id().and_then(|id| states.get(&id)), &hub))
            .collect::<Vec<_>>(),
    })))
}

/// `POST /api/v1/orgs/{org}/alerts` -> 201
pub async fn create(
    St(st): St<GatewayState>,
    access: OrgAccess,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let hub = hub(&st)?.clone();
    let rule = Rule::from_json(&body, None)?;
    let org = access.org_bytes();
    let store = st.store.clone();
    let count = blocking(move || {
        store
            .query(&Query::new("AlertRule").eq("org_id", Value::Uuid(org)))
            .map(|r| r.len())
    })
    .await??;
    let max = st.cfg.alerts.max_rules_per_org;
    if count >= max {
        return Err(ApiError::conflict(format!(
            "this org has {count} alert rules, the most alerts.max_rules_per_org allows ({max})"
        )));
    }
    let id = *uuid::Uuid::new_v4().as_bytes();
    let now = chrono::Utc::now().timestamp_micros();
    let row = rule_row(id, org, &rule, now, now);
    let mut batch = WriteBatch::new();
    batch.insert("AlertRule", row.clone());
    st.store.write(batch).await?;
    hub.rules_changed.notify_one();
    Ok((
        StatusCode::CREATED,
        JsonBody(rule_json(&row, &rule, None, &hub)),
    )
        .into_response())
}

/// `GET /api/v1/orgs/{org}/alerts/{id}`
pub async fn get(
    St(st): St<GatewayState>,
    access: OrgAccess,
    Path((_, raw)): Path<(String, String)>,
) -> Result<JsonBody<Json>, ApiError> {
    let hub = hub(&st)?.clone();
    let id = rule_id(&raw)?;
    let store = st.store.clone();
    let org = access.org_bytes();
    let found = blocking(move || -> Result<_, crate::stats::StatsError> {
        let Some(rule) = load(&store, org, id)? else {
            return Ok(None);
        };
        Ok(Some((rule, load_state(&store, id)?)))
    })
    .await??;
    match found {
        Some(((row, rule), state)) => Ok(JsonBody(rule_json(&row, &rule, state.as_ref(), &hub))),
        None => Err(not_found(&raw)),
    }
}

/// `PUT /api/v1/orgs/{org}/alerts/{id}` (the whole rule, as POST; secrets may be left out)
pub async fn replace(
    St(st): St<GatewayState>,
    access: OrgAccess,
    Path((_, raw)): Path<(String, String)>,
    JsonBytes(body): JsonBytes,
) -> Result<JsonBody<Json>, ApiError> {
    let hub = hub(&st)?.clone();
    let id = rule_id(&raw)?;
    let store = st.store.clone();
    let org = access.org_bytes();
    let Some((old, previous)) = blocking(move || load(&store, org, id)).await?? else {
        return Err(not_found(&raw));
    };
    let rule = Rule::from_json(&body, Some(&previous))?;
    let now = chrono::Utc::now().timestamp_micros();
    let created = match old.get("created_at") {
        Some(Value::Timestamp(t)) => *t,
        _ => now,
    };
    let row = rule_row(id, org, &rule, created, now);
    let mut batch = WriteBatch::new();
    batch.update("AlertRule", id, row.clone());
    match st.store.write(batch).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => return Err(not_found(&raw)),
        Err(e) => return Err(e.into()),
    }
    hub.rules_changed.notify_one();
    let store = st.store.clone();
    let state = blocking(move || load_state(&store, id)).await??;
    Ok(JsonBody(rule_json(&row, &rule, state.as_ref(), &hub)))
}

/// `DELETE /api/v1/orgs/{org}/alerts/{id}` -> 204: the rule, its state, firings and
/// deliveries.
pub async fn delete(
    St(st): St<GatewayState>,
    access: OrgAccess,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let hub = hub(&st)?.clone();
    let id = rule_id(&raw)?;
    let store = st.store.clone();
    let org = access.org_bytes();
    let batch = blocking(move || -> Result<Option<WriteBatch>, StoreError> {
        if load(&store, org, id)?.is_none() {
            return Ok(None);
        }
        let mut batch = WriteBatch::new();
        batch.delete("AlertRule", id);
        for entity in ["AlertState", "AlertFiring", "AlertDelivery"] {
            for r in store.query(&Query::new(entity).eq("rule_id", Value::Uuid(id)))? {
                if let Some(rid) = r.id() {
                    batch.delete(entity, rid);
                }
            }
        }
        Ok(Some(batch))
    })
    .await??;
    let Some(batch) = batch else {
        return Err(not_found(&raw));
    };
    match st.store.write(batch).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => return Err(not_found(&raw)),
        Err(e) => return Err(e.into()),
    }
    hub.rules_changed.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `limit` of the deliveries and the history: 1..=1000, default 100.
const LIMIT: Limit = Limit {
    max: 1000,
    default: 100,
};

/// `GET /api/v1/orgs/{org}/alerts/{id}/deliveries?limit=` (newest first)
pub async fn deliveries(
    St(st): St<GatewayState>,
    access: OrgAccess,
    Path((_, raw)): Path<(String, String)>,
    p: Params,
) -> Result<JsonBody<Json>, ApiError> {
    hub(&st)?;
    let id = rule_id(&raw)?;
    let limit = p.limit(LIMIT)?;
    let store = st.store.clone();
    let org = access.org_bytes();
    let rows = blocking(move || -> Result<Option<Vec<Row>>, StoreError> {
        if load(&store, org, id)?.is_none() {
            return Ok(None);
        }
        store
            .query(&Query::new("AlertDelivery").eq("rule_id", Value::Uuid(id)))
            .map(Some)
    })
    .await??;
    let Some(mut rows) = rows else {
        return Err(not_found(&raw));
    };
    let created = |r: &Row| match r.get("created_at") {
        Some(Value::Timestamp(t)) => *t,
        _ => 0,
    };
    rows.sort_by(|a, b| {
        created(b)
            .cmp(&created(a))
            .then_with(|| text(a, "contact").cmp(&text(b, "contact")))
    });
    rows.truncate(limit);
    let int = |r: &Row, f: &str| match r.get(f) {
        Some(Value::Int32(n)) => json!(n),
        _ => Json::Null,
    };
    Ok(JsonBody(json!({
        "deliveries": rows.iter().map(|r| json!({
            "id": r.id().map(|i| uuid::Uuid::from_bytes(i).to_string()),
            "idempotency_key": text(r, "idempotency_key"),
            "status": text(r, "status"),
            "contact": text(r, "contact"),
            "outcome": text(r, "outcome"),
            "attempts": int(r, "attempts"),
            "last_error": text(r, "last_error"),
            "last_http_status": int(r, "last_http_status"),
            "created_at": time(r, "created_at"),
            "next_attempt_at": time(r, "next_attempt_at"),
            "delivered_at": time(r, "delivered_at"),
        })).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/orgs/{org}/alerts/history?limit=` (firings, newest first)
pub async fn history(
    St(st): St<GatewayState>,
    access: OrgAccess,
    p: Params,
) -> Result<JsonBody<Json>, ApiError> {
    hub(&st)?;
    let limit = p.limit(LIMIT)?;
    let store = st.store.clone();
    let org = access.org_bytes();
    let (mut firings, names) = blocking(move || -> Result<_, StoreError> {
        let firings = store.query(&Query::new("AlertFiring").eq("org_id", Value::Uuid(org)))?;
        let names: HashMap<[u8; 16], String> = store
            .query(&Query::new("AlertRule").eq("org_id", Value::Uuid(org)))?
            .iter()
            .filter_map(|r| Some((r.id()?, text(r, "name")?)))
            .collect();
        Ok((firings, names))
    })
    .await??;
    let fired = |r: &Row| match r.get("fired_at") {
        Some(Value::Timestamp(t)) => *t,
        _ => 0,
    };
    firings.sort_by_key(|r| std::cmp::Reverse(fired(r)));
    firings.truncate(limit);
    Ok(JsonBody(json!({
        "firings": firings.iter().map(|r| {
            let rule = match r.get("rule_id") { Some(Value::Uuid(u)) => *u, _ => [0; 16] };
            let seq = match r.get("seq") { Some(Value::Int64(n)) => *n, _ => 0 };
            debug_assert_eq!(r.id(), Some(firing_id(&rule, seq)));
            json!({
                "rule_id": uuid::Uuid::from_bytes(rule).to_string(),
                "rule_name": names.get(&rule),
                "seq": seq,
                "fired_at": time(r, "fired_at"),
                "resolved_at": time(r, "resolved_at"),
                "value": float(r, "value"),
                "resolved_value": float(r, "resolved_value"),
                "late_events": match r.get("late_events") { Some(Value::Int64(n)) => json!(n), _ => json!(0) },
            })
        }).collect::<Vec<_>>(),
    })))
}
