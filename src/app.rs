//! `streamtally run`: wires the store, the ingest loop and (later) the stats workers and the
//! gateway together, and owns shutdown. SIGINT/SIGTERM cancel the shared token; the ingest
//! loop then stops fetching, flushes, commits and returns; the store is closed last. A task
//! that fails cancels the token too, and its error becomes the process's.

use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::schema::Schema;
use crate::store::{Store, StoreOptions};
use anyhow::Context;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs until a signal or a fatal error.
pub fn run(cfg: Config, schema: Schema) -> anyhow::Result<()> {
    let store = Store::open(StoreOptions::from_config(&cfg.store), &schema)
        .with_context(|| format!("opening the store at {}", cfg.store.path.display()))?;
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let signals = shutdown.clone();
    runtime.spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping fetches, flushing, committing");
        signals.cancel();
    });

    let ingest = Ingest::new(
        cfg.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let ingest_thread = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || ingest.run())
        .context("starting the ingest thread")?;
    let result = ingest_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the ingest thread panicked"))?;
    shutdown.cancel();
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    store.close().context("closing the store")?;
    result.context("ingest stopped")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
