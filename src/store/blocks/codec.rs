//! PLACEHOLDER block codec (row-wise), replaced by the columnar codec.

use crate::store::codec::{decode_component, encode_component};
use crate::store::layout::{FieldLayout, Values};
use crate::store::{StoreError, Value};

pub fn encode_block(fields: &[FieldLayout], rows: &[Values]) -> Result<Vec<u8>, StoreError> {
    let _ = fields;
    let mut out = (rows.len() as u32).to_le_bytes().to_vec();
    for r in rows {
        for v in r {
            encode_component(&mut out, v);
        }
    }
    Ok(out)
}

pub struct BlockReader<'a> {
    fields: &'a [FieldLayout],
    rows: Vec<Values>,
}

impl<'a> BlockReader<'a> {
    pub fn open(fields: &'a [FieldLayout], bytes: &[u8]) -> Result<BlockReader<'a>, StoreError> {
        let bad = || StoreError::Corrupt {
            what: "short block".into(),
        };
        let n = u32::from_le_bytes(bytes.get(..4).ok_or_else(bad)?.try_into().unwrap());
        let mut p = &bytes[4..];
        let mut rows = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let mut r = Vec::with_capacity(fields.len());
            for f in fields {
                let (v, rest) = decode_component(f.ty, p).ok_or_else(bad)?;
                r.push(v);
                p = rest;
            }
            rows.push(r);
        }
        Ok(BlockReader { fields, rows })
    }
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn column(&self, pos: usize) -> Result<Vec<Value>, StoreError> {
        let _ = self.fields;
        Ok(self.rows.iter().map(|r| r[pos].clone()).collect())
    }
    pub fn rows_all(&self) -> Result<Vec<Values>, StoreError> {
        Ok(self.rows.clone())
    }
}
