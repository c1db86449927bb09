//! Time zones and calendar buckets for trends: a zone is an IANA name (`Europe/Berlin`,
//! daylight saving included) or a fixed offset (`+05:30`, `UTC`); a series' buckets are
//! minutes, hours, local days or local weeks (Monday 00:00), each a half-open UTC interval
//! `[start, next start)`. A local day is 23, 24 or 25 hours long across a DST change; minutes
//! and hours follow the zone's offset (a `+05:30` hour starts at :30 UTC).

use chrono::{DateTime, Datelike, Duration, FixedOffset, LocalResult, NaiveDate, TimeZone};
use chrono::{Offset, Utc};

/// A time zone as a request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Named(chrono_tz::Tz),
    Fixed(FixedOffset),
}

/// Largest fixed offset accepted, in seconds (as RFC 3339 allows: under a day).
const MAX_OFFSET_S: i32 = 24 * 3600 - 1;

impl Zone {
    pub const UTC: Zone = Zone::Named(chrono_tz::UTC);

    /// `UTC`, an IANA name (`America/New_York`), or an offset `+HH:MM` / `-HH:MM` (`Z` is
    /// UTC); the error says what is accepted.
    pub fn parse(s: &str) -> Result<Zone, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Zone::UTC);
        }
        if let Some(sign) = t.chars().next().filter(|c| *c == '+' || *c == '-') {
            let rest = &t[1..];
            let (h, m) = rest.split_once(':').unwrap_or((rest, "00"));
            let ok = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
            if !ok(h) || !ok(m) {
                return Err("is not an offset of the form +HH:MM or -HH:MM".into());
            }
            let (h, m): (i32, i32) = (h.parse().unwrap_or(99), m.parse().unwrap_or(99));
            if h > 23 || m > 59 {
                return Err("is not an offset between -23:59 and +23:59".into());
            }
            let secs = (h * 3600 + m * 60) * if sign == '-' { -1 } else { 1 };
            return FixedOffset::east_opt(secs.clamp(-MAX_OFFSET_S, MAX_OFFSET_S))
                .map(Zone::Fixed)
                .ok_or_else(|| "is not a valid offset".into());
        }
        t.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
            "is not a time zone: an IANA name such as Europe/Berlin, UTC, or an offset such as +05:30"
                .to_string()
        })
    }

    /// The name answers carry: the IANA name, `UTC`, or the offset (`+05:30`).
    pub fn name(&self) -> String {
        match self {
            Zone::Named(tz) => tz.name().to_string(),
            Zone::Fixed(off) => fmt_offset(off.local_minus_utc()),
        }
    }

    /// The zone's offset from UTC at instant `t_us`, in seconds.
    pub fn offset_s(&self, t_us: i64) -> i32 {
        let t = utc(t_us);
        match self {
            Zone::Named(tz) => tz
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
            Zone::Fixed(off) => off.local_minus_utc(),
        }
    }

    /// The local calendar date at instant `t_us`.
    pub fn date_of(&self, t_us: i64) -> NaiveDate {
        let local = utc(t_us).naive_utc() + Duration::seconds(self.offset_s(t_us) as i64);
        local.date()
    }

    /// The first instant (µs) of local `date`: its midnight, or the first instant after a
    /// DST gap that swallows midnight.
    pub fn day_start_us(&self, date: NaiveDate) -> i64 {
        let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        for minutes in 0..=24 * 60 {
            let local = midnight + Duration::minutes(minutes);
            let found = match self {
                Zone::Named(tz) => first(tz.from_local_datetime(&local)),
                Zone::Fixed(off) => first(off.from_local_datetime(&local)),
            };
            if let Some(us) = found {
                return us;
            }
        }
        // Unreachable for real zones (no gap is a day long): fall back to UTC midnight.
        midnight.and_utc().timestamp_micros()
    }

    /// Whether the zone's offset is a whole number of hours at every instant of [from, to]
    /// (checked at `points`, the bucket starts, and the range's ends): then its hours and
    /// days are made of whole UTC hours, which hourly rollups can answer.
    pub fn whole_hours_at(&self, points: &[i64]) -> bool {
        points.iter().all(|&t| self.offset_s(t) % 3600 == 0)
    }

    /// An RFC 3339 time of `t_us` in this zone, with its offset (`2026-03-29T03:00:00+02:00`).
    pub fn format(&self, t_us: i64) -> String {
        let off = FixedOffset::east_opt(self.offset_s(t_us)).unwrap_or(Utc.fix());
        utc(t_us)
            .with_timezone(&off)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

fn first<T: TimeZone>(r: LocalResult<DateTime<T>>) -> Option<i64> {
    match r {
        LocalResult::Single(t) => Some(t.timestamp_micros()),
        LocalResult::Ambiguous(a, b) => Some(a.timestamp_micros().min(b.timestamp_micros())),
        LocalResult::None => None,
    }
}

fn utc(t_us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(t_us).unwrap_or_default()
}

/// `+05:30`, `-08:00`, `+00:00`.
pub fn fmt_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
}

/// A bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Minute,
    Hour,
    Day,
    Week,
}

impl Step {
    pub fn parse(s: &str) -> Option<Step> {
        Some(match s {
            "minute" => Step::Minute,
            "hour" => Step::Hour,
            "day" => Step::Day,
            "week" => Step::Week,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Minute => "minute",
            Step::Hour => "hour",
            Step::Day => "day",
            Step::Week => "week",
        }
    }

    /// The nominal width (a local day may be an hour shorter or longer), in µs.
    pub fn nominal_us(self) -> i64 {
        const MIN: i64 = 60_000_000;
        match self {
            Step::Minute => MIN,
            Step::Hour => 60 * MIN,
            Step::Day => 24 * 60 * MIN,
            Step::Week => 7 * 24 * 60 * MIN,
        }
    }
}

/// The start of the bucket holding instant `t_us`.
pub fn bucket_start(zone: &Zone, step: Step, t_us: i64) -> i64 {
    match step {
        Step::Minute | Step::Hour => {
            let w = step.nominal_us();
            let off = zone.offset_s(t_us) as i64 * 1_000_000;
            (t_us + off).div_euclid(w) * w - off
        }
        Step::Day => zone.day_start_us(zone.date_of(t_us)),
        Step::Week => {
            let d = zone.date_of(t_us);
            let monday = d - Duration::days(d.weekday().num_days_from_monday() as i64);
            zone.day_start_us(monday)
        }
    }
}

/// The bucket starts covering `[from_us, to_us)`, and after them the end of the last
/// bucket: `len() - 1` buckets, bucket `i` is `[b[i], b[i + 1])`. None when there would be
/// more than `max` buckets.
pub fn boundaries(
    zone: &Zone,
    step: Step,
    (from_us, to_us): (i64, i64),
    max: usize,
) -> Option<Vec<i64>> {
    let estimate = ((to_us - from_us) / step.nominal_us()).max(0) as usize;
    if estimate > max + 1 {
        return None;
    }
    let mut out = Vec::with_capacity(estimate + 2);
    let mut t = bucket_start(zone, step, from_us);
    out.push(t);
    while t < to_us {
        let next = next_start(zone, step, t);
        out.push(next);
        t = next;
        if out.len() > max + 1 {
            return None;
        }
    }
    Some(out)
}

/// The start of the bucket after the one starting at `start`.
fn next_start(zone: &Zone, step: Step, start: i64) -> i64 {
    match step {
        Step::Minute | Step::Hour => {
            // The offset may change inside the bucket (a DST change): the next bucket is
            // the one holding the first instant past this one's nominal end, unless that
            // lands on this bucket again (a clock moved back within it).
            let mut probe = start + step.nominal_us();
            loop {
                let b = bucket_start(zone, step, probe);
                if b > start {
                    return b;
                }
                probe += step.nominal_us() / 4;
            }
        }
        Step::Day => zone.day_start_us(zone.date_of(start) + Duration::days(1)),
        Step::Week => zone.day_start_us(zone.date_of(start) + Duration::days(7)),
    }
}

/// The index of the bucket holding `t_us` in `b` (from [`boundaries`]), if any.
#[inline]
pub fn bucket_index(b: &[i64], t_us: i64) -> Option<usize> {
    if b.len() < 2 || t_us < b[0] || t_us >= b[b.len() - 1] {
        return None;
    }
    Some(b.partition_point(|&s| s <= t_us) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn zones_parse_and_name_themselves() {
        assert_eq!(Zone::parse("UTC").unwrap().name(), "UTC");
        assert_eq!(Zone::parse("+05:30").unwrap().name(), "+05:30");
        assert_eq!(Zone::parse("-08:00").unwrap().name(), "-08:00");
        assert_eq!(
            Zone::parse("Europe/Berlin").unwrap().name(),
            "Europe/Berlin"
        );
        for bad in ["Mars/Olympus", "+5:30", "+24:00", "+05:60", ""] {
            assert!(Zone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_days_across_a_dst_change_are_23_and_25_hours() {
        let z = Zone::parse("Europe/Berlin").unwrap();
        let b = boundaries(
            &z,
            Step::Day,
            (us("2026-03-28T12:00:00Z"), us("2026-03-30T00:00:00Z")),
            100,
        )
        .unwrap();
        assert_eq!(b[0], us("2026-03-27T23:00:00Z"));
        assert_eq!(b[1], us("2026-03-28T23:00:00Z"));
        assert_eq!(
            b[2],
            us("2026-03-29T22:00:00Z"),
            "29 March is 23 hours long"
        );
        let b = boundaries(
            &z,
            Step::Day,
            (us("2026-10-25T00:00:00Z"), us("2026-10-26T12:00:00Z")),
            100,
        )
        .unwrap();
        assert_eq!(
            b[1] - b[0],
            25 * 3_600_000_000,
            "25 October is 25 hours long"
        );
        assert_eq!(z.format(b[0]), "2026-10-25T00:00:00+02:00");
        assert_eq!(z.format(b[1]), "2026-10-26T00:00:00+01:00");
    }

    #[test]
    fn half_hour_zones_shift_hours_and_days() {
        let z = Zone::parse("+05:30").unwrap();
        let b = boundaries(
            &z,
            Step::Hour,
            (us("2026-01-01T00:00:00Z"), us("2026-01-01T02:00:00Z")),
            100,
        )
        .unwrap();
        assert_eq!(b[0], us("2025-12-31T23:30:00Z"));
        assert_eq!(b[1], us("2026-01-01T00:30:00Z"));
        assert!(!z.whole_hours_at(&b));
        let d = boundaries(
            &z,
            Step::Day,
            (us("2026-01-01T00:00:00Z"), us("2026-01-01T00:00:01Z")),
            10,
        )
        .unwrap();
        assert_eq!(
            d,
            vec![us("2025-12-31T18:30:00Z"), us("2026-01-01T18:30:00Z")]
        );
        assert_eq!(bucket_index(&d, us("2026-01-01T18:29:59Z")), Some(0));
        assert_eq!(bucket_index(&d, us("2026-01-01T18:30:00Z")), None);
    }

    #[test]
    fn weeks_start_on_local_mondays_and_hours_survive_dst() {
        let z = Zone::parse("America/New_York").unwrap();
        let b = boundaries(
            &z,
            Step::Week,
            (us("2026-11-04T12:00:00Z"), us("2026-11-10T00:00:00Z")),
            10,
        )
        .unwrap();
        assert_eq!(z.format(b[0]), "2026-11-02T00:00:00-05:00");
        assert_eq!(z.format(b[1]), "2026-11-09T00:00:00-05:00");
        // 1 November: the clock goes back at 02:00 EDT; every UTC hour is its own bucket.
        let h = boundaries(
            &z,
            Step::Hour,
            (us("2026-11-01T04:00:00Z"), us("2026-11-01T08:00:00Z")),
            10,
        )
        .unwrap();
        let widths: Vec<i64> = h.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(widths.iter().all(|&w| w == 3_600_000_000), "{widths:?}");
        assert_eq!(h.len(), 5);
        assert!(boundaries(&z, Step::Minute, (0, 30 * 86_400_000_000), 20_000).is_none());
    }
}
