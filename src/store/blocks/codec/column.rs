//! One column's values (the present ones: nulls are the block's bitmap) as bytes, in the
//! encoding that suits them best in this block, and back.
//!
//! The choice is made per block from the data, because the same field is a handful of
//! values in one block (one partition's topic, a day's dates) and all distinct in another.

use super::bytes::{put_bitmap, put_varint, unzigzag, varint_len, zigzag, Bad, Cursor};
use crate::schema::FieldType;
use ormdb_core::proto::Value;
use rustc_hash::FxHashMap;

/// How a column's present values are laid out before compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One after another: uuids as 16 bytes, strings length-prefixed, integers as zigzag
    /// varints, floats as 8 little-endian bytes of their bits, bools as a bitmap.
    Plain,
    /// Every value is the same: it is stored once.
    Constant,
    /// Strings: the distinct values once, then each row's index into them as a varint.
    Dict,
    /// Integers and timestamps: the first value, then each difference from the previous
    /// one (wrapping), as zigzag varints.
    Delta,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Plain => "plain",
            Encoding::Constant => "constant",
            Encoding::Dict => "dict",
            Encoding::Delta => "delta",
        }
    }

    pub(super) fn tag(self) -> u8 {
        self as u8
    }

    pub(super) fn from_tag(tag: u8) -> Option<Encoding> {
        [
            Encoding::Plain,
            Encoding::Constant,
            Encoding::Dict,
            Encoding::Delta,
        ]
        .get(tag as usize)
        .copied()
    }
}

/// A dictionary pays off only when values repeat; past this share of distinct values the
/// search for it stops (a column of event ids or JSON payloads stops after half a block).
const DICT_MAX_DISTINCT_SHARE: f64 = 0.5;

/// Whether `value` is what a field of type `ty` holds.
pub(super) fn fits(ty: FieldType, value: &Value) -> bool {
    matches!(
        (ty, value),
        (FieldType::Uuid, Value::Uuid(_))
            | (FieldType::String | FieldType::Json, Value::String(_))
            | (FieldType::Timestamp, Value::Timestamp(_))
            | (FieldType::Int32, Value::Int32(_))
            | (FieldType::Int64, Value::Int64(_))
            | (FieldType::Float64, Value::Float64(_))
            | (FieldType::Bool, Value::Bool(_))
    )
}

/// Appends `values` (present, each [`fits`] `ty`) in the best encoding and returns it.
pub(super) fn encode_values(ty: FieldType, values: &[&Value], out: &mut Vec<u8>) -> Encoding {
    let Some(first) = values.first() else {
        return Encoding::Plain;
    };
    if values.iter().all(|v| same(v, first)) {
        encode_plain(ty, &values[..1], out);
        return Encoding::Constant;
    }
    match ty {
        FieldType::String | FieldType::Json => {
            let strs: Vec<&str> = values.iter().map(|v| str_of(v)).collect();
            if encode_dict(&strs, out) {
                return Encoding::Dict;
            }
        }
        FieldType::Timestamp | FieldType::Int32 | FieldType::Int64 => {
            let ints: Vec<i64> = values.iter().map(|v| int_of(v)).collect();
            return encode_ints(&ints, out);
        }
        _ => {}
    }
    encode_plain(ty, values, out);
    Encoding::Plain
}

/// Equality that holds for floats bit for bit (NaN, -0.0), so Constant round-trips them.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

fn str_of(v: &Value) -> &str {
    match v {
        Value::String(s) => s,
        _ => "",
    }
}

fn int_of(v: &Value) -> i64 {
    match v {
        Value::Int32(n) => i64::from(*n),
        Value::Int64(n) | Value::Timestamp(n) => *n,
        _ => 0,
    }
}

fn encode_plain(ty: FieldType, values: &[&Value], out: &mut Vec<u8>) {
    if ty == FieldType::Bool {
        put_bitmap(out, values.iter().map(|v| matches!(v, Value::Bool(true))));
        return;
    }
    for v in values {
        match v {
            Value::Uuid(u) => out.extend_from_slice(u),
            Value::String(s) => {
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Float64(f) => out.extend_from_slice(&f.to_bits().to_le_bytes()),
            other => put_varint(out, zigzag(int_of(other))),
        }
    }
}

/// Writes `strs` as a dictionary if that is smaller than plain text; false if not.
fn encode_dict(strs: &[&str], out: &mut Vec<u8>) -> bool {
    let limit = (strs.len() as f64 * DICT_MAX_DISTINCT_SHARE) as usize;
    let mut ids: FxHashMap<&str, u32> = FxHashMap::default();
    let mut order: Vec<&str> = Vec::new();
    let mut row_ids = Vec::with_capacity(strs.len());
    for s in strs {
        let next = order.len() as u32;
        let id = *ids.entry(s).or_insert(next);
        if id == next {
            if order.len() >= limit {
                return false;
            }
            order.push(s);
        }
        row_ids.push(id);
    }
    let text = |s: &&str| varint_len(s.len() as u64) + s.len();
    let plain: usize = strs.iter().map(text).sum();
    let dict: usize = order.iter().map(text).sum::<usize>()
        + row_ids
            .iter()
            .map(|&i| varint_len(u64::from(i)))
            .sum::<usize>();
    if dict >= plain {
        return false;
    }
    put_varint(out, order.len() as u64);
    for s in &order {
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    for id in row_ids {
        put_varint(out, u64::from(id));
    }
    true
}

/// Integers as deltas or plain, whichever is smaller before compression.
fn encode_ints(ints: &[i64], out: &mut Vec<u8>) -> Encoding {
    let delta = |i: usize| match i {
        0 => ints[0],
        _ => ints[i].wrapping_sub(ints[i - 1]),
    };
    let plain_len: usize = ints.iter().map(|&v| varint_len(zigzag(v))).sum();
    let delta_len: usize = (0..ints.len()).map(|i| varint_len(zigzag(delta(i)))).sum();
    if delta_len <= plain_len {
        for i in 0..ints.len() {
            put_varint(out, zigzag(delta(i)));
        }
        Encoding::Delta
    } else {
        for &v in ints {
            put_varint(out, zigzag(v));
        }
        Encoding::Plain
    }
}

/// Reads `m` present values of type `ty` written in encoding `enc`.
pub(super) fn decode_values(
    ty: FieldType,
    enc: Encoding,
    m: usize,
    cur: &mut Cursor,
) -> Result<Vec<Value>, Bad> {
    match (enc, ty) {
        (_, _) if m == 0 => Ok(Vec::new()),
        (Encoding::Plain, _) => decode_plain(ty, m, cur),
        (Encoding::Constant, _) => {
            let v = decode_plain(ty, 1, cur)?
                .pop()
                .ok_or("constant is missing")?;
            Ok(vec![v; m])
        }
        (Encoding::Dict, FieldType::String | FieldType::Json) => decode_dict(m, cur),
        (Encoding::Delta, FieldType::Timestamp | FieldType::Int32 | FieldType::Int64) => {
            let mut out = Vec::with_capacity(m.min(cur.remaining()));
            let mut prev = 0i64;
            for _ in 0..m {
                prev = prev.wrapping_add(unzigzag(cur.varint()?));
                out.push(int_value(ty, prev)?);
            }
            Ok(out)
        }
        (enc, ty) => Err(format!(
            "encoding {} does not apply to {}",
            enc.name(),
            ty.name()
        )),
    }
}

fn int_value(ty: FieldType, v: i64) -> Result<Value, Bad> {
    Ok(match ty {
        FieldType::Timestamp => Value::Timestamp(v),
        FieldType::Int64 => Value::Int64(v),
        _ => Value::Int32(i32::try_from(v).map_err(|_| format!("{v} is not an int32"))?),
    })
}

fn decode_string(cur: &mut Cursor) -> Result<String, Bad> {
    let len = cur.count("string length", cur.remaining())?;
    let at = cur.pos();
    let bytes = cur.take(len)?;
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("string at byte {at}: {e}"))
}

fn decode_plain(ty: FieldType, m: usize, cur: &mut Cursor) -> Result<Vec<Value>, Bad> {
    if ty == FieldType::Bool {
        return Ok(cur.bitmap(m)?.into_iter().map(Value::Bool).collect());
    }
    let mut out = Vec::with_capacity(m.min(cur.remaining()));
    for _ in 0..m {
        out.push(match ty {
            FieldType::Uuid => {
                let b = cur.take(16)?;
                let mut u = [0u8; 16];
                u.copy_from_slice(b);
                Value::Uuid(u)
            }
            FieldType::String | FieldType::Json => Value::String(decode_string(cur)?),
            FieldType::Float64 => {
                let b = cur.take(8)?;
                let mut bits = [0u8; 8];
                bits.copy_from_slice(b);
                Value::Float64(f64::from_bits(u64::from_le_bytes(bits)))
            }
            _ => int_value(ty, unzigzag(cur.varint()?))?,
        });
    }
    Ok(out)
}

fn decode_dict(m: usize, cur: &mut Cursor) -> Result<Vec<Value>, Bad> {
    let n = cur.count("dictionary size", m)?;
    let mut dict = Vec::with_capacity(n.min(cur.remaining()));
    for _ in 0..n {
        dict.push(decode_string(cur)?);
    }
    let mut out = Vec::with_capacity(m.min(cur.remaining()));
    for _ in 0..m {
        let id = cur.varint()?;
        let s = dict
            .get(id as usize)
            .ok_or_else(|| format!("dictionary id {id} past its {n} entries"))?;
        out.push(Value::String(s.clone()));
    }
    Ok(out)
}
