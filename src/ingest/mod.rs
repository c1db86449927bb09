//! Kafka ingest: decode messages (`decode`, with its fast path in `payload`), drain a consumer group into the store exactly
//! once (`consumer`), send invalid messages to a dead-letter topic (`deadletter`).
pub mod consumer;
pub mod deadletter;
pub mod decode;
mod payload;

pub use consumer::{Ingest, IngestError};
