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

mod fields;
mod json;

use super::payload;
use crate::store::{Row, Value};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use fields::*;
/// The fast path (`payload`) measures depth the same way.
pub(super) use json::json_depth;
use json::*;
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

/// The payload as JSON text: present, within the size limit, UTF-8 (a byte-order mark
/// removed).
fn payload_text<'p>(
    payload: Option<&'p [u8]>,
    opts: &DecodeOptions,
) -> Result<&'p str, RejectReason> {
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
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// [`decode`], with the fast path (`payload::read`) turned off for `fast_path = false`: the
/// tests hold the two paths to the same results.
fn decode_with(
    payload: Option<&[u8]>,
    meta: &SourceMeta,
    opts: &DecodeOptions,
    fast_path: bool,
) -> Result<DecodedEvent, RejectReason> {
    let text = payload_text(payload, opts)?;
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

#[cfg(test)]
mod tests;
