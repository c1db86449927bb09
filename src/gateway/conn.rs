//! The gateway's connections: its own accept loop over hyper's HTTP/1.1 server (what
//! `axum::serve` does, plus the limits it lacks), so idle and slow clients cannot exhaust it.
//!
//! - The cap: at most `gateway.max_connections` open connections, HTTP and upgraded
//!   WebSocket together (the slot lives in the socket, so it is held until the socket
//!   closes). A connection over the cap is accepted and closed at once, not left in the
//!   listen backlog where the client would wait without an answer; it is counted in
//!   `streamtally_gateway_connections_refused_total`.
//! - Timeouts, checked by each connection's task: a client must send a whole request head
//!   within `gateway.header_read_timeout_ms` of connecting, or of its first byte after an
//!   idle pause; between requests a keep-alive connection may wait `gateway.idle_timeout_ms`.
//!   A request being answered (its head read, its response not yet fully written) and an
//!   upgraded WebSocket have no deadline here (a WebSocket has pings and its own limits).
//! - Lingering close: a socket the gateway closes while the peer has not closed its side is
//!   half-closed (what was written still arrives, then a FIN) and read, the input discarded,
//!   until the peer closes or [`LINGER`] passes. Dropped with unread input, the kernel would
//!   answer with a reset, which makes the client discard what it had not read yet: a 413
//!   sent before the body was read, or a WebSocket's 1009 Close frame.
//! - Shutdown: stop accepting; connections between requests close at once, requests being
//!   answered finish (hyper's graceful shutdown); [`serve`] returns when all have closed.

use super::GatewayError;
use crate::config::GatewayConfig;
use crate::metrics::{Metrics, ReasonLabel};
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// How long a closed connection with unread input is read and discarded before it is
/// dropped (see the module docs).
pub const LINGER: Duration = Duration::from_secs(5);

/// Pause after an accept error that is not about one connection (out of file descriptors):
/// retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How often, at most, a full gateway says so in the log.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The connection limits of `[gateway]`, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// From a validated config (each value is at least 1).
    pub fn from_config(g: &GatewayConfig) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(g.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(g.idle_timeout_ms),
            max_connections: usize::try_from(g.max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// What [`serve`] needs besides the listener and the app.
#[derive(Clone)]
pub struct ServeOptions {
    pub limits: ConnectionLimits,
    pub metrics: Arc<Metrics>,
}

impl ServeOptions {
    pub fn new(g: &GatewayConfig, metrics: Arc<Metrics>) -> ServeOptions {
        ServeOptions {
            limits: ConnectionLimits::from_config(g),
            metrics,
        }
    }
}

/// Serves `app` until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Serve {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
    let ServeOptions { limits, metrics } = opts;
    tracing::info!(%addr, max_connections = limits.max_connections, "gateway listening");
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let tasks = TaskTracker::new();
    let mut last_refused_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            // The peer gave up before we got to it: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "gateway: accepting a connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.gateway_connections_refused.inc();
            if last_refused_log.is_none_or(|t| t.elapsed() >= REFUSED_LOG_INTERVAL) {
                last_refused_log = Some(Instant::now());
                tracing::warn!(
                    %peer,
                    max_connections = limits.max_connections,
                    "gateway: gateway.max_connections connections are open; closing new ones \
                     at once (streamtally_gateway_connections_refused_total)"
                );
            }
            drop(stream);
            continue;
        };
        metrics.gateway_connections.inc();
        let slot = Slot {
            _permit: permit,
            metrics: metrics.clone(),
        };
        tasks.spawn(serve_connection(Connection {
            stream,
            slot,
            app: app.clone(),
            limits,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        }));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    tracing::info!(%addr, "gateway stopped");
    Ok(())
}

/// Errors of one connection that came and went before it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what its task needs.
struct Connection {
    stream: TcpStream,
    slot: Slot,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

/// Serves one connection's requests until it closes, times out, upgrades (the WebSocket
/// then owns the socket) or the gateway shuts down.
async fn serve_connection(c: Connection) {
    let tracker = Arc::new(Tracker::new());
    let io = TokioIo::new(TrackedIo {
        stream: Some(c.stream),
        slot: Some(c.slot),
        tracker: tracker.clone(),
    });
    let service = TrackedService {
        app: c.app,
        tracker: tracker.clone(),
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = tracker.deadline(&c.limits);
        // With no deadline (a request being answered) look again a little later.
        let wake = deadline.map(|(at, _)| at).unwrap_or_else(|| {
            Instant::now() + c.limits.header_read_timeout.min(c.limits.idle_timeout)
        });
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "gateway: connection ended with an error");
                }
                return;
            }
            _ = c.shutdown.cancelled(), if !draining => {
                if tracker.between_requests() {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = tokio::time::sleep_until(wake) => {
                if let Some((at, reason)) = tracker.deadline(&c.limits) {
                    if Instant::now() >= at {
                        c.metrics
                            .gateway_connections_timed_out
                            .get_or_create(&ReasonLabel { reason: reason.to_string() })
                            .inc();
                        tracing::debug!(reason, "gateway: connection timed out; closing it");
                        return;
                    }
                }
            }
        }
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a whole request head since `since` (the accept, or the first byte after
    /// an idle pause).
    Head { since: Instant },
    /// `requests` requests are being answered.
    Busy { requests: usize },
    /// Between requests since `since`.
    Idle { since: Instant },
    /// Upgraded to a WebSocket: its session's limits apply.
    Upgraded,
}

/// A connection's [`Phase`], moved by its socket (bytes read), its service (a request's
/// head read, its response body done) and read by its task.
struct Tracker(Mutex<Phase>);

impl Tracker {
    fn new() -> Tracker {
        Tracker(Mutex::new(Phase::Head {
            since: Instant::now(),
        }))
    }

    /// The time the connection must be closed at, and why; none while answering.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, &'static str)> {
        match *self.0.lock() {
            Phase::Head { since } => Some((since + limits.header_read_timeout, "header")),
            Phase::Idle { since } => Some((since + limits.idle_timeout, "idle")),
            Phase::Busy { .. } | Phase::Upgraded => None,
        }
    }

    fn between_requests(&self) -> bool {
        matches!(*self.0.lock(), Phase::Head { .. } | Phase::Idle { .. })
    }

    /// Bytes arrived: after an idle pause they start the next request's head.
    fn read_some(&self) {
        let mut phase = self.0.lock();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                since: Instant::now(),
            };
        }
    }

    /// A request's head was read.
    fn begin(&self) {
        let mut phase = self.0.lock();
        *phase = match *phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            Phase::Upgraded => Phase::Upgraded,
            Phase::Head { .. } | Phase::Idle { .. } => Phase::Busy { requests: 1 },
        };
    }

    /// A request's response was written (or abandoned).
    fn end(&self) {
        let mut phase = self.0.lock();
        if let Phase::Busy { requests } = *phase {
            *phase = if requests > 1 {
                Phase::Busy {
                    requests: requests - 1,
                }
            } else {
                Phase::Idle {
                    since: Instant::now(),
                }
            };
        }
    }

    fn upgraded(&self) {
        *self.0.lock() = Phase::Upgraded;
    }
}

/// A request being answered: ends when dropped (with the response body, or the request's
/// future if the connection goes first).
struct RequestGuard(Arc<Tracker>);

impl RequestGuard {
    fn begin(tracker: Arc<Tracker>) -> RequestGuard {
        tracker.begin();
        RequestGuard(tracker)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The app, telling the connection's [`Tracker`] when requests begin and end.
#[derive(Clone)]
struct TrackedService {
    app: Router,
    tracker: Arc<Tracker>,
}

impl hyper::service::Service<Request<Incoming>> for TrackedService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = RequestGuard::begin(self.tracker.clone());
        // A Router is always ready (its `poll_ready` returns `Ready` at once).
        let mut app = self.app.clone();
        let response = app.call(req.map(Body::new));
        Box::pin(async move {
            let response = response.await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                guard.0.upgraded();
            }
            Ok(response.map(|body| TrackedBody {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that ends its request when it is done (dropped by hyper once written).
pub struct TrackedBody {
    body: Body,
    _guard: RequestGuard,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's place under `gateway.max_connections`, and its count in the open
/// connections gauge, until the socket is closed.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.gateway_connections.dec();
    }
}

/// The socket: tells the [`Tracker`] when bytes arrive; closes with a linger (module docs).
struct TrackedIo {
    /// `None` only once dropped.
    stream: Option<TcpStream>,
    slot: Option<Slot>,
    tracker: Arc<Tracker>,
}

impl TrackedIo {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(self.stream()?).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.tracker.read_some();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_shutdown(cx)
    }
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        let (Some(stream), Some(slot)) = (self.stream.take(), self.slot.take()) else {
            return;
        };
        // The peer closed already (or reset): nothing to wait for. Otherwise it may still be
        // sending (a body we refused, the rest of a WebSocket message too big), even when
        // nothing waits unread at this instant.
        let mut probe = [0u8; 1];
        match stream.try_read(&mut probe) {
            Ok(0) => return,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return,
            Ok(_) | Err(_) => {}
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream, slot));
        }
    }
}

/// Half-closes `stream` (what was written still arrives, then a FIN) and discards its input
/// until the peer closes or [`LINGER`] passes.
async fn linger(mut stream: TcpStream, slot: Slot) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 8192];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    drop(stream);
    drop(slot);
}
