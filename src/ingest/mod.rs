//! Kafka ingest: decode messages (`decode`, with its fast path in `payload`), drain a consumer
//! group into the store exactly once (`consumer`, the Kafka shell around the broker-free
//! `ledger`), dedup by event id (`dedup`), send invalid messages to a dead-letter topic
//! (`deadletter`).
pub mod consumer;
pub mod deadletter;
pub mod decode;
mod dedup;
mod ledger;
mod payload;

pub use consumer::{Ingest, IngestError};
