//! Parsing: one pass that keeps serde_json's line:column errors, catches duplicate top-level
//! keys (serde_json would silently keep the last), and names what a non-object is; and the
//! text forms (snippets, keys, headers) that messages and rows carry.

use super::*;

pub(super) enum TopLevel {
    Object(Map<String, Json>),
    Duplicate(String),
    Other(&'static str),
}

pub(super) struct TopLevelVisitor;

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

pub(super) fn parse_object(text: &str) -> Result<Map<String, Json>, RejectReason> {
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
pub(super) fn check_depth(obj: &Map<String, Json>) -> Result<(), RejectReason> {
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
pub(in crate::ingest) fn json_depth(v: &Json) -> usize {
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
pub(super) fn near_error(text: &str, line: usize, column: usize) -> String {
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
pub(super) fn str_snippet(s: &str) -> String {
    match s.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", Json::from(&s[..cut])),
        None => Json::from(s).to_string(),
    }
}

/// Raw payload text with control characters escaped, cut to [`SNIPPET_CHARS`] (for a
/// non-object payload).
pub(super) fn raw_snippet(s: &str) -> String {
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
pub(super) fn json_snippet(v: &Json) -> String {
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
pub(super) fn bytes_as_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!("base64:{}", base64_encode(b)),
    }
}

pub(super) fn headers_json(headers: &[(String, Option<Vec<u8>>)]) -> Option<String> {
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
pub(super) fn base64_encode(input: &[u8]) -> String {
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
