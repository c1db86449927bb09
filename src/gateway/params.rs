//! Query parameters and the limits and defaults of every question the gateway answers, in
//! one place for REST and WebSocket alike: a REST query string and a WebSocket `subscribe`
//! both go through [`ViewArgs::parse`] (range, granularity, event type) and [`parse_range`],
//! so they accept the same values and refuse the others with the same message.
//! Parameters are parsed one by one so a bad one is named with its value in the 400.
//! Times are RFC 3339 or epoch milliseconds in; RFC 3339 UTC with microseconds out.

use super::error::ApiError;
use crate::stats::query::{Granularity, DAY_US, HOUR_US, MAX_POINTS};
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};
use std::collections::HashMap;

/// Longest `event_type` filter, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 200;
/// Without `granularity`, ranges up to this long have hourly points, longer ones daily.
pub const HOURLY_UP_TO_US: i64 = 48 * HOUR_US;
/// `limit` of `top-events`; a WebSocket view's top events are `default` many.
pub const TOP_EVENTS_LIMIT: Limit = Limit {
    max: 1000,
    default: 10,
};
/// `limit` of `events/recent`; a WebSocket snapshot's recent events are `default` many.
pub const RECENT_EVENTS_LIMIT: Limit = Limit {
    max: 1000,
    default: 100,
};

/// A `limit` parameter: `1..=max`, `default` when absent.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: u64,
    pub default: u64,
}

/// The query string as name -> value (the last one wins when a name repeats).
#[derive(Debug, Default)]
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Query(pairs)) => Ok(Params(pairs.into_iter().collect())),
            Err(e) => Err(ApiError::bad_parameter(
                "query",
                parts.uri.query().unwrap_or(""),
                format!("is not a valid query string ({e})"),
            )),
        }
    }
}

/// A time given as RFC 3339 or epoch milliseconds, in microseconds since the epoch.
pub fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    let bad =
        || ApiError::bad_parameter(name, value, "is not an RFC 3339 time or epoch milliseconds");
    if let Ok(ms) = value.parse::<i64>() {
        return ms
            .checked_mul(1000)
            .filter(|us| in_range(*us))
            .ok_or_else(bad);
    }
    // An unencoded `+01:00` offset arrives as ` 01:00` (form decoding): take it as meant.
    let t = DateTime::parse_from_rfc3339(value)
        .or_else(|_| DateTime::parse_from_rfc3339(&value.replace(' ', "+")))
        .map_err(|_| bad())?;
    Ok(t.timestamp_micros()).and_then(|us| if in_range(us) { Ok(us) } else { Err(bad()) })
}

/// Years 1..=9999, so every time formats back as RFC 3339.
fn in_range(us: i64) -> bool {
    (-62_135_596_800_000_000..=253_402_300_799_999_999).contains(&us)
}

/// An RFC 3339 UTC string with microseconds, always six digits
/// (`2026-11-27T10:00:00.861546Z`, `2026-11-27T10:00:00.000000Z`): the store's precision,
/// so a stored time comes back as it went in, and fixed width, so the strings sort as the
/// times do (`SecondsFormat::Micros`).
pub fn fmt_time(us: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
    if !(0..=9999).contains(&t.year()) {
        return t.to_rfc3339_opts(SecondsFormat::Micros, true);
    }
    // By hand: chrono's formatter parses its format items on every call, and a week of
    // hourly points formats 169 of these per answer.
    let mut out = String::with_capacity(27);
    let mut num = |n: u32, width: usize, after: char| {
        let mut digits = [b'0'; 6];
        let mut n = n;
        for d in digits[..width].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend(digits[..width].iter().map(|&b| b as char));
        out.push(after);
    };
    num(t.year() as u32, 4, '-');
    num(t.month(), 2, '-');
    num(t.day(), 2, 'T');
    num(t.hour(), 2, ':');
    num(t.minute(), 2, ':');
    num(t.second(), 2, '.');
    num(t.timestamp_subsec_micros(), 6, 'Z');
    out
}

/// `[from, to)` from a `from` and a `to`: both required, except that a range without `to`
/// ends `now` when `now` is given (a live WebSocket view); `from < to`, at most `max_days`
/// apart. An empty value counts as absent. What does not fit is blamed on `to`, or on
/// `from` when the range ends now.
pub fn parse_range(
    from: Option<&str>,
    to: Option<&str>,
    max_days: u64,
    now: Option<i64>,
) -> Result<(i64, i64), ApiError> {
    let from_s = given(from).ok_or_else(|| ApiError::missing_parameter("from"))?;
    let to = given(to);
    if to.is_none() && now.is_none() {
        return Err(ApiError::missing_parameter("to"));
    }
    let from = parse_time("from", from_s)?;
    let end = RangeEnd::of(Some(from_s), to);
    let to = match end {
        RangeEnd::To(to_s) => parse_time("to", to_s)?,
        RangeEnd::Now(_) => now.unwrap_or_default(),
    };
    let (name, value) = end.blamed();
    if to <= from {
        let why = match end {
            RangeEnd::To(_) => format!("is not after 'from' ({})", fmt_time(from)),
            RangeEnd::Now(_) => format!(
                "is not before now ({}), where a range without 'to' ends",
                fmt_time(to)
            ),
        };
        return Err(ApiError::bad_parameter(name, value, why));
    }
    let max_us = (max_days as i64).saturating_mul(DAY_US);
    if to - from > max_us {
        let days = (to - from) as f64 / DAY_US as f64;
        let how_far = match end {
            RangeEnd::To(_) => format!("after 'from' ({})", fmt_time(from)),
            RangeEnd::Now(_) => "before now".to_string(),
        };
        return Err(ApiError::range_too_large(
            name,
            value,
            format!(
                "parameter '{name}': '{value}' is {days:.1} days {how_far}; at most {max_days} \
                 (gateway.max_range_days)"
            ),
        ));
    }
    Ok((from, to))
}

/// How a range ends: at the `to` given, or now (a live view, with the `from` given).
#[derive(Clone, Copy)]
enum RangeEnd<'a> {
    To(&'a str),
    Now(&'a str),
}

impl<'a> RangeEnd<'a> {
    fn of(from: Option<&'a str>, to: Option<&'a str>) -> Self {
        match given(to) {
            Some(to_s) => RangeEnd::To(to_s),
            None => RangeEnd::Now(from.unwrap_or_default()),
        }
    }

    /// The parameter blamed when the range does not fit, and its value.
    fn blamed(self) -> (&'static str, &'a str) {
        match self {
            RangeEnd::To(to_s) => ("to", to_s),
            RangeEnd::Now(from_s) => ("from", from_s),
        }
    }
}

/// A value that is there and not empty.
fn given(v: Option<&str>) -> Option<&str> {
    v.filter(|v| !v.is_empty())
}

/// What a timeseries view asks for, as text: REST's `timeseries` parameters, or a WebSocket
/// `subscribe` command's fields ([`super::wire::Subscribe`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct ViewArgs<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub granularity: Option<&'a str>,
    pub event_type: Option<&'a str>,
}

/// A checked view: a range, its buckets and the event type it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSpec {
    pub from_us: i64,
    pub to_us: i64,
    pub granularity: Granularity,
    pub event_type: Option<String>,
    /// Buckets in the range (from the one holding `from`), at most [`MAX_POINTS`].
    pub points: i64,
}

impl ViewArgs<'_> {
    /// The range ([`parse_range`]; `now`: where a view without `to` ends, if it may have
    /// none), the granularity (`hour` or `day`; absent: hourly up to [`HOURLY_UP_TO_US`],
    /// else daily), at most [`MAX_POINTS`] buckets, and an event type of at most
    /// [`MAX_EVENT_TYPE_BYTES`] (empty: none).
    pub fn parse(&self, max_days: u64, now: Option<i64>) -> Result<ViewSpec, ApiError> {
        let (from, to) = parse_range(self.from, self.to, max_days, now)?;
        let granularity = match given(self.granularity) {
            None if to - from <= HOURLY_UP_TO_US => Granularity::Hour,
            None => Granularity::Day,
            Some(g) => Granularity::parse(g).ok_or_else(|| {
                ApiError::bad_parameter("granularity", g, "is not 'hour' or 'day'")
            })?,
        };
        let step = granularity.step_us();
        let points = (to - from.div_euclid(step) * step + step - 1) / step;
        if points > MAX_POINTS as i64 {
            let (name, value) = RangeEnd::of(self.from, self.to).blamed();
            return Err(ApiError::range_too_large(
                name,
                value,
                format!(
                    "parameter '{name}': '{value}' makes {points} {} buckets; at most {MAX_POINTS}",
                    granularity.as_str()
                ),
            ));
        }
        let event_type = match given(self.event_type) {
            Some(t) if t.len() > MAX_EVENT_TYPE_BYTES => {
                return Err(ApiError::bad_parameter(
                    "event_type",
                    t,
                    format!("is longer than {MAX_EVENT_TYPE_BYTES} bytes"),
                ))
            }
            t => t.map(str::to_string),
        };
        Ok(ViewSpec {
            from_us: from,
            to_us: to,
            granularity,
            event_type,
            points,
        })
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `from` and `to` (both required): see [`parse_range`].
    pub fn range(&self, max_days: u64) -> Result<(i64, i64), ApiError> {
        parse_range(self.get("from"), self.get("to"), max_days, None)
    }

    /// The timeseries parameters `from`, `to`, `granularity` and `event_type`.
    pub fn view(&self, max_days: u64) -> Result<ViewSpec, ApiError> {
        ViewArgs {
            from: self.get("from"),
            to: self.get("to"),
            granularity: self.get("granularity"),
            event_type: self.get("event_type"),
        }
        .parse(max_days, None)
    }

    /// A `limit` parameter.
    pub fn limit(&self, limit: Limit) -> Result<usize, ApiError> {
        Ok(self.int("limit", 1, limit.max, limit.default)? as usize)
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(&self, name: &str, min: u64, max: u64, default: u64) -> Result<u64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_parameter(name, v, format!("is not an integer in {min}..={max}"))
                }),
        }
    }

    /// A `YYYY-MM-DD` date; `default` when absent.
    pub fn date(&self, name: &str, default: NaiveDate) -> Result<NaiveDate, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .filter(|_| v.len() == 10)
                .ok_or_else(|| ApiError::bad_parameter(name, v, "is not a YYYY-MM-DD date")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn times_format_as_chrono_formats_them() {
        let chrono_form = |us: i64| {
            DateTime::<Utc>::from_timestamp_micros(us)
                .unwrap_or_default()
                .to_rfc3339_opts(SecondsFormat::Micros, true)
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut samples = vec![
            0,
            -1,
            1,
            999,
            1_000,
            86_400_000_000 - 1,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            -62_135_596_800_000_001,
            i64::MIN,
            i64::MAX,
        ];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push((x % 400_000_000_000_000_000) as i64 - 100_000_000_000_000_000);
        }
        for us in samples {
            assert_eq!(fmt_time(us), chrono_form(us), "{us}");
        }
        assert_eq!(
            fmt_time(1_795_773_600_123_456),
            "2026-11-27T10:00:00.123456Z"
        );
    }

    #[test]
    fn times_parse_as_rfc3339_or_epoch_ms() {
        assert_eq!(parse_time("from", "1000").unwrap(), 1_000_000);
        assert_eq!(
            parse_time("from", "2026-11-27T10:00:00+01:00").unwrap(),
            parse_time("from", "2026-11-27T09:00:00Z").unwrap()
        );
        assert_eq!(
            parse_time("from", "2026-11-27T10:00:00 01:00").unwrap(),
            parse_time("from", "2026-11-27T09:00:00Z").unwrap()
        );
        assert_eq!(fmt_time(1_000_000), "1970-01-01T00:00:01.000000Z");
        let e = parse_time("from", "yesterday").unwrap_err();
        assert_eq!(
            e.message,
            "parameter 'from': 'yesterday' is not an RFC 3339 time or epoch milliseconds"
        );
        assert!(parse_time("to", &i64::MAX.to_string()).is_err());
    }

    #[test]
    fn ranges_are_checked() {
        let p = params(&[("from", "0"), ("to", "86400000")]);
        assert_eq!(p.range(1).unwrap(), (0, DAY_US));
        assert_eq!(p.range(0).unwrap_err().code, "range_too_large");
        let p = params(&[("from", "5"), ("to", "5")]);
        assert_eq!(p.range(1).unwrap_err().parameter.as_deref(), Some("to"));
        assert_eq!(
            params(&[("to", "5")])
                .range(1)
                .unwrap_err()
                .parameter
                .as_deref(),
            Some("from")
        );
    }

    #[test]
    fn ints_dates_and_granularities() {
        let p = params(&[
            ("limit", "0"),
            ("date", "2026-2-1"),
            ("granularity", "week"),
        ]);
        assert!(p.int("limit", 1, 10, 5).is_err());
        assert_eq!(p.int("other", 1, 10, 5).unwrap(), 5);
        assert!(p.date("date", NaiveDate::default()).is_err());
        let p = params(&[("date", "2026-02-01")]);
        assert_eq!(
            p.date("date", NaiveDate::default()).unwrap(),
            NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()
        );
    }

    fn view<'a>(from: &'a str, to: Option<&'a str>, g: Option<&'a str>) -> ViewArgs<'a> {
        ViewArgs {
            from: Some(from),
            to,
            granularity: g,
            event_type: None,
        }
    }

    #[test]
    fn granularity_is_hourly_up_to_48_hours_unless_given() {
        let h48 = (48 * 3_600_000).to_string();
        let h49 = (49 * 3_600_000).to_string();
        let g = |args: ViewArgs| args.parse(400, None).map(|v| v.granularity);
        assert_eq!(g(view("0", Some(&h48), None)).unwrap(), Granularity::Hour);
        assert_eq!(g(view("0", Some(&h49), None)).unwrap(), Granularity::Day);
        assert_eq!(
            g(view("0", Some(&h49), Some("hour"))).unwrap(),
            Granularity::Hour
        );
        assert_eq!(
            g(view("0", Some(&h48), Some("day"))).unwrap(),
            Granularity::Day
        );
        let e = g(view("0", Some(&h48), Some("week"))).unwrap_err();
        assert_eq!(
            e.message,
            "parameter 'granularity': 'week' is not 'hour' or 'day'"
        );
    }

    #[test]
    fn views_without_to_end_now_only_when_live() {
        let day = 86_400_000_000;
        let v = view("0", None, None).parse(400, Some(day)).unwrap();
        assert_eq!((v.from_us, v.to_us, v.points), (0, day, 24));
        let e = view("0", None, None).parse(400, None).unwrap_err();
        assert_eq!(e.message, "parameter 'to' is required");
        let e = view("86400000", None, None)
            .parse(400, Some(day))
            .unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("from"));
        let e = view("0", None, None).parse(0, Some(day)).unwrap_err();
        assert_eq!(
            (e.code, e.parameter.as_deref()),
            ("range_too_large", Some("from"))
        );
    }

    #[test]
    fn views_are_capped_in_points_and_event_type_bytes() {
        let e = view("0", Some("86400000000"), Some("hour"))
            .parse(1000, None)
            .unwrap_err();
        assert_eq!(
            (e.code, e.parameter.as_deref()),
            ("range_too_large", Some("to"))
        );
        assert!(view("0", Some("86400000000"), Some("day"))
            .parse(1000, None)
            .is_ok());
        let long = "x".repeat(MAX_EVENT_TYPE_BYTES + 1);
        fn typed(t: &str) -> ViewArgs<'_> {
            ViewArgs {
                event_type: Some(t),
                ..view("0", Some("1000"), None)
            }
        }
        let e = typed(&long).parse(400, None).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("event_type"));
        assert_eq!(typed("").parse(400, None).unwrap().event_type, None);
        assert_eq!(
            typed("track")
                .parse(400, None)
                .unwrap()
                .event_type
                .as_deref(),
            Some("track")
        );
    }
}
