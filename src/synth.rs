//! Synthetic, seed-shaped product-analytics events: several orgs, users with sessions, a
//! skewed mix of event names, ~200-byte JSON properties, and a daily rhythm of activity
//! ([`daily_rhythm`]). Deterministic for a given seed, so benchmarks and tests can regenerate
//! exactly what they wrote.

use crate::store::{Row, Value};
use chrono::{DateTime, Datelike, Timelike, Utc};

/// Event names, most common first (the generator picks low indexes more often).
pub const EVENT_NAMES: [&str; 50] = [
    "page_view",
    "click",
    "session_start",
    "session_end",
    "scroll",
    "search",
    "add_to_cart",
    "view_item",
    "sign_in",
    "sign_out",
    "form_submit",
    "video_play",
    "video_pause",
    "share",
    "purchase",
    "checkout_start",
    "checkout_step",
    "remove_from_cart",
    "wishlist_add",
    "filter_apply",
    "sort_change",
    "download",
    "upload",
    "comment",
    "like",
    "follow",
    "unfollow",
    "notification_open",
    "settings_change",
    "profile_update",
    "invite_sent",
    "invite_accepted",
    "trial_start",
    "subscription_start",
    "subscription_cancel",
    "plan_upgrade",
    "plan_downgrade",
    "error_shown",
    "help_open",
    "chat_start",
    "chat_end",
    "export",
    "import",
    "report_view",
    "dashboard_view",
    "api_call",
    "webhook_sent",
    "feature_flag_eval",
    "experiment_exposure",
    "app_open",
];

const EVENT_TYPES: [&str; 4] = ["track", "page", "identify", "screen"];
const BROWSERS: [&str; 5] = ["Chrome", "Firefox", "Safari", "Edge", "Opera"];
const OSES: [&str; 5] = ["macOS", "Windows", "Linux", "iOS", "Android"];

/// Shape of the synthetic stream.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub orgs: usize,
    pub users: usize,
    pub seed: u64,
    /// Event times are spread evenly over `[end - span_days, end)`, in order.
    pub span_days: u32,
    pub end: DateTime<Utc>,
    /// Total events the time span is spread over.
    pub total: u64,
    /// The shape of the event ids.
    pub ids: SynthIds,
}

/// The shape of synthetic event ids. Both are deterministic in the seed and the event's
/// number; they differ in how they sort, which is what the store's id-keyed trees feel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthIds {
    /// UUIDv4-shaped: random order.
    Random,
    /// UUIDv7: the event time's milliseconds first.
    TimeOrdered,
}

impl SynthIds {
    /// From a benchmark's `--ids` value: `v4` or `v7`.
    pub fn parse(s: &str) -> Option<SynthIds> {
        match s {
            "v4" => Some(SynthIds::Random),
            "v7" => Some(SynthIds::TimeOrdered),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SynthIds::Random => "v4",
            SynthIds::TimeOrdered => "v7",
        }
    }
}

impl SynthConfig {
    pub fn new(total: u64) -> Self {
        SynthConfig {
            orgs: 20,
            users: 10_000,
            seed: 42,
            span_days: 30,
            end: Utc::now(),
            total,
            ids: SynthIds::Random,
        }
    }

    /// The org ids: deterministic UUIDs.
    pub fn org_id(&self, n: usize) -> [u8; 16] {
        *uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("streamtally-org-{n}").as_bytes(),
        )
        .as_bytes()
    }
}

/// The daily rhythm of product traffic: the relative activity of an hour, by its UTC hour
/// of day and weekday. Quiet nights (0.15 at 03:00), a working-day peak (1.0 at 14:00),
/// weekends at 60%. The mean over a week is [`rhythm_week_mean`].
pub fn daily_rhythm(hour: u32, weekday: chrono::Weekday) -> f64 {
    // A raised cosine peaking at 14:00 and lowest at 02:00, squared for a flat night.
    let phase = (hour as f64 - 14.0) / 24.0 * std::f64::consts::TAU;
    let day = 0.5 * (1.0 + phase.cos());
    let level = 0.15 + 0.85 * day * day;
    match weekday {
        chrono::Weekday::Sat | chrono::Weekday::Sun => 0.6 * level,
        _ => level,
    }
}

/// The mean of [`daily_rhythm`] over the 168 hours of a week.
pub fn rhythm_week_mean() -> f64 {
    let days = [
        chrono::Weekday::Mon,
        chrono::Weekday::Tue,
        chrono::Weekday::Wed,
        chrono::Weekday::Thu,
        chrono::Weekday::Fri,
        chrono::Weekday::Sat,
        chrono::Weekday::Sun,
    ];
    let sum: f64 = days
        .iter()
        .flat_map(|d| (0..24).map(move |h| daily_rhythm(h, *d)))
        .sum();
    sum / 168.0
}

/// splitmix64: small, fast, good enough for synthetic data.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One synthetic event, decoupled from how it is stored.
#[derive(Debug, Clone)]
pub struct SynthEvent {
    pub id: [u8; 16],
    pub org: usize,
    pub org_id: [u8; 16],
    pub event_type: &'static str,
    pub event_name: &'static str,
    pub user_id: String,
    pub session_id: String,
    pub properties: String,
    pub timestamp: DateTime<Utc>,
}

impl SynthEvent {
    /// Event `i` of the stream described by `cfg`.
    pub fn generate(cfg: &SynthConfig, i: u64) -> SynthEvent {
        let span_us = cfg.span_days as i64 * 86_400_000_000;
        let offset = (i as i128 * span_us as i128 / cfg.total.max(1) as i128) as i64;
        let timestamp = cfg.end - chrono::Duration::microseconds(span_us - offset);
        SynthEvent::generate_at(cfg, i, timestamp)
    }

    /// Event `i` of `cfg`'s stream, but at `timestamp` instead of its place in the span
    /// (`cfg.span_days`, `cfg.end` and `cfg.total` are not used): for generators that choose
    /// their own times, such as the live and backfilled events of `streamtally demo`.
    pub fn generate_at(cfg: &SynthConfig, i: u64, timestamp: DateTime<Utc>) -> SynthEvent {
        let r = mix(cfg.seed ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let r2 = mix(r);
        let org = (r % cfg.orgs as u64) as usize;
        // Skewed: squaring a uniform number favours the first names.
        let u = (r2 >> 11) as f64 / (1u64 << 53) as f64;
        let name = EVENT_NAMES[((u * u) * EVENT_NAMES.len() as f64) as usize % EVENT_NAMES.len()];
        let user = (r2 >> 20) % cfg.users as u64;
        let session = format!("s{user}-{}", timestamp.timestamp() / 1800);
        let properties = format!(
            r#"{{"path":"/app/section/{}/item/{}","referrer":"https://www.example.com/landing/{}","browser":"{}","os":"{}","screen":"1440x900","plan":"{}","value":{}.{:02},"campaign":"autumn_sale_{}"}}"#,
            r % 17,
            r2 % 100_000,
            r % 31,
            BROWSERS[(r >> 8) as usize % 5],
            OSES[(r >> 16) as usize % 5],
            if r.is_multiple_of(3) { "pro" } else { "free" },
            r2 % 500,
            r % 100,
            r2 % 12
        );
        let mut id_bytes = [0u8; 16];
        id_bytes[..8].copy_from_slice(&mix(cfg.seed.wrapping_add(i)).to_le_bytes());
        id_bytes[8..].copy_from_slice(&i.to_be_bytes());
        let id = match cfg.ids {
            SynthIds::Random => uuid::Builder::from_random_bytes(id_bytes),
            SynthIds::TimeOrdered => {
                let millis = timestamp.timestamp_millis().clamp(0, (1 << 48) - 1) as u64;
                // Two seeded bytes, then the event's number (unique within the stream).
                let mut random = [0u8; 10];
                random[..2].copy_from_slice(&id_bytes[..2]);
                random[2..].copy_from_slice(&i.to_be_bytes());
                uuid::Builder::from_unix_timestamp_millis(millis, &random)
            }
        };
        let id = *id.as_uuid().as_bytes();
        SynthEvent {
            id,
            org,
            org_id: cfg.org_id(org),
            event_type: EVENT_TYPES[(r >> 24) as usize % 4],
            event_name: name,
            user_id: format!("user_{user}"),
            session_id: session,
            properties,
            timestamp,
        }
    }

    /// The event as an `Event` row of schema.ormdb.
    pub fn to_row(&self) -> Row {
        Row::new()
            .with("id", Value::Uuid(self.id))
            .with("org_id", Value::Uuid(self.org_id))
            .with("event_type", Value::String(self.event_type.into()))
            .with("event_name", Value::String(self.event_name.into()))
            .with("user_id", Value::String(self.user_id.clone()))
            .with("session_id", Value::String(self.session_id.clone()))
            .with("properties", Value::String(self.properties.clone()))
            .with(
                "timestamp",
                Value::Timestamp(self.timestamp.timestamp_micros()),
            )
            .with("date", Value::String(utc_date(&self.timestamp)))
            .with("hour", Value::Int32(self.timestamp.hour() as i32))
    }
}

/// `YYYY-MM-DD` of a UTC time (what `format("%Y-%m-%d")` gives, without parsing a format
/// string per event).
fn utc_date(t: &DateTime<Utc>) -> String {
    let d = t.date_naive();
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ordered_ids_are_uuidv7_in_event_order_and_distinct() {
        let cfg = SynthConfig {
            ids: SynthIds::TimeOrdered,
            ..SynthConfig::new(10_000)
        };
        let ids: Vec<uuid::Uuid> = (0..10_000)
            .map(|i| uuid::Uuid::from_bytes(SynthEvent::generate(&cfg, i).id))
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids sort in event order"
        );
        let first = SynthEvent::generate(&cfg, 0);
        let (secs, nanos) = ids[0].get_timestamp().unwrap().to_unix();
        assert_eq!(
            secs as i64 * 1000 + nanos as i64 / 1_000_000,
            first.timestamp.timestamp_millis()
        );
        // Deterministic, and the default shape is random (v4).
        assert_eq!(SynthEvent::generate(&cfg, 7).id, ids[7].into_bytes());
        let random = SynthEvent::generate(&SynthConfig::new(10_000), 7).id;
        assert_eq!(uuid::Uuid::from_bytes(random).get_version_num(), 4);
        assert_eq!(SynthIds::parse("v7"), Some(SynthIds::TimeOrdered));
        assert_eq!(SynthIds::parse("v5"), None);
    }
}
