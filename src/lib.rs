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

/// The process allocator: jemalloc, returning freed memory to the system in the background
/// (`dirty_decay_ms:1000`, `muzzy_decay_ms:0`, a purging thread). The store and the stats
/// workers allocate and free large buffers every second (rollup rows with their unique-user
/// sets, write batches, WAL records); mimalloc, ormdb-core's default allocator (the crate is
/// built without that feature), kept them: `cargo bench --bench ingest -- --events 2000000`
/// peaked at 1,268 MB RSS with mimalloc, 946 MB with glibc malloc (mmap threshold 64 KiB)
/// and 818-914 MB with jemalloc (before unique sets were stored in parts: 504 MB since); `cargo bench --bench store -- --events 10000000` at
/// 496-506 MB (mimalloc) and 380-403 MB (jemalloc), at 130-142k events/s with either (3
/// runs each), while glibc malloc lost a third of the store's throughput (95k events/s).
/// Measured 2026-12-03.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (the `_rjem_` prefix is
/// tikv-jemallocator's symbol prefix; `_RJEM_MALLOC_CONF` in the environment overrides).
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static _rjem_malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
