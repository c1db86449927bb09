//! Query parameters: parsed one by one so a bad one is named with its value in the 400.
//! Times are RFC 3339 or epoch milliseconds in; RFC 3339 UTC with microseconds out.

use super::error::ApiError;
use crate::stats::query::Granularity;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};
use std::collections::HashMap;

const DAY_US: i64 = 86_400_000_000;

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

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::missing_parameter(name))
    }

    /// `from` and `to` (both required), `from < to`, at most `max_days` apart.
    pub fn range(&self, max_days: u64) -> Result<(i64, i64), ApiError> {
        let from_s = self.required("from")?;
        let to_s = self.required("to")?;
        let from = parse_time("from", from_s)?;
        let to = parse_time("to", to_s)?;
        if to <= from {
            return Err(ApiError::bad_parameter(
                "to",
                to_s,
                format!("is not after 'from' ({})", fmt_time(from)),
            ));
        }
        let max_us = (max_days as i64).saturating_mul(DAY_US);
        if to - from > max_us {
            return Err(ApiError::range_too_large(
                "to",
                to_s,
                format!(
                    "parameter 'to': '{to_s}' is {:.1} days after 'from' ({}); at most {max_days} \
                     (gateway.max_range_days)",
                    (to - from) as f64 / DAY_US as f64,
                    fmt_time(from),
                ),
            ));
        }
        Ok((from, to))
    }

    /// `granularity`: `hour` or `day` (default `hour`).
    pub fn granularity(&self) -> Result<Granularity, ApiError> {
        match self.get("granularity") {
            None => Ok(Granularity::Hour),
            Some(v) => Granularity::parse(v)
                .ok_or_else(|| ApiError::bad_parameter("granularity", v, "is not 'hour' or 'day'")),
        }
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
        assert!(p.granularity().is_err());
        let p = params(&[("date", "2026-02-01"), ("granularity", "day")]);
        assert_eq!(
            p.date("date", NaiveDate::default()).unwrap(),
            NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()
        );
        assert_eq!(p.granularity().unwrap(), Granularity::Day);
    }
}
