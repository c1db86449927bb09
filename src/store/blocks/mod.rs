//! Immutable, compressed, columnar blocks of rows (see [`codec`]).

pub mod codec;

pub use codec::{
    encode_block, encode_block_with, BlockReader, ColumnInfo, Compression, Encoding, MAX_ROWS,
};
