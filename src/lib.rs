//! streamtally: a Kafka-compatible ingestion connector for product-analytics events.
pub mod config;
pub mod schema;
pub mod store;
pub mod synth;
