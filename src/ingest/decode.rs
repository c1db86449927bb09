//! Decoding one Kafka message into an `Event` row, or into the reason it goes to the
//! dead-letter topic.
//!
//! Pure: no I/O and no clock (the caller passes `now` in [`DecodeOptions`]), so the consumer,
//! the tests and the fuzz target (`fuzz/fuzz_targets/decode.rs`) all run the same code. It
//! never panics: every input is either a [`DecodedEvent`] or a [`RejectReason`] whose
//! `code()` goes into the DLQ headers and whose `Display` names the field and the value.
//!
//! Two payload shapes are accepted (README "Event format"): the native one (`org_id`,
//! `event_type`, `event_name`, ...) and the Segment-style one (`event`, `userId`,
//! `messageId`, `type`, ...), which is recognised when `event_name` is absent and one of
//! `event`, `messageId`, `userId`, `anonymousId` is present.

use super::payload;
use crate::store::{Row, Value};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};
use std::fmt;
use std::time::Duration;
use uuid::Uuid;

/// The namespace of every UUIDv5 this module derives (from a Kafka position or from a
/// Segment `messageId`). Fixed forever: changing it would re-key every stored event.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6406de7b_d6c1_49a3_9073_1d4af200eab5);
/// Longest accepted `event_name` / `event_type`, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Deepest accepted JSON nesting (the top-level object is depth 1).
pub const MAX_JSON_DEPTH: usize = 64;
/// Offending values are quoted in messages up to this many characters.
const SNIPPET_CHARS: usize = 100;

/// Where a message came from: everything of the Kafka record except its value.
#[derive(Debug, Clone, Copy)]
pub struct SourceMeta<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (create or log-append time); `None` when not available.
    pub kafka_timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
}

/// What the decoder needs from the configuration, plus the clock.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Payloads longer than this are rejected before they are parsed.
    pub max_message_bytes: usize,
    /// How far ahead of `now` an event time may be.
    pub max_future_skew: Duration,
    /// The topic's default org, for payloads of the Segment shape that carry none.
    pub default_org_id: Option<Uuid>,
    /// The Kafka header that carries the org id (matched case-insensitively; empty: none).
    pub org_id_header: String,
    /// Ingest time: the event time of last resort, and the reference for `max_future_skew`.
    pub now: DateTime<Utc>,
}

/// One decoded event, ready to become an `Event` row.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    pub id: Uuid,
    /// True when the id came from the payload (`id` or `messageId`), false when it was
    /// derived from the Kafka position.
    pub id_from_payload: bool,
    pub org_id: Uuid,
    pub event_type: String,
    pub event_name: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    /// The payload's `properties` object, as its text in the payload (whitespace and key
    /// order as sent; valid JSON, checked like the rest of the payload). Stored as is rather
    /// than parsed and serialized again: the same record always gives the same text, and
    /// readers parse it.
    pub properties: Option<String>,
    /// Event time, truncated to microseconds (the store's precision).
    pub timestamp: DateTime<Utc>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka key: UTF-8 text, else `base64:<standard base64>`.
    pub key: Option<String>,
    /// JSON object `{name: value-or-null}` (values as for `key`); `None` without headers.
    pub headers: Option<String>,
    /// Top-level payload fields that the payload's shape does not read, so not stored
    /// (README "Coercions"); counted in `streamtally_events_fields_dropped_total`.
    pub dropped_fields: usize,
}

impl DecodedEvent {
    /// The `Event` row (schema.ormdb). `ingested_at` is left to the store's default.
    pub fn to_row(&self) -> Row {
        // Built directly (one allocation for the field list) rather than with `Row::with`.
        let mut fields: Vec<(String, Value)> = Vec::with_capacity(15);
        let mut set = |name: &str, value: Value| fields.push((name.to_string(), value));
        set("id", Value::Uuid(self.id.into_bytes()));
        set("org_id", Value::Uuid(self.org_id.into_bytes()));
        set("event_type", Value::String(self.event_type.clone()));
        set("event_name", Value::String(self.event_name.clone()));
        let optional = [
            ("user_id", &self.user_id),
            ("session_id", &self.session_id),
            ("properties", &self.properties),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                set(name, Value::String(v.clone()));
            }
        }
        set(
            "timestamp",
            Value::Timestamp(self.timestamp.timestamp_micros()),
        );
        set("date", Value::String(utc_date(&self.timestamp)));
        // hour() is 0..=23, so the cast cannot truncate.
        set("hour", Value::Int32(self.timestamp.hour() as i32));
        set("topic", Value::String(self.topic.clone()));
        set("partition", Value::Int32(self.partition));
        set("offset", Value::Int64(self.offset));
        if let Some(k) = &self.key {
            set("kafka_key", Value::String(k.clone()));
        }
        if let Some(h) = &self.headers {
            set("kafka_headers", Value::String(h.clone()));
        }
        Row { fields }
    }
}

/// `YYYY-MM-DD`, as chrono's `%Y-%m-%d` writes it, without parsing a format string per
/// event. Years outside 0..=9999 (which chrono writes with a sign) go through chrono.
fn utc_date(ts: &DateTime<Utc>) -> String {
    let year = ts.year();
    if !(0..=9999).contains(&year) {
        return ts.format("%Y-%m-%d").to_string();
    }
    let digit = |n: u32| char::from(b'0' + (n % 10) as u8);
    let (y, m, d) = (year as u32, ts.month(), ts.day());
    let mut s = String::with_capacity(10);
    s.extend([digit(y / 1000), digit(y / 100), digit(y / 10), digit(y)]);
    s.push('-');
    s.extend([digit(m / 10), digit(m)]);
    s.push('-');
    s.extend([digit(d / 10), digit(d)]);
    s
}

/// The id of an event whose payload carries none: time-ordered (the UUIDv7 layout), so that
/// the store's trees, keyed by row id, take consecutive events at their right edge instead of
/// at random places (measured: 1.7x the insert rate of random ids at 600,000 events).
///
/// The 48-bit time is the record's Kafka timestamp (0 when it has none or it is out of
/// range), the other 74 bits come from a UUIDv5 of `topic\0partition\0offset` in
/// [`EVENT_ID_NAMESPACE`]: a record re-read, by this process or by another member of the
/// group, has the same timestamp and position, so it yields the same row id.
pub fn event_id_for(
    topic: &str,
    partition: i32,
    offset: i64,
    kafka_timestamp_ms: Option<i64>,
) -> Uuid {
    let position = Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("{topic}\0{partition}\0{offset}").as_bytes(),
    );
    let hash = position.as_bytes();
    // The bytes of the v5 id that are all hash (6 and 8 carry its version and variant).
    let mut random = [0u8; 10];
    random[..6].copy_from_slice(&hash[..6]);
    random[6] = hash[7];
    random[7..].copy_from_slice(&hash[9..12]);
    let millis = kafka_timestamp_ms
        .filter(|ms| (0..1 << 48).contains(ms))
        .unwrap_or(0) as u64;
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// The id of a Segment event whose `messageId` is not itself a UUID.
pub fn event_id_for_message_id(message_id: &str) -> Uuid {
    Uuid::new_v5(&EVENT_ID_NAMESPACE, message_id.as_bytes())
}

/// Why a message cannot become an event. Each variant is one DLQ reason (see [`code`]).
///
/// [`code`]: RejectReason::code
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectReason {
    #[error(
        "id: {id} is already stored for org {org} with other content (the first write is \
         kept; kafka.dead_letter.id_conflicts = true)"
    )]
    IdConflict { org: String, id: String },
    #[error("payload: the message value is null (a tombstone), expected a JSON event")]
    Tombstone,
    #[error("payload: the message value is empty (0 bytes), expected a JSON event")]
    EmptyPayload,
    #[error("payload: {size} bytes is over the limit of {limit} bytes (max_message_bytes)")]
    Oversized { size: usize, limit: usize },
    #[error("payload: invalid UTF-8 at byte {position} (bytes there: {bytes})")]
    InvalidUtf8 { position: usize, bytes: String },
    #[error("payload: invalid JSON: {message}, near {near}")]
    InvalidJson { message: String, near: String },
    #[error("{field}: JSON nesting depth {depth} exceeds the limit of {limit}")]
    NestingTooDeep {
        field: String,
        depth: String,
        limit: usize,
    },
    #[error("payload: expected a JSON object, got {kind}: {value}")]
    NotAnObject { kind: &'static str, value: String },
    #[error("payload: top-level key {key} appears more than once")]
    DuplicateKey { key: String },
    #[error("{field}: required field is missing or null")]
    MissingField { field: String },
    #[error("{field}: expected {expected}, got {got} {value}")]
    WrongType {
        field: String,
        expected: &'static str,
        got: &'static str,
        value: String,
    },
    #[error("{field}: must not be empty, got {value}")]
    EmptyField { field: String, value: String },
    #[error("{field}: {value} is not a valid UUID ({error})")]
    InvalidUuid {
        field: String,
        value: String,
        error: String,
    },
    #[error("header '{header}': {value} is not a valid org_id UUID")]
    InvalidOrgIdHeader { header: String, value: String },
    #[error(
        "org_id: not in the payload (org_id, orgId), no '{header}' header, \
         and no default org_id for this topic"
    )]
    MissingOrgId { header: String },
    #[error(
        "{field}: {value} is not a valid timestamp ({error}); \
         expected RFC 3339 text or integer epoch milliseconds"
    )]
    InvalidTimestamp {
        field: String,
        value: String,
        error: String,
    },
    #[error("{field}: {value} is out of range for epoch milliseconds")]
    TimestampOutOfRange { field: String, value: String },
    #[error("{field}: {value} is before 1970-01-01T00:00:00Z")]
    TimestampBeforeEpoch { field: String, value: String },
    #[error(
        "{field}: {value} is {ahead_ms} ms ahead of now ({now}), \
         over the allowed skew of {max_skew_ms} ms"
    )]
    TimestampInFuture {
        field: String,
        value: String,
        now: String,
        ahead_ms: i64,
        max_skew_ms: u128,
    },
    #[error("properties: expected a JSON object, got {got} {value}")]
    PropertiesNotObject { got: &'static str, value: String },
    #[error("{field}: {chars} characters is over the limit of {limit}: {value}")]
    FieldTooLong {
        field: String,
        chars: usize,
        limit: usize,
        value: String,
    },
    #[error("{field}: control character {character} at character {position} of {value}")]
    ControlCharacter {
        field: String,
        character: String,
        position: usize,
        value: String,
    },
}

impl RejectReason {
    /// Every code [`code`](Self::code) can return, e.g. to pre-register metric labels.
    pub const ALL_CODES: &'static [&'static str] = &[
        "tombstone",
        "empty_payload",
        "oversized",
        "invalid_utf8",
        "invalid_json",
        "nesting_too_deep",
        "not_an_object",
        "duplicate_key",
        "missing_field",
        "wrong_type",
        "empty_field",
        "invalid_uuid",
        "invalid_org_id_header",
        "missing_org_id",
        "invalid_timestamp",
        "timestamp_out_of_range",
        "timestamp_before_epoch",
        "timestamp_in_future",
        "properties_not_object",
        "field_too_long",
        "control_character",
    ];

    /// A stable snake_case code for the DLQ header and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Tombstone => "tombstone",
            Self::EmptyPayload => "empty_payload",
            Self::Oversized { .. } => "oversized",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::InvalidJson { .. } => "invalid_json",
            Self::NestingTooDeep { .. } => "nesting_too_deep",
            Self::NotAnObject { .. } => "not_an_object",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::MissingField { .. } => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::EmptyField { .. } => "empty_field",
            Self::InvalidUuid { .. } => "invalid_uuid",
            Self::InvalidOrgIdHeader { .. } => "invalid_org_id_header",
            Self::MissingOrgId { .. } => "missing_org_id",
            Self::InvalidTimestamp { .. } => "invalid_timestamp",
            Self::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            Self::TimestampBeforeEpoch { .. } => "timestamp_before_epoch",
            Self::TimestampInFuture { .. } => "timestamp_in_future",
            Self::PropertiesNotObject { .. } => "properties_not_object",
            Self::FieldTooLong { .. } => "field_too_long",
            Self::ControlCharacter { .. } => "control_character",
            Self::IdConflict { .. } => "id_conflict",
        }
    }

    /// The payload field the reason is about, when there is one (for a DLQ header).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::NestingTooDeep { field, .. }
            | Self::MissingField { field }
            | Self::WrongType { field, .. }
            | Self::EmptyField { field, .. }
            | Self::InvalidUuid { field, .. }
            | Self::InvalidTimestamp { field, .. }
            | Self::TimestampOutOfRange { field, .. }
            | Self::TimestampBeforeEpoch { field, .. }
            | Self::TimestampInFuture { field, .. }
            | Self::FieldTooLong { field, .. }
            | Self::ControlCharacter { field, .. } => Some(field),
            Self::DuplicateKey { key } => Some(key),
            Self::PropertiesNotObject { .. } => Some("properties"),
            Self::IdConflict { .. } => Some("id"),
            Self::MissingOrgId { .. } | Self::InvalidOrgIdHeader { .. } => Some("org_id"),
            _ => None,
        }
    }
}

/// Decodes one Kafka message. Checks run cheapest first: presence, size (before any
/// parsing), UTF-8, JSON syntax and depth, shape, then each field.
pub fn decode(
    payload: Option<&[u8]>,
    meta: &SourceMeta,
    opts: &DecodeOptions,
) -> Result<DecodedEvent, RejectReason> {
    decode_with(payload, meta, opts, true)
}

/// [`decode`], with the fast path (`payload::read`) turned off for `fast_path = false`: the
/// tests hold the two paths to the same results.
fn decode_with(
    payload: Option<&[u8]>,
    meta: &SourceMeta,
    opts: &DecodeOptions,
    fast_path: bool,
) -> Result<DecodedEvent, RejectReason> {
    let bytes = match payload {
        None => return Err(RejectReason::Tombstone),
        Some([]) => return Err(RejectReason::EmptyPayload),
        Some(b) => b,
    };
    if bytes.len() > opts.max_message_bytes {
        return Err(RejectReason::Oversized {
            size: bytes.len(),
            limit: opts.max_message_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let end = bytes.len().min(at + 4);
        RejectReason::InvalidUtf8 {
            position: at,
            bytes: bytes[at..end]
                .iter()
                .map(|b| format!("{b:#04x} "))
                .collect::<String>()
                .trim_end()
                .to_string(),
        }
    })?;
    // A byte-order mark is legal UTF-8 but not JSON; some producers add one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The fast path reads what it can; a payload it declines gets the full parse, which
    // accepts the same payloads and names the problem in those it rejects.
    let fast = if fast_path { payload::read(text) } else { None };
    let (obj, properties_text, unread) = match fast {
        Some(p) => (p.fields, p.properties, p.unread),
        None => {
            let obj = parse_object(text)?;
            check_depth(&obj)?;
            (obj, None, 0)
        }
    };

    let segment = is_segment_shape(&obj);
    let fields = if segment {
        segment_fields(&obj, meta, opts)?
    } else {
        native_fields(&obj)?
    };
    let read = if segment {
        SEGMENT_FIELDS
    } else {
        NATIVE_FIELDS
    };
    let dropped_fields = unread + obj.keys().filter(|k| !read.contains(&k.as_str())).count();

    let (id, id_from_payload) = match fields.id {
        Some(id) => (id, true),
        None => (
            event_id_for(
                meta.topic,
                meta.partition,
                meta.offset,
                meta.kafka_timestamp_ms,
            ),
            false,
        ),
    };
    let timestamp = event_time(fields.timestamp, meta, opts)?;

    Ok(DecodedEvent {
        id,
        id_from_payload,
        org_id: fields.org_id,
        event_type: fields.event_type,
        event_name: fields.event_name,
        user_id: fields.user_id,
        session_id: fields.session_id,
        properties: match properties_text {
            Some(text) => Some(text.to_string()),
            None => fields
                .properties
                .map(|p| Json::Object(p.clone()).to_string()),
        },
        timestamp,
        topic: meta.topic.to_string(),
        partition: meta.partition,
        offset: meta.offset,
        key: meta.key.map(bytes_as_text),
        headers: headers_json(meta.headers),
        dropped_fields,
    })
}

/// The top-level fields a native payload is read from; any other is dropped.
const NATIVE_FIELDS: &[&str] = &[
    "id",
    "org_id",
    "event_type",
    "event_name",
    "user_id",
    "session_id",
    "properties",
    "timestamp",
];

/// The top-level fields a Segment-style payload is read from; any other is dropped.
const SEGMENT_FIELDS: &[&str] = &[
    "id",
    "org_id",
    "orgId",
    "type",
    "event",
    "name",
    "userId",
    "anonymousId",
    "messageId",
    "context",
    "properties",
    "timestamp",
];

/// The shape-independent result of reading a payload.
struct Fields<'a> {
    id: Option<Uuid>,
    org_id: Uuid,
    event_type: String,
    event_name: String,
    user_id: Option<String>,
    session_id: Option<String>,
    properties: Option<&'a Map<String, Json>>,
    timestamp: Option<DateTime<Utc>>,
}

fn is_segment_shape(obj: &Map<String, Json>) -> bool {
    !obj.contains_key("event_name")
        && ["event", "messageId", "userId", "anonymousId"]
            .iter()
            .any(|k| present(obj, k).is_some())
}

fn native_fields(obj: &Map<String, Json>) -> Result<Fields<'_>, RejectReason> {
    let org_id = parse_uuid("org_id", required_str(obj, "org_id")?)?;
    let event_type = name_field("event_type", required_str(obj, "event_type")?)?;
    let event_name = name_field("event_name", required_str(obj, "event_name")?)?;
    let id = optional_str(obj, "id")?
        .map(|s| parse_uuid("id", s))
        .transpose()?;
    Ok(Fields {
        id,
        org_id,
        event_type,
        event_name,
        user_id: id_string(obj, "user_id", "user_id")?,
        session_id: id_string(obj, "session_id", "session_id")?,
        properties: properties(obj)?,
        timestamp: present(obj, "timestamp")
            .map(|v| timestamp_from_json("timestamp", v))
            .transpose()?,
    })
}

fn segment_fields<'a>(
    obj: &'a Map<String, Json>,
    meta: &SourceMeta,
    opts: &DecodeOptions,
) -> Result<Fields<'a>, RejectReason> {
    let kind = optional_str(obj, "type")?.unwrap_or("track");
    if kind.trim().is_empty() {
        // An empty event type is reserved: the rollups use it for "every type".
        return Err(RejectReason::EmptyField {
            field: "type".to_string(),
            value: str_snippet(kind),
        });
    }
    let event_type = name_field("type", kind)?;
    let event_name = if kind == "track" {
        name_field("event", required_str(obj, "event")?)?
    } else {
        // page/screen/identify/...: a name if the payload has one, else the type itself.
        let named = match optional_str(obj, "event")? {
            Some(e) => Some(("event", e)),
            None => optional_str(obj, "name")?.map(|n| ("name", n)),
        };
        match named {
            Some((field, n)) if !n.trim().is_empty() => name_field(field, n)?,
            _ => event_type.clone(),
        }
    };

    let id = match optional_str(obj, "id")? {
        Some(s) => Some(parse_uuid("id", s)?),
        None => id_string(obj, "messageId", "messageId")?
            .map(|m| Uuid::parse_str(&m).unwrap_or_else(|_| event_id_for_message_id(&m))),
    };

    let user_id = match id_string(obj, "userId", "userId")? {
        Some(u) => Some(u),
        None => id_string(obj, "anonymousId", "anonymousId")?,
    };

    let properties = properties(obj)?;
    let session_id = match present(obj, "context") {
        Some(Json::Object(ctx)) => id_string(ctx, "sessionId", "context.sessionId")?,
        Some(other) => return Err(wrong_type("context", "an object", other)),
        None => None,
    };
    let session_id = match (session_id, properties) {
        (Some(s), _) => Some(s),
        (None, Some(props)) => id_string(props, "session_id", "properties.session_id")?,
        (None, None) => None,
    };

    Ok(Fields {
        id,
        org_id: segment_org_id(obj, meta, opts)?,
        event_type,
        event_name,
        user_id,
        session_id,
        properties,
        timestamp: present(obj, "timestamp")
            .map(|v| timestamp_from_json("timestamp", v))
            .transpose()?,
    })
}

/// Payload `org_id` / `orgId`, else the org header, else the topic default.
fn segment_org_id(
    obj: &Map<String, Json>,
    meta: &SourceMeta,
    opts: &DecodeOptions,
) -> Result<Uuid, RejectReason> {
    for field in ["org_id", "orgId"] {
        if let Some(s) = optional_str(obj, field)? {
            if s.trim().is_empty() {
                return Err(RejectReason::EmptyField {
                    field: field.to_string(),
                    value: str_snippet(s),
                });
            }
            return parse_uuid(field, s);
        }
    }
    let header = &opts.org_id_header;
    if !header.is_empty() {
        // Kafka allows a header name more than once; the last one wins, as in the
        // `kafka_headers` JSON object.
        let found = meta
            .headers
            .iter()
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case(header));
        if let Some((name, value)) = found {
            let text = value.as_deref().map(bytes_as_text);
            return match text.as_deref().map(Uuid::parse_str) {
                Some(Ok(u)) => Ok(u),
                _ => Err(RejectReason::InvalidOrgIdHeader {
                    header: name.clone(),
                    value: text.map_or_else(|| "null".to_string(), |t| str_snippet(&t)),
                }),
            };
        }
    }
    opts.default_org_id
        .ok_or_else(|| RejectReason::MissingOrgId {
            header: header.clone(),
        })
}

/// Payload time, else the Kafka record time, else ingest time; truncated to microseconds.
fn event_time(
    payload: Option<DateTime<Utc>>,
    meta: &SourceMeta,
    opts: &DecodeOptions,
) -> Result<DateTime<Utc>, RejectReason> {
    let (field, ts) = match (payload, meta.kafka_timestamp_ms) {
        (Some(ts), _) => ("timestamp", ts),
        // Kafka reports "no timestamp" as -1; treat any negative value the same way.
        (None, Some(ms)) if ms >= 0 => (
            "kafka timestamp",
            timestamp_from_ms("kafka timestamp", ms, &ms.to_string())?,
        ),
        _ => ("ingest time", opts.now),
    };
    let ahead = ts.signed_duration_since(opts.now);
    let too_far = match ahead.to_std() {
        Ok(a) => a > opts.max_future_skew,
        Err(_) => false, // negative: in the past
    };
    if too_far {
        return Err(RejectReason::TimestampInFuture {
            field: field.to_string(),
            value: ts.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            now: opts.now.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            ahead_ms: ahead.num_milliseconds(),
            max_skew_ms: opts.max_future_skew.as_millis(),
        });
    }
    // Always representable: the range is already bounded to [1970, now + skew].
    Ok(DateTime::from_timestamp_micros(ts.timestamp_micros()).unwrap_or(ts))
}

fn timestamp_from_json(field: &str, v: &Json) -> Result<DateTime<Utc>, RejectReason> {
    match v {
        Json::String(s) => {
            let ts = DateTime::parse_from_rfc3339(s)
                .map_err(|e| RejectReason::InvalidTimestamp {
                    field: field.to_string(),
                    value: str_snippet(s),
                    error: e.to_string(),
                })?
                .with_timezone(&Utc);
            if ts < DateTime::UNIX_EPOCH {
                return Err(RejectReason::TimestampBeforeEpoch {
                    field: field.to_string(),
                    value: str_snippet(s),
                });
            }
            Ok(ts)
        }
        Json::Number(n) => {
            let raw = n.to_string();
            let ms = if let Some(i) = n.as_i64() {
                i
            } else if n.is_u64() {
                return Err(out_of_range(field, &raw));
            } else {
                // serde_json gives f64 for fractions, exponents and integers past u64.
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !f.is_finite() || f.fract() != 0.0 {
                    return Err(RejectReason::InvalidTimestamp {
                        field: field.to_string(),
                        value: raw,
                        error: "epoch milliseconds must be a whole number".to_string(),
                    });
                }
                // 2^63 is exactly representable; anything at or past it does not fit.
                if f >= 9_223_372_036_854_775_808.0 {
                    return Err(out_of_range(field, &raw));
                }
                if f < 0.0 {
                    return Err(RejectReason::TimestampBeforeEpoch {
                        field: field.to_string(),
                        value: raw,
                    });
                }
                f as i64
            };
            timestamp_from_ms(field, ms, &raw)
        }
        other => Err(wrong_type(
            field,
            "an RFC 3339 string or integer epoch milliseconds",
            other,
        )),
    }
}

fn timestamp_from_ms(field: &str, ms: i64, raw: &str) -> Result<DateTime<Utc>, RejectReason> {
    if ms < 0 {
        return Err(RejectReason::TimestampBeforeEpoch {
            field: field.to_string(),
            value: raw.to_string(),
        });
    }
    DateTime::from_timestamp_millis(ms).ok_or_else(|| out_of_range(field, raw))
}

fn out_of_range(field: &str, raw: &str) -> RejectReason {
    RejectReason::TimestampOutOfRange {
        field: field.to_string(),
        value: raw.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Field access
// ---------------------------------------------------------------------------------------

/// A field's value, treating JSON `null` as absent.
fn present<'a>(obj: &'a Map<String, Json>, field: &str) -> Option<&'a Json> {
    obj.get(field).filter(|v| !v.is_null())
}

fn optional_str<'a>(
    obj: &'a Map<String, Json>,
    field: &str,
) -> Result<Option<&'a str>, RejectReason> {
    match present(obj, field) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

/// A required, non-blank string.
fn required_str<'a>(obj: &'a Map<String, Json>, field: &str) -> Result<&'a str, RejectReason> {
    let s = optional_str(obj, field)?.ok_or_else(|| RejectReason::MissingField {
        field: field.to_string(),
    })?;
    if s.trim().is_empty() {
        return Err(RejectReason::EmptyField {
            field: field.to_string(),
            value: str_snippet(s),
        });
    }
    Ok(s)
}

/// An identifier given as a string or a number (stringified); empty means absent.
/// `label` is how the field is named in messages (e.g. `context.sessionId`).
fn id_string(
    obj: &Map<String, Json>,
    field: &str,
    label: &str,
) -> Result<Option<String>, RejectReason> {
    match present(obj, field) {
        None => Ok(None),
        Some(Json::String(s)) if s.is_empty() => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(wrong_type(label, "a string or a number", other)),
    }
}

fn properties(obj: &Map<String, Json>) -> Result<Option<&Map<String, Json>>, RejectReason> {
    match present(obj, "properties") {
        None => Ok(None),
        Some(Json::Object(p)) => Ok(Some(p)),
        Some(other) => Err(RejectReason::PropertiesNotObject {
            got: json_kind(other),
            value: json_snippet(other),
        }),
    }
}

/// `event_name` / `event_type`: bounded length, no control characters.
fn name_field(field: &str, s: &str) -> Result<String, RejectReason> {
    let chars = s.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(RejectReason::FieldTooLong {
            field: field.to_string(),
            chars,
            limit: MAX_NAME_CHARS,
            value: str_snippet(s),
        });
    }
    if let Some((position, c)) = s.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(RejectReason::ControlCharacter {
            field: field.to_string(),
            character: format!("U+{:04X}", u32::from(c)),
            position,
            value: str_snippet(s),
        });
    }
    Ok(s.to_string())
}

fn parse_uuid(field: &str, s: &str) -> Result<Uuid, RejectReason> {
    Uuid::parse_str(s).map_err(|e| RejectReason::InvalidUuid {
        field: field.to_string(),
        value: str_snippet(s),
        error: e.to_string(),
    })
}

fn wrong_type(field: &str, expected: &'static str, got: &Json) -> RejectReason {
    RejectReason::WrongType {
        field: field.to_string(),
        expected,
        got: json_kind(got),
        value: json_snippet(got),
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------
// Parsing: one pass that keeps serde_json's line:column errors, catches duplicate top-level
// keys (serde_json would silently keep the last), and names what a non-object is.
// ---------------------------------------------------------------------------------------

enum TopLevel {
    Object(Map<String, Json>),
    Duplicate(String),
    Other(&'static str),
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a string"))
    }
    fn visit_unit<E>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        // Drain it so that syntax errors further on are still reported as such.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut obj = Map::new();
        let mut duplicate = None;
        while let Some(key) = map.next_key::<String>()? {
            let value: Json = map.next_value()?;
            if obj.contains_key(&key) {
                duplicate.get_or_insert(key);
            } else {
                obj.insert(key, value);
            }
        }
        Ok(match duplicate {
            Some(key) => TopLevel::Duplicate(key),
            None => TopLevel::Object(obj),
        })
    }
}

fn parse_object(text: &str) -> Result<Map<String, Json>, RejectReason> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de.deserialize_any(TopLevelVisitor).and_then(|top| {
        de.end()?;
        Ok(top)
    });
    match parsed {
        Ok(TopLevel::Object(obj)) => Ok(obj),
        Ok(TopLevel::Duplicate(key)) => Err(RejectReason::DuplicateKey {
            key: str_snippet(&key),
        }),
        Ok(TopLevel::Other(kind)) => Err(RejectReason::NotAnObject {
            kind,
            value: raw_snippet(text.trim()),
        }),
        Err(e) => {
            let message = e.to_string();
            if message.starts_with("recursion limit exceeded") {
                Err(RejectReason::NestingTooDeep {
                    field: "payload".to_string(),
                    depth: format!("over 128 (serde_json: {message})"),
                    limit: MAX_JSON_DEPTH,
                })
            } else {
                Err(RejectReason::InvalidJson {
                    near: near_error(text, e.line(), e.column()),
                    message,
                })
            }
        }
    }
}

/// Rejects objects nested deeper than [`MAX_JSON_DEPTH`], naming the top-level field.
fn check_depth(obj: &Map<String, Json>) -> Result<(), RejectReason> {
    for (key, value) in obj {
        let depth = 1 + json_depth(value);
        if depth > MAX_JSON_DEPTH {
            return Err(RejectReason::NestingTooDeep {
                field: str_snippet(key),
                depth: depth.to_string(),
                limit: MAX_JSON_DEPTH,
            });
        }
    }
    Ok(())
}

/// Depth of a JSON value: 0 for scalars, 1 + the deepest child for containers. Iterative,
/// though serde_json's recursion limit (128) already bounds it.
pub(super) fn json_depth(v: &Json) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Json::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            Json::Object(o) => {
                max = max.max(d + 1);
                stack.extend(o.values().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    max
}

// ---------------------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------------------

/// The text around serde_json's (1-based line, byte column) error position.
fn near_error(text: &str, line: usize, column: usize) -> String {
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(line - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    let at = (line_start + column.saturating_sub(1)).min(text.len());
    let mut start = at.saturating_sub(30);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + 30).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    if start == end {
        return "the end of the payload".to_string();
    }
    str_snippet(&text[start..end])
}

/// A string quoted as JSON (control characters escaped), cut to [`SNIPPET_CHARS`].
fn str_snippet(s: &str) -> String {
    match s.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", Json::from(&s[..cut])),
        None => Json::from(s).to_string(),
    }
}

/// Raw payload text with control characters escaped, cut to [`SNIPPET_CHARS`] (for a
/// non-object payload).
fn raw_snippet(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == SNIPPET_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value as compact text, cut to [`SNIPPET_CHARS`] without serializing all of a
/// large value.
fn json_snippet(v: &Json) -> String {
    struct Bounded(Vec<u8>);
    impl std::io::Write for Bounded {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let room = (SNIPPET_CHARS * 4 + 4).saturating_sub(self.0.len());
            if room == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let n = room.min(b.len());
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Bounded(Vec::new());
    let complete = serde_json::to_writer(&mut w, v).is_ok();
    let text = match String::from_utf8(w.0) {
        Ok(s) => s,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut b = e.into_bytes();
            b.truncate(valid);
            String::from_utf8(b).unwrap_or_default()
        }
    };
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if !complete => format!("{text}…"),
        None => text,
    }
}

/// UTF-8 text as is, anything else as `base64:<standard base64>`.
fn bytes_as_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!("base64:{}", base64_encode(b)),
    }
}

fn headers_json(headers: &[(String, Option<Vec<u8>>)]) -> Option<String> {
    if headers.is_empty() {
        return None;
    }
    let obj: Map<String, Json> = headers
        .iter()
        .map(|(name, value)| {
            let v = value
                .as_deref()
                .map_or(Json::Null, |b| Json::String(bytes_as_text(b)));
            (name.clone(), v)
        })
        .collect();
    Some(Json::Object(obj).to_string())
}

/// Standard base64 with padding (RFC 4648 section 4); the only encoding this module needs.
fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    const ORG: &str = "0b6f3c1e-7d2a-4c53-9f0e-2a1b3c4d5e6f";

    fn opts() -> DecodeOptions {
        DecodeOptions {
            max_message_bytes: 64 * 1024,
            max_future_skew: Duration::from_secs(3600),
            default_org_id: None,
            org_id_header: "x-org-id".to_string(),
            now: Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap(),
        }
    }

    fn meta() -> SourceMeta<'static> {
        SourceMeta {
            topic: "events",
            partition: 3,
            offset: 812,
            kafka_timestamp_ms: None,
            key: None,
            headers: &[],
        }
    }

    fn decode_json(v: &Json) -> Result<DecodedEvent, RejectReason> {
        decode(Some(v.to_string().as_bytes()), &meta(), &opts())
    }

    fn date_hour(row: &Row) -> (String, i32) {
        match (row.get("date"), row.get("hour")) {
            (Some(Value::String(d)), Some(Value::Int32(h))) => (d.clone(), *h),
            other => panic!("date/hour missing: {other:?}"),
        }
    }

    fn row_for_timestamp(ts: Json) -> Row {
        let v = json!({"org_id": ORG, "event_type": "t", "event_name": "n", "timestamp": ts});
        decode_json(&v).unwrap().to_row()
    }

    #[test]
    fn date_and_hour_at_day_boundaries_and_leap_day() {
        let cases = [
            (json!("2024-02-29T23:59:59.999Z"), "2024-02-29", 23),
            (json!(1_709_251_199_999i64), "2024-02-29", 23),
            (json!("2024-03-01T00:00:00Z"), "2024-03-01", 0),
            (json!(1_709_251_200_000i64), "2024-03-01", 0),
            // An offset is converted to UTC before the date is taken.
            (json!("2024-03-01T01:30:00+02:00"), "2024-02-29", 23),
            (json!("2023-12-31T23:59:59.999999Z"), "2023-12-31", 23),
            (json!(0), "1970-01-01", 0),
        ];
        for (ts, date, hour) in cases {
            let row = row_for_timestamp(ts.clone());
            assert_eq!(date_hour(&row), (date.to_string(), hour), "for {ts}");
        }
    }

    #[test]
    fn timestamp_is_stored_in_micros() {
        let row = row_for_timestamp(json!("2024-02-29T23:59:59.999999999Z"));
        let expected = Utc
            .with_ymd_and_hms(2024, 2, 29, 23, 59, 59)
            .unwrap()
            .timestamp_micros()
            + 999_999;
        assert_eq!(row.get("timestamp"), Some(&Value::Timestamp(expected)));
        let row = row_for_timestamp(json!(1_709_251_199_999i64));
        assert_eq!(
            row.get("timestamp"),
            Some(&Value::Timestamp(1_709_251_199_999_000))
        );
    }

    #[test]
    fn to_row_has_the_event_fields_and_omits_absent_ones() {
        let e = decode_json(&json!({"org_id": ORG, "event_type": "t", "event_name": "n"})).unwrap();
        let row = e.to_row();
        let names: Vec<&str> = row.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "org_id",
                "event_type",
                "event_name",
                "timestamp",
                "date",
                "hour",
                "topic",
                "partition",
                "offset"
            ]
        );
        assert_eq!(
            row.id(),
            Some(event_id_for("events", 3, 812, None).into_bytes())
        );
        assert_eq!(row.get("partition"), Some(&Value::Int32(3)));
        assert_eq!(row.get("offset"), Some(&Value::Int64(812)));
    }

    #[test]
    fn event_ids_are_stable() {
        // Pinned: a change here re-keys the events stored from now on, so a record read
        // again after an upgrade would be stored a second time.
        assert_eq!(
            event_id_for("events", 0, 0, Some(1_764_300_000_123)).to_string(),
            "019ac879-8b7b-74d9-9891-3ca8ed4a8f96"
        );
        assert_eq!(
            EVENT_ID_NAMESPACE.to_string(),
            "6406de7b-d6c1-49a3-9073-1d4af200eab5"
        );
        assert_ne!(
            event_id_for("events", 1, 0, None),
            event_id_for("events", 0, 1, None)
        );
        assert_ne!(
            event_id_for("a", 11, 1, None),
            event_id_for("a1", 1, 1, None)
        );
    }

    #[test]
    fn derived_ids_are_uuidv7_ordered_by_kafka_timestamp() {
        let at = |offset: i64, ms: Option<i64>| event_id_for("events", 2, offset, ms);
        let id = at(7, Some(1_764_300_000_123));
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_764_300_000, 123));
        // Later records sort after earlier ones whatever their position; within one
        // millisecond the position decides, and positions never collide.
        assert!(at(900, Some(1_764_300_000_123)) < at(5, Some(1_764_300_000_124)));
        assert_ne!(at(7, Some(1)), at(8, Some(1)));
        // No timestamp, a negative one, or one past the 48-bit range: time 0, still distinct.
        for ms in [None, Some(-1), Some(1 << 48)] {
            assert_eq!(at(7, ms).get_timestamp().unwrap().to_unix(), (0, 0));
        }
        assert_eq!(at(7, None), at(7, Some(-5)));
        assert_ne!(at(7, None), at(8, None));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
        }
        assert_eq!(base64_encode(&[0xff, 0xfe, 0x00]), "//4A");
        assert_eq!(bytes_as_text(&[0xff, 0xfe]), "base64://4=");
    }

    #[test]
    fn snippets_are_bounded() {
        let long = "x".repeat(10_000);
        assert!(str_snippet(&long).chars().count() <= SNIPPET_CHARS + 3);
        let big = json!({ "a": long, "b": [1, 2, 3] });
        let s = json_snippet(&big);
        assert!(
            s.ends_with('…') && s.chars().count() == SNIPPET_CHARS + 1,
            "{s}"
        );
        assert_eq!(json_snippet(&json!([1, "é"])), "[1,\"é\"]");
        assert_eq!(str_snippet("a\u{1}b"), "\"a\\u0001b\"");
    }

    #[test]
    fn invalid_json_points_at_the_error() {
        let err = decode(Some(b"{\n  \"org_id\": 12,\n  oops\n}"), &meta(), &opts()).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.code(), "invalid_json");
        assert!(
            msg.contains("line 3 column 3") && msg.contains("oops"),
            "{msg}"
        );
    }

    #[test]
    fn depth_limit_applies_at_65_levels() {
        let nested = |levels: usize| {
            // `levels` containers in total, counting the top-level object.
            let inner = format!("{}{}", "[".repeat(levels - 1), "]".repeat(levels - 1));
            format!(
                r#"{{"org_id":"{ORG}","event_type":"t","event_name":"n","properties":{{"a":{inner}}}}}"#
            )
        };
        // properties object is one level, so `levels - 1` arrays plus 2 objects.
        assert!(decode(Some(nested(63).as_bytes()), &meta(), &opts()).is_ok());
        let err = decode(Some(nested(64).as_bytes()), &meta(), &opts()).unwrap_err();
        assert_eq!(err.code(), "nesting_too_deep");
        assert!(
            err.to_string()
                .starts_with("\"properties\": JSON nesting depth 65"),
            "{err}"
        );
        let err = decode(Some(nested(500).as_bytes()), &meta(), &opts()).unwrap_err();
        assert_eq!(err.code(), "nesting_too_deep");
    }

    /// Per-event CPU of the consumer thread's share of ingest, on the payloads `streamtally
    /// produce` sends (the ingest benchmark's): `decode`, and `to_row` (which `flush` calls
    /// once per event; it keeps the decoded events for a retry, not a copy of the rows).
    /// Best of 5 rounds of 100k events. Run with
    /// `cargo test --release --lib decode_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing harness, prints ns/event"]
    fn decode_cost() {
        use std::time::Instant;
        let cfg = crate::synth::SynthConfig::new(100_000);
        let payloads: Vec<String> = (0..100_000)
            .map(|i| crate::produce::synthetic_json(&cfg, i))
            .collect();
        let o = DecodeOptions {
            now: Utc::now(),
            ..opts()
        };
        let n = payloads.len() as f64;
        let ns = |t: Instant| t.elapsed().as_nanos() as f64 / n;
        let (mut decode_ns, mut row_ns) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t = Instant::now();
            let events: Vec<DecodedEvent> = payloads
                .iter()
                .map(|p| decode(Some(p.as_bytes()), &meta(), &o).unwrap())
                .collect();
            decode_ns = decode_ns.min(ns(t));
            let t = Instant::now();
            let rows: Vec<Row> = events.iter().map(DecodedEvent::to_row).collect();
            row_ns = row_ns.min(ns(t));
            drop((rows, events));
        }
        println!(
            "decode {decode_ns:.0} ns/event, to_row {row_ns:.0} ns/event, total {:.0} ns/event",
            decode_ns + row_ns
        );
    }

    /// The fast path and the full parse agree: the same errors, and the same events, except
    /// that `properties` is the payload's own text, which the full parse used to parse and
    /// serialize again. (Not "parses to the same value": serde_json's default float parsing
    /// is not exact, so a parse of the serialized text can differ in the last bit of a float
    /// from a parse of the original.)
    fn assert_paths_agree(bytes: &[u8], meta: &SourceMeta, o: &DecodeOptions) {
        let fast = decode_with(Some(bytes), meta, o, true);
        let full = decode_with(Some(bytes), meta, o, false);
        match (fast, full) {
            (Ok(mut f), Ok(mut s)) => {
                let reserialized = f.properties.as_deref().map(|t| {
                    serde_json::from_str::<Json>(t)
                        .expect("stored text is JSON")
                        .to_string()
                });
                assert_eq!(reserialized, s.properties, "{bytes:?}");
                if let Some(t) = &f.properties {
                    assert!(t.starts_with('{') && t.ends_with('}'), "{t}");
                    // The store checks JSON columns this way too.
                    serde_json::from_str::<serde::de::IgnoredAny>(t).unwrap();
                }
                f.properties = None;
                s.properties = None;
                assert_eq!(f, s, "{bytes:?}");
            }
            (f, s) => assert_eq!(f, s, "{:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn properties_are_kept_as_sent() {
        let payload = format!(
            "{{\"org_id\":\"{ORG}\",\"event_type\":\"t\",\"event_name\":\"n\",\
             \"properties\" : {{ \"b\": 1.50, \"a\":[ {{}} ], \"b\":\"x\\u0041\" }} ,\"z\":{{}}}}"
        );
        let e = decode(Some(payload.as_bytes()), &meta(), &opts()).unwrap();
        assert_eq!(
            e.properties.as_deref(),
            Some("{ \"b\": 1.50, \"a\":[ {} ], \"b\":\"x\\u0041\" }")
        );
        assert_paths_agree(payload.as_bytes(), &meta(), &opts());
        // Re-reading the record gives the same row.
        let again = decode(Some(payload.as_bytes()), &meta(), &opts()).unwrap();
        assert_eq!(e.to_row(), again.to_row());
    }

    #[test]
    fn fast_path_edge_cases_match_the_full_parse() {
        let base = format!(r#""org_id":"{ORG}","event_type":"t","event_name":"n""#);
        let seg = r#""event":"e","userId":"u","context":{"x":1}"#;
        let cases = [
            // An escaped key is still the properties field.
            format!(r#"{{{base},"propert\u0069es":{{"a":1}}}}"#),
            format!(r#"{{{base},"properties":{{"a":"\ud800"}}}}"#),
            format!(r#"{{{base},"properties":{{"a":"\ud83d\ude00"}}}}"#),
            format!(r#"{{{base},"properties":{{"a":1e400}}}}"#),
            format!(r#"{{{base},"properties":{{"a":-0.0,"b":18446744073709551616}}}}"#),
            format!(r#"{{{base},"properties":{{"a":1}}}} x"#),
            format!(r#"{{{base},"properties":{{"a":1,}}}}"#),
            format!(r#"{{{base},"properties":null}}"#),
            format!(r#"{{{base},"properties":[]}}"#),
            format!(r#"{{{base},"properties":{{}},"properties":{{}}}}"#),
            format!(r#"{{{base},"x":1,"x":2}}"#),
            format!(r#"{{{base},"x":"\u00"}}"#),
            format!(r#"{{{base},"x":"}}"#),
            format!(r#"{{"properties":{{"a":"}}\"{{[\\"}}}},{base}}}"#),
            format!(r#"{{"properties":{{"a":1}},"event_name":null,{seg}}}"#),
            format!(
                r#"{{"properties":{{"session_id":7,"session_id":"s"}},{seg},"orgId":"{ORG}"}}"#
            ),
            format!(r#"{{"properties":{{"session_id":[]}},{seg},"orgId":"{ORG}"}}"#),
            format!(
                r#"{{"properties":{{"session_id":""}},"event":"e","userId":"u","orgId":"{ORG}"}}"#
            ),
            format!(
                r#"{{"properties":{{"session_id":5}},"event":"e","userId":"u","orgId":"{ORG}"}}"#
            ),
            format!(
                r#"{{"properties":{{"session_id":{{"a":[[1]]}}}},"event":"e","userId":"u","orgId":"{ORG}"}}"#
            ),
            format!("\t{{ {base} , \"properties\"\n:\r{{\"a\" : {{\"b\":[1, 2]}}}}\n}}\n"),
            "[1,2]".to_string(),
            "\"text\"".to_string(),
            "{}".to_string(),
            "{".to_string(),
        ];
        for c in &cases {
            assert_paths_agree(c.as_bytes(), &meta(), &opts());
        }
        // Nesting at and past the limit, in properties, in a field the decoder reads, in
        // one it does not, and past serde_json's own limit.
        for levels in [62, 63, 64, 65, 127, 128, 129, 200] {
            let arrays = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
            for field in ["properties", "context", "extra"] {
                let value = if field == "properties" {
                    format!(r#"{{"a":{arrays}}}"#)
                } else {
                    arrays.clone()
                };
                let c = format!(r#"{{{base},"{field}":{value}}}"#);
                assert_paths_agree(c.as_bytes(), &meta(), &opts());
            }
        }
    }

    #[test]
    fn utc_date_matches_chrono() {
        let mut cases: Vec<DateTime<Utc>> = [
            0i64,
            951_782_400_000,
            1_709_251_199_999,
            1_709_251_200_000,
            253_402_300_799_999,
            253_402_300_800_000,
        ]
        .iter()
        .map(|&ms| DateTime::from_timestamp_millis(ms).unwrap())
        .collect();
        cases.push(DateTime::<Utc>::MAX_UTC);
        cases.extend(
            (0..20_000).map(|d| DateTime::from_timestamp(d * 86_400 * 3 + 86_399, 0).unwrap()),
        );
        for ts in cases {
            assert_eq!(utc_date(&ts), ts.format("%Y-%m-%d").to_string(), "{ts:?}");
        }
    }

    fn any_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            any::<f64>().prop_map(Json::from),
            "\\PC{0,8}".prop_map(Json::from),
            "[\\x00-\\x1f\"\\\\]{0,3}".prop_map(Json::from),
            Just(json!(ORG)),
            Just(json!("2024-02-29T23:59:59Z")),
            Just(json!(1_709_251_199_999i64)),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                proptest::collection::btree_map(any_key(), inner, 0..6)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            // Every field the decoder reads, the nested ones it looks for, and others.
            proptest::sample::select(
                payload::READ_FIELDS
                    .iter()
                    .chain(&["properties", "sessionId"])
                    .copied()
                    .collect::<Vec<_>>()
            )
            .prop_map(String::from),
            "\\PC{0,5}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn fast_path_agrees_on_json_objects(
            fields in proptest::collection::btree_map(any_key(), any_json(), 0..10),
            required in proptest::collection::vec(any::<bool>(), 4),
            pretty in any::<bool>(),
            headers in headers_strategy(),
        ) {
            let mut obj: Map<String, Json> = fields.into_iter().collect();
            // Mostly valid events, so the field checks run too.
            if required[0] { obj.insert("org_id".into(), json!(ORG)); }
            if required[1] { obj.insert("event_type".into(), json!("t")); }
            if required[2] { obj.insert("event_name".into(), json!("n")); }
            if required[3] { obj.insert("event".into(), json!("e")); }
            let v = Json::Object(obj);
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            let meta = SourceMeta { headers: &headers, ..meta() };
            let mut o = opts();
            o.default_org_id = Some(Uuid::nil());
            assert_paths_agree(text.as_bytes(), &meta, &o);
        }

        #[test]
        fn fast_path_agrees_on_jsonish_text(text in jsonish(), headers in headers_strategy()) {
            let meta = SourceMeta { headers: &headers, ..meta() };
            assert_paths_agree(text.as_bytes(), &meta, &opts());
        }

        #[test]
        fn fast_path_agrees_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            assert_paths_agree(&bytes, &meta(), &opts());
        }
    }

    /// JSON-ish text: real tokens mixed so the parser gets past the first byte.
    fn jsonish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("null".to_string()),
            Just(format!("\"{ORG}\"")),
            Just("\"org_id\"".to_string()),
            Just("\"event_name\"".to_string()),
            Just("\"event_type\"".to_string()),
            Just("\"event\"".to_string()),
            Just("\"type\"".to_string()),
            Just("\"messageId\"".to_string()),
            Just("\"userId\"".to_string()),
            Just("\"properties\"".to_string()),
            Just("\"context\"".to_string()),
            Just("\"timestamp\"".to_string()),
            Just("\"2024-02-29T23:59:59Z\"".to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            "\"\\PC{0,8}\"",
            "[ -~]{0,4}",
        ];
        proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    fn headers_strategy() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
        let name = prop_oneof![Just("x-org-id".to_string()), "\\PC{0,6}"];
        let value = proptest::option::of(prop_oneof![
            Just(ORG.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]);
        proptest::collection::vec((name, value), 0..4)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            headers in headers_strategy(),
            kafka_ts in proptest::option::of(any::<i64>()),
            offset in any::<i64>(),
            // Any clock chrono can represent, and any skew: no overflow on either end.
            now_ms in proptest::option::of(-8_000_000_000_000_000i64..8_000_000_000_000_000),
            skew_secs in any::<u64>(),
        ) {
            let meta = SourceMeta { key: key.as_deref(), headers: &headers, kafka_timestamp_ms: kafka_ts, offset, ..meta() };
            let mut o = opts();
            o.default_org_id = Some(Uuid::nil());
            o.max_future_skew = Duration::from_secs(skew_secs);
            if let Some(ms) = now_ms {
                o.now = DateTime::from_timestamp_millis(ms).unwrap();
            }
            if let Ok(e) = decode(Some(&bytes), &meta, &o) {
                let _ = e.to_row();
            }
        }

        #[test]
        fn jsonish_text_never_panics(text in jsonish(), headers in headers_strategy()) {
            let meta = SourceMeta { headers: &headers, ..meta() };
            match decode(Some(text.as_bytes()), &meta, &opts()) {
                Ok(e) => { let _ = e.to_row(); }
                Err(r) => {
                    prop_assert!(RejectReason::ALL_CODES.contains(&r.code()));
                    prop_assert!(r.to_string().chars().count() < 1000);
                }
            }
        }

        #[test]
        fn native_events_round_trip(
            id in proptest::option::of(any::<u128>()),
            org in any::<u128>(),
            event_type in "[a-z_]{1,20}",
            event_name in "[\\w][\\PC]{0,60}",
            user_id in proptest::option::of("\\PC{1,30}"),
            session_id in proptest::option::of(any::<u32>()),
            properties in proptest::option::of(proptest::collection::btree_map(
                "\\PC{0,10}",
                prop_oneof![
                    Just(Json::Null),
                    any::<bool>().prop_map(Json::from),
                    any::<i64>().prop_map(Json::from),
                    "\\PC{0,20}".prop_map(Json::from),
                ],
                0..6,
            )),
            ts_ms in proptest::option::of(0i64..=1_717_243_200_000),
            ts_as_text in any::<bool>(),
        ) {
            let o = opts();
            let mut payload = json!({
                "org_id": Uuid::from_u128(org).to_string(),
                "event_type": event_type,
                "event_name": event_name,
            });
            let obj = payload.as_object_mut().unwrap();
            if let Some(id) = id { obj.insert("id".into(), json!(Uuid::from_u128(id).to_string())); }
            if let Some(u) = &user_id { obj.insert("user_id".into(), json!(u)); }
            if let Some(s) = session_id { obj.insert("session_id".into(), json!(s)); }
            let props: Option<Map<String, Json>> = properties.map(|p| p.into_iter().collect());
            if let Some(p) = &props { obj.insert("properties".into(), Json::Object(p.clone())); }
            let ts = ts_ms.map(|ms| DateTime::from_timestamp_millis(ms).unwrap());
            if let Some(ts) = ts {
                let v = if ts_as_text { json!(ts.to_rfc3339_opts(SecondsFormat::Millis, true)) } else { json!(ts.timestamp_millis()) };
                obj.insert("timestamp".into(), v);
            }

            let decoded = decode(Some(payload.to_string().as_bytes()), &meta(), &o).unwrap();
            let expected = DecodedEvent {
                id: id.map_or_else(|| event_id_for("events", 3, 812, None), Uuid::from_u128),
                id_from_payload: id.is_some(),
                org_id: Uuid::from_u128(org),
                event_type,
                event_name,
                user_id,
                session_id: session_id.map(|s| s.to_string()),
                properties: props.map(|p| Json::Object(p).to_string()),
                timestamp: ts.unwrap_or(o.now),
                topic: "events".into(),
                partition: 3,
                offset: 812,
                key: None,
                headers: None,
                dropped_fields: 0,
            };
            prop_assert_eq!(decoded, expected);
        }
    }
}
