//! `/ws/dashboard`: live push to browsers and users' own WebSocket clients.
//!
//! A connection is authenticated at the upgrade (the `Authorization` header, or `?token=`
//! for browsers) and bound to one org. The server sends `hello`, then every
//! `push_interval_ms` in which something changed an `update` (new events of the org, capped;
//! counters; lag; and, after a `subscribe`, the changed points of the subscribed view).
//! Idle connections only get pings. Commands: `subscribe` (answered with a `snapshot`) and
//! `ping`; anything else gets an `error` and the connection stays open. Oversized messages
//! close with 1009, command floods with 1008, shutdown with 1001.
//!
//! Each client has a bounded send queue drained by its own writer task: when it is full
//! the update is skipped (counted as dropped), and after three skips in a row the client is
//! disconnected. Nothing here ever waits on a client, so a slow one cannot slow ingestion or
//! other clients; new events come from a broadcast channel, drained at each push, where a
//! lagging receiver just loses the oldest batches (also counted).

use super::error::ApiError;
use super::events::EventJson;
use super::params::{fmt_time, parse_time};
use super::stats::counters_json;
use super::{blocking, GatewayState};
use crate::stats::query::{Granularity, Point, HOUR_US};
use crate::stats::realtime::LiveBatch;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

/// Consecutive skipped updates after which a client is disconnected.
const MAX_SKIPS: u32 = 3;
/// Fewest push ticks after an update with events (or a snapshot) in which the counters and
/// the view are looked at again (see [`settle_ticks`]).
const SETTLE_TICKS: u32 = 4;

/// Push ticks after an update with events (or a snapshot) in which the counters and the
/// view are looked at again: the real-time counters are persisted every
/// `stats.persist_interval_ms` and rollups written every `stats.rollup_flush_interval_ms`,
/// after the events reach the sessions; twice the longer of the two, at least
/// [`SETTLE_TICKS`].
fn settle_ticks(cfg: &crate::config::Config) -> u32 {
    let push = cfg.gateway.push_interval().as_millis();
    let wait = 2 * cfg
        .stats
        .rollup_flush_interval()
        .max(cfg.stats.persist_interval())
        .as_millis();
    SETTLE_TICKS.max(wait.div_ceil(push) as u32 + 1)
}

/// What WebSocket pushes read, shared by all sessions for half a push interval: the
/// counters per org, and each view's data (points, top events, unique users) per org and
/// view, so 1,000 clients of one org watching the same range cost one set of queries.
#[derive(Clone, Default)]
pub struct PushCache {
    counters: Shared<Uuid, Json>,
    views: Shared<String, ViewData>,
}

/// Values with the time they were read, shared between sessions.
#[derive(Clone)]
struct Shared<K, V>(Arc<parking_lot::Mutex<std::collections::HashMap<K, (Instant, V)>>>);

impl<K, V> Default for Shared<K, V> {
    fn default() -> Self {
        Shared(Arc::default())
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Shared<K, V> {
    /// The value read less than `fresh_for` ago, if any.
    fn fresh(&self, key: &K, fresh_for: Duration) -> Option<V> {
        let map = self.0.lock();
        let (at, v) = map.get(key)?;
        (at.elapsed() < fresh_for).then(|| v.clone())
    }

    /// Keeps `v` as read now; at [`MAX_CACHED`] keys the stale ones go first (then all).
    fn put(&self, key: K, v: V, fresh_for: Duration) {
        let mut map = self.0.lock();
        if map.len() >= MAX_CACHED {
            map.retain(|_, (at, _)| at.elapsed() < fresh_for);
            if map.len() >= MAX_CACHED {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), v));
    }
}

/// A view's timeseries points, top events (of its last day) and unique users.
type ViewData = (Vec<Point>, Json, Json);

/// Keys cached at most per kind (custom ranges make view keys without end).
const MAX_CACHED: usize = 4096;

#[derive(Debug, serde::Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    org: Option<String>,
}

/// `GET /ws/dashboard[?token=..][&org=..]`: 403 for a foreign `Origin`
/// ([`super::check_origin`]), 401/403/404 for the token and org, before the upgrade.
pub async fn dashboard(
    State(st): State<GatewayState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    super::check_origin(&st.cfg.gateway.cors_allowed_origins, &headers)?;
    let principal = if headers.contains_key(axum::http::header::AUTHORIZATION) {
        st.auth.principal(&headers)?
    } else {
        st.auth.principal_of_token(q.token.as_deref())?
    };
    let org = match (q.org.as_deref(), principal) {
        (Some(raw), _) => Uuid::parse_str(raw)
            .map_err(|_| ApiError::bad_parameter("org", raw, "is not a UUID"))?,
        (None, super::auth::Principal::Org(own)) => own,
        (None, _) => return Err(ApiError::missing_parameter("org")),
    };
    principal.may_read(org)?;
    if !st.org_known(org).await? {
        return Err(ApiError::not_found(format!("no org {org}")));
    }
    let limit = usize::try_from(st.cfg.gateway.ws_max_message_bytes).unwrap_or(usize::MAX);
    Ok(ws
        // tungstenite stops at the first frame header or fragment that takes a message over
        // the limit (so no more of it is buffered) with a capacity error, which the session
        // answers with a 1009 Close; the gateway's lingering close discards the rest the
        // client still sends, so that the Close frame reaches it.
        .max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite zero-fills its whole read buffer before every read attempt, and a
        // session's socket is polled on every wake (each batch of live events): with the
        // 128 KiB default, 1,000 sessions spent a third of their CPU in memset. Clients
        // send small commands; larger messages still arrive (the buffer grows for them).
        .read_buffer_size(4096)
        .on_upgrade(move |socket| {
            let sessions = st.sessions.clone();
            sessions.run(session(st, org, socket))
        }))
}

/// Where upgraded WebSocket sessions run, and the tracker that lets shutdown wait for their
/// close handshakes. `streamtally run` gives the sessions a runtime of their own, apart from
/// the one that accepts connections and answers REST requests, so a request never queues
/// behind a push tick of 1,000 sessions (the sockets stay registered with the accepting
/// runtime's reactor, which keeps running). By default (router tests) sessions run where
/// they were upgraded.
#[derive(Clone, Default)]
pub struct Sessions {
    runtime: Option<tokio::runtime::Handle>,
    tasks: tokio_util::task::TaskTracker,
}

impl Sessions {
    pub fn on(runtime: tokio::runtime::Handle) -> Self {
        Sessions {
            runtime: Some(runtime),
            tasks: Default::default(),
        }
    }

    async fn run(self, session: impl std::future::Future<Output = ()> + Send + 'static) {
        let session = self.tasks.track_future(session);
        match self.runtime {
            Some(rt) => {
                let _ = rt.spawn(session).await;
            }
            None => session.await,
        }
    }

    /// After the shutdown token is cancelled: waits up to `within` for the sessions to
    /// finish their close handshakes.
    pub async fn closed(&self, within: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok()
    }
}

/// What a `subscribe` asked for.
#[derive(Debug, Clone)]
struct View {
    from_us: i64,
    /// None: live, the range ends now and slides (keeping its length).
    to_us: Option<i64>,
    span_us: i64,
    granularity: Granularity,
    event_type: Option<String>,
}

impl View {
    /// Sessions of one org with equal keys see the same data (a live range slides with the
    /// clock, so only its length counts).
    fn cache_key(&self, org: Uuid) -> String {
        let from = self.to_us.map(|_| self.from_us);
        format!(
            "{org}|{from:?}|{:?}|{}|{}|{:?}",
            self.to_us,
            self.span_us,
            self.granularity.as_str(),
            self.event_type
        )
    }

    fn range(&self, now_us: i64) -> (i64, i64) {
        match self.to_us {
            Some(to) => (self.from_us, to),
            None => (now_us - self.span_us, now_us),
        }
    }

    fn json(&self, now_us: i64) -> Json {
        let (from, to) = self.range(now_us);
        json!({
            "from": fmt_time(from),
            "to": self.to_us.map(|_| fmt_time(to)),
            "granularity": self.granularity.as_str(),
            "event_type": self.event_type,
        })
    }
}

/// One client's state.
struct Session {
    st: GatewayState,
    org: Uuid,
    tx: mpsc::Sender<Message>,
    /// New events of the org since the last update, in the batches published (newest
    /// last); the oldest batches go once the newer ones hold `recent_events_cap` events.
    pending: VecDeque<Arc<LiveBatch>>,
    pending_events: usize,
    changed: bool,
    view: Option<View>,
    /// The view's points as last sent, to send only what changed.
    sent_points: Vec<Point>,
    /// The counters, top events and unique users as last sent.
    sent: Option<(Json, Option<Json>)>,
    /// Push ticks left in which to look again for counters and rollups that the stats
    /// workers write shortly after the events they count reach this session.
    settle_ticks: u32,
    skips: u32,
    commands: (Instant, u64),
}

enum Flow {
    Continue,
    Close(u16, String),
}

/// Whether a read error is tungstenite's capacity error: a frame or message over
/// `gateway.ws_max_message_bytes` (see [`dashboard`]).
fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        e.source()
            .and_then(|inner| inner.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// The reason of a 1009 Close (at most 123 bytes).
fn too_big(cfg: &crate::config::GatewayConfig) -> String {
    format!(
        "message too big: over gateway.ws_max_message_bytes ({} bytes)",
        cfg.ws_max_message_bytes
    )
}

async fn session(st: GatewayState, org: Uuid, socket: WebSocket) {
    let cfg = st.cfg.gateway.clone();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(cfg.ws_send_queue().get());
    let metrics = st.metrics.clone();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() {
                return;
            }
            metrics.ws_messages_sent.inc();
            if close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    st.metrics.ws_clients.inc();
    let mut live = st.live.subscribe();
    let mut s = Session {
        st: st.clone(),
        org,
        tx,
        pending: VecDeque::new(),
        pending_events: 0,
        changed: false,
        view: None,
        sent_points: Vec::new(),
        sent: None,
        settle_ticks: 0,
        skips: 0,
        commands: (Instant::now(), 0),
    };
    let _ = s.tx.try_send(text(json!({
        "type": "hello",
        "org_id": org.to_string(),
        "server_time": fmt_time(chrono::Utc::now().timestamp_micros()),
        "push_interval_ms": cfg.push_interval_ms,
    })));
    let mut push = tokio::time::interval(cfg.push_interval());
    let mut ping = tokio::time::interval(cfg.ws_ping_interval());
    push.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = st.shutdown.clone();
    let close = loop {
        let flow = tokio::select! {
            _ = shutdown.cancelled() => Flow::Close(1001, "server shutting down".into()),
            msg = stream.next() => match msg {
                Some(Err(e)) if is_too_big(&e) => Flow::Close(1009, too_big(&cfg)),
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                Some(Ok(Message::Text(t))) => s.command(t.as_str()).await,
                Some(Ok(Message::Binary(b))) => {
                    if b.len() as u64 > cfg.ws_max_message_bytes {
                        Flow::Close(1009, too_big(&cfg))
                    } else {
                        s.error("bad_command", "binary frames are not supported; send JSON text");
                        Flow::Continue
                    }
                }
                Some(Ok(_)) => Flow::Continue,
            },
            _ = push.tick() => {
                // New events are taken here, once per push, rather than on every batch the
                // real-time worker publishes: 1,000 sessions woken per batch cost more CPU
                // than the pushes themselves.
                loop {
                    match live.try_recv() {
                        Ok(batch) => s.take_live(&batch),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            // More batches than the channel holds came within one push
                            // interval: those events are not in this update (the counters
                            // and view still are).
                            s.st.metrics.ws_messages_dropped.inc_by(n);
                            s.changed = true;
                        }
                        Err(_) => break,
                    }
                }
                s.push().await
            }
            _ = ping.tick() => {
                let _ = s.tx.try_send(Message::Ping(Default::default()));
                Flow::Continue
            }
        };
        if let Flow::Close(code, reason) = flow {
            break Some((code, reason));
        }
    };
    if let Some((code, reason)) = close {
        let _ = s.tx.try_send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })));
        // The closing handshake: read (and drop) what the client still sends until its
        // Close, so the socket is not torn down with unread data (a TCP reset would discard
        // our Close frame on the client's side). After a read error (a message too big) the
        // stream has ended; the gateway's lingering close (`conn`) drains the socket then.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    drop(s);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    st.metrics.ws_clients.dec();
}

/// The values of a view's top events and unique users, without the range's bounds (a live
/// range's end moves with the clock: that alone is not a change worth an update).
fn view_values(top: &Json, uniq: &Json) -> Json {
    json!([
        top["date"],
        top["events"],
        uniq["unique_users"],
        uniq["unique_sessions"],
        uniq["exact"]
    ])
}

fn text(v: Json) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

impl Session {
    fn error(&mut self, code: &str, message: &str) {
        let _ = self.tx.try_send(text(
            json!({"type": "error", "code": code, "message": message}),
        ));
    }

    fn take_live(&mut self, batch: &Arc<LiveBatch>) {
        if batch.org != *self.org.as_bytes() || batch.events.is_empty() {
            return;
        }
        let cap = self.st.cfg.gateway.recent_events_cap().get();
        self.pending_events += batch.events.len();
        self.pending.push_back(batch.clone());
        while let Some(oldest) = self.pending.front() {
            if self.pending_events - oldest.events.len() < cap {
                break;
            }
            self.pending_events -= oldest.events.len();
            self.pending.pop_front();
        }
        self.changed = true;
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_events = 0;
        self.changed = false;
    }

    async fn command(&mut self, raw: &str) -> Flow {
        let cfg = &self.st.cfg.gateway;
        if raw.len() as u64 > cfg.ws_max_message_bytes {
            return Flow::Close(1009, too_big(cfg));
        }
        if self.commands.0.elapsed() >= Duration::from_secs(1) {
            self.commands = (Instant::now(), 0);
        }
        self.commands.1 += 1;
        if self.commands.1 > cfg.ws_max_commands_per_s {
            return Flow::Close(1008, "too many commands per second".into());
        }
        let cmd: Json = match serde_json::from_str(raw) {
            Ok(v) => v,
            Err(e) => {
                self.error("bad_command", &format!("not JSON: {e}"));
                return Flow::Continue;
            }
        };
        match cmd.get("type").and_then(Json::as_str) {
            Some("ping") => {
                let _ = self.tx.try_send(text(json!({"type": "pong"})));
            }
            Some("subscribe") => match self.parse_view(&cmd) {
                Ok(view) => {
                    self.view = Some(view);
                    self.sent_points.clear();
                    match self.snapshot().await {
                        Ok(msg) => {
                            let _ = self.tx.try_send(Message::Text(Utf8Bytes::from(msg)));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "websocket snapshot failed");
                            self.error("internal", "the snapshot could not be read");
                        }
                    }
                }
                Err(message) => self.error("bad_command", &message),
            },
            Some(other) => self.error(
                "bad_command",
                &format!("unknown command type '{other}': expected 'subscribe' or 'ping'"),
            ),
            None => self.error(
                "bad_command",
                "a command is a JSON object with a string 'type' ('subscribe' or 'ping')",
            ),
        }
        Flow::Continue
    }

    fn parse_view(&self, cmd: &Json) -> Result<View, String> {
        let time = |name: &str| -> Result<Option<i64>, String> {
            match cmd.get(name) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) => parse_time(name, s).map(Some).map_err(|e| e.message),
                Some(Json::Number(n)) => n
                    .as_i64()
                    .map(|ms| Some(ms * 1000))
                    .ok_or_else(|| format!("'{name}': {n} is not epoch milliseconds")),
                Some(other) => Err(format!(
                    "'{name}': {other} is neither an RFC 3339 time nor epoch milliseconds"
                )),
            }
        };
        let now = chrono::Utc::now().timestamp_micros();
        let from = time("from")?.ok_or("'from' is required")?;
        let to = time("to")?;
        let end = to.unwrap_or(now);
        if from >= end {
            return Err(format!(
                "'from' ({}) must be before 'to' ({})",
                fmt_time(from),
                fmt_time(end)
            ));
        }
        let max_days = self.st.cfg.gateway.max_range_days as i64;
        if end - from > max_days * 24 * HOUR_US {
            return Err(format!(
                "the range is longer than gateway.max_range_days ({max_days} days)"
            ));
        }
        let granularity = match cmd.get("granularity") {
            None | Some(Json::Null) => {
                if end - from <= 48 * HOUR_US {
                    Granularity::Hour
                } else {
                    Granularity::Day
                }
            }
            Some(Json::String(g)) => Granularity::parse(g)
                .ok_or_else(|| format!("'granularity': '{g}' is not 'hour' or 'day'"))?,
            Some(other) => return Err(format!("'granularity': {other} is not a string")),
        };
        let event_type = match cmd.get("event_type") {
            None | Some(Json::Null) => None,
            Some(Json::String(t)) if !t.is_empty() && t.len() <= 200 => Some(t.clone()),
            Some(other) => {
                return Err(format!(
                    "'event_type': {other} is not a non-empty string of at most 200 bytes"
                ))
            }
        };
        Ok(View {
            from_us: from,
            to_us: to,
            span_us: end - from,
            granularity,
            event_type,
        })
    }

    fn lag(&self) -> Json {
        let m = &self.st.metrics;
        json!({
            "events": m.total_lag.load(std::sync::atomic::Ordering::Relaxed),
            "freshness_ms": m.freshness_ms(),
        })
    }

    /// How long a read is shared by the sessions: half a push interval.
    fn fresh_for(&self) -> Duration {
        self.st.cfg.gateway.push_read_shared_for()
    }

    async fn counters(&self) -> Result<Json, ApiError> {
        let cache = &self.st.push_cache.counters;
        if let Some(c) = cache.fresh(&self.org, self.fresh_for()) {
            return Ok(c);
        }
        let stats = self.st.stats.clone();
        let windows = self.st.cfg.stats.realtime_windows_s.clone();
        let org = *self.org.as_bytes();
        let now = chrono::Utc::now().timestamp_micros();
        let c = blocking(move || stats.counters(org, &windows, now)).await??;
        let c = counters_json(self.org, &c);
        cache.put(self.org, c.clone(), self.fresh_for());
        Ok(c)
    }

    /// The view's timeseries points, top events (its last day) and unique users.
    async fn view_data(&self, view: &View) -> Result<ViewData, ApiError> {
        let cache = &self.st.push_cache.views;
        let key = view.cache_key(self.org);
        if let Some(d) = cache.fresh(&key, self.fresh_for()) {
            return Ok(d);
        }
        let data = self.read_view(view).await?;
        cache.put(key, data.clone(), self.fresh_for());
        Ok(data)
    }

    async fn read_view(&self, view: &View) -> Result<ViewData, ApiError> {
        let stats = self.st.stats.clone();
        let org = *self.org.as_bytes();
        let now = chrono::Utc::now().timestamp_micros();
        let (from, to) = view.range(now);
        let (g, et) = (view.granularity, view.event_type.clone());
        let (points, top, uniq) = blocking(move || {
            let points = stats.timeseries(org, from, to, g, et.as_deref())?;
            let day = chrono::DateTime::from_timestamp_micros(to - 1)
                .unwrap_or_default()
                .date_naive();
            let top = stats.top_events(org, day, 10)?;
            let uniq = stats.unique(org, from, to)?;
            Ok::<_, crate::stats::StatsError>((points, (day, top), uniq))
        })
        .await??;
        let org_s = self.org.to_string();
        let top = json!({
            "org_id": org_s,
            "date": top.0.format("%Y-%m-%d").to_string(),
            "events": top.1.iter().map(|t| json!({"event_name": t.event_name, "count": t.count}))
                .collect::<Vec<_>>(),
        });
        let uniq = json!({
            "org_id": org_s,
            "from": fmt_time(from),
            "to": fmt_time(to),
            "unique_users": uniq.users,
            "unique_sessions": uniq.sessions,
            "exact": uniq.exact,
        });
        Ok((points, top, uniq))
    }

    fn timeseries_json(&self, view: &View, points: &[Point]) -> Json {
        let now = chrono::Utc::now().timestamp_micros();
        let (from, to) = view.range(now);
        json!({
            "org_id": self.org.to_string(),
            "from": fmt_time(from),
            "to": fmt_time(to),
            "granularity": view.granularity.as_str(),
            "event_type": view.event_type,
            "points": points_json(points),
        })
    }

    /// The `snapshot` message, as text: its recent events embed their stored `properties`
    /// text, which a `serde_json::Value` would parse and reorder.
    async fn snapshot(&mut self) -> Result<String, ApiError> {
        let view = self.view.clone().ok_or_else(|| {
            ApiError::internal("a websocket snapshot", "no view to take a snapshot of")
        })?;
        let (points, top, uniq) = self.view_data(&view).await?;
        let counters = self.counters().await?;
        let stats = self.st.stats.clone();
        let org = *self.org.as_bytes();
        let recent = blocking(move || stats.recent_events(org, 100)).await??;
        let now = chrono::Utc::now().timestamp_micros();
        let msg = Snapshot {
            r#type: "snapshot",
            view: view.json(now),
            timeseries: self.timeseries_json(&view, &points),
            top_events: &top,
            unique_users: &uniq,
            counters: &counters,
            recent_events: recent.iter().map(EventJson::from_row).collect(),
            lag: self.lag(),
        };
        let msg = serde_json::to_string(&msg).map_err(|e| {
            ApiError::internal("a websocket snapshot", format!("cannot serialize it: {e}"))
        })?;
        self.sent_points = points;
        self.sent = Some((counters, Some(view_values(&top, &uniq))));
        // The snapshot includes everything stored so far; what the workers have not
        // written yet follows in the next ticks.
        self.clear_pending();
        self.settle_ticks = settle_ticks(&self.st.cfg);
        Ok(msg)
    }

    /// Sends an update if anything changed; skips it when the client's queue is full and
    /// disconnects the client after [`MAX_SKIPS`] skips in a row. New events make an update;
    /// for [`settle_ticks`] ticks after one, an update is also sent when the counters or
    /// the view's rollups changed (the stats workers write them after the events arrive
    /// here). Idle, nothing is sent.
    async fn push(&mut self) -> Flow {
        let events = self.changed;
        if !events && self.settle_ticks == 0 {
            return Flow::Continue;
        }
        if !events {
            self.settle_ticks -= 1;
        }
        if self.tx.capacity() == 0 {
            return self.skipped();
        }
        let counters = match self.counters().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "websocket update: counters failed");
                return Flow::Continue;
            }
        };
        let mut view_json = None;
        let mut view_sent = None;
        let mut points_changed = false;
        if let Some(view) = self.view.clone() {
            match self.view_data(&view).await {
                Ok((points, top, uniq)) => {
                    let changed: Vec<Point> = points
                        .iter()
                        .filter(|p| !self.sent_points.contains(p))
                        .copied()
                        .collect();
                    points_changed = !changed.is_empty();
                    view_json = Some(json!({
                        "timeseries": points_json(&changed),
                        "top_events": top.clone(),
                        "unique_users": uniq.clone(),
                    }));
                    view_sent = Some((points, top, uniq));
                }
                Err(e) => tracing::warn!(error = %e, "websocket update: view failed"),
            }
        }
        let now_sent = (
            counters.clone(),
            view_sent.as_ref().map(|(_, t, u)| view_values(t, u)),
        );
        if !events && !points_changed && self.sent.as_ref() == Some(&now_sent) {
            return Flow::Continue;
        }
        // Assembled as text: each event's JSON is made once and shared by every session
        // of the org (newest first).
        let cap = self.st.cfg.gateway.recent_events_cap().get();
        let newest_first = self
            .pending
            .iter()
            .rev()
            .flat_map(|b| b.events.iter().rev())
            .take(cap);
        let mut msg = String::with_capacity(256 + self.pending_events.min(cap) * 400);
        msg.push_str("{\"type\":\"update\",\"events\":[");
        for (i, ev) in newest_first.enumerate() {
            if i > 0 {
                msg.push(',');
            }
            msg.push_str(
                ev.json
                    .get_or_init(|| EventJson::from_row(&ev.row).to_string().into()),
            );
        }
        msg.push_str("],\"counters\":");
        msg.push_str(&counters.to_string());
        msg.push_str(",\"lag\":");
        msg.push_str(&self.lag().to_string());
        if let Some(v) = view_json {
            msg.push_str(",\"view\":");
            msg.push_str(&v.to_string());
        }
        msg.push('}');
        match self.tx.try_send(Message::Text(Utf8Bytes::from(msg))) {
            Ok(()) => {
                self.skips = 0;
                self.clear_pending();
                if let Some((points, _, _)) = view_sent {
                    self.sent_points = points;
                }
                self.sent = Some(now_sent);
                if events {
                    self.settle_ticks = settle_ticks(&self.st.cfg);
                }
                Flow::Continue
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.skipped(),
            Err(mpsc::error::TrySendError::Closed(_)) => Flow::Close(1001, "closed".into()),
        }
    }

    fn skipped(&mut self) -> Flow {
        self.st.metrics.ws_messages_dropped.inc();
        self.skips += 1;
        if self.skips >= MAX_SKIPS {
            tracing::info!(org = %self.org, "websocket client too slow: disconnected");
            Flow::Close(1008, "client too slow: send queue full".into())
        } else {
            Flow::Continue
        }
    }
}

/// The `snapshot` message (docs/API.md).
#[derive(serde::Serialize)]
struct Snapshot<'a> {
    r#type: &'static str,
    view: Json,
    timeseries: Json,
    top_events: &'a Json,
    unique_users: &'a Json,
    counters: &'a Json,
    recent_events: Vec<EventJson<'a>>,
    lag: Json,
}

fn points_json(points: &[Point]) -> Vec<Json> {
    points
        .iter()
        .map(|p| {
            json!({
                "t": fmt_time(p.t_us),
                "events": p.events,
                "unique_users": p.unique_users,
                "unique_sessions": p.unique_sessions,
            })
        })
        .collect()
}
