//! An alert rule: what it measures, over which window, when it fires, where it is sent
//! (docs/ALERTS.md, "Rules"). [`Rule::from_json`] validates a request body field by field;
//! a refusal names the field (`condition.threshold`) and its value.

use crate::gateway::dashboards::{bad, whole_number};
use crate::gateway::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;

/// What a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Events,
    UniqueUsers,
    UniqueSessions,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Events => "events",
            Measure::UniqueUsers => "unique_users",
            Measure::UniqueSessions => "unique_sessions",
        }
    }
}

/// The span a rule's measure is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last N minutes (1..=60), ending at the evaluation.
    Minutes(u32),
    /// The current UTC hour.
    Hour,
    /// The current UTC day.
    Day,
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "hour" => Some(Window::Hour),
            "day" => Some(Window::Day),
            _ => {
                let n: u32 = s.strip_suffix('m')?.parse().ok()?;
                (1..=60).contains(&n).then_some(Window::Minutes(n))
            }
        }
    }

    pub fn name(self) -> String {
        match self {
            Window::Minutes(n) => format!("{n}m"),
            Window::Hour => "hour".into(),
            Window::Day => "day".into(),
        }
    }

    /// The window at `now_us` and the one before it, as [from, to) in microseconds.
    pub fn spans(self, now_us: i64) -> ((i64, i64), (i64, i64)) {
        const MIN: i64 = 60_000_000;
        let (from, to) = match self {
            Window::Minutes(n) => (now_us - i64::from(n) * MIN, now_us),
            Window::Hour => {
                let h = now_us.div_euclid(60 * MIN) * 60 * MIN;
                (h, h + 60 * MIN)
            }
            Window::Day => {
                let d = now_us.div_euclid(1440 * MIN) * 1440 * MIN;
                (d, d + 1440 * MIN)
            }
        };
        let len = to - from;
        ((from, to), (from - len, from))
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Window::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("window {s:?}")))
    }
}

/// When a rule's condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Condition {
    Above {
        threshold: f64,
    },
    Below {
        threshold: f64,
    },
    /// A change of at least `percent` % (negative: a fall) against the previous window.
    Change {
        percent: f64,
    },
}

impl Condition {
    /// Whether the condition holds for `value`, the previous window's being `previous`.
    pub fn holds(self, value: f64, previous: f64) -> bool {
        match self {
            Condition::Above { threshold } => value > threshold,
            Condition::Below { threshold } => value < threshold,
            Condition::Change { percent } => {
                let change = if previous == 0.0 {
                    if value > 0.0 {
                        f64::INFINITY
                    } else {
                        0.0
                    }
                } else {
                    (value - previous) / previous * 100.0
                };
                if percent >= 0.0 {
                    change >= percent
                } else {
                    change <= percent
                }
            }
        }
    }

    /// "above 100", "below 5", "a change of +50 %".
    pub fn describe(self) -> String {
        match self {
            Condition::Above { threshold } => format!("above {}", shown(threshold)),
            Condition::Below { threshold } => format!("below {}", shown(threshold)),
            Condition::Change { percent } => format!("a change of {:+} %", percent),
        }
    }
}

/// A number as given: whole numbers without a fraction (`100`, not `100.0`).
pub fn shown(x: f64) -> Json {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Condition::Above { threshold } => json!({"op": "above", "threshold": shown(threshold)}),
            Condition::Below { threshold } => json!({"op": "below", "threshold": shown(threshold)}),
            Condition::Change { percent } => json!({"op": "change", "percent": shown(percent)}),
        }
        .serialize(s)
    }
}

/// What a rule does when the org stored no event in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    #[default]
    Ok,
    Alerting,
    Keep,
}

/// A webhook's body shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Slack,
}

/// Where a rule's firings go besides the org's WebSocket clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
    pub format: Format,
}

/// A validated rule (its webhook secrets included: [`Rule::public_json`] leaves them out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub measure: Measure,
    pub event_name: Option<String>,
    pub event_type: Option<String>,
    pub window: Window,
    pub condition: Condition,
    pub for_seconds: u32,
    pub no_data: NoData,
    pub labels: BTreeMap<String, String>,
    pub webhooks: Vec<Webhook>,
    pub enabled: bool,
    /// Microseconds since the epoch.
    pub muted_until: Option<i64>,
}

const FIELDS: [&str; 12] = [
    "name",
    "measure",
    "event_name",
    "event_type",
    "window",
    "condition",
    "for_seconds",
    "no_data",
    "labels",
    "contact_points",
    "enabled",
    "muted_until",
];
pub const MAX_CONTACT_POINTS: usize = 5;
pub const MAX_LABELS: usize = 20;
pub const MIN_SECRET_CHARS: usize = 16;

/// A text field: a string of `min..=max` characters without control characters.
fn text(field: &str, v: &Json, min: usize, max: usize) -> Result<String, ApiError> {
    let Some(s) = v.as_str() else {
        return Err(bad(field, v, "is not a string"));
    };
    let n = s.chars().count();
    if n < min || n > max {
        return Err(bad(field, v, &format!("must be {min}..={max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(field, v, "contains a control character"));
    }
    Ok(s.to_string())
}

fn optional_text(obj: &Map<String, Json>, field: &str) -> Result<Option<String>, ApiError> {
    match obj.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => {
            let s = text(field, v, 1, 200)?;
            if s.len() > 200 {
                return Err(bad(field, v, "must be at most 200 bytes"));
            }
            Ok(Some(s))
        }
    }
}

fn one_of<T: Copy>(field: &str, v: &Json, options: &[(&str, T)]) -> Result<T, ApiError> {
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    v.as_str()
        .and_then(|s| options.iter().find(|(n, _)| *n == s).map(|(_, t)| *t))
        .ok_or_else(|| bad(field, v, &format!("must be one of {}", names.join(", "))))
}

fn number(field: &str, v: Option<&Json>) -> Result<f64, ApiError> {
    match v {
        None => Err(bad(field, &Json::Null, "is required")),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| bad(field, v, "is not a number")),
    }
}

fn condition(v: &Json) -> Result<Condition, ApiError> {
    let Some(obj) = v.as_object() else {
        return Err(bad("condition", v, "is not an object"));
    };
    let op = obj.get("op").unwrap_or(&Json::Null);
    let op = one_of(
        "condition.op",
        op,
        &[("above", 0), ("below", 1), ("change", 2)],
    )?;
    let allowed = if op == 2 { "percent" } else { "threshold" };
    if let Some(k) = obj.keys().find(|k| *k != "op" && *k != allowed) {
        return Err(bad(
            &format!("condition.{k}"),
            &obj[k],
            &format!("is not a field of this condition (op, {allowed})"),
        ));
    }
    Ok(match op {
        0 => Condition::Above {
            threshold: number("condition.threshold", obj.get("threshold"))?,
        },
        1 => Condition::Below {
            threshold: number("condition.threshold", obj.get("threshold"))?,
        },
        _ => {
            let percent = number("condition.percent", obj.get("percent"))?;
            if percent == 0.0 {
                return Err(bad(
                    "condition.percent",
                    &obj["percent"],
                    "must not be 0 (positive: a rise, negative: a fall)",
                ));
            }
            Condition::Change { percent }
        }
    })
}

fn labels(v: &Json) -> Result<BTreeMap<String, String>, ApiError> {
    if v.is_null() {
        return Ok(BTreeMap::new());
    }
    let Some(obj) = v.as_object() else {
        return Err(bad("labels", v, "is not an object of strings"));
    };
    if obj.len() > MAX_LABELS {
        return Err(bad(
            "labels",
            &json!(obj.len()),
            &format!("at most {MAX_LABELS} labels"),
        ));
    }
    let mut out = BTreeMap::new();
    for (k, val) in obj {
        text("labels", &json!(k), 1, 64)?;
        out.insert(k.clone(), text(&format!("labels.{k}"), val, 0, 200)?);
    }
    Ok(out)
}

/// The contact points; `previous` gives the secrets a PUT may leave out (by URL).
fn webhooks(v: &Json, previous: &[Webhook]) -> Result<Vec<Webhook>, ApiError> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    let Some(list) = v.as_array() else {
        return Err(bad("contact_points", v, "is not an array"));
    };
    if list.len() > MAX_CONTACT_POINTS {
        return Err(bad(
            "contact_points",
            &json!(list.len()),
            &format!("at most {MAX_CONTACT_POINTS} contact points"),
        ));
    }
    let mut out = Vec::new();
    for (i, cp) in list.iter().enumerate() {
        let field = |f: &str| format!("contact_points[{i}].{f}");
        let Some(obj) = cp.as_object() else {
            return Err(bad(&format!("contact_points[{i}]"), cp, "is not an object"));
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !["type", "url", "secret", "format"].contains(&k.as_str()))
        {
            return Err(bad(
                &field(k),
                &obj[k],
                "is not a contact point field (type, url, secret, format)",
            ));
        }
        one_of(
            &field("type"),
            obj.get("type").unwrap_or(&Json::Null),
            &[("webhook", ())],
        )?;
        let url_v = obj.get("url").unwrap_or(&Json::Null);
        let url = text(&field("url"), url_v, 1, 2000)?;
        let parsed: Result<hyper::Uri, _> = url.parse();
        let ok = matches!(&parsed, Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty()));
        if !ok {
            return Err(bad(
                &field("url"),
                url_v,
                "is not an http:// or https:// URL",
            ));
        }
        let secret = match obj.get("secret") {
            None | Some(Json::Null) => match previous.iter().find(|w| w.url == url) {
                Some(w) => w.secret.clone(),
                None => {
                    return Err(bad(
                        &field("secret"),
                        &Json::Null,
                        &format!("is required (at least {MIN_SECRET_CHARS} characters): the receiver verifies the signature with it"),
                    ))
                }
            },
            Some(s) => {
                let secret = s.as_str().unwrap_or_default();
                let n = secret.chars().count();
                if !s.is_string() || !(MIN_SECRET_CHARS..=256).contains(&n) {
                    // The value is a secret: the error says its length, not the value.
                    return Err(ApiError::bad_parameter(
                        &field("secret"),
                        &format!("({n} characters)"),
                        format!("must be a string of {MIN_SECRET_CHARS}..=256 characters"),
                    ));
                }
                secret.to_string()
            }
        };
        let format = match obj.get("format") {
            None | Some(Json::Null) => Format::Json,
            Some(f) => one_of(
                &field("format"),
                f,
                &[("json", Format::Json), ("slack", Format::Slack)],
            )?,
        };
        out.push(Webhook {
            url,
            secret,
            format,
        });
    }
    Ok(out)
}

fn parse_time(field: &str, v: &Json) -> Result<Option<i64>, ApiError> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.timestamp_micros()))
            .map_err(|_| bad(field, v, "is not an RFC 3339 time")),
        _ => Err(bad(field, v, "is not an RFC 3339 time or null")),
    }
}

impl Rule {
    /// Validates a POST/PUT body; `previous` is the rule a PUT replaces (its secrets may be
    /// left out).
    pub fn from_json(body: &[u8], previous: Option<&Rule>) -> Result<Rule, ApiError> {
        let obj = &crate::gateway::body::json_object(body)?;
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(
                k,
                &obj[k],
                &format!("is not a rule field (fields: {})", FIELDS.join(", ")),
            ));
        }
        let get = |f: &str| obj.get(f).unwrap_or(&Json::Null);
        let name = text("name", get("name"), 1, 100)?;
        let measure = one_of(
            "measure",
            get("measure"),
            &[
                ("events", Measure::Events),
                ("unique_users", Measure::UniqueUsers),
                ("unique_sessions", Measure::UniqueSessions),
            ],
        )?;
        let event_name = optional_text(obj, "event_name")?;
        let event_type = optional_text(obj, "event_type")?;
        let window_v = get("window");
        let window = window_v.as_str().and_then(Window::parse).ok_or_else(|| {
            bad(
                "window",
                window_v,
                "must be \"<N>m\" with N in 1..=60, \"hour\" or \"day\"",
            )
        })?;
        if window == Window::Day
            && event_name.is_some()
            && (measure != Measure::Events || event_type.is_some())
        {
            return Err(bad(
                "window",
                window_v,
                "a day window with event_name takes measure \"events\" and no event_type \
                 (the daily rollups keep names without their type); use \"hour\" or minutes",
            ));
        }
        let condition = condition(get("condition"))?;
        let for_seconds = match obj.get("for_seconds") {
            None | Some(Json::Null) => 0,
            Some(v) => whole_number(v)
                .filter(|s| (0..=86_400).contains(s))
                .ok_or_else(|| bad("for_seconds", v, "must be a whole number within 0..=86400"))?
                as u32,
        };
        let no_data = match obj.get("no_data") {
            None | Some(Json::Null) => NoData::Ok,
            Some(v) => one_of(
                "no_data",
                v,
                &[
                    ("ok", NoData::Ok),
                    ("alerting", NoData::Alerting),
                    ("keep", NoData::Keep),
                ],
            )?,
        };
        let labels = labels(get("labels"))?;
        let webhooks = webhooks(
            get("contact_points"),
            previous.map(|p| p.webhooks.as_slice()).unwrap_or(&[]),
        )?;
        let enabled = match obj.get("enabled") {
            None | Some(Json::Null) => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad("enabled", v, "is not true or false"))?,
        };
        let muted_until = parse_time("muted_until", get("muted_until"))?;
        Ok(Rule {
            name,
            measure,
            event_name,
            event_type,
            window,
            condition,
            for_seconds,
            no_data,
            labels,
            webhooks,
            enabled,
            muted_until,
        })
    }

    /// The rule as the API shows it: no secrets.
    pub fn public_json(&self) -> Json {
        json!({
            "name": self.name,
            "measure": self.measure,
            "event_name": self.event_name,
            "event_type": self.event_type,
            "window": self.window,
            "condition": self.condition,
            "for_seconds": self.for_seconds,
            "no_data": self.no_data,
            "labels": self.labels,
            "contact_points": self.webhooks.iter().map(|w| json!({
                "type": "webhook", "url": w.url, "format": w.format, "secret_set": true,
            })).collect::<Vec<_>>(),
            "enabled": self.enabled,
            "muted_until": self.muted_until.map(crate::gateway::params::fmt_time),
        })
    }

    /// Whether deliveries are held back at `now_us`.
    pub fn muted(&self, now_us: i64) -> bool {
        self.muted_until.is_some_and(|t| t > now_us)
    }

    /// "events (event_name checkout, event_type track) over 5m".
    pub fn describe_measure(&self) -> String {
        let mut filters = Vec::new();
        if let Some(n) = &self.event_name {
            filters.push(format!("event_name {n}"));
        }
        if let Some(t) = &self.event_type {
            filters.push(format!("event_type {t}"));
        }
        let filters = if filters.is_empty() {
            String::new()
        } else {
            format!(" ({})", filters.join(", "))
        };
        format!(
            "{}{filters} over {}",
            self.measure.as_str(),
            self.window.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: Json) -> (String, String) {
        let e = Rule::from_json(body.to_string().as_bytes(), None).unwrap_err();
        (e.parameter.unwrap_or_default(), e.value.unwrap_or_default())
    }

    fn good() -> Json {
        json!({"name":"spike","measure":"events","event_name":"checkout","window":"5m",
               "condition":{"op":"above","threshold":100},"for_seconds":30,
               "contact_points":[{"type":"webhook","url":"http://127.0.0.1:9/h","secret":"0123456789abcdef"}]})
    }

    #[test]
    fn a_good_rule_is_read_and_shown_without_its_secret() {
        let r = Rule::from_json(good().to_string().as_bytes(), None).unwrap();
        assert_eq!(r.window, Window::Minutes(5));
        assert_eq!(r.condition, Condition::Above { threshold: 100.0 });
        assert!(r.enabled);
        let shown = r.public_json().to_string();
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("\"secret_set\":true"), "{shown}");
    }

    #[test]
    fn refusals_name_the_field_and_the_value() {
        let with = |k: &str, v: Json| {
            let mut b = good();
            b[k] = v;
            b
        };
        assert_eq!(
            err(with("window", json!("90m"))),
            ("window".into(), "90m".into())
        );
        assert_eq!(
            err(with("condition", json!({"op":"above"}))).0,
            "condition.threshold"
        );
        assert_eq!(
            err(with("condition", json!({"op":"above","threshold":"x"}))),
            ("condition.threshold".into(), "x".into())
        );
        assert_eq!(
            err(with(
                "contact_points",
                json!([{"type":"webhook","url":"ftp://x","secret":"0123456789abcdef"}])
            )),
            ("contact_points[0].url".into(), "ftp://x".into())
        );
        let (field, value) = err(with(
            "contact_points",
            json!([{"type":"webhook","url":"http://h/","secret":"short"}]),
        ));
        assert_eq!(field, "contact_points[0].secret");
        assert!(!value.contains("short"), "a secret is not echoed: {value}");
        assert_eq!(err(with("colour", json!(1))).0, "colour");
        assert_eq!(err(with("for_seconds", json!(-1))).0, "for_seconds");
        assert_eq!(err(with("for_seconds", json!(1.5))).0, "for_seconds");
        // A whole number written with a fraction is one (JSON Schema's `integer`).
        let body = with("for_seconds", json!(1142.0)).to_string();
        assert_eq!(
            Rule::from_json(body.as_bytes(), None).unwrap().for_seconds,
            1142
        );
        assert_eq!(err(with("name", json!(""))).0, "name");
        assert_eq!(
            err(with("measure", json!("sum"))),
            ("measure".into(), "sum".into())
        );
        assert_eq!(
            err(with("measure", json!("unique_users")).tap_day()).0,
            "window"
        );
    }

    trait TapDay {
        fn tap_day(self) -> Json;
    }
    impl TapDay for Json {
        fn tap_day(mut self) -> Json {
            self["window"] = json!("day");
            self
        }
    }

    #[test]
    fn a_put_without_a_secret_keeps_the_one_of_the_same_url() {
        let r = Rule::from_json(good().to_string().as_bytes(), None).unwrap();
        let mut b = good();
        b["contact_points"][0]
            .as_object_mut()
            .unwrap()
            .remove("secret");
        let again = Rule::from_json(b.to_string().as_bytes(), Some(&r)).unwrap();
        assert_eq!(again.webhooks[0].secret, "0123456789abcdef");
        b["contact_points"][0]["url"] = json!("http://elsewhere/");
        assert!(Rule::from_json(b.to_string().as_bytes(), Some(&r)).is_err());
    }

    #[test]
    fn conditions_hold_as_documented() {
        let rise = Condition::Change { percent: 50.0 };
        assert!(rise.holds(150.0, 100.0));
        assert!(!rise.holds(149.0, 100.0));
        assert!(rise.holds(1.0, 0.0));
        assert!(!rise.holds(0.0, 0.0));
        let fall = Condition::Change { percent: -50.0 };
        assert!(fall.holds(50.0, 100.0));
        assert!(!fall.holds(51.0, 100.0));
        assert!(Condition::Above { threshold: 5.0 }.holds(6.0, 0.0));
        assert!(!Condition::Above { threshold: 5.0 }.holds(5.0, 0.0));
        assert!(Condition::Below { threshold: 5.0 }.holds(4.0, 0.0));
    }

    #[test]
    fn windows_span_the_last_minutes_or_the_current_bucket() {
        let now = 1_700_000_130_000_000; // 2023-11-14T22:15:30Z
        let ((f, t), (pf, pt)) = Window::Minutes(5).spans(now);
        assert_eq!((t - f, pt, t), (300_000_000, f, now));
        assert_eq!(pf, f - 300_000_000);
        let ((f, t), _) = Window::Hour.spans(now);
        assert_eq!((f % 3_600_000_000, t - f), (0, 3_600_000_000));
        assert!(f <= now && now < t);
    }
}
