//! The JSON the gateway speaks (docs/API.md): one typed answer per question, serialized
//! alike by the REST routes and inside WebSocket messages, the WebSocket messages as
//! [`ServerMsg`] and the commands as [`ClientCmd`], both tagged by `type`. The Event object
//! is [`super::events::EventJson`].

use super::error::ApiError;
use super::group::Coverage;
use super::params::{fmt_time, ViewArgs, ViewSpec};
use crate::stats::query::{Counters, Point, TopEvent, Unique};
use crate::stats::realtime::WindowValues;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value as Json;
use std::borrow::Cow;
use uuid::Uuid;

/// The timeseries body (typed: a week of hourly points as `serde_json::Value` maps cost
/// more than reading them).
#[derive(Debug, Clone, Serialize)]
pub struct TimeseriesBody {
    pub org_id: String,
    pub from: String,
    pub to: String,
    pub granularity: &'static str,
    pub event_type: Option<String>,
    pub points: Vec<PointOut>,
    /// What the answer covers (a scaled-out group only).
    #[serde(flatten)]
    pub coverage: Option<Coverage>,
}

impl TimeseriesBody {
    /// The same answer, saying what it covers.
    pub fn covering(self, coverage: Option<Coverage>) -> Self {
        TimeseriesBody { coverage, ..self }
    }

    /// The points of `view` over `[from, to)` (a live view's range is its current one).
    pub fn new(org: Uuid, view: &ViewSpec, (from, to): (i64, i64), points: &[Point]) -> Self {
        TimeseriesBody {
            org_id: org.to_string(),
            from: fmt_time(from),
            to: fmt_time(to),
            granularity: view.granularity.as_str(),
            event_type: view.event_type.clone(),
            points: points.iter().map(PointOut::from).collect(),
            coverage: None,
        }
    }
}

/// One point as the API shows it (a WebSocket update carries the changed ones).
#[derive(Debug, Clone, Serialize)]
pub struct PointOut {
    pub t: String,
    pub events: i64,
    pub unique_users: i64,
    pub unique_sessions: i64,
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

/// The top-events body: one day's most frequent event names, count descending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopEventsBody {
    pub org_id: String,
    pub date: String,
    pub events: Vec<TopEventOut>,
    /// What the answer covers (a scaled-out group only).
    #[serde(flatten)]
    pub coverage: Option<Coverage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopEventOut {
    pub event_name: String,
    pub count: i64,
}

impl TopEventsBody {
    /// The same answer, saying what it covers.
    pub fn covering(self, coverage: Option<Coverage>) -> Self {
        TopEventsBody { coverage, ..self }
    }

    pub fn new(org: Uuid, date: NaiveDate, top: &[TopEvent]) -> Self {
        TopEventsBody {
            org_id: org.to_string(),
            date: date.format("%Y-%m-%d").to_string(),
            events: top
                .iter()
                .map(|t| TopEventOut {
                    event_name: t.event_name.clone(),
                    count: t.count,
                })
                .collect(),
            coverage: None,
        }
    }
}

/// The unique-users body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UniqueUsersBody {
    pub org_id: String,
    pub from: String,
    pub to: String,
    pub unique_users: u64,
    pub unique_sessions: u64,
    pub exact: bool,
    /// What the answer covers (a scaled-out group only).
    #[serde(flatten)]
    pub coverage: Option<Coverage>,
}

impl UniqueUsersBody {
    /// The same answer, saying what it covers.
    pub fn covering(self, coverage: Option<Coverage>) -> Self {
        UniqueUsersBody { coverage, ..self }
    }

    pub fn new(org: Uuid, (from, to): (i64, i64), u: &Unique) -> Self {
        UniqueUsersBody {
            org_id: org.to_string(),
            from: fmt_time(from),
            to: fmt_time(to),
            unique_users: u.users,
            unique_sessions: u.sessions,
            exact: u.exact,
            coverage: None,
        }
    }
}

/// The counters body (also what every WebSocket update carries): the 5-minute window
/// spelled out, every window, today's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountersBody {
    pub org_id: String,
    pub events_5m: i64,
    pub active_users_5m: i64,
    pub prev_events_5m: i64,
    pub prev_active_users_5m: i64,
    pub events_today: i64,
    pub unique_users_today: i64,
    pub windows: Vec<WindowOut>,
    pub updated_at: Option<String>,
    /// What the answer covers (a scaled-out group only).
    #[serde(flatten)]
    pub coverage: Option<Coverage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowOut {
    pub window_seconds: i64,
    pub events: i64,
    pub active_users: i64,
    pub prev_events: i64,
    pub prev_active_users: i64,
}

impl From<&WindowValues> for WindowOut {
    fn from(w: &WindowValues) -> Self {
        WindowOut {
            window_seconds: w.window_seconds,
            events: w.events,
            active_users: w.active_users,
            prev_events: w.prev_events,
            prev_active_users: w.prev_active_users,
        }
    }
}

impl CountersBody {
    /// The same answer, saying what it covers.
    pub fn covering(self, coverage: Option<Coverage>) -> Self {
        CountersBody { coverage, ..self }
    }

    pub fn new(org: Uuid, c: &Counters) -> Self {
        let five = c
            .windows
            .iter()
            .find(|w| w.window_seconds == 300)
            .map(WindowOut::from);
        let pick = |f: fn(&WindowOut) -> i64| five.as_ref().map(f).unwrap_or(0);
        CountersBody {
            org_id: org.to_string(),
            events_5m: pick(|w| w.events),
            active_users_5m: pick(|w| w.active_users),
            prev_events_5m: pick(|w| w.prev_events),
            prev_active_users_5m: pick(|w| w.prev_active_users),
            events_today: c.events_today,
            unique_users_today: c.unique_users_today,
            windows: c.windows.iter().map(WindowOut::from).collect(),
            updated_at: c.updated_at_us.map(fmt_time),
            coverage: None,
        }
    }
}

/// The recent-events body, newest first.
#[derive(Debug, Serialize)]
pub struct RecentEventsBody {
    pub org_id: String,
    pub events: Vec<Box<RawValue>>,
    /// What the answer covers (a scaled-out group only).
    #[serde(flatten)]
    pub coverage: Option<Coverage>,
}

/// Ingest lag as WebSocket messages show it: events read but not stored yet, and the age
/// of the newest stored event's ingest.
#[derive(Debug, Clone, Serialize)]
pub struct LagOut {
    pub events: u64,
    pub freshness_ms: Option<i64>,
}

/// The view a `subscribe` asked for, echoed in its snapshot (`to: null`: live).
#[derive(Debug, Clone, Serialize)]
pub struct ViewOut {
    pub from: String,
    pub to: Option<String>,
    pub granularity: &'static str,
    pub event_type: Option<String>,
}

/// A message from the gateway to a WebSocket client (made, serialized and dropped at once:
/// the snapshot's size does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Hello {
        org_id: String,
        server_time: String,
        push_interval_ms: u64,
    },
    Snapshot(Snapshot<'a>),
    Update(Update<'a>),
    Pong,
    Error {
        code: &'static str,
        message: String,
    },
    /// The answer to a `trend` command: the REST trends body.
    Trend {
        id: String,
        trend: Json,
    },
    /// A kept trend changed: its series (values and totals, as in the trend body), and its
    /// bucket list and range only when they moved (a live range slid into a new bucket).
    TrendUpdate {
        id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        buckets: Option<Vec<String>>,
        series: Json,
        /// Only for a trend asked with `deltas`: each series' `values` start at this bucket
        /// (the earlier ones are unchanged); absent, they are whole.
        #[serde(skip_serializing_if = "Option::is_none")]
        from_bucket: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        previous: Option<Json>,
    },
}

/// The answer to a `subscribe`: the whole view, the counters and the newest events.
#[derive(Debug, Serialize)]
pub struct Snapshot<'a> {
    pub view: ViewOut,
    pub timeseries: TimeseriesBody,
    pub top_events: &'a TopEventsBody,
    pub unique_users: &'a UniqueUsersBody,
    pub counters: &'a CountersBody,
    pub recent_events: Vec<Box<RawValue>>,
    pub lag: LagOut,
}

/// A push: the org's new events (each's JSON made once and shared by the sessions, newest
/// first), the counters and lag, and the subscribed view's changes.
#[derive(Debug, Serialize)]
pub struct Update<'a> {
    pub events: Vec<&'a RawValue>,
    /// Events of the org stored since the last update, whether `events` carries them or
    /// not (the client's `events` limit, `recent_events_cap`).
    pub new_events: u64,
    /// Absent when unchanged since the last message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<&'a CountersBody>,
    pub lag: LagOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<ViewUpdate<'a>>,
}

/// What an update says of the subscribed view: the points that changed (absolute values),
/// and its top events and unique users when they changed.
#[derive(Debug, Serialize)]
pub struct ViewUpdate<'a> {
    pub timeseries: Vec<PointOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_events: Option<&'a TopEventsBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_users: Option<&'a UniqueUsersBody>,
}

impl ServerMsg<'_> {
    /// The message as JSON text. Only strings, numbers and valid raw JSON go in, so
    /// serializing cannot fail; if it did, the client gets an `internal` error instead.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "websocket: a message could not be serialized");
            r#"{"type":"error","code":"internal","message":"a message could not be serialized"}"#
                .to_string()
        })
    }
}

/// A command from a WebSocket client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientCmd {
    Subscribe(Subscribe),
    Ping,
    /// Keep a trend current (src/gateway/trends.rs): `id` names it in the answers, `params`
    /// are the REST parameters (a value or a list of values each); without `to` the range
    /// is live: it ends now and slides, keeping its length.
    Trend {
        id: String,
        params: serde_json::Map<String, Json>,
        /// Updates may carry only the buckets from the first changed one (`from_bucket`).
        #[serde(default)]
        deltas: bool,
    },
    /// Stop keeping trend `id`.
    Untrend {
        id: String,
    },
}

impl ClientCmd {
    /// A command from its JSON text; the error is the message of the `bad_command` answer.
    pub fn parse(raw: &str) -> Result<ClientCmd, String> {
        let v: Json = serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))?;
        match v.get("type").and_then(Json::as_str) {
            Some(known @ ("subscribe" | "ping" | "trend" | "untrend")) => {
                let known = known.to_string();
                serde_json::from_value(v).map_err(|e| format!("a '{known}' command: {e}"))
            }
            Some(other) => Err(format!(
                "unknown command type '{other}': expected 'subscribe', 'trend', 'untrend' or 'ping'"
            )),
            None => Err(
                "a command is a JSON object with a string 'type' ('subscribe', 'trend', 'untrend' or 'ping')"
                    .into(),
            ),
        }
    }
}

/// `subscribe`: the view to keep current. Absent and `null` fields are absent; the fields
/// are checked by the parser of the REST parameters ([`ViewArgs::parse`]).
#[derive(Debug, Default, Deserialize)]
pub struct Subscribe {
    pub from: Option<Scalar>,
    pub to: Option<Scalar>,
    pub granularity: Option<Scalar>,
    pub event_type: Option<Scalar>,
    /// Most events an update carries (0 to `recent_events_cap`; absent: the cap).
    pub events: Option<Scalar>,
}

/// A command field as sent: text, an integer (times: epoch milliseconds), or anything else
/// (refused by the parser, which names the field and shows the value).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Other(Json),
}

impl Scalar {
    /// The value as a query parameter would give it: text as it is, anything else as JSON.
    fn as_text(&self) -> Cow<'_, str> {
        match self {
            Scalar::Text(s) => Cow::Borrowed(s),
            Scalar::Int(n) => Cow::Owned(n.to_string()),
            Scalar::Other(v) => Cow::Owned(v.to_string()),
        }
    }
}

impl Subscribe {
    /// The view asked for; without `to` it is live and ends `now`.
    pub fn view(&self, max_days: u64, now: i64) -> Result<ViewSpec, ApiError> {
        if let Some(t) = &self.event_type {
            if !matches!(t, Scalar::Text(_)) {
                return Err(ApiError::bad_parameter(
                    "event_type",
                    &t.as_text(),
                    "is not a string",
                ));
            }
        }
        fn text(s: &Option<Scalar>) -> Option<Cow<'_, str>> {
            s.as_ref().map(Scalar::as_text)
        }
        let (from, to) = (text(&self.from), text(&self.to));
        let (granularity, event_type) = (text(&self.granularity), text(&self.event_type));
        ViewArgs {
            from: from.as_deref(),
            to: to.as_deref(),
            granularity: granularity.as_deref(),
            event_type: event_type.as_deref(),
        }
        .parse(max_days, Some(now))
    }

    /// The most events an update is to carry: `events` if given (an integer from 0 to
    /// `cap`), else `cap`.
    pub fn events_per_update(&self, cap: usize) -> Result<usize, ApiError> {
        match &self.events {
            None => Ok(cap),
            Some(Scalar::Int(n)) if *n >= 0 && (*n as u64) <= cap as u64 => Ok(*n as usize),
            Some(v) => Err(ApiError::bad_parameter(
                "events",
                &v.as_text(),
                format!("is not an integer from 0 to {cap} (gateway.recent_events_cap)"),
            )),
        }
    }

    /// Whether the view is live (no `to`: the range ends now and slides).
    pub fn is_live(&self) -> bool {
        self.to
            .as_ref()
            .is_none_or(|t| matches!(t, Scalar::Text(s) if s.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::query::Granularity;
    use serde_json::json;

    fn org() -> Uuid {
        Uuid::from_u128(7)
    }

    fn counters() -> Counters {
        Counters {
            windows: vec![WindowValues {
                window_seconds: 300,
                events: 5,
                active_users: 2,
                prev_events: 4,
                prev_active_users: 1,
            }],
            events_today: 9,
            unique_users_today: 3,
            updated_at_us: Some(0),
        }
    }

    #[test]
    fn bodies_have_the_fields_of_docs_api_md() {
        let org_s = org().to_string();
        assert_eq!(
            serde_json::to_value(CountersBody::new(org(), &counters())).unwrap(),
            json!({
                "org_id": org_s, "events_5m": 5, "active_users_5m": 2, "prev_events_5m": 4,
                "prev_active_users_5m": 1, "events_today": 9, "unique_users_today": 3,
                "windows": [{"window_seconds": 300, "events": 5, "active_users": 2,
                             "prev_events": 4, "prev_active_users": 1}],
                "updated_at": "1970-01-01T00:00:00.000000Z",
            })
        );
        let top = [TopEvent {
            event_name: "a".into(),
            count: 2,
        }];
        let day = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert_eq!(
            serde_json::to_value(TopEventsBody::new(org(), day, &top)).unwrap(),
            json!({"org_id": org_s, "date": "2026-11-27",
                   "events": [{"event_name": "a", "count": 2}]})
        );
        let u = Unique {
            users: 4,
            sessions: 5,
            exact: true,
        };
        assert_eq!(
            serde_json::to_value(UniqueUsersBody::new(org(), (0, 1), &u)).unwrap(),
            json!({"org_id": org_s, "from": "1970-01-01T00:00:00.000000Z",
                   "to": "1970-01-01T00:00:00.000001Z", "unique_users": 4,
                   "unique_sessions": 5, "exact": true})
        );
    }

    #[test]
    fn messages_are_tagged_by_type() {
        assert_eq!(ServerMsg::Pong.to_text(), r#"{"type":"pong"}"#);
        let e = ServerMsg::Error {
            code: "bad_command",
            message: "m".into(),
        };
        assert_eq!(
            e.to_text(),
            r#"{"type":"error","code":"bad_command","message":"m"}"#
        );
        let hello = ServerMsg::Hello {
            org_id: "o".into(),
            server_time: "t".into(),
            push_interval_ms: 1000,
        };
        assert_eq!(
            serde_json::from_str::<Json>(&hello.to_text()).unwrap(),
            json!({"type": "hello", "org_id": "o", "server_time": "t", "push_interval_ms": 1000})
        );
        let counters = CountersBody::new(org(), &counters());
        let raw = serde_json::value::to_raw_value(&json!({"id": "e"})).unwrap();
        let update = |counters| {
            let msg = ServerMsg::Update(Update {
                events: vec![&raw],
                new_events: 7,
                counters,
                lag: LagOut {
                    events: 1,
                    freshness_ms: None,
                },
                view: None,
            });
            serde_json::from_str::<Json>(&msg.to_text()).unwrap()
        };
        let v = update(Some(&counters));
        assert_eq!(v["type"], "update");
        assert_eq!(v["events"], json!([{"id": "e"}]));
        assert_eq!(v["new_events"], 7);
        assert_eq!(v["lag"], json!({"events": 1, "freshness_ms": null}));
        assert!(v.get("view").is_none());
        assert!(v["counters"].is_object());
        // Unchanged counters are left out.
        assert!(update(None).get("counters").is_none());
    }

    #[test]
    fn commands_parse_or_say_why_not() {
        assert!(matches!(
            ClientCmd::parse(r#"{"type":"ping","extra":1}"#),
            Ok(ClientCmd::Ping)
        ));
        assert!(ClientCmd::parse("not json")
            .unwrap_err()
            .contains("not JSON"));
        assert!(ClientCmd::parse(r#"{"type":"dance"}"#)
            .unwrap_err()
            .contains("unknown command type 'dance'"));
        assert!(ClientCmd::parse("[1]").unwrap_err().contains("'type'"));
        let Ok(ClientCmd::Subscribe(s)) = ClientCmd::parse(
            r#"{"type":"subscribe","from":0,"to":null,"granularity":"day","event_type":"t"}"#,
        ) else {
            panic!("a subscribe")
        };
        assert!(s.is_live());
        let v = s.view(400, 3 * 86_400_000_000).unwrap();
        assert_eq!(
            (v.from_us, v.granularity, v.event_type.as_deref()),
            (0, Granularity::Day, Some("t"))
        );
    }

    #[test]
    fn subscribe_fields_are_refused_as_rest_parameters_are() {
        let refused = |raw: &str| {
            let Ok(ClientCmd::Subscribe(s)) = ClientCmd::parse(raw) else {
                panic!("{raw}: a subscribe")
            };
            s.view(400, 86_400_000).unwrap_err().message
        };
        assert_eq!(
            refused(r#"{"type":"subscribe"}"#),
            "parameter 'from' is required"
        );
        assert_eq!(
            refused(r#"{"type":"subscribe","from":true}"#),
            "parameter 'from': 'true' is not an RFC 3339 time or epoch milliseconds"
        );
        assert_eq!(
            refused(r#"{"type":"subscribe","from":0,"granularity":5}"#),
            "parameter 'granularity': '5' is not 'hour' or 'day'"
        );
        assert_eq!(
            refused(r#"{"type":"subscribe","from":0,"event_type":5}"#),
            "parameter 'event_type': '5' is not a string"
        );
        let per_update = |raw: &str| {
            let Ok(ClientCmd::Subscribe(s)) = ClientCmd::parse(raw) else {
                panic!("{raw}: a subscribe")
            };
            s.events_per_update(100).map_err(|e| e.message)
        };
        assert_eq!(per_update(r#"{"type":"subscribe","from":0}"#), Ok(100));
        assert_eq!(per_update(r#"{"type":"subscribe","events":0}"#), Ok(0));
        assert_eq!(per_update(r#"{"type":"subscribe","events":10}"#), Ok(10));
        for bad in ["101", "-1", "\"ten\"", "2.5", "true"] {
            let shown = bad.trim_matches('"');
            assert_eq!(
                per_update(&format!(r#"{{"type":"subscribe","events":{bad}}}"#)),
                Err(format!(
                    "parameter 'events': '{shown}' is not an integer from 0 to 100 (gateway.recent_events_cap)"
                )),
                "{bad}"
            );
        }
    }
}
