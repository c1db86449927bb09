//! The decoder's fast path: one serde_json pass over a payload that builds `serde_json::Value`s
//! only for the top-level fields the decoder reads, and keeps the `properties` object as the
//! payload's own text instead of a parsed tree (which the decoder used to serialize again).
//!
//! It accepts exactly what the full parse in `decode` accepts: the same serde_json
//! deserializer reads every value through `deserialize_any`, so strings (escapes, surrogate
//! pairs), numbers (range), nesting (serde_json's recursion limit) and trailing characters are
//! checked the same way. Anything else, a payload that is not an object, a duplicate top-level
//! key, nesting past [`MAX_JSON_DEPTH`], `properties` that is neither an object nor null, or a
//! syntax error, returns `None`, and `decode` runs the full parse, which says why.

use super::decode::MAX_JSON_DEPTH;
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};
use std::borrow::Cow;
use std::fmt;

/// The top-level fields `decode` reads (native and Segment shapes); every other field is only
/// validated.
pub(super) const READ_FIELDS: &[&str] = &[
    "id",
    "org_id",
    "orgId",
    "event_type",
    "event_name",
    "event",
    "type",
    "name",
    "user_id",
    "userId",
    "anonymousId",
    "session_id",
    "messageId",
    "timestamp",
    "context",
];

/// A payload the fast path read.
pub(super) struct Payload<'t> {
    /// The fields in [`READ_FIELDS`] that the payload has (nulls included, as in the full
    /// parse), and `properties`: null, or an object holding only its `session_id` (the one
    /// property the decoder reads).
    pub fields: Map<String, Json>,
    /// The `properties` object's text as it appears in the payload (already validated).
    pub properties: Option<&'t str>,
    /// Top-level fields neither payload shape reads (not in `fields`).
    pub unread: usize,
}

/// Reads `text` if the fast path can; `None` sends it to the full parse.
pub(super) fn read(text: &str) -> Option<Payload<'_>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let top = de.deserialize_any(TopLevel).ok()?;
    de.end().ok()?;
    let properties = if top.properties_object {
        let raw = top_level_value(text, "properties")?;
        raw.starts_with('{').then_some(raw)?;
        Some(raw)
    } else {
        None
    };
    Some(Payload {
        fields: top.fields,
        properties,
        unread: top.unread,
    })
}

fn fallback<E: de::Error>() -> E {
    E::custom("not for the fast path")
}

struct Top {
    fields: Map<String, Json>,
    properties_object: bool,
    unread: usize,
}

struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut fields = Map::new();
        let mut properties_object = false;
        let mut unread = 0;
        let mut keys: Vec<Cow<'de, str>> = Vec::with_capacity(16);
        while let Some(key) = map.next_key_seed(Key)? {
            if keys.contains(&key) {
                return Err(fallback());
            }
            let depth = if key == "properties" {
                let (value, depth) = match map.next_value_seed(PropertiesSeed)? {
                    Properties::Null => (Json::Null, 0),
                    Properties::Object { depth, session_id } => {
                        properties_object = true;
                        let mut p = Map::new();
                        if let Some(s) = session_id {
                            p.insert("session_id".to_string(), s);
                        }
                        (Json::Object(p), depth)
                    }
                    Properties::Other => return Err(fallback()),
                };
                fields.insert("properties".to_string(), value);
                depth
            } else if READ_FIELDS.contains(&key.as_ref()) {
                let value: Json = map.next_value()?;
                let depth = super::decode::json_depth(&value);
                fields.insert(key.to_string(), value);
                depth
            } else {
                unread += 1;
                map.next_value_seed(Depth)?
            };
            if 1 + depth > MAX_JSON_DEPTH {
                return Err(fallback());
            }
            keys.push(key);
        }
        Ok(Top {
            fields,
            properties_object,
            unread,
        })
    }
}

/// An object key, borrowed from the payload when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_string()))
    }
}

/// Validates a key without keeping it; says whether it is `session_id`.
struct IsSessionId;

impl<'de> DeserializeSeed<'de> for IsSessionId {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsSessionId {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        Ok(s == "session_id")
    }
}

/// Validates any JSON value without building it, and returns its depth (0 for scalars,
/// 1 + the deepest child for containers, as `json_depth` counts).
struct Depth;

impl<'de> DeserializeSeed<'de> for Depth {
    type Value = usize;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Depth {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_str<E>(self, _: &str) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut deepest = 0;
        while let Some(d) = seq.next_element_seed(Depth)? {
            deepest = deepest.max(d);
        }
        Ok(1 + deepest)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut deepest = 0;
        while map.next_key_seed(IsSessionId)?.is_some() {
            deepest = deepest.max(map.next_value_seed(Depth)?);
        }
        Ok(1 + deepest)
    }
}

/// The `properties` value, validated but not built.
enum Properties {
    Null,
    /// `session_id` is the last `session_id` property (the full parse keeps the last of a
    /// repeated key too).
    Object {
        depth: usize,
        session_id: Option<Json>,
    },
    Other,
}

struct PropertiesSeed;

impl<'de> DeserializeSeed<'de> for PropertiesSeed {
    type Value = Properties;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Properties, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PropertiesSeed {
    type Value = Properties;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Properties, E> {
        Ok(Properties::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Properties, E> {
        Ok(Properties::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Properties, E> {
        Ok(Properties::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Properties, E> {
        Ok(Properties::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Properties, E> {
        Ok(Properties::Other)
    }
    fn visit_unit<E>(self) -> Result<Properties, E> {
        Ok(Properties::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Properties, A::Error> {
        while seq.next_element_seed(Depth)?.is_some() {}
        Ok(Properties::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Properties, A::Error> {
        let mut deepest = 0;
        let mut session_id = None;
        while let Some(is_session_id) = map.next_key_seed(IsSessionId)? {
            if is_session_id {
                let v: Json = map.next_value()?;
                deepest = deepest.max(super::decode::json_depth(&v));
                session_id = Some(v);
            } else {
                deepest = deepest.max(map.next_value_seed(Depth)?);
            }
        }
        Ok(Properties::Object {
            depth: 1 + deepest,
            session_id,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Locating a top-level value's text. Runs only on text serde_json has accepted as one JSON
// object without duplicate keys, so it needs no error reporting: anything unexpected gives
// `None` (and the full parse).
// ---------------------------------------------------------------------------------------

/// The text of top-level field `name`'s value in the JSON object `text`.
fn top_level_value<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key = text.get(i..key_end)?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        if key_is(key, name) {
            return text.get(start..end);
        }
        i = skip_ws(b, end);
        if b.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

/// Whether the quoted JSON string `quoted` is `name` (decoding escapes if it has any).
fn key_is(quoted: &str, name: &str) -> bool {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(quoted);
    if inner.contains('\\') {
        serde_json::from_str::<String>(quoted).is_ok_and(|k| k == name)
    } else {
        inner == name
    }
}

/// JSON's four whitespace characters (what serde_json skips).
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index just past the string that starts (with its quote) at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// The index just past the value that starts at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while !matches!(
                b.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                j += 1;
            }
            Some(j)
        }
    }
}
