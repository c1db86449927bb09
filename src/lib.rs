//! streamtally: a Kafka-compatible ingestion connector for product-analytics events.
pub mod app;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod ingest;
pub mod metrics;
pub mod produce;
pub mod schema;
pub mod stats;
pub mod store;
pub mod synth;
