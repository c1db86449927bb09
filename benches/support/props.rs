//! A per-property-key layout of `properties`, measured against the raw-text column: each
//! top-level key becomes its own column (the value's exact JSON text, dictionary-encoded when
//! it repeats), and a `shape` column keeps everything else of the text (braces, keys,
//! whitespace, order) with a 0x00 byte where each value was. Valid JSON never contains a raw
//! 0x00, so shape + key columns give back the producer's text byte for byte (checked here
//! for every event). Text that is not a flat-keyed object stays whole in `shape`.

use std::collections::HashMap;
use std::time::Duration;
use streamtally::schema::FieldType;
use streamtally::store::blocks::{encode_block, BlockReader};
use streamtally::store::{FieldLayout, Layout, Value, Values};

const SLOT: u8 = 0;

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string starting at `b[i] == '"'`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end (exclusive) of the JSON value (or slot byte) starting at `b[i]`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        SLOT => Some(i + 1),
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => j = string_end(b, j)? - 1,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let n = b[i..].iter().position(|c| b",}] \t\n\r".contains(c))?;
            Some(i + n)
        }
    }
}

/// `(shape, [(key text, value text)])` of a top-level object; `None` if `text` is not one
/// or repeats a key.
pub fn split(text: &str) -> Option<(String, Vec<(&str, &str)>)> {
    let b = text.as_bytes();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let (mut shape, mut kv, mut copied) = (Vec::with_capacity(b.len() / 2), Vec::new(), 0);
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (ws(b, i + 1) == b.len()).then(|| (text.to_string(), kv));
    }
    loop {
        let key_end = string_end(b, i).filter(|_| b[i] == b'"')?;
        let key = &text[i..key_end];
        i = ws(b, key_end);
        (b.get(i) == Some(&b':')).then_some(())?;
        let start = ws(b, i + 1);
        let end = value_end(b, start)?;
        shape.extend_from_slice(&b[copied..start]);
        shape.push(SLOT);
        copied = end;
        if kv.iter().any(|(k, _)| *k == key) {
            return None;
        }
        kv.push((key, &text[start..end]));
        i = ws(b, end);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') if ws(b, i + 1) == b.len() => break,
            _ => return None,
        }
    }
    shape.extend_from_slice(&b[copied..]);
    Some((String::from_utf8(shape).ok()?, kv))
}

/// The text back from its shape and `value(key)` for each slot.
pub fn join<'v>(shape: &str, mut value: impl FnMut(&str) -> &'v str) -> Option<String> {
    let Some((_, slots)) = split(shape) else {
        return Some(shape.to_string());
    };
    let mut out = String::with_capacity(shape.len() * 4);
    let mut keys = slots.iter().map(|(k, _)| *k);
    for part in shape.split('\0').enumerate() {
        if part.0 > 0 {
            out.push_str(value(keys.next()?));
        }
        out.push_str(part.1);
    }
    Some(out)
}

/// One block's `properties` as shape + per-key columns: (fields, rows, key names).
fn keyed(texts: &[Option<&str>]) -> (Vec<FieldLayout>, Vec<Values>, Vec<String>) {
    let mut keys: HashMap<String, usize> = HashMap::new();
    let mut names = Vec::new();
    let mut rows = Vec::with_capacity(texts.len());
    for text in texts {
        let mut row = vec![Value::Null; names.len() + 1];
        match text.map(|t| split(t).ok_or(t)) {
            None => {}
            Some(Err(whole)) => row[0] = Value::String(whole.to_string()),
            Some(Ok((shape, kv))) => {
                row[0] = Value::String(shape);
                for (k, v) in kv {
                    let col = *keys.entry(k.to_string()).or_insert_with(|| {
                        names.push(k.to_string());
                        names.len()
                    });
                    row.resize(row.len().max(col + 1), Value::Null);
                    row[col] = Value::String(v.to_string());
                }
            }
        }
        rows.push(row);
    }
    for row in &mut rows {
        row.resize(names.len() + 1, Value::Null);
    }
    let field = |name: &str, ty| FieldLayout {
        name: name.to_string(),
        ty,
        optional: true,
        default: None,
    };
    let fields = std::iter::once(field("shape", FieldType::String))
        .chain(names.iter().map(|n| field(n, FieldType::Json)))
        .collect();
    (fields, rows, names)
}

fn text_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Measures both layouts over the stream; returns their JSON lines.
pub fn run(
    layout: &Layout,
    events: u64,
    generate: impl Fn(u64, u64) -> Vec<Values>,
) -> Vec<String> {
    let entity = layout.entity("Event").expect("Event");
    let pos = entity.field_pos("properties").expect("properties");
    let text_field = vec![entity.fields[pos].clone()];
    let (block_rows, key, wanted) = (10_000u64, "\"browser\"", "\"Chrome\"");
    let (mut text_blocks, mut keyed_blocks) = (Vec::new(), Vec::new());
    let (mut text_bytes, mut keyed_bytes, mut encode_keyed) = (0, 0, Duration::ZERO);
    let mut from = 0;
    while from < events {
        let to = (from + block_rows).min(events);
        let rows = generate(from, to);
        let texts: Vec<Option<&str>> = rows.iter().map(|r| text_of(&r[pos])).collect();
        let column: Vec<Values> = rows.iter().map(|r| vec![r[pos].clone()]).collect();
        let block = encode_block(&text_field, &column).expect("text block");
        text_bytes += block.len();
        text_blocks.push(block);
        let started = super::cpu_now();
        let (fields, keyed_rows, names) = keyed(&texts);
        let block = encode_block(&fields, &keyed_rows).expect("keyed block");
        encode_keyed += super::cpu_now() - started;
        keyed_bytes += block.len();
        check_rebuild(&block, &names, &texts);
        keyed_blocks.push((block, names));
        from = to;
    }
    let started = super::cpu_now();
    let mut by_text = 0u64;
    for block in &text_blocks {
        for v in BlockReader::open(block).unwrap().column(0).unwrap() {
            let json: Option<serde_json::Value> =
                text_of(&v).and_then(|t| serde_json::from_str(t).ok());
            by_text += (json
                .as_ref()
                .and_then(|j| j.get("browser"))
                .and_then(|b| b.as_str())
                == Some("Chrome")) as u64;
        }
    }
    let text_time = super::cpu_now() - started;
    let started = super::cpu_now();
    let mut by_key = 0u64;
    for (block, names) in &keyed_blocks {
        let Some(col) = names.iter().position(|n| n == key) else {
            continue;
        };
        let values = BlockReader::open(block).unwrap().column(col + 1).unwrap();
        by_key += values.iter().filter(|v| text_of(v) == Some(wanted)).count() as u64;
    }
    let key_time = super::cpu_now() - started;
    assert_eq!(by_text, by_key, "both layouts count the same events");
    let per = |b: usize| (b as f64 / events as f64 * 100.0).round() / 100.0;
    let rate = |d: Duration| (events as f64 / d.as_secs_f64()).round();
    vec![serde_json::json!({
        "bench": "blocks_properties",
        "events": events,
        "block_rows": block_rows,
        "codec": streamtally::store::blocks::Compression::DEFAULT.name(),
        "text_bytes_per_event": per(text_bytes),
        "per_key_bytes_per_event": per(keyed_bytes),
        "per_key_encode_events_per_sec": rate(encode_keyed),
        "query": "count where properties.browser = \"Chrome\"",
        "matches": by_text,
        "query_text_parse_ms": (text_time.as_secs_f64() * 1000.0).round(),
        "query_per_key_column_ms": (key_time.as_secs_f64() * 1000.0).round(),
    })
    .to_string()]
}

/// Shape + key columns give back every event's exact text.
fn check_rebuild(block: &[u8], names: &[String], texts: &[Option<&str>]) {
    let reader = BlockReader::open(block).expect("keyed block opens");
    let rows = reader.rows_all().expect("keyed block decodes");
    for (row, text) in rows.iter().zip(texts) {
        let Some(shape) = text_of(&row[0]) else {
            assert!(text.is_none());
            continue;
        };
        let rebuilt = join(shape, |k| {
            let col = names.iter().position(|n| n == k).expect("key has a column");
            text_of(&row[col + 1]).expect("slot has a value")
        });
        assert_eq!(rebuilt.as_deref(), *text, "rebuilt text differs");
    }
}
