//! Raw events out: the Event JSON of docs/API.md, recent events, and the streamed export
//! (NDJSON or CSV), which pages through the `[org_id, timestamp]` index so its memory stays
//! constant however long the range.

use super::error::ApiError;
use super::params::{fmt_time, Params};
use super::{blocking, GatewayState, OrgAccess};
use crate::store::{Order, Query, Row, Store, Value};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json as JsonBody;
use serde_json::{json, Map, Value as Json};
use std::collections::HashSet;
use std::ops::Bound;

/// Events per store read while exporting.
pub const EXPORT_PAGE: usize = 1_000;

fn text(row: &Row, f: &str) -> Json {
    match row.get(f) {
        Some(Value::String(s)) => json!(s),
        _ => Json::Null,
    }
}

fn num(row: &Row, f: &str) -> Json {
    match row.get(f) {
        Some(Value::Int32(n)) => json!(n),
        Some(Value::Int64(n)) => json!(n),
        _ => Json::Null,
    }
}

fn time(row: &Row, f: &str) -> Json {
    match row.get(f) {
        Some(Value::Timestamp(us)) => json!(fmt_time(*us)),
        _ => Json::Null,
    }
}

fn uuid(row: &Row, f: &str) -> Json {
    match row.get(f) {
        Some(Value::Uuid(u)) => json!(uuid::Uuid::from_bytes(*u).to_string()),
        _ => Json::Null,
    }
}

/// An Event row as the API's Event object.
pub fn event_json(row: &Row) -> Json {
    let properties = match row.get("properties") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Json::Null),
        _ => Json::Null,
    };
    let mut m = Map::new();
    // `event_id` holds the producer's id where the row id had to be scoped to the org.
    let id = match uuid(row, "event_id") {
        Json::Null => uuid(row, "id"),
        given => given,
    };
    m.insert("id".into(), id);
    m.insert("org_id".into(), uuid(row, "org_id"));
    m.insert("event_type".into(), text(row, "event_type"));
    m.insert("event_name".into(), text(row, "event_name"));
    m.insert("user_id".into(), text(row, "user_id"));
    m.insert("session_id".into(), text(row, "session_id"));
    m.insert("properties".into(), properties);
    m.insert("timestamp".into(), time(row, "timestamp"));
    m.insert("topic".into(), text(row, "topic"));
    m.insert("partition".into(), num(row, "partition"));
    m.insert("offset".into(), num(row, "offset"));
    m.insert("ingested_at".into(), time(row, "ingested_at"));
    Json::Object(m)
}

/// The CSV columns of an export, in order.
pub const CSV_COLUMNS: [&str; 12] = [
    "id",
    "org_id",
    "event_type",
    "event_name",
    "user_id",
    "session_id",
    "timestamp",
    "topic",
    "partition",
    "offset",
    "ingested_at",
    "properties",
];

/// One CSV field (RFC 4180: quoted when it holds a comma, quote or line break).
fn csv_field(out: &mut String, v: &Json) {
    let s = match v {
        Json::Null => return,
        // A text cell a spreadsheet would run as a formula gets a leading apostrophe
        // (OWASP's CSV-injection advice); numbers are left alone.
        Json::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&s);
    }
}

fn csv_line(out: &mut String, event: &Json) {
    for (i, col) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = &event[*col];
        if *col == "properties" && !v.is_null() {
            csv_field(out, &Json::String(v.to_string()));
        } else {
            csv_field(out, v);
        }
    }
    out.push_str("\r\n");
}

/// `GET /api/v1/orgs/{org}/events/recent?limit=`
pub async fn recent(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<JsonBody<Json>, ApiError> {
    let limit = params.int("limit", 1, 1000, 100)? as usize;
    let stats = st.stats.clone();
    let rows = blocking(move || stats.recent_events(access.org_bytes(), limit)).await??;
    Ok(JsonBody(json!({
        "org_id": access.org.to_string(),
        "events": rows.iter().map(event_json).collect::<Vec<_>>(),
    })))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

/// Where an export is: the next page starts at `from` (inclusive), skipping the events at
/// exactly `from` that the previous page already sent.
struct Cursor {
    store: Store,
    org: [u8; 16],
    from: i64,
    to: i64,
    sent_at_from: HashSet<[u8; 16]>,
    format: Format,
    header_due: bool,
    done: bool,
}

impl Cursor {
    /// Reads and formats the next page; None when nothing is left.
    fn next_chunk(&mut self) -> Result<Option<String>, crate::store::StoreError> {
        if self.done {
            return Ok(None);
        }
        let limit = EXPORT_PAGE + self.sent_at_from.len();
        let rows = self.store.query(
            &Query::new("Event")
                .eq("org_id", Value::Uuid(self.org))
                .range(
                    "timestamp",
                    Bound::Included(Value::Timestamp(self.from)),
                    Bound::Excluded(Value::Timestamp(self.to)),
                )
                .order_by("timestamp", Order::Asc)
                .limit(limit),
        )?;
        self.done = rows.len() < limit;
        let mut out = String::new();
        if self.header_due {
            self.header_due = false;
            if self.format == Format::Csv {
                out.push_str(&CSV_COLUMNS.join(","));
                out.push_str("\r\n");
            }
        }
        let mut newest = self.from;
        let mut at_newest: HashSet<[u8; 16]> = HashSet::new();
        for row in &rows {
            let (Some(id), Some(Value::Timestamp(ts))) = (row.id(), row.get("timestamp")) else {
                continue;
            };
            if *ts == self.from && self.sent_at_from.contains(&id) {
                continue;
            }
            if *ts != newest {
                newest = *ts;
                at_newest.clear();
            }
            at_newest.insert(id);
            let ev = event_json(row);
            match self.format {
                Format::Ndjson => {
                    out.push_str(&ev.to_string());
                    out.push('\n');
                }
                Format::Csv => csv_line(&mut out, &ev),
            }
        }
        if newest == self.from {
            self.sent_at_from.extend(at_newest);
        } else {
            self.from = newest;
            self.sent_at_from = at_newest;
        }
        if out.is_empty() && self.done {
            return Ok(None);
        }
        Ok(Some(out))
    }
}

/// `GET /api/v1/orgs/{org}/export?from=&to=&format=ndjson|csv`
pub async fn export(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<Response, ApiError> {
    let (from, to) = params.range(st.cfg.gateway.max_range_days)?;
    let format = match params.get("format") {
        None | Some("ndjson") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(v) => {
            return Err(ApiError::bad_parameter(
                "format",
                v,
                "is not 'ndjson' or 'csv'",
            ))
        }
    };
    let cursor = Cursor {
        store: st.store.clone(),
        org: access.org_bytes(),
        from,
        to,
        sent_at_from: HashSet::new(),
        format,
        header_due: true,
        done: false,
    };
    let org = access.org;
    let stream = futures::stream::unfold(Some(cursor), move |cursor| async move {
        let mut cursor = cursor?;
        let read = tokio::task::spawn_blocking(move || {
            let chunk = cursor.next_chunk();
            (cursor, chunk)
        })
        .await;
        match read {
            Ok((cursor, Ok(Some(chunk)))) => Some((Ok(Bytes::from(chunk)), Some(cursor))),
            Ok((_, Ok(None))) => None,
            Ok((_, Err(e))) => {
                // The status line is sent: breaking the stream is how the client learns.
                tracing::error!(error = %e, %org, "gateway: export read failed mid-stream");
                Some((Err(std::io::Error::other("export failed")), None))
            }
            Err(e) => {
                tracing::error!(error = %e, %org, "gateway: export task failed");
                Some((Err(std::io::Error::other("export failed")), None))
            }
        }
    });
    let (content_type, ext) = match format {
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"events-{org}.{ext}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut s = String::new();
        csv_field(&mut s, &json!("a,b \"c\""));
        assert_eq!(s, "\"a,b \"\"c\"\"\"");
        let mut s = String::new();
        csv_field(&mut s, &json!("=HYPERLINK(\"x\")"));
        assert_eq!(s, "\"'=HYPERLINK(\"\"x\"\")\"");
        let mut s = String::new();
        csv_field(&mut s, &json!("-1"));
        csv_field(&mut s, &json!(-1));
        assert_eq!(s, "'-1-1");
        let mut s = String::new();
        csv_field(&mut s, &json!(42));
        csv_field(&mut s, &Json::Null);
        assert_eq!(s, "42");
    }
}
