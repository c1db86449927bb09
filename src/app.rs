//! `streamtally run` (and `streamtally demo`, through [`serve`]): wires the store, the
//! ingest loop, the stats workers and the HTTP gateway together, and owns shutdown. The gateway binds `gateway.listen` first (a busy
//! address fails the start, naming it) and serves on the multi-thread runtime.
//! SIGINT/SIGTERM cancel the shared token; the gateway stops accepting and finishes its
//! in-flight requests; the ingest loop stops fetching, flushes, commits and returns; the
//! stats workers write what they applied and stop; the store is closed last. A task that
//! fails cancels the token too, and its error becomes the process's.

use crate::alerts::deliver::Deliverer;
use crate::alerts::eval::AlertWorker;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::gateway::{self, GatewayState};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::schema::Schema;
use crate::stats::bucket::Source;
use crate::stats::query::{Sources, StatsReader};
use crate::stats::realtime::{RealtimeOptions, RealtimeWorker, SystemClock};
use crate::stats::rollup::{RollupOptions, RollupWorker};
use crate::store::{Store, StoreOptions};
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs until a signal or a fatal error.
pub fn run(cfg: Config, schema: Schema) -> anyhow::Result<()> {
    let store = Store::open(StoreOptions::from_config(&cfg.store), &schema)
        .with_context(|| format!("opening the store at {}", cfg.store.path.display()))?;
    serve(cfg, store, |_| Ok(None))
}

/// What [`serve`] hands to its caller once the gateway listens and ingest runs.
pub struct Started {
    /// Where the gateway listens (the real port when `gateway.listen` asked for 0).
    pub gateway_addr: std::net::SocketAddr,
    /// The open store (read-only use: progress checks).
    pub store: Store,
    /// Cancelled when everything stops; work of the caller that fails cancels it too.
    pub shutdown: CancellationToken,
}

/// Stops the caller's own work (e.g. the demo's event generator) and waits for it; run on
/// SIGINT/SIGTERM before ingest is told to stop, or after ingest stopped by itself.
pub type StopHook = Box<dyn FnOnce() -> anyhow::Result<()> + Send>;

/// `run`'s wiring, shared with `streamtally demo`: given the open store, starts the gateway,
/// the stats workers and ingest, then calls `on_started` (which may start more work and
/// return how to stop it) and waits. On a signal: the stop hook first, then the shutdown
/// token (ingest stops fetching, flushes, commits), then the workers and the gateway, and
/// the store is closed last. Returns the first error.
pub fn serve(
    cfg: Config,
    store: Store,
    on_started: impl FnOnce(&Started) -> anyhow::Result<Option<StopHook>>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let services = match Services::start(
        cfg.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    ) {
        Ok(s) => s,
        Err(e) => {
            let _ = store.close();
            return Err(e);
        }
    };

    // Registered now, before ingest starts (and logs its partitions): a SIGTERM from then
    // on is a graceful stop, never the default action's kill.
    let stop_signal = {
        let _runtime = services.handle().enter();
        stop_signal()
    };
    let ingest = services.ingest(
        cfg.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let ingest_thread = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || ingest.run())
        .context("starting the ingest thread")?;

    // The signal task exists before `on_started` runs, so a signal is never missed; a hook
    // it does not find yet is run below, after ingest stopped.
    let stop_hook: Arc<parking_lot::Mutex<Option<StopHook>>> = Arc::default();
    let hook_error: Arc<parking_lot::Mutex<Option<anyhow::Error>>> = Arc::default();
    let signals = shutdown.clone();
    let (hook, errors) = (stop_hook.clone(), hook_error.clone());
    services.handle().spawn(async move {
        tokio::select! {
            _ = stop_signal => {}
            _ = signals.cancelled() => return,
        }
        tracing::info!("signal received: stopping fetches, flushing, committing");
        let taken = hook.lock().take();
        if let Some(stop) = taken {
            let outcome = tokio::task::spawn_blocking(stop).await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(anyhow::anyhow!("the stop hook failed: {e}")),
            };
            if let Some(e) = error {
                errors.lock().get_or_insert(e);
            }
        }
        signals.cancel();
    });

    let started = Started {
        gateway_addr: services.gateway_addr,
        store: store.clone(),
        shutdown: shutdown.clone(),
    };
    let started_error = match on_started(&started) {
        Ok(hook) => {
            *stop_hook.lock() = hook;
            None
        }
        Err(e) => {
            shutdown.cancel();
            Some(e)
        }
    };

    let result = ingest_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the ingest thread panicked"))?;
    shutdown.cancel();
    let taken = stop_hook.lock().take();
    if let Some(stop) = taken {
        if let Err(e) = stop() {
            hook_error.lock().get_or_insert(e);
        }
    }
    let services_result = services.join();
    store.close().context("closing the store")?;
    if let Some(e) = started_error {
        return Err(e);
    }
    result.context("ingest stopped")?;
    services_result?;
    if let Some(e) = hook_error.lock().take() {
        return Err(e);
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Everything around ingest: the stats workers (each on its own thread) and the gateway
/// (REST on a two-thread runtime, WebSocket sessions on another), sharing the store, the
/// metrics and the shutdown token. The real-time worker publishes newly stored events to the
/// gateway's WebSocket sessions.
/// Used by `streamtally run`, and by tests that run ingest in-process.
pub struct Services {
    /// Where the gateway listens (the port is the real one when `gateway.listen` asked for 0).
    pub gateway_addr: std::net::SocketAddr,
    runtime: tokio::runtime::Runtime,
    /// WebSocket sessions, apart from `runtime` (see [`gateway::ws::Sessions`]).
    session_runtime: tokio::runtime::Runtime,
    sessions: gateway::ws::Sessions,
    gateway_task:
        tokio::task::JoinHandle<Result<Result<(), gateway::GatewayError>, tokio::task::JoinError>>,
    workers: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    /// The group's membership (`[scale_out]` enabled), for ingest to tell its partitions.
    pub cluster: Option<Arc<Cluster>>,
}

impl Services {
    /// Binds the gateway (a busy address fails here, naming it), then starts everything.
    pub fn start(
        cfg: Config,
        store: Store,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Services> {
        for topic in &cfg.kafka.topics {
            metrics.init_topic(topic);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gateway")
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let session_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gateway-ws")
            .enable_all()
            .build()
            .context("starting the WebSocket sessions' runtime")?;
        let sessions = gateway::ws::Sessions::on(session_runtime.handle().clone());
        let listener = runtime
            .block_on(gateway::bind(cfg.gateway.listen))
            .context("starting the gateway")?;
        let gateway_addr = listener
            .local_addr()
            .with_context(|| format!("the gateway's address ({})", cfg.gateway.listen))?;
        // WebSocket sessions drain it once per push interval: room for many intervals' worth
        // of the real-time worker's batches (one per feed read, tens per second when busy).
        let (live, _) = tokio::sync::broadcast::channel(4096);
        let mut workers: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)> = Vec::new();
        let mut state = GatewayState::new(
            store.clone(),
            StatsReader::new(store.clone()).with_trends_cache_mb(cfg.stats.trends_cache_mb),
            cfg.clone(),
            metrics.clone(),
        )
        .with_live(live.clone())
        .with_shutdown(shutdown.clone())
        .with_sessions(sessions.clone());
        let mut replica_requests = None;
        let cluster = if cfg.scale_out.enabled {
            let cluster = Cluster::new(&cfg, gateway_addr);
            workers.extend(
                crate::cluster::start(&cfg, cluster.clone(), shutdown.clone())
                    .context("starting the group's membership ([scale_out])")?,
            );
            // Rollups are kept per partition: answers read the partitions held now.
            let held = cluster.clone();
            state.stats = state.stats.with_sources(Arc::new(move || {
                Sources::Partitions(
                    held.local_partitions()
                        .iter()
                        .map(|(topic, partition)| Source::new(topic, *partition))
                        .collect(),
                )
            }));
            state = state.with_cluster(cluster.clone());
            if cfg.stats.enabled {
                let (hub, requests) = crate::stats::replica::hub();
                state.replica_hub = Some(hub);
                replica_requests = Some(requests);
            }
            // Other instances' new events and rollups, pushed to this instance's WebSocket
            // clients and copied for its answers.
            let _relays = runtime.spawn({
                let (st, cluster) = (state.clone(), cluster.clone());
                async move {
                    gateway::relay::start(st, cluster).await.ok();
                }
            });
            Some(cluster)
        } else {
            None
        };
        let alerting = cfg.alerts.enabled && cfg.stats.enabled && !cfg.scale_out.enabled;
        let alert_hub = alerting.then(crate::alerts::Hub::default);
        if let Some(hub) = &alert_hub {
            state = state.with_alerts(hub.clone());
        }
        let app = gateway::router(state);
        let on_gateway_error = shutdown.clone();
        let gateway_task = runtime.spawn(gateway::serve(
            listener,
            app,
            gateway::ServeOptions::new(&cfg.gateway, metrics.clone()),
            shutdown.clone(),
        ));
        let gateway_task = runtime.spawn(async move {
            let result = gateway_task.await;
            if !matches!(result, Ok(Ok(()))) {
                on_gateway_error.cancel();
            }
            result
        });

        if cfg.stats.enabled {
            switch_rollup_layout(&cfg, &store)?;
            let mut rollups = RollupWorker::new(store.clone(), rollup_options(&cfg))
                .context("starting the rollup worker")?
                .with_metrics(metrics.clone());
            if let Some(requests) = replica_requests {
                rollups = rollups.with_replicas(requests);
            }
            let realtime =
                RealtimeWorker::new(store.clone(), realtime_options(&cfg), Arc::new(SystemClock))
                    .context("starting the real-time counter worker")?
                    .with_metrics(metrics.clone())
                    .with_live(
                        live,
                        cfg.gateway.recent_events_cap as usize,
                        cfg.gateway.live_publish_interval(),
                    );
            let token = shutdown.clone();
            workers.push((
                "stats rollups",
                spawn_worker("stats-rollups", shutdown.clone(), rollups.run(token))?,
            ));
            let token = shutdown.clone();
            workers.push((
                "stats realtime",
                spawn_worker("stats-realtime", shutdown.clone(), realtime.run(token))?,
            ));
        }
        if let Some(hub) = alert_hub {
            let (sent, written) = tokio::sync::mpsc::unbounded_channel();
            let shared = Arc::new(cfg.clone());
            let evaluator = AlertWorker::new(
                store.clone(),
                shared.clone(),
                metrics.clone(),
                hub.clone(),
                sent,
            )
            .context("starting the alert worker")?;
            let deliverer = Deliverer::new(store.clone(), shared, metrics.clone(), hub, written);
            let token = shutdown.clone();
            workers.push((
                "alerts",
                spawn_worker("alerts", shutdown.clone(), async move {
                    tokio::try_join!(evaluator.run(token.clone()), deliverer.run(token)).map(|_| ())
                })?,
            ));
        } else {
            store
                .release_feed_readers(&[crate::alerts::ALERTS_CURSOR])
                .context("removing the alert worker's change-feed cursor")?;
            if cfg.alerts.enabled && cfg.scale_out.enabled {
                tracing::warn!(
                    "alerts: not evaluated in a scaled-out group yet (scale_out.enabled = true); \
                     the alert API answers 501"
                );
            }
        }
        if !cfg.stats.enabled {
            // Nothing reads the change feed: the stats workers' cursors must not keep it.
            let released = store
                .release_feed_readers(&[crate::stats::ROLLUP_CURSOR, crate::stats::REALTIME_CURSOR])
                .context("removing the stats workers' change-feed cursors")?;
            if !released.is_empty() {
                tracing::warn!(
                    cursors = ?released,
                    "stats.enabled = false: removed the stats workers' change-feed cursors, so \
                     the feed is truncated without them; before enabling stats again, stop the \
                     connector and run `streamtally stats rebuild`"
                );
            }
        }
        Ok(Services {
            gateway_addr,
            runtime,
            session_runtime,
            sessions,
            gateway_task,
            workers,
            cluster,
        })
    }

    /// The consumer for these services: told the group's membership when scaled out.
    pub fn ingest(
        &self,
        cfg: Config,
        store: Store,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Ingest {
        let ingest = Ingest::new(cfg, store, metrics, shutdown);
        match &self.cluster {
            Some(cluster) => ingest.with_cluster(cluster.clone()),
            None => ingest,
        }
    }

    /// The services' runtime, to run more tasks on (signal handling).
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// Once the shutdown token is cancelled: waits for the workers and the gateway (its
    /// in-flight requests get 5 s) and returns the first error.
    pub fn join(self) -> anyhow::Result<()> {
        let mut first_error = None;
        for (name, handle) in self.workers {
            let outcome = handle
                .join()
                .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))
                .and_then(|r| r.with_context(|| format!("{name} stopped")));
            if let Err(e) = outcome {
                tracing::error!(error = %format!("{e:#}"), "{name} failed");
                first_error.get_or_insert(e);
            }
        }
        let gateway_task = self.gateway_task;
        let gateway_result = self.runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), gateway_task).await
        });
        let gateway_error = match gateway_result {
            Err(_) => {
                tracing::warn!(
                    "gateway: in-flight requests did not finish within 5 s; dropping them"
                );
                None
            }
            Ok(Ok(Ok(Ok(())))) => None,
            Ok(Ok(Ok(Err(e)))) => Some(anyhow::Error::from(e)),
            Ok(Ok(Err(e))) | Ok(Err(e)) => Some(anyhow::anyhow!("the gateway task failed: {e}")),
        };
        if let Some(e) = &gateway_error {
            tracing::error!(error = %format!("{e:#}"), "gateway failed");
        }
        let sessions = self.sessions;
        if !self
            .session_runtime
            .block_on(async move { sessions.closed(std::time::Duration::from_secs(3)).await })
        {
            tracing::warn!("gateway: WebSocket sessions did not close within 3 s; dropping them");
        }
        self.session_runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(5));
        match (first_error, gateway_error) {
            (Some(e), _) | (None, Some(e)) => Err(e),
            (None, None) => Ok(()),
        }
    }
}

/// Recomputes the rollups from the raw events when they are keyed otherwise than this
/// configuration keeps them (`scale_out.enabled` switched on or off since the last run);
/// before ingest writes anything.
fn switch_rollup_layout(cfg: &Config, store: &Store) -> anyhow::Result<()> {
    let per_partition = cfg.scale_out.enabled;
    if crate::stats::rebuild::stored_per_partition(store)? == per_partition {
        return Ok(());
    }
    let events = store.count(&crate::store::Query::new("Event"))?;
    tracing::info!(
        events,
        per_partition,
        "stats: the rollups are keyed otherwise than [scale_out] asks; recomputing them from the stored events"
    );
    let started = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt
        .block_on(crate::stats::rebuild::switch_layout(
            store,
            per_partition,
            cfg.stats.unique_exact_threshold,
            &indicatif::ProgressBar::hidden(),
        ))
        .context("recomputing the rollups for [scale_out]")?;
    if let Some(r) = report {
        tracing::info!(
            rows = r.written,
            removed = r.deleted,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stats: rollups recomputed"
        );
    }
    Ok(())
}

/// The rollup worker's options from `[stats]`.
pub fn rollup_options(cfg: &Config) -> RollupOptions {
    RollupOptions {
        exact_threshold: cfg.stats.unique_exact_threshold,
        flush_interval: cfg.stats.rollup_flush_interval(),
        keep_days: cfg.store.retention.rollups_days(),
        per_partition: cfg.scale_out.enabled,
        ..RollupOptions::default()
    }
}

/// The real-time worker's options from `[stats]`.
pub fn realtime_options(cfg: &Config) -> RealtimeOptions {
    RealtimeOptions {
        windows_s: cfg.stats.realtime_windows_s.clone(),
        persist_interval: cfg.stats.persist_interval(),
    }
}

/// Runs a worker future on its own thread and single-threaded runtime (its reads of the
/// store block, so it gets a thread of its own); a failure cancels `shutdown`.
fn spawn_worker<F, E>(
    name: &str,
    shutdown: CancellationToken,
    work: F,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a worker runtime")?;
            let result = rt.block_on(work);
            if let Err(e) = &result {
                // Said now, not when `Services::join` collects it after the drain.
                tracing::error!(worker = %thread_name, error = %e,
                    "worker stopped on an error that is not retried; stopping the connector");
                shutdown.cancel();
            }
            result.map_err(anyhow::Error::from)
        })
        .with_context(|| format!("starting the {name} thread"))
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The listeners are registered when this is
/// called, not when the future is first polled; call it inside the runtime's context.
fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listeners = [SignalKind::terminate(), SignalKind::interrupt()].map(|kind| {
            signal(kind)
                .map_err(
                    |e| tracing::warn!(error = %e, signal = ?kind, "cannot listen for the signal"),
                )
                .ok()
        });
        async move {
            let [term, int] = listeners;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {}
                _ = wait(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
