//! Saved dashboards (the Dashboard entity): list by org, create, read, replace, delete.
//! Bodies are validated against the widget schema of docs/API.md before anything is
//! written; a 400 names the offending field (`widgets[2].w`) and its value.

use super::body::JsonBytes;
use super::error::ApiError;
use super::params::fmt_time;
use super::{blocking, GatewayState, OrgAccess};
use crate::stats::zone::Zone;
use crate::store::{Query, Row, Store, StoreError, Value, WriteBatch};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json as JsonBody;
use serde_json::{json, Map, Value as Json};
use std::collections::{HashMap, HashSet};

pub const MAX_WIDGETS: usize = 50;
pub const GRID_COLUMNS: i64 = 12;
const KINDS: [&str; 5] = ["stat", "line", "bar", "recent", "trend"];
const METRICS: [&str; 5] = [
    "events_5m",
    "active_users_5m",
    "events_today",
    "unique_users_today",
    "unique_users_range",
];
const WIDGET_FIELDS: [&str; 9] = ["id", "kind", "title", "metric", "trend", "x", "y", "w", "h"];
/// The ranges a trend widget may keep: it always ends now (seconds back).
const TREND_RANGES: [(&str, i64); 5] = [
    ("1h", 3_600),
    ("24h", 86_400),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
    ("90d", 90 * 86_400),
];

/// A validated dashboard body.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardInput {
    pub name: String,
    pub widgets: Vec<Json>,
}

/// A JSON value as a 400 shows it: a string's text, anything else as JSON.
pub(crate) fn show(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// 400: body field `field` has the unusable value `v`.
pub(crate) fn bad(field: &str, v: &Json, why: &str) -> ApiError {
    ApiError::bad_parameter(field, &show(v), why)
}

/// What a 400 says about a text field with control characters (newlines, escapes, NUL):
/// names and titles are shown as one line of text.
const CONTROL_CHARACTER: &str = "contains a control character (U+0000..U+001F, U+007F..U+009F)";

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A JSON number without a fraction, as JSON Schema's `integer` has it: `3` and `3.0`
/// alike (a client's JSON library may write either).
pub(crate) fn whole_number(v: &Json) -> Option<i64> {
    v.as_i64().or_else(|| {
        let x = v.as_f64()?;
        (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64)
    })
}

/// `widgets[i].f`: the name a 400 gives a widget field.
fn widget_field(i: usize, f: &str) -> String {
    format!("widgets[{i}].{f}")
}

/// Widget `i` as an object with no fields but [`WIDGET_FIELDS`].
fn widget_object(i: usize, w: &Json) -> Result<&Map<String, Json>, ApiError> {
    let Some(obj) = w.as_object() else {
        return Err(bad(&format!("widgets[{i}]"), w, "is not an object"));
    };
    if let Some(k) = obj.keys().find(|k| !WIDGET_FIELDS.contains(&k.as_str())) {
        return Err(bad(
            &widget_field(i, k),
            &obj[k],
            &format!(
                "is not a widget field (fields: {})",
                WIDGET_FIELDS.join(", ")
            ),
        ));
    }
    Ok(obj)
}

/// The widget's `id`: 1..=64 characters, no control characters, not in `ids` (it is added).
fn widget_id(
    i: usize,
    obj: &Map<String, Json>,
    ids: &mut HashSet<String>,
) -> Result<String, ApiError> {
    let id = match obj.get("id") {
        Some(Json::String(s)) if has_control(s) => {
            return Err(bad(
                &widget_field(i, "id"),
                &Json::String(s.clone()),
                CONTROL_CHARACTER,
            ))
        }
        Some(Json::String(s)) if !s.is_empty() && s.chars().count() <= 64 => s.clone(),
        other => {
            return Err(bad(
                &widget_field(i, "id"),
                other.unwrap_or(&Json::Null),
                "is not a string of 1..=64 characters",
            ))
        }
    };
    if !ids.insert(id.clone()) {
        return Err(bad(
            &widget_field(i, "id"),
            &json!(id),
            "is used by another widget",
        ));
    }
    Ok(id)
}

/// The widget's `kind`, one of [`KINDS`].
fn widget_kind(i: usize, obj: &Map<String, Json>) -> Result<String, ApiError> {
    match obj.get("kind") {
        Some(Json::String(s)) if KINDS.contains(&s.as_str()) => Ok(s.clone()),
        other => Err(bad(
            &widget_field(i, "kind"),
            other.unwrap_or(&Json::Null),
            "is not one of stat, line, bar, recent, trend",
        )),
    }
}

/// The widget's optional `title`: at most 200 characters, no control characters.
fn widget_title(i: usize, obj: &Map<String, Json>) -> Result<Option<String>, ApiError> {
    match obj.get("title") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if has_control(s) => Err(bad(
            &widget_field(i, "title"),
            &Json::String(s.clone()),
            CONTROL_CHARACTER,
        )),
        Some(Json::String(s)) if s.chars().count() <= 200 => Ok(Some(s.clone())),
        Some(other) => Err(bad(
            &widget_field(i, "title"),
            other,
            "is not a string of at most 200 characters",
        )),
    }
}

/// The widget's `metric`: one of [`METRICS`] for a stat widget, absent for any other kind.
fn widget_metric(
    i: usize,
    obj: &Map<String, Json>,
    kind: &str,
) -> Result<Option<String>, ApiError> {
    match (kind, obj.get("metric")) {
        ("stat", Some(Json::String(m))) if METRICS.contains(&m.as_str()) => Ok(Some(m.clone())),
        ("stat", other) => Err(bad(
            &widget_field(i, "metric"),
            other.unwrap_or(&Json::Null),
            &format!(
                "is not a stat metric ({}); a stat widget needs one",
                METRICS.join(", ")
            ),
        )),
        (_, None | Some(Json::Null)) => Ok(None),
        (_, Some(other)) => Err(bad(
            &widget_field(i, "metric"),
            other,
            &format!("is only for stat widgets, not {kind}"),
        )),
    }
}

/// A trend widget's `trend`: the parameters of `GET .../trends` (as the WebSocket `trend`
/// command takes them: each a string, a number or a list) with a `range` (one of
/// [`TREND_RANGES`], ending now) instead of `from` and `to`; checked as a trends request
/// over that range would be. Absent for any other kind.
fn widget_trend(i: usize, obj: &Map<String, Json>, kind: &str) -> Result<Option<Json>, ApiError> {
    let field = widget_field(i, "trend");
    let params = match (kind, obj.get("trend")) {
        ("trend", Some(Json::Object(params))) => params,
        ("trend", other) => {
            return Err(bad(
                &field,
                other.unwrap_or(&Json::Null),
                "is not an object of trends parameters with a range; a trend widget needs one",
            ))
        }
        (_, None | Some(Json::Null)) => return Ok(None),
        (_, Some(other)) => {
            return Err(bad(
                &field,
                other,
                &format!("is only for trend widgets, not {kind}"),
            ))
        }
    };
    let ranges = TREND_RANGES.map(|(r, _)| r).join(", ");
    let range = params.get("range").unwrap_or(&Json::Null);
    let Some(&(_, seconds)) = TREND_RANGES
        .iter()
        .find(|(r, _)| Some(*r) == range.as_str())
    else {
        return Err(bad(
            &format!("{field}.range"),
            range,
            &format!("is not one of {ranges}"),
        ));
    };
    if let Some(k) = ["from", "to"].into_iter().find(|k| params.contains_key(*k)) {
        return Err(bad(
            &format!("{field}.{k}"),
            &params[k],
            &format!("is not kept by a widget: its range ({ranges}) ends now"),
        ));
    }
    let now_us = chrono::Utc::now().timestamp_micros();
    let mut asked = params.clone();
    asked.remove("range");
    asked.insert("from".into(), json!((now_us / 1000) - seconds * 1000));
    let checked = super::trends::pairs_of(&asked)
        .and_then(|pairs| super::trends::parse([0; 16], &pairs, 3660, Zone::UTC, Some(now_us)));
    if let Err(e) = checked {
        let inner = e.parameter.clone().unwrap_or_default();
        return Err(ApiError {
            message: format!("{field}: {}", e.message),
            parameter: Some(format!("{field}.{inner}")),
            ..e
        });
    }
    Ok(Some(Json::Object(params.clone())))
}

/// The widget's place on the grid, `x`, `y`, `w` and `h`, each in its range, with the
/// widget inside the [`GRID_COLUMNS`].
fn widget_grid(i: usize, obj: &Map<String, Json>) -> Result<HashMap<&'static str, i64>, ApiError> {
    let mut grid = HashMap::new();
    for (f, min, max) in [
        ("x", 0, GRID_COLUMNS - 1),
        ("y", 0, 10_000),
        ("w", 1, GRID_COLUMNS),
        ("h", 1, 100),
    ] {
        let v = obj.get(f).unwrap_or(&Json::Null);
        match whole_number(v) {
            Some(n) if (min..=max).contains(&n) => {
                grid.insert(f, n);
            }
            _ => {
                return Err(bad(
                    &widget_field(i, f),
                    v,
                    &format!("is not an integer in {min}..={max}"),
                ))
            }
        }
    }
    if grid["x"] + grid["w"] > GRID_COLUMNS {
        return Err(bad(
            &widget_field(i, "w"),
            &json!(grid["w"]),
            &format!(
                "does not fit: x ({}) + w must be <= {GRID_COLUMNS}",
                grid["x"]
            ),
        ));
    }
    Ok(grid)
}

/// Validates widget `i` field by field (in the order of [`WIDGET_FIELDS`]) and returns it
/// as stored: only the fields it has, an absent or null `title`/`metric`/`trend` left out.
fn widget(i: usize, w: &Json, ids: &mut HashSet<String>) -> Result<Json, ApiError> {
    let obj = widget_object(i, w)?;
    let id = widget_id(i, obj, ids)?;
    let kind = widget_kind(i, obj)?;
    let title = widget_title(i, obj)?;
    let metric = widget_metric(i, obj, &kind)?;
    let trend = widget_trend(i, obj, &kind)?;
    let grid = widget_grid(i, obj)?;
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    out.insert("kind".into(), json!(kind));
    if let Some(t) = title {
        out.insert("title".into(), json!(t));
    }
    if let Some(m) = metric {
        out.insert("metric".into(), json!(m));
    }
    if let Some(t) = trend {
        out.insert("trend".into(), t);
    }
    for f in ["x", "y", "w", "h"] {
        out.insert(f.into(), json!(grid[f]));
    }
    Ok(Json::Object(out))
}

/// Parses and validates a POST/PUT body.
pub fn validate(body: &[u8]) -> Result<DashboardInput, ApiError> {
    let obj = &super::body::json_object(body)?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["name", "widgets"].contains(&k.as_str()))
    {
        return Err(bad(k, &obj[k], "is not a dashboard field (name, widgets)"));
    }
    let name = match obj.get("name") {
        Some(Json::String(s)) if has_control(s) => {
            return Err(bad("name", &Json::String(s.clone()), CONTROL_CHARACTER))
        }
        Some(Json::String(s)) if (1..=100).contains(&s.chars().count()) => s.clone(),
        other => {
            return Err(bad(
                "name",
                other.unwrap_or(&Json::Null),
                "is not a string of 1..=100 characters",
            ))
        }
    };
    let widgets = match obj.get("widgets") {
        Some(Json::Array(ws)) if ws.len() <= MAX_WIDGETS => ws,
        Some(Json::Array(ws)) => {
            return Err(ApiError::bad_parameter(
                "widgets",
                &format!("{} widgets", ws.len()),
                format!("is more than {MAX_WIDGETS}"),
            ))
        }
        other => {
            return Err(bad(
                "widgets",
                other.unwrap_or(&Json::Null),
                "is not an array",
            ))
        }
    };
    let mut ids = HashSet::new();
    let widgets = widgets
        .iter()
        .enumerate()
        .map(|(i, w)| widget(i, w, &mut ids))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DashboardInput { name, widgets })
}

fn dashboard_json(row: &Row) -> Json {
    let uuid = |f: &str| match row.get(f) {
        Some(Value::Uuid(u)) => json!(uuid::Uuid::from_bytes(*u).to_string()),
        _ => Json::Null,
    };
    let time = |f: &str| match row.get(f) {
        Some(Value::Timestamp(us)) => json!(fmt_time(*us)),
        _ => Json::Null,
    };
    json!({
        "id": uuid("id"),
        "org_id": uuid("org_id"),
        "name": match row.get("name") { Some(Value::String(s)) => json!(s), _ => Json::Null },
        "widgets": match row.get("widgets") {
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(json!([])),
            _ => json!([]),
        },
        "created_at": time("created_at"),
        "updated_at": time("updated_at"),
    })
}

fn dashboard_id(raw: &str) -> Result<[u8; 16], ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| *u.as_bytes())
        .map_err(|_| ApiError::bad_parameter("id", raw, "is not a UUID"))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no dashboard {id} in this org"))
}

/// The dashboard `id` if it exists and belongs to `org`.
fn load(store: &Store, org: [u8; 16], id: [u8; 16]) -> Result<Option<Row>, StoreError> {
    Ok(store
        .get("Dashboard", &id)?
        .filter(|r| r.get("org_id") == Some(&Value::Uuid(org))))
}

fn row(id: [u8; 16], org: [u8; 16], input: &DashboardInput, created: i64, now: i64) -> Row {
    Row::new()
        .with("id", Value::Uuid(id))
        .with("org_id", Value::Uuid(org))
        .with("name", Value::String(input.name.clone()))
        .with(
            "widgets",
            Value::String(Json::Array(input.widgets.clone()).to_string()),
        )
        .with("created_at", Value::Timestamp(created))
        .with("updated_at", Value::Timestamp(now))
}

/// `GET /api/v1/orgs/{org}/dashboards` (by name)
pub async fn list(
    State(st): State<GatewayState>,
    access: OrgAccess,
) -> Result<JsonBody<Json>, ApiError> {
    let store = st.store.clone();
    let org = access.org_bytes();
    let mut rows =
        blocking(move || store.query(&Query::new("Dashboard").eq("org_id", Value::Uuid(org))))
            .await??;
    let name = |r: &Row| match r.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    rows.sort_by(|a, b| name(a).cmp(&name(b)).then_with(|| a.id().cmp(&b.id())));
    Ok(JsonBody(json!({
        "dashboards": rows.iter().map(dashboard_json).collect::<Vec<_>>(),
    })))
}

/// `POST /api/v1/orgs/{org}/dashboards` -> 201
pub async fn create(
    State(st): State<GatewayState>,
    access: OrgAccess,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let input = validate(&body)?;
    let id = *uuid::Uuid::new_v4().as_bytes();
    let now = chrono::Utc::now().timestamp_micros();
    let r = row(id, access.org_bytes(), &input, now, now);
    let mut batch = WriteBatch::new();
    batch.insert("Dashboard", r.clone());
    st.store.write(batch).await?;
    Ok((StatusCode::CREATED, JsonBody(dashboard_json(&r))).into_response())
}

/// `GET /api/v1/orgs/{org}/dashboards/{id}`
pub async fn get(
    State(st): State<GatewayState>,
    access: OrgAccess,
    Path((_, raw)): Path<(String, String)>,
) -> Result<JsonBody<Json>, ApiError> {
    let id = dashboard_id(&raw)?;
    let store = st.store.clone();
    let org = access.org_bytes();
    match blocking(move || load(&store, org, id)).await?? {
        Some(r) => Ok(JsonBody(dashboard_json(&r))),
        None => Err(not_found(&raw)),
    }
}

/// `PUT /api/v1/orgs/{org}/dashboards/{id}` (the whole dashboard, as POST)
pub async fn replace(
    State(st): State<GatewayState>,
    access: OrgAccess,
    Path((_, raw)): Path<(String, String)>,
    JsonBytes(body): JsonBytes,
) -> Result<JsonBody<Json>, ApiError> {
    let id = dashboard_id(&raw)?;
    let input = validate(&body)?;
    let store = st.store.clone();
    let org = access.org_bytes();
    let Some(old) = blocking(move || load(&store, org, id)).await?? else {
        return Err(not_found(&raw));
    };
    let now = chrono::Utc::now().timestamp_micros();
    let created = match old.get("created_at") {
        Some(Value::Timestamp(t)) => *t,
        _ => now,
    };
    let r = row(id, org, &input, created, now);
    let mut batch = WriteBatch::new();
    batch.update("Dashboard", id, r.clone());
    match st.store.write(batch).await {
        Ok(_) => Ok(JsonBody(dashboard_json(&r))),
        // Deleted between the read and the write.
        Err(StoreError::NotFound { .. }) => Err(not_found(&raw)),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /api/v1/orgs/{org}/dashboards/{id}` -> 204
pub async fn delete(
    State(st): State<GatewayState>,
    access: OrgAccess,
    Path((_, raw)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = dashboard_id(&raw)?;
    let store = st.store.clone();
    let org = access.org_bytes();
    if blocking(move || load(&store, org, id)).await??.is_none() {
        return Err(not_found(&raw));
    }
    let mut batch = WriteBatch::new();
    batch.delete("Dashboard", id);
    match st.store.write(batch).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound { .. }) => Err(not_found(&raw)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: Json) -> (String, String) {
        let e = validate(body.to_string().as_bytes()).unwrap_err();
        (e.parameter.unwrap(), e.value.unwrap())
    }

    #[test]
    fn trend_widgets_keep_checked_trends_parameters_with_a_range() {
        let body = |trend: Json, kind: &str| {
            json!({"name": "T", "widgets": [
                {"id": "t1", "kind": kind, "trend": trend, "x": 0, "y": 0, "w": 6, "h": 4},
            ]})
        };
        let good = json!({"range": "7d", "measure": "unique_users", "event": ["signup"],
            "filter": ["properties.plan = pro"], "breakdown": "properties.plan",
            "granularity": "day", "compare": "previous"});
        let d = validate(body(good.clone(), "trend").to_string().as_bytes()).unwrap();
        assert_eq!(d.widgets[0]["trend"], good);
        let refused = |trend: Json, kind: &str| {
            let e = validate(body(trend, kind).to_string().as_bytes()).unwrap_err();
            (e.parameter.unwrap(), e.message)
        };
        let (p, m) = refused(json!({"range": "2d"}), "trend");
        assert_eq!(p, "widgets[0].trend.range");
        assert!(
            m.contains("'2d' is not one of 1h, 24h, 7d, 30d, 90d"),
            "{m}"
        );
        let (p, _) = refused(
            json!({"range": "7d", "to": "2026-12-01T00:00:00Z"}),
            "trend",
        );
        assert_eq!(p, "widgets[0].trend.to");
        // The trends parser's own refusals, named under the widget.
        let (p, m) = refused(json!({"range": "7d", "measure": "revenue"}), "trend");
        assert_eq!(p, "widgets[0].trend.measure");
        assert!(
            m.starts_with("widgets[0].trend: parameter 'measure': 'revenue'"),
            "{m}"
        );
        let (p, _) = refused(
            json!({"range": "7d", "filter": "properties.plan ~ pro"}),
            "trend",
        );
        assert_eq!(p, "widgets[0].trend.filter");
        assert_eq!(refused(Json::Null, "trend").0, "widgets[0].trend");
        assert_eq!(refused(good, "line").0, "widgets[0].trend");
    }

    #[test]
    fn widgets_are_validated_field_by_field() {
        let ok = json!({"name": "Main", "widgets": [
            {"id": "w1", "kind": "stat", "metric": "events_5m", "x": 0, "y": 0, "w": 3, "h": 2},
            {"id": "w2", "kind": "line", "title": "Events", "x": 3, "y": 0, "w": 9, "h": 4},
        ]});
        let d = validate(ok.to_string().as_bytes()).unwrap();
        assert_eq!(d.widgets.len(), 2);
        let w = |extra: Json| {
            let mut base = json!({"id": "w1", "kind": "line", "x": 0, "y": 0, "w": 6, "h": 4});
            for (k, v) in extra.as_object().unwrap() {
                base[k] = v.clone();
            }
            json!({"name": "D", "widgets": [base]})
        };
        assert_eq!(err(w(json!({"x": 8}))), ("widgets[0].w".into(), "6".into()));
        // Whole numbers written with a fraction are integers (JSON Schema's `integer`).
        let d = validate(w(json!({"x": 2.0, "h": 4.0})).to_string().as_bytes()).unwrap();
        assert_eq!(
            (&d.widgets[0]["x"], &d.widgets[0]["h"]),
            (&json!(2), &json!(4))
        );
        assert_eq!(
            err(w(json!({"x": 2.5}))),
            ("widgets[0].x".into(), "2.5".into())
        );
        assert_eq!(err(w(json!({"w": 0}))), ("widgets[0].w".into(), "0".into()));
        assert_eq!(
            err(w(json!({"kind": "pie"}))),
            ("widgets[0].kind".into(), "pie".into())
        );
        assert_eq!(
            err(w(json!({"metric": "events_5m"}))),
            ("widgets[0].metric".into(), "events_5m".into())
        );
        assert_eq!(
            err(w(json!({"kind": "stat"}))),
            ("widgets[0].metric".into(), "null".into())
        );
        assert_eq!(
            err(w(json!({"color": "red"}))),
            ("widgets[0].color".into(), "red".into())
        );
        assert_eq!(err(json!({"name": "", "widgets": []})).0, "name");
        assert_eq!(
            err(json!({"name": "a\u{7}b", "widgets": []})),
            ("name".to_string(), "a\u{7}b".to_string())
        );
        assert_eq!(err(json!({"name": "x"})).0, "widgets");
        let many: Vec<Json> = (0..51)
            .map(|i| json!({"id": format!("w{i}"), "kind": "bar", "x": 0, "y": i, "w": 1, "h": 1}))
            .collect();
        assert_eq!(err(json!({"name": "x", "widgets": many})).0, "widgets");
    }
}
