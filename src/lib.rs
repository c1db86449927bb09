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
pub mod alerts;
pub mod app;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod dlq;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod gateway;
pub mod ingest;
pub mod metrics;
pub mod produce;
pub mod schema;
pub mod sign;
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

/// Tunes the C allocator, which librdkafka uses (Rust code allocates through jemalloc):
/// allocations from 128 KiB up are mapped and unmapped on their own, and at most two
/// arenas are kept. With glibc's defaults the mmap threshold rises to the size of the
/// largest block freed, so librdkafka's ~1 MiB fetch buffers came from the heap and
/// stayed there after they were freed, in one arena per thread: peak RSS 480-508 MB in
/// `cargo bench --bench ingest -- --events 2000000 --ids v4`, 459 MB with this
/// (2026-12-04, one run each; `GLIBC_TUNABLES` set the same). Called once, before a
/// Kafka client is created; `MALLOC_ARENA_MAX` and `GLIBC_TUNABLES` still override it.
pub fn tune_c_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let from_env = [
                "MALLOC_ARENA_MAX",
                "MALLOC_MMAP_THRESHOLD_",
                "GLIBC_TUNABLES",
            ]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
            if from_env {
                return;
            }
            // SAFETY: mallopt only sets glibc malloc parameters; it is thread-safe.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        });
    }
}
