//! The HTTP gateway: an axum router over the store and the stats reader, serving the REST
//! API of docs/API.md (its OpenAPI document, docs/openapi.yaml, at `/api/v1/openapi.json`:
//! [`openapi`]), `/healthz`, `/readyz` and the Prometheus metrics.
//!
//! - [`router`] builds the whole app from a [`GatewayState`] (store, stats reader, config,
//!   metrics); tests drive it with `tower::ServiceExt::oneshot`, `streamtally run` serves it
//!   with [`serve`] on its runtime until the shared shutdown token is cancelled ([`conn`]:
//!   the accept loop, the connection cap and the header-read and idle timeouts).
//! - Auth is per route, not a layer: REST handlers take an [`OrgAccess`] (Bearer token ->
//!   [`auth::Principal`] -> may it read the `{org}` of the path -> does the org exist), so
//!   routes with another kind of credential (a WebSocket's `?token=`) sit beside them and
//!   reuse [`auth::Auth`] directly.
//! - Store and stats reads block (sled), so handlers run them on the blocking pool
//!   ([`blocking`]); the export streams page by page (`events`).
//! - Errors are [`ApiError`]s: the JSON body of docs/API.md; a 5xx is logged, never detailed.
//! - Answers are the types of [`wire`], one per question, for REST and WebSocket ([`ws`])
//!   alike; ranges, granularities and limits are parsed and defaulted once ([`params`]).

pub mod admin;
pub mod alerts;
pub mod assets;
pub mod auth;
pub mod body;
pub mod conn;
pub mod dashboards;
pub mod error;
pub mod events;
pub mod group;
pub mod health;
pub mod openapi;
pub mod params;
pub mod relay;
pub mod stats;
pub mod trends;
pub mod wire;
pub mod ws;

pub use conn::{serve, ConnectionLimits, ServeOptions};
pub use error::ApiError;

use crate::config::Config;
use crate::metrics::{HttpLabel, Metrics};
use crate::stats::query::StatsReader;
use crate::stats::realtime::LiveSender;
use crate::store::Store;
use auth::{Auth, Principal};
use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use uuid::Uuid;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    pub store: Store,
    pub stats: StatsReader,
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Auth>,
    /// Newly stored events, published by the real-time worker, for WebSocket push.
    pub live: LiveSender,
    /// Cancelled at shutdown: WebSocket sessions close with 1001.
    pub shutdown: CancellationToken,
    /// What WebSocket pushes read (counters, view data), shared by the sessions.
    pub push_cache: ws::PushCache,
    /// Where WebSocket sessions run once upgraded (see [`ws::Sessions`]).
    pub sessions: ws::Sessions,
    /// The group's membership (`[scale_out]` enabled).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Open connections to the group's other instances.
    pub peers: group::Peers,
    /// The alert worker's hub (None when alerting does not run on this instance).
    pub alerts: Option<crate::alerts::Hub>,
    /// Copies of the other instances' rollups (src/stats/replica.rs).
    pub replica: crate::stats::replica::Replica,
    /// This instance's rollup worker, for peers that copy its rollups (scaled out).
    pub replica_hub: Option<crate::stats::replica::ReplicaHub>,
}

impl GatewayState {
    pub fn new(store: Store, stats: StatsReader, cfg: Config, metrics: Arc<Metrics>) -> Self {
        GatewayState {
            auth: Arc::new(Auth::new(&cfg.auth)),
            push_cache: ws::PushCache::new(cfg.gateway.push_read_shared_for()),
            store,
            stats,
            cfg: Arc::new(cfg),
            metrics,
            live: tokio::sync::broadcast::channel(1).0,
            shutdown: CancellationToken::new(),
            sessions: ws::Sessions::default(),
            cluster: None,
            peers: group::Peers::default(),
            alerts: None,
            replica: Default::default(),
            replica_hub: None,
        }
    }

    /// Serve the alert rules and push alert messages of the worker behind `hub`.
    pub fn with_alerts(mut self, hub: crate::alerts::Hub) -> Self {
        self.alerts = Some(hub);
        self
    }

    /// Answer `GET /api/v1/cluster` from `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Run WebSocket sessions on `sessions` (and wait for them through it at shutdown).
    pub fn with_sessions(mut self, sessions: ws::Sessions) -> Self {
        self.sessions = sessions;
        self
    }

    /// Push the events published on `live` to WebSocket clients.
    pub fn with_live(mut self, live: LiveSender) -> Self {
        self.live = live;
        self
    }

    /// Close WebSocket sessions when `shutdown` is cancelled.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// An org exists if a configured token names it or any rollup mentions it (any
    /// instance's, in a scaled-out group).
    pub async fn org_known(&self, org: Uuid) -> Result<bool, ApiError> {
        if self.auth.names_org(org) {
            return Ok(true);
        }
        group::org_known(self, org).await
    }
}

/// Runs a blocking store or stats read on the blocking pool.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("a blocking read task", e))
}

/// Rollup reads of at most this many buckets run on the request's own thread.
pub const INLINE_READ_BUCKETS: i64 = 800;

/// Runs a store or stats read: on the request's own thread when it is `small` (a few cached
/// rollup rows, well under a millisecond: the hop to the blocking pool and back cost more,
/// two thread wake-ups that on a busy machine each wait for a core), else on the blocking
/// pool.
pub async fn read<T, F>(small: bool, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if small {
        Ok(f())
    } else {
        blocking(f).await
    }
}

/// The `{org}` of a REST path, checked: the request's token may read it (401/403) and it
/// exists (404).
#[derive(Debug, Clone, Copy)]
pub struct OrgAccess {
    pub org: Uuid,
    pub principal: Principal,
}

impl OrgAccess {
    pub fn org_bytes(&self) -> [u8; 16] {
        *self.org.as_bytes()
    }
}

impl FromRequestParts<GatewayState> for OrgAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        let principal = state.auth.principal(&parts.headers)?;
        let Path(path) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_parameter("path", parts.uri.path(), e))?;
        let raw = path.get("org").map(String::as_str).unwrap_or("");
        let org = Uuid::parse_str(raw)
            .map_err(|_| ApiError::bad_parameter("org", raw, "is not a UUID"))?;
        principal.may_read(org)?;
        if !state.org_known(org).await? {
            return Err(ApiError::not_found(format!("no org {org}")));
        }
        Ok(OrgAccess { org, principal })
    }
}

/// The REST and operations routes (no fallback, no layers). A WebSocket route is merged
/// here so the latency histogram covers it too.
pub fn routes(cfg: &Config) -> Router<GatewayState> {
    let org = "/api/v1/orgs/{org}";
    let mut r = Router::new()
        .route(&format!("{org}/timeseries"), get(stats::timeseries))
        .route(&format!("{org}/top-events"), get(stats::top_events))
        .route(&format!("{org}/unique-users"), get(stats::unique_users))
        .route(&format!("{org}/counters"), get(stats::counters))
        .route(&format!("{org}/trends"), get(trends::trends))
        .route(&format!("{org}/events"), get(trends::explore))
        .route(
            &format!("{org}/settings"),
            get(trends::get_settings).put(trends::put_settings),
        )
        .route(&format!("{org}/events/recent"), get(events::recent))
        .route(&format!("{org}/export"), get(events::export))
        .route(
            &format!("{org}/users/{{user_id}}/events"),
            axum::routing::delete(admin::delete_user_events),
        )
        .route("/api/v1/admin/backup", axum::routing::post(admin::backup))
        .route("/api/v1/cluster", get(admin::cluster))
        .route(group::PARTIALS_PATH, axum::routing::post(group::partials))
        .route(relay::STREAM_PATH, get(relay::stream))
        .route(
            &format!("{org}/dashboards"),
            get(dashboards::list).post(dashboards::create),
        )
        .route(
            &format!("{org}/dashboards/{{id}}"),
            get(dashboards::get)
                .put(dashboards::replace)
                .delete(dashboards::delete),
        )
        .route(
            &format!("{org}/alerts"),
            get(alerts::list).post(alerts::create),
        )
        .route(&format!("{org}/alerts/history"), get(alerts::history))
        .route(
            &format!("{org}/alerts/{{id}}"),
            get(alerts::get).put(alerts::replace).delete(alerts::delete),
        )
        .route(
            &format!("{org}/alerts/{{id}}/deliveries"),
            get(alerts::deliveries),
        )
        .route("/ws/dashboard", get(ws::dashboard))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(openapi::PATH, get(openapi::document));
    if cfg.metrics.enabled {
        r = r.route(&cfg.metrics.path, get(health::metrics));
    }
    r
}

/// The whole app: [`routes`], the per-route latency histogram, JSON 404/405 answers, the
/// body limit ([`body::MAX_BODY_BYTES`]), CORS.
/// Paths outside the API are the embedded dashboard ([`assets::fallback`]).
pub fn router(state: GatewayState) -> Router {
    let cors = cors_layer(&state.cfg.gateway.cors_allowed_origins);
    let mut app = routes(&state.cfg)
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            record_latency,
        ))
        .fallback(assets::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body::MAX_BODY_BYTES));
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    app.with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Observes `streamtally_http_request_seconds{route,method,status}` for matched routes
/// (the route template, never the raw path, so orgs and ids do not become labels). For the
/// export it is the time to the first byte.
async fn record_latency(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics
        .http_request_seconds
        .get_or_create(&HttpLabel {
            route,
            method,
            status: response.status().as_u16().to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// CORS from `gateway.cors_allowed_origins`: none when empty (same origin only), any origin
/// for `["*"]`, else exactly the listed origins.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The `Origin` check of a WebSocket upgrade. Browsers apply no CORS to WebSockets, so the
/// gateway applies `gateway.cors_allowed_origins` itself, with the CORS layer's meaning: a
/// request without `Origin` (not a browser) passes; so does the gateway's own origin (the
/// origin's host and port are the request's `Host`, as for the embedded dashboard); `["*"]`
/// lets every origin pass, otherwise only the listed ones do (an empty list: the gateway's
/// own origin only). A refused origin is a 403 that names it.
pub fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(raw) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(raw.as_bytes());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let listed = allowed
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(&origin));
    if listed || host.is_some_and(|host| same_origin(&origin, host)) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "origin '{origin}' may not open a WebSocket here: it is not this gateway's own origin \
         and not in gateway.cors_allowed_origins"
    )))
}

/// Whether `origin` (`scheme://host[:port]`) names the host and port of `host` (a `Host`
/// header), the scheme's default port written or not.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let bare = |a: &str| {
        a.strip_suffix(default_port)
            .unwrap_or(a)
            .to_ascii_lowercase()
    };
    bare(authority) == bare(host)
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway: cannot listen on {addr} (gateway.listen): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway on {addr} stopped: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `gateway.listen` (a failure names the address).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, GatewayError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { addr, source })
}
