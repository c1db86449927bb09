//! Byte encodings the store owns: order-preserving index keys, deterministic upsert ids, and
//! the conversion of rows into ormdb-core's record format.
//!
//! Index keys sort like the values they encode, so a range over an index is a range over
//! sled keys: each component is a presence tag (0 = null, 1 = value) followed by the value.
//! Integers and timestamps are big-endian with the sign bit flipped, floats use the IEEE
//! total order, strings escape 0x00 as 0x00 0xFF and end with 0x00 0x01.

use crate::schema::FieldType;
use ormdb_core::proto::Value;

/// Namespace of deterministic row ids (UUIDv5) derived from a `@unique` key.
pub const UPSERT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
    0x6b, 0x2c, 0x1d, 0x3e, 0x9f, 0x41, 0x4a, 0x52, 0x8e, 0x17, 0x5a, 0x0c, 0x33, 0x21, 0x7e, 0x90,
]);

/// Appends one index-key component for `value`.
pub fn encode_component(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => buf.push(0),
        Value::Bool(b) => buf.extend_from_slice(&[1, *b as u8]),
        Value::Int32(n) => {
            buf.push(1);
            buf.extend_from_slice(&((*n as u32) ^ 0x8000_0000).to_be_bytes());
        }
        Value::Int64(n) | Value::Timestamp(n) => {
            buf.push(1);
            buf.extend_from_slice(&((*n as u64) ^ 0x8000_0000_0000_0000).to_be_bytes());
        }
        Value::Float64(f) => {
            buf.push(1);
            let bits = f.to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            buf.extend_from_slice(&ordered.to_be_bytes());
        }
        Value::Uuid(u) => {
            buf.push(1);
            buf.extend_from_slice(u);
        }
        Value::String(s) => {
            buf.push(1);
            for &b in s.as_bytes() {
                buf.push(b);
                if b == 0 {
                    buf.push(0xFF);
                }
            }
            buf.extend_from_slice(&[0, 1]);
        }
        // The schema admits no other types; anything else sorts last as its debug text.
        other => {
            buf.push(2);
            buf.extend_from_slice(format!("{other:?}").as_bytes());
        }
    }
}

/// Decodes one component of type `ty` from the front of `bytes`; returns it and the rest.
pub fn decode_component(ty: FieldType, bytes: &[u8]) -> Option<(Value, &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    if tag == 0 {
        return Some((Value::Null, rest));
    }
    match ty {
        FieldType::Bool => Some((Value::Bool(*rest.first()? == 1), &rest[1..])),
        FieldType::Int32 => {
            let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) ^ 0x8000_0000;
            Some((Value::Int32(n as i32), &rest[4..]))
        }
        FieldType::Int64 | FieldType::Timestamp => {
            let n = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) ^ (1 << 63);
            let v = if ty == FieldType::Int64 {
                Value::Int64(n as i64)
            } else {
                Value::Timestamp(n as i64)
            };
            Some((v, &rest[8..]))
        }
        FieldType::Float64 => {
            let o = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            let bits = if o >> 63 == 1 { o & !(1 << 63) } else { !o };
            Some((Value::Float64(f64::from_bits(bits)), &rest[8..]))
        }
        FieldType::Uuid => Some((Value::Uuid(rest.get(..16)?.try_into().ok()?), &rest[16..])),
        FieldType::String | FieldType::Json => {
            let mut out = Vec::new();
            let mut i = 0;
            loop {
                let b = *rest.get(i)?;
                if b == 0 {
                    match *rest.get(i + 1)? {
                        0xFF => out.push(0),
                        1 => break,
                        _ => return None,
                    }
                    i += 2;
                } else {
                    out.push(b);
                    i += 1;
                }
            }
            Some((Value::String(String::from_utf8(out).ok()?), &rest[i + 2..]))
        }
    }
}

/// The length of the component of type `ty` at the front of `bytes`, without decoding it.
pub fn component_len(ty: FieldType, bytes: &[u8]) -> Option<usize> {
    let (&tag, rest) = bytes.split_first()?;
    if tag == 0 {
        return Some(1);
    }
    let body = match ty {
        FieldType::Bool => 1,
        FieldType::Int32 => 4,
        FieldType::Int64 | FieldType::Timestamp | FieldType::Float64 => 8,
        FieldType::Uuid => 16,
        FieldType::String | FieldType::Json => {
            // Ends at the first 0x00 0x01; 0x00 0xFF is an escaped zero byte.
            let mut i = 0;
            loop {
                let at = i + rest.get(i..)?.iter().position(|&b| b == 0)?;
                match *rest.get(at + 1)? {
                    1 => break at + 2,
                    0xFF => i = at + 2,
                    _ => return None,
                }
            }
        }
    };
    (body <= rest.len()).then_some(1 + body)
}

/// The smallest byte string greater than every key starting with `prefix`.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// The id of the row whose `@unique` key has these values in `entity`. Trailing nulls are
/// left out, so optional fields appended to a key keep the ids of the rows that leave them
/// unset (HourlyStats gained `topic` and `partition` this way).
pub fn upsert_id(entity: &str, key_values: &[&Value]) -> [u8; 16] {
    let mut name = Vec::with_capacity(64);
    name.extend_from_slice(entity.as_bytes());
    name.push(0);
    let set = key_values
        .iter()
        .rposition(|v| **v != Value::Null)
        .map_or(0, |last| last + 1);
    for v in &key_values[..set] {
        encode_component(&mut name, v);
    }
    *uuid::Uuid::new_v5(&UPSERT_NAMESPACE, &name).as_bytes()
}

/// Human-readable form of a value for error messages.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int32(n) => n.to_string(),
        Value::Int64(n) => n.to_string(),
        Value::Float64(f) => f.to_string(),
        Value::Timestamp(t) => format!("timestamp {t}us"),
        Value::Uuid(u) => uuid::Uuid::from_bytes(*u).to_string(),
        Value::String(s) if s.chars().count() > 80 => {
            format!("{:?}...", s.chars().take(80).collect::<String>())
        }
        Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// The name of a value's type, as the schema spells it.
pub fn value_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Int32(_) => "int32",
        Value::Int64(_) => "int64",
        Value::Float32(_) => "float32",
        Value::Float64(_) => "float64",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Timestamp(_) => "timestamp",
        Value::Uuid(_) => "uuid",
        _ => "array",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(v: &Value) -> Vec<u8> {
        let mut b = Vec::new();
        encode_component(&mut b, v);
        b
    }

    proptest! {
        #[test]
        fn int64_order_is_preserved(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), key(&Value::Int64(a)).cmp(&key(&Value::Int64(b))));
        }

        #[test]
        fn float_order_is_preserved(a in -1e300f64..1e300, b in -1e300f64..1e300) {
            prop_assert_eq!(a.partial_cmp(&b).unwrap(), key(&Value::Float64(a)).cmp(&key(&Value::Float64(b))));
        }

        #[test]
        fn string_order_and_roundtrip(a in "\\PC{0,12}", b in "\\PC{0,12}", tail: Vec<u8>) {
            prop_assert_eq!(a.as_bytes().cmp(b.as_bytes()), key(&Value::String(a.clone())).cmp(&key(&Value::String(b.clone()))));
            let mut k = key(&Value::String(a.clone()));
            k.extend_from_slice(&tail);
            let (v, rest) = decode_component(FieldType::String, &k).unwrap();
            prop_assert_eq!(v, Value::String(a));
            prop_assert_eq!(rest, &tail[..]);
        }

        #[test]
        fn int32_and_timestamp_roundtrip(a: i32, t: i64) {
            let k = key(&Value::Int32(a));
            prop_assert_eq!(decode_component(FieldType::Int32, &k).unwrap().0, Value::Int32(a));
            let k = key(&Value::Timestamp(t));
            prop_assert_eq!(decode_component(FieldType::Timestamp, &k).unwrap().0, Value::Timestamp(t));
        }
    }

    #[test]
    fn strings_with_nul_bytes_roundtrip_and_sort_before_longer_strings() {
        let a = Value::String("a\0b".into());
        let encoded = key(&a);
        let (v, rest) = decode_component(FieldType::String, &encoded).unwrap();
        assert_eq!(v, a);
        assert!(rest.is_empty());
        assert!(key(&Value::String("a".into())) < key(&a));
        assert!(key(&Value::Null) < key(&Value::String(String::new())));
    }

    #[test]
    fn upsert_ids_are_deterministic_and_key_sensitive() {
        let org = Value::Uuid([7; 16]);
        let d1 = Value::String("2026-01-01".into());
        let d2 = Value::String("2026-01-02".into());
        assert_eq!(
            upsert_id("DailyStats", &[&org, &d1]),
            upsert_id("DailyStats", &[&org, &d1])
        );
        assert_ne!(
            upsert_id("DailyStats", &[&org, &d1]),
            upsert_id("DailyStats", &[&org, &d2])
        );
        assert_ne!(
            upsert_id("DailyStats", &[&org, &d1]),
            upsert_id("HourlyStats", &[&org, &d1])
        );
        // Trailing nulls are left out; a null before a value is not.
        assert_eq!(
            upsert_id("DailyStats", &[&org, &d1]),
            upsert_id("DailyStats", &[&org, &d1, &Value::Null, &Value::Null])
        );
        assert_ne!(
            upsert_id("DailyStats", &[&org, &d1, &Value::Null, &Value::Int32(0)]),
            upsert_id("DailyStats", &[&org, &d1, &Value::Int32(0)])
        );
    }

    #[test]
    fn component_len_agrees_with_decode() {
        let values = [
            (FieldType::String, Value::String("a\0b\0\0".into())),
            (FieldType::String, Value::String(String::new())),
            (FieldType::Json, Value::String("{\"k\":1}".into())),
            (FieldType::Timestamp, Value::Timestamp(-5)),
            (FieldType::Int32, Value::Int32(7)),
            (FieldType::Uuid, Value::Uuid([9; 16])),
            (FieldType::Bool, Value::Bool(true)),
            (FieldType::Float64, Value::Float64(-0.5)),
            (FieldType::String, Value::Null),
        ];
        for (ty, v) in values {
            let mut b = Vec::new();
            encode_component(&mut b, &v);
            b.extend_from_slice(&[0, 1, 2]);
            let (_, rest) = decode_component(ty, &b).unwrap();
            assert_eq!(component_len(ty, &b), Some(b.len() - rest.len()), "{v:?}");
            assert_eq!(
                component_len(ty, &b[..b.len() - rest.len() - 1]),
                None,
                "{v:?} cut"
            );
        }
    }

    #[test]
    fn prefix_successor_skips_ff_bytes() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF]), None);
    }
}
