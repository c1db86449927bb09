//! Raw events out: the Event JSON of docs/API.md, recent events, and the streamed export
//! (NDJSON or CSV), which pages through the `[org_id, timestamp]` index so its memory stays
//! constant however long the range.

use super::error::ApiError;
use super::params::{fmt_time, Params, RECENT_EVENTS_LIMIT};
use super::wire::RecentEventsBody;
use super::{GatewayState, OrgAccess};
use crate::store::{Order, Query, Row, Store, Value};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::ops::Bound;

/// Events per store read while exporting.
pub const EXPORT_PAGE: usize = 1_000;

fn text<'r>(row: &'r Row, f: &str) -> Option<&'r str> {
    match row.get(f) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn num(row: &Row, f: &str) -> Option<i64> {
    match row.get(f) {
        Some(Value::Int32(n)) => Some(i64::from(*n)),
        Some(Value::Int64(n)) => Some(*n),
        _ => None,
    }
}

fn time(row: &Row, f: &str) -> Option<String> {
    match row.get(f) {
        Some(Value::Timestamp(us)) => Some(fmt_time(*us)),
        _ => None,
    }
}

fn uuid(row: &Row, f: &str) -> Option<String> {
    match row.get(f) {
        Some(Value::Uuid(u)) => Some(uuid::Uuid::from_bytes(*u).to_string()),
        _ => None,
    }
}

/// The API's Event object (docs/API.md), one type for REST, export and WebSocket. Absent
/// fields are `null`. `properties` is the text the producer sent, as stored (key order and
/// whitespace kept), embedded without being parsed into a tree and serialized again.
#[derive(Debug, Serialize)]
pub struct EventJson<'r> {
    pub id: Option<String>,
    pub org_id: Option<String>,
    pub event_type: Option<&'r str>,
    pub event_name: Option<&'r str>,
    pub user_id: Option<&'r str>,
    pub session_id: Option<&'r str>,
    pub properties: Option<&'r RawValue>,
    pub timestamp: Option<String>,
    pub topic: Option<&'r str>,
    pub partition: Option<i64>,
    pub offset: Option<i64>,
    pub ingested_at: Option<String>,
}

impl<'r> EventJson<'r> {
    /// An Event row as the API's Event object.
    pub fn from_row(row: &'r Row) -> Self {
        // Stored text that is not JSON (it always is: the decoder validated it) would
        // corrupt the answer around it: it is sent as null and logged.
        let properties = text(row, "properties").and_then(|s| {
            serde_json::from_str::<&RawValue>(s)
                .map_err(|e| {
                    tracing::warn!(error = %e, id = ?uuid(row, "id"),
                        "gateway: stored Event.properties is not JSON; sent as null")
                })
                .ok()
        });
        EventJson {
            // `event_id` holds the producer's id where the row id had to be scoped to the org.
            id: uuid(row, "event_id").or_else(|| uuid(row, "id")),
            org_id: uuid(row, "org_id"),
            event_type: text(row, "event_type"),
            event_name: text(row, "event_name"),
            user_id: text(row, "user_id"),
            session_id: text(row, "session_id"),
            properties,
            timestamp: time(row, "timestamp"),
            topic: text(row, "topic"),
            partition: num(row, "partition"),
            offset: num(row, "offset"),
            ingested_at: time(row, "ingested_at"),
        }
    }

    /// The object as raw JSON, to be embedded in messages as it is (a WebSocket update
    /// shares each event's JSON between the sessions of its org).
    pub fn to_raw(&self) -> Box<RawValue> {
        // Serializing strings, numbers and valid raw JSON cannot fail.
        serde_json::value::to_raw_value(self).unwrap_or_else(|_| RawValue::NULL.to_owned())
    }

    /// The object as JSON text on one line (NDJSON): serde_json escapes line breaks in
    /// strings, so any left come from whitespace in the producer's `properties` text, and
    /// become spaces (the only change made to that text, and only here).
    pub fn to_line(&self) -> String {
        let s = self.to_string();
        if s.contains(['\n', '\r']) {
            s.replace(['\n', '\r'], " ")
        } else {
            s
        }
    }
}

impl std::fmt::Display for EventJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Serializing strings, numbers and valid raw JSON cannot fail.
        let s = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&s)
    }
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

/// One CSV cell: absent, text, or a number.
enum Cell<'a> {
    Null,
    Text(&'a str),
    Num(i64),
}

impl<'a> From<Option<&'a str>> for Cell<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Cell::Null, Cell::Text)
    }
}

/// One CSV field (RFC 4180: quoted when it holds a comma, quote or line break).
fn csv_field(out: &mut String, v: Cell) {
    let s = match v {
        Cell::Null => return,
        // A text cell a spreadsheet would run as a formula gets a leading apostrophe
        // (OWASP's CSV-injection advice); numbers are left alone.
        Cell::Text(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        Cell::Text(s) => s.to_string(),
        Cell::Num(n) => n.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&s);
    }
}

/// One CSV row in [`CSV_COLUMNS`] order; `properties` is the stored text as is.
fn csv_line(out: &mut String, ev: &EventJson) {
    let num = |n: Option<i64>| n.map_or(Cell::Null, Cell::Num);
    let cells: [Cell; 12] = [
        ev.id.as_deref().into(),
        ev.org_id.as_deref().into(),
        ev.event_type.into(),
        ev.event_name.into(),
        ev.user_id.into(),
        ev.session_id.into(),
        ev.timestamp.as_deref().into(),
        ev.topic.into(),
        num(ev.partition),
        num(ev.offset),
        ev.ingested_at.as_deref().into(),
        ev.properties.map(RawValue::get).into(),
    ];
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, cell);
    }
    out.push_str("\r\n");
}

/// `GET /api/v1/orgs/{org}/events/recent?limit=`
pub async fn recent(
    State(st): State<GatewayState>,
    access: OrgAccess,
    params: Params,
) -> Result<Response, ApiError> {
    let limit = params.limit(RECENT_EVENTS_LIMIT)?;
    let (events, coverage) = super::group::recent_events(&st, access.org, limit).await?;
    let body = RecentEventsBody {
        org_id: access.org.to_string(),
        events,
        coverage,
    };
    // axum's Json, not serde_json::Value: the raw `properties` text must not be parsed.
    Ok(axum::Json(body).into_response())
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
            let ev = EventJson::from_row(row);
            match self.format {
                Format::Ndjson => {
                    out.push_str(&ev.to_line());
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
    if let Some(kept) = st.store.retained_from("Event").filter(|&kept| from < kept) {
        let at = chrono::DateTime::from_timestamp_micros(kept)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        return Err(ApiError::beyond_retention(
            "from",
            params.get("from").unwrap_or_default(),
            at,
        ));
    }
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
        csv_field(&mut s, Cell::Text("a,b \"c\""));
        assert_eq!(s, "\"a,b \"\"c\"\"\"");
        let mut s = String::new();
        csv_field(&mut s, Cell::Text("=HYPERLINK(\"x\")"));
        assert_eq!(s, "\"'=HYPERLINK(\"\"x\"\")\"");
        let mut s = String::new();
        csv_field(&mut s, Cell::Text("-1"));
        csv_field(&mut s, Cell::Num(-1));
        assert_eq!(s, "'-1-1");
        let mut s = String::new();
        csv_field(&mut s, Cell::Num(42));
        csv_field(&mut s, Cell::Null);
        assert_eq!(s, "42");
    }

    #[test]
    fn properties_and_times_come_back_as_stored() {
        let props = "{ \"z\": 1,\n  \"a\": [1.50, \"x\"] }";
        let row = Row::new()
            .with("properties", Value::String(props.to_string()))
            .with("timestamp", Value::Timestamp(1_795_773_600_861_546))
            .with("partition", Value::Int32(3));
        let ev = EventJson::from_row(&row);
        let json = ev.to_string();
        assert!(json.contains(&format!("\"properties\":{props}")), "{json}");
        assert!(
            json.contains("\"timestamp\":\"2026-11-27T10:00:00.861546Z\""),
            "{json}"
        );
        assert!(json.contains("\"partition\":3,"), "{json}");
        let line = ev.to_line();
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains("{ \"z\": 1,   \"a\": [1.50, \"x\"] }"),
            "{line}"
        );
        let mut csv = String::new();
        csv_line(&mut csv, &ev);
        assert!(
            csv.ends_with(&format!("\"{}\"\r\n", props.replace('"', "\"\""))),
            "{csv}"
        );
        let not_json = Row::new().with("properties", Value::String("{oops".into()));
        assert!(EventJson::from_row(&not_json).properties.is_none());
    }
}
