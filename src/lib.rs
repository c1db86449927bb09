//! streamtally: a Kafka-compatible ingestion connector for product-analytics events.
//!
//! The data flow, in five lines:
//! 1. [`ingest`] drains a consumer group: each record is decoded (or dead-lettered), and
//!    batches of events go to the store together with the partitions' next offsets;
//! 2. [`store`] writes each batch as ONE atomic, fsynced write (events, offsets, change feed)
//!    on ormdb-core's trees; only then is the offset committed to Kafka;
//! 3. [`stats`] workers tail the store's change feed into hourly/daily rollups and
//!    real-time counters, their rows and cursor again in one atomic write;
//! 4. [`gateway`] answers REST and pushes WebSocket updates from those rows;
//! 5. [`app`] wires them together and owns shutdown; `main` parses the command line and
//!    [`cli`] holds the bodies of the maintenance commands (check, store, stats, token).
//!
//! Who owns what: [`config`] (connector.toml, environment, flags, validation), [`schema`]
//! (schema.ormdb -> ormdb-core catalog), [`metrics`] (the Prometheus registry), [`produce`]
//! and [`demo`] (the `produce` and `demo` commands), [`synth`] (seed-shaped synthetic events
//! for the demo, tests and benchmarks), [`cache`] (the one budgeted in-memory cache type,
//! which the store, stats and gateway caches are made of), `fault` (test-only fault
//! injection, feature `fault-injection`).
pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod demo;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod gateway;
pub mod ingest;
pub mod metrics;
pub mod produce;
pub mod schema;
pub mod stats;
pub mod store;
pub mod synth;
