//! Kafka ingest: decode messages (`decode`), drain a consumer group into the store exactly
//! once (`consumer`), send invalid messages to a dead-letter topic (`deadletter`).
pub mod consumer;
pub mod deadletter;
pub mod decode;

pub use consumer::{Ingest, IngestError};
