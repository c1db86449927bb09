//! Reading the fields of either payload shape into [`Fields`], each check naming the field
//! and the value.

use super::*;

/// The top-level fields a native payload is read from; any other is dropped.
pub(super) const NATIVE_FIELDS: &[&str] = &[
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
pub(super) const SEGMENT_FIELDS: &[&str] = &[
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
pub(super) struct Fields<'a> {
    pub(super) id: Option<Uuid>,
    pub(super) org_id: Uuid,
    pub(super) event_type: String,
    pub(super) event_name: String,
    pub(super) user_id: Option<String>,
    pub(super) session_id: Option<String>,
    pub(super) properties: Option<&'a Map<String, Json>>,
    pub(super) timestamp: Option<DateTime<Utc>>,
}

pub(super) fn is_segment_shape(obj: &Map<String, Json>) -> bool {
    !obj.contains_key("event_name")
        && ["event", "messageId", "userId", "anonymousId"]
            .iter()
            .any(|k| present(obj, k).is_some())
}

pub(super) fn native_fields(obj: &Map<String, Json>) -> Result<Fields<'_>, RejectReason> {
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

pub(super) fn segment_fields<'a>(
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
pub(super) fn segment_org_id(
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
pub(super) fn event_time(
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

pub(super) fn timestamp_from_json(field: &str, v: &Json) -> Result<DateTime<Utc>, RejectReason> {
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

pub(super) fn timestamp_from_ms(
    field: &str,
    ms: i64,
    raw: &str,
) -> Result<DateTime<Utc>, RejectReason> {
    if ms < 0 {
        return Err(RejectReason::TimestampBeforeEpoch {
            field: field.to_string(),
            value: raw.to_string(),
        });
    }
    DateTime::from_timestamp_millis(ms).ok_or_else(|| out_of_range(field, raw))
}

pub(super) fn out_of_range(field: &str, raw: &str) -> RejectReason {
    RejectReason::TimestampOutOfRange {
        field: field.to_string(),
        value: raw.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Field access
// ---------------------------------------------------------------------------------------

/// A field's value, treating JSON `null` as absent.
pub(super) fn present<'a>(obj: &'a Map<String, Json>, field: &str) -> Option<&'a Json> {
    obj.get(field).filter(|v| !v.is_null())
}

pub(super) fn optional_str<'a>(
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
pub(super) fn required_str<'a>(
    obj: &'a Map<String, Json>,
    field: &str,
) -> Result<&'a str, RejectReason> {
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
pub(super) fn id_string(
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

pub(super) fn properties(
    obj: &Map<String, Json>,
) -> Result<Option<&Map<String, Json>>, RejectReason> {
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
pub(super) fn name_field(field: &str, s: &str) -> Result<String, RejectReason> {
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

pub(super) fn parse_uuid(field: &str, s: &str) -> Result<Uuid, RejectReason> {
    Uuid::parse_str(s).map_err(|e| RejectReason::InvalidUuid {
        field: field.to_string(),
        value: str_snippet(s),
        error: e.to_string(),
    })
}

pub(super) fn wrong_type(field: &str, expected: &'static str, got: &Json) -> RejectReason {
    RejectReason::WrongType {
        field: field.to_string(),
        expected,
        got: json_kind(got),
        value: json_snippet(got),
    }
}

pub(super) fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}
