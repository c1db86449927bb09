//! The block codec: N rows of one entity as an immutable, compressed, columnar block, in the
//! manner of ClickHouse parts or Druid segments, so that an event costs tens of bytes on disk
//! instead of a per-row record, and a reader that needs 6 of 17 columns decodes only those.
//!
//! Pure: bytes in, bytes out. It knows the schema's field types, not the store's trees.
//!
//! Layout (integers little-endian, `v` = LEB128 varint):
//! ```text
//! "STBK" | version u8 | rows v | columns v
//! per column: type u8 | encoding u8 | flags u8 (bit 0: null bitmap, bit 1: all null)
//!             | compressor u8
//!             | raw length v | stored length v | crc32 of the stored bytes u32
//! crc32 of everything above u32
//! the columns' stored bytes, one after another in field order
//! ```
//! A column's offset is the sum of the stored lengths before it, so the directory cannot
//! disagree with itself. Each column is (null bitmap if flagged) + its present values in
//! their [`Encoding`], then compressed on its own; a column that does not shrink is kept
//! uncompressed. Types are in the block, so it decodes without the schema that wrote it.
//! Anything that does not add up (magic, version, tags, lengths, checksums, varints, UTF-8,
//! leftover bytes) is a [`StoreError::Corrupt`] naming the column and the fault.

mod bytes;
mod column;

pub use column::Encoding;

use super::super::layout::{FieldLayout, Values};
use super::super::StoreError;
use crate::schema::FieldType;
use bytes::{put_bitmap, put_varint, Bad, Cursor};
use ormdb_core::proto::Value;
use std::borrow::Borrow;
use std::cell::RefCell;

const MAGIC: &[u8; 4] = b"STBK";
const VERSION: u8 = 1;
/// Blocks hold thousands of rows; the cap bounds what a corrupt row count can allocate.
pub const MAX_ROWS: usize = 1 << 20;
/// Bounds what a corrupt raw length can make the decompressor allocate.
const MAX_COLUMN_BYTES: usize = 1 << 30;
const MAX_COLUMNS: usize = 4096;
const FLAG_NULLS: u8 = 1;
/// Every row is null: nothing else is stored.
const FLAG_ALL_NULL: u8 = 2;

/// The general-purpose compressor over each column's encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    Zstd(i32),
}

impl Compression {
    /// What [`encode_block`] uses; benches/blocks.rs measured the candidates.
    pub const DEFAULT: Compression = Compression::Zstd(1);

    pub fn name(self) -> String {
        match self {
            Compression::None => "none".into(),
            Compression::Lz4 => "lz4".into(),
            Compression::Zstd(level) => format!("zstd-{level}"),
        }
    }
}

/// How one column is stored, as the block's directory says.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub ty: FieldType,
    pub encoding: Encoding,
    pub has_nulls: bool,
    pub all_null: bool,
    /// `Compression::Zstd(0)` stands for any zstd level: readers need not know which.
    pub compression: Compression,
    pub raw_len: usize,
    pub stored_len: usize,
    offset: usize,
    crc: u32,
}

const TYPES: [FieldType; 8] = [
    FieldType::Uuid,
    FieldType::String,
    FieldType::Json,
    FieldType::Timestamp,
    FieldType::Int32,
    FieldType::Int64,
    FieldType::Float64,
    FieldType::Bool,
];

fn type_tag(ty: FieldType) -> u8 {
    TYPES.iter().position(|&t| t == ty).unwrap_or(0) as u8
}

/// Encodes `rows` (values in `fields` order) as one block, compressed with
/// [`Compression::DEFAULT`].
pub fn encode_block<R: Borrow<Values>>(
    fields: &[FieldLayout],
    rows: &[R],
) -> Result<Vec<u8>, StoreError> {
    encode_block_with(fields, rows, Compression::DEFAULT)
}

/// [`encode_block`] with the given compressor.
pub fn encode_block_with<R: Borrow<Values>>(
    fields: &[FieldLayout],
    rows: &[R],
    compression: Compression,
) -> Result<Vec<u8>, StoreError> {
    if rows.len() > MAX_ROWS {
        return Err(StoreError::Schema(format!(
            "a block holds at most {MAX_ROWS} rows, not {}",
            rows.len()
        )));
    }
    if let Some((i, row)) = rows
        .iter()
        .enumerate()
        .find(|(_, r)| (*r).borrow().len() != fields.len())
    {
        return Err(StoreError::Schema(format!(
            "block row {i} has {} values for {} fields",
            row.borrow().len(),
            fields.len()
        )));
    }
    let mut writer = BlockWriter::new(fields.len(), rows.len(), compression);
    let mut column: Vec<&Value> = Vec::with_capacity(rows.len());
    for (pos, field) in fields.iter().enumerate() {
        column.clear();
        column.extend(rows.iter().map(|r| &r.borrow()[pos]));
        writer.push(field, &column)?;
    }
    writer.finish()
}

/// Writes a block column by column, so that a writer needs only one column's values at a
/// time (a merge of 131,072 events decoded whole takes ~120 MB; one column of them, ~30 MB
/// at most).
pub struct BlockWriter {
    head: Vec<u8>,
    body: Vec<u8>,
    rows: usize,
    columns: usize,
    pushed: usize,
    compression: Compression,
}

impl BlockWriter {
    /// A block of `rows` rows and `columns` columns.
    pub fn new(columns: usize, rows: usize, compression: Compression) -> Self {
        let mut head = MAGIC.to_vec();
        head.push(VERSION);
        put_varint(&mut head, rows as u64);
        put_varint(&mut head, columns as u64);
        BlockWriter {
            head,
            body: Vec::new(),
            rows,
            columns,
            pushed: 0,
            compression,
        }
    }

    /// Adds the next column (fields in order): one value per row.
    pub fn push(&mut self, field: &FieldLayout, values: &[&Value]) -> Result<(), StoreError> {
        if values.len() != self.rows || self.pushed == self.columns {
            return Err(StoreError::Schema(format!(
                "block column {} ({}) has {} values for {} rows ({} of {} columns written)",
                self.pushed,
                field.name,
                values.len(),
                self.rows,
                self.pushed,
                self.columns
            )));
        }
        let (encoding, flags, raw) = encode_column(field, values)?;
        let (used, stored) = compress(self.compression, raw)?;
        let head = &mut self.head;
        head.extend_from_slice(&[type_tag(field.ty), encoding.tag(), flags, codec_tag(used)]);
        put_varint(head, stored.raw_len as u64);
        put_varint(head, stored.data.len() as u64);
        head.extend_from_slice(&crc32fast::hash(&stored.data).to_le_bytes());
        self.body.extend_from_slice(&stored.data);
        self.pushed += 1;
        Ok(())
    }

    /// The block's bytes, once every column is pushed.
    pub fn finish(mut self) -> Result<Vec<u8>, StoreError> {
        if self.pushed != self.columns {
            return Err(StoreError::Schema(format!(
                "block finished with {} of its {} columns",
                self.pushed, self.columns
            )));
        }
        let crc = crc32fast::hash(&self.head);
        self.head.extend_from_slice(&crc.to_le_bytes());
        self.head.extend_from_slice(&self.body);
        Ok(self.head)
    }
}

fn encode_column(
    field: &FieldLayout,
    values: &[&Value],
) -> Result<(Encoding, u8, Vec<u8>), StoreError> {
    let mut present = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        match v {
            Value::Null => {}
            v if column::fits(field.ty, v) => present.push(v),
            v => {
                return Err(StoreError::FieldType {
                    entity: format!("block row {i}"),
                    field: field.name.clone(),
                    expected: field.ty.name(),
                    got: super::super::codec::value_type_name(v),
                    value: super::super::codec::display_value(v),
                })
            }
        }
    }
    let mut out = Vec::new();
    let mut flags = 0;
    if present.is_empty() && !values.is_empty() {
        return Ok((Encoding::Plain, FLAG_ALL_NULL, out));
    }
    if present.len() < values.len() {
        flags |= FLAG_NULLS;
        put_bitmap(&mut out, values.iter().map(|&v| *v != Value::Null));
    }
    let encoding = column::encode_values(field.ty, &present, &mut out);
    Ok((encoding, flags, out))
}

/// A column's bytes as stored, and its length before compression.
struct Stored {
    data: Vec<u8>,
    raw_len: usize,
}

fn codec_tag(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Lz4 => 1,
        Compression::Zstd(_) => 2,
    }
}

thread_local! {
    static ZSTD_IN: RefCell<zstd::block::Compressor> = RefCell::new(zstd::block::Compressor::new());
    static ZSTD_OUT: RefCell<zstd::block::Decompressor> =
        RefCell::new(zstd::block::Decompressor::new());
}

/// Columns shorter than this are stored as they are: compressing them saves a few bytes at
/// the price of a compressor's tables (lz4's are 16 KB, zeroed per call), which dominated
/// the cost of a batch's small resident blocks.
const COMPRESS_FROM: usize = 96;

/// Compresses `raw`; keeps it as it is when that is short or does not get smaller.
fn compress(c: Compression, raw: Vec<u8>) -> Result<(Compression, Stored), StoreError> {
    let raw_len = raw.len();
    let packed = match c {
        _ if raw_len < COMPRESS_FROM => None,
        Compression::None => None,
        Compression::Lz4 => Some(lz4_flex::block::compress(&raw)),
        Compression::Zstd(level) => Some(
            ZSTD_IN
                .with(|z| z.borrow_mut().compress(&raw, level))
                .map_err(|e| StoreError::Corrupt {
                    what: format!("block: zstd cannot compress a column of {raw_len} bytes: {e}"),
                })?,
        ),
    };
    Ok(match packed {
        Some(data) if data.len() < raw_len => (c, Stored { data, raw_len }),
        _ => (Compression::None, Stored { data: raw, raw_len }),
    })
}

fn decompress(info: &ColumnInfo, stored: &[u8]) -> Result<Vec<u8>, Bad> {
    let raw = match info.compression {
        Compression::None => stored.to_vec(),
        Compression::Lz4 => {
            lz4_flex::block::decompress(stored, info.raw_len).map_err(|e| format!("lz4: {e}"))?
        }
        Compression::Zstd(_) => ZSTD_OUT
            .with(|z| z.borrow_mut().decompress(stored, info.raw_len))
            .map_err(|e| format!("zstd: {e}"))?,
    };
    if raw.len() != info.raw_len {
        return Err(format!(
            "decompresses to {} bytes, the directory says {}",
            raw.len(),
            info.raw_len
        ));
    }
    Ok(raw)
}

/// A block opened for reading: the directory is parsed and checked, columns are decoded on
/// demand, each on its own.
pub struct BlockReader<'a> {
    data: &'a [u8],
    rows: usize,
    columns: Vec<ColumnInfo>,
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt {
        what: format!("block: {what}"),
    }
}

impl<'a> BlockReader<'a> {
    pub fn open(data: &'a [u8]) -> Result<BlockReader<'a>, StoreError> {
        let mut cur = Cursor::new(data);
        let magic = cur.take(4).map_err(|e| corrupt(format!("header: {e}")))?;
        if magic != MAGIC {
            return Err(corrupt(format!("magic is {magic:02x?}, not {MAGIC:02x?}")));
        }
        let (rows, columns) =
            read_directory(&mut cur).map_err(|e| corrupt(format!("directory: {e}")))?;
        let end = columns
            .last()
            .map_or(cur.pos(), |c| c.offset + c.stored_len);
        if end != data.len() {
            return Err(corrupt(format!(
                "the directory accounts for {end} bytes but the block has {}",
                data.len()
            )));
        }
        Ok(BlockReader {
            data,
            rows,
            columns,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// How each column is stored, in field order.
    pub fn columns(&self) -> &[ColumnInfo] {
        &self.columns
    }

    /// The values of column `pos` (a field position), one per row; decodes only that column.
    pub fn column(&self, pos: usize) -> Result<Vec<Value>, StoreError> {
        let info = self.columns.get(pos).ok_or_else(|| StoreError::Query {
            entity: "block".into(),
            message: format!(
                "column {pos} asked for; the block has {}",
                self.columns.len()
            ),
        })?;
        self.decode_column(info).map_err(|e| {
            corrupt(format!(
                "column {pos} ({}, {}, {}): {e}",
                info.ty.name(),
                info.encoding.name(),
                info.compression.name()
            ))
        })
    }

    fn decode_column(&self, info: &ColumnInfo) -> Result<Vec<Value>, Bad> {
        let stored = &self.data[info.offset..info.offset + info.stored_len];
        let crc = crc32fast::hash(stored);
        if crc != info.crc {
            return Err(format!(
                "crc32 is {crc:08x}, the directory says {:08x}",
                info.crc
            ));
        }
        let raw = decompress(info, stored)?;
        let mut cur = Cursor::new(&raw);
        if info.all_null {
            cur.finish("all-null column")?;
            return Ok(vec![Value::Null; self.rows]);
        }
        let present = match info.has_nulls {
            true => Some(cur.bitmap(self.rows)?),
            false => None,
        };
        let m = present
            .as_ref()
            .map_or(self.rows, |p| p.iter().filter(|&&b| b).count());
        let values = column::decode_values(info.ty, info.encoding, m, &mut cur)?;
        cur.finish("values")?;
        if values.len() != m {
            return Err(format!("{} values for {m} rows", values.len()));
        }
        Ok(match present {
            None => values,
            Some(present) => {
                let mut values = values.into_iter();
                present
                    .into_iter()
                    .map(|p| match p {
                        true => values.next().unwrap_or(Value::Null),
                        false => Value::Null,
                    })
                    .collect()
            }
        })
    }

    /// The rows, each with the values of columns `positions` in that order.
    pub fn rows(&self, positions: &[usize]) -> Result<Vec<Values>, StoreError> {
        let mut columns = positions
            .iter()
            .map(|&p| self.column(p).map(Vec::into_iter))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((0..self.rows)
            .map(|_| {
                columns
                    .iter_mut()
                    .map(|c| c.next().unwrap_or(Value::Null))
                    .collect()
            })
            .collect())
    }

    /// Row `at` with every column (each column is decoded, but no other row is built).
    pub fn row(&self, at: usize) -> Result<Values, StoreError> {
        Ok(self.rows_at(&[at])?.pop().unwrap_or_default())
    }

    /// Rows `at` (positions, in that order) with every column: each column is decoded
    /// once for all of them.
    pub fn rows_at(&self, at: &[usize]) -> Result<Vec<Values>, StoreError> {
        let mut rows: Vec<Values> = vec![Vec::with_capacity(self.columns.len()); at.len()];
        for p in 0..self.columns.len() {
            let column = self.column(p)?;
            for (row, &i) in rows.iter_mut().zip(at) {
                row.push(column.get(i).cloned().unwrap_or(Value::Null));
            }
        }
        Ok(rows)
    }

    /// Every row with every column.
    pub fn rows_all(&self) -> Result<Vec<Values>, StoreError> {
        let all: Vec<usize> = (0..self.columns.len()).collect();
        self.rows(&all)
    }
}

fn read_directory(cur: &mut Cursor) -> Result<(usize, Vec<ColumnInfo>), Bad> {
    let version = cur.byte()?;
    if version != VERSION {
        return Err(format!("version {version}; this build reads {VERSION}"));
    }
    let rows = cur.count("row count", MAX_ROWS)?;
    let n = cur.count("column count", MAX_COLUMNS)?;
    let mut columns = Vec::with_capacity(n);
    for pos in 0..n {
        columns.push(read_entry(cur).map_err(|e| format!("column {pos}: {e}"))?);
    }
    let crc = crc32fast::hash(cur.consumed());
    let stored = cur.u32_le()?;
    if crc != stored {
        return Err(format!("crc32 is {crc:08x}, the block says {stored:08x}"));
    }
    let mut offset = cur.pos();
    for c in &mut columns {
        c.offset = offset;
        offset = offset.saturating_add(c.stored_len);
    }
    Ok((rows, columns))
}

fn read_entry(cur: &mut Cursor) -> Result<ColumnInfo, Bad> {
    let [ty, enc, flags, codec] = [cur.byte()?, cur.byte()?, cur.byte()?, cur.byte()?];
    let ty = *TYPES
        .get(ty as usize)
        .ok_or(format!("unknown type tag {ty}"))?;
    let encoding = Encoding::from_tag(enc).ok_or(format!("unknown encoding tag {enc}"))?;
    if flags & !(FLAG_NULLS | FLAG_ALL_NULL) != 0 || flags == FLAG_NULLS | FLAG_ALL_NULL {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    let compression = match codec {
        0 => Compression::None,
        1 => Compression::Lz4,
        2 => Compression::Zstd(0),
        _ => return Err(format!("unknown compressor tag {codec}")),
    };
    let raw_len = cur.count("raw length", MAX_COLUMN_BYTES)?;
    let stored_len = cur.count("stored length", cur.remaining())?;
    Ok(ColumnInfo {
        ty,
        encoding,
        has_nulls: flags & FLAG_NULLS != 0,
        all_null: flags & FLAG_ALL_NULL != 0,
        compression,
        raw_len,
        stored_len,
        offset: 0,
        crc: cur.u32_le()?,
    })
}
