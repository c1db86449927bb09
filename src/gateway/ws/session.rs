//! One WebSocket client's session: its loop (commands, push ticks, pings, shutdown), the
//! `snapshot` that answers a `subscribe`, the `update`s, and the close handshake.

use super::super::error::ApiError;
use super::super::events::EventJson;
use super::super::params::{fmt_time, RECENT_EVENTS_LIMIT};
use super::super::trends::{self as trends, Pairs};
use super::super::wire::{
    ClientCmd, CountersBody, LagOut, PointOut, ServerMsg, Snapshot, Subscribe, Update, ViewUpdate,
};
use super::super::{group, GatewayState};
use super::view::{self, View, ViewData, ViewValues};
use crate::metrics::Metrics;
use crate::stats::query::Point;
use crate::stats::realtime::LiveBatch;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::Value as Json;
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

/// The first bucket whose value differs in any series between `was` and `now`, when both
/// list the same series (keys and labels) with as many buckets; None otherwise (or when
/// nothing differs).
fn first_changed_bucket(was: &Json, now: &Json) -> Option<usize> {
    let (was, now) = (was.as_array()?, now.as_array()?);
    if was.len() != now.len() {
        return None;
    }
    let mut first: Option<usize> = None;
    for (w, n) in was.iter().zip(now) {
        let same_series = w
            .as_object()?
            .iter()
            .all(|(k, v)| k == "values" || k == "total" || n.get(k) == Some(v));
        let (wv, nv) = (w["values"].as_array()?, n["values"].as_array()?);
        if !same_series || wv.len() != nv.len() {
            return None;
        }
        if let Some(i) = wv.iter().zip(nv).position(|(a, b)| a != b) {
            first = Some(first.map_or(i, |f| f.min(i)));
        }
    }
    first
}

/// `series` with each one's `values` from bucket `k` on.
fn values_from(series: &Json, k: usize) -> Json {
    let mut out = series.clone();
    if let Some(list) = out.as_array_mut() {
        for s in list {
            if let Some(v) = s.get_mut("values").and_then(Json::as_array_mut) {
                v.drain(..k.min(v.len()));
            }
        }
    }
    out
}

/// Most trends one session keeps current.
const MAX_TRENDS: usize = 20;

/// A trend kept current for the client (a `trend` command).
struct TrendSub {
    id: String,
    pairs: Pairs,
    /// A live range's length (µs): it ends now and slides.
    live_len: Option<i64>,
    zone: crate::stats::zone::Zone,
    /// The body last sent.
    sent: Json,
    /// When a live range's bucket list moves (the end of its last bucket).
    moves_at: i64,
    /// Updates may carry only the buckets from the first changed one.
    deltas: bool,
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
    /// Events of the org taken since the last update (the pending ones and those dropped
    /// past the cap): the update's `new_events`.
    arrived: u64,
    /// Most events an update carries (the subscribe's `events`, else the cap).
    events_per_update: usize,
    changed: bool,
    view: Option<View>,
    /// The view's points as last sent, to send only what changed.
    sent_points: Vec<Point>,
    /// The counters, top events and unique users as last sent.
    sent: Option<(CountersBody, Option<ViewValues>)>,
    /// Push ticks left in which to look again for counters and rollups that the stats
    /// workers write shortly after the events they count reach this session.
    settle_ticks: u32,
    skips: u32,
    commands: (Instant, u64),
    trends: Vec<TrendSub>,
}

enum Flow {
    Continue,
    Close(u16, String),
}

/// Whether a read error is tungstenite's capacity error: a frame or message over
/// `gateway.ws_max_message_bytes` (see [`super::dashboard`]).
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

/// Serves an upgraded connection of `org` until the client leaves or the session closes it.
pub(super) async fn run(st: GatewayState, org: Uuid, socket: WebSocket) {
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel::<Message>(st.cfg.gateway.ws_send_queue().get());
    let writer = tokio::spawn(write(sink, rx, st.metrics.clone()));
    st.metrics.ws_clients.inc();
    let mut s = Session::new(st.clone(), org, tx);
    s.send(&ServerMsg::Hello {
        org_id: org.to_string(),
        server_time: fmt_time(chrono::Utc::now().timestamp_micros()),
        push_interval_ms: st.cfg.gateway.push_interval_ms,
    });
    if let Some((code, reason)) = s.serve(&mut stream).await {
        s.close(code, reason, &mut stream).await;
    }
    drop(s);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    st.metrics.ws_clients.dec();
}

/// The writer task: sends what the session queued, in order, until a Close is sent or the
/// session is gone.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
    metrics: Arc<Metrics>,
) {
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
}

/// The next alert message, or never without an alert worker. A session that fell behind
/// skips what it missed (the history is on the API).
async fn next_alert(
    rx: &mut Option<broadcast::Receiver<Arc<crate::alerts::AlertMessage>>>,
) -> Option<Arc<crate::alerts::AlertMessage>> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(m) => return Some(m),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

impl Session {
    fn new(st: GatewayState, org: Uuid, tx: mpsc::Sender<Message>) -> Self {
        let events_per_update = st.cfg.gateway.recent_events_cap().get();
        Session {
            st,
            org,
            tx,
            pending: VecDeque::new(),
            pending_events: 0,
            arrived: 0,
            events_per_update,
            changed: false,
            view: None,
            sent_points: Vec::new(),
            sent: None,
            settle_ticks: 0,
            skips: 0,
            commands: (Instant::now(), 0),
            trends: Vec::new(),
        }
    }

    /// The session's loop: commands as they come, an update per push tick, pings. Returns
    /// the code and reason to close with, or None when the client has gone.
    async fn serve(&mut self, stream: &mut SplitStream<WebSocket>) -> Option<(u16, String)> {
        let cfg = self.st.cfg.gateway.clone();
        let mut live = self.st.live.subscribe();
        // Alert messages (docs/ALERTS.md) go out as they come, not at the push tick.
        let mut alerts = self.st.alerts.as_ref().map(|h| h.messages.subscribe());
        let mut push = tokio::time::interval(cfg.push_interval());
        let mut ping = tokio::time::interval(cfg.ws_ping_interval());
        push.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.st.shutdown.clone();
        loop {
            let flow = tokio::select! {
                _ = shutdown.cancelled() => Flow::Close(1001, "server shutting down".into()),
                msg = stream.next() => match msg {
                    Some(Err(e)) if is_too_big(&e) => Flow::Close(1009, too_big(&cfg)),
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                    Some(Ok(m)) => self.received(m).await,
                },
                _ = push.tick() => {
                    self.take_live(&mut live);
                    let changed = self.changed || self.settle_ticks > 0;
                    self.push_trends(changed).await;
                    self.push().await
                }
                msg = next_alert(&mut alerts) => {
                    if let Some(m) = msg {
                        if m.org == *self.org.as_bytes() {
                            let _ = self.tx.try_send(Message::Text(Utf8Bytes::from(&*m.text)));
                        }
                    }
                    Flow::Continue
                }
                _ = ping.tick() => {
                    let _ = self.tx.try_send(Message::Ping(Default::default()));
                    Flow::Continue
                }
            };
            if let Flow::Close(code, reason) = flow {
                return Some((code, reason));
            }
        }
    }

    /// Sends the Close frame, then the closing handshake: reads (and drops) what the client
    /// still sends until its Close, so the socket is not torn down with unread data (a TCP
    /// reset would discard our Close frame on the client's side). After a read error (a
    /// message too big) the stream has ended; the gateway's lingering close (`conn`) drains
    /// the socket then.
    async fn close(&self, code: u16, reason: String, stream: &mut SplitStream<WebSocket>) {
        let _ = self.tx.try_send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })));
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    async fn received(&mut self, msg: Message) -> Flow {
        let cfg = &self.st.cfg.gateway;
        match msg {
            Message::Text(t) => self.command(t.as_str()).await,
            Message::Binary(b) if b.len() as u64 > cfg.ws_max_message_bytes => {
                Flow::Close(1009, too_big(cfg))
            }
            Message::Binary(_) => {
                self.error(
                    "bad_command",
                    "binary frames are not supported; send JSON text",
                );
                Flow::Continue
            }
            _ => Flow::Continue,
        }
    }

    /// Queues `msg` unless the client's queue is full (an answer to a command is then lost,
    /// as an update would be).
    fn send(&self, msg: &ServerMsg) {
        let _ = self
            .tx
            .try_send(Message::Text(Utf8Bytes::from(msg.to_text())));
    }

    fn error(&self, code: &'static str, message: impl Into<String>) {
        self.send(&ServerMsg::Error {
            code,
            message: message.into(),
        });
    }

    /// Takes the new events published since the last push tick. They are taken here, once
    /// per push, rather than on every batch the real-time worker publishes: 1,000 sessions
    /// woken per batch cost more CPU than the pushes themselves.
    fn take_live(&mut self, live: &mut broadcast::Receiver<Arc<LiveBatch>>) {
        loop {
            match live.try_recv() {
                Ok(batch) => self.take_batch(&batch),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    // More batches than the channel holds came within one push interval:
                    // those events are not in this update (the counters and view still are).
                    self.st.metrics.ws_messages_dropped.inc_by(n);
                    self.changed = true;
                }
                Err(_) => break,
            }
        }
    }

    fn take_batch(&mut self, batch: &Arc<LiveBatch>) {
        if batch.org != *self.org.as_bytes() || batch.events.is_empty() {
            return;
        }
        let cap = self.events_per_update.max(1);
        // A batch's `arrived` counts its own events too (both constructors make it so).
        self.arrived += batch.arrived;
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
        self.arrived = 0;
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
        match ClientCmd::parse(raw) {
            Ok(ClientCmd::Ping) => self.send(&ServerMsg::Pong),
            Ok(ClientCmd::Subscribe(sub)) => self.subscribe(&sub).await,
            Ok(ClientCmd::Trend { id, params, deltas }) => self.trend(id, &params, deltas).await,
            Ok(ClientCmd::Untrend { id }) => self.trends.retain(|t| t.id != id),
            Err(message) => self.error("bad_command", message),
        }
        Flow::Continue
    }

    /// Takes the view asked for and answers with its snapshot; a view refused (with the
    /// message a REST 400 would have) leaves the current one in place.
    async fn subscribe(&mut self, sub: &Subscribe) {
        let now = chrono::Utc::now().timestamp_micros();
        let cap = self.st.cfg.gateway.recent_events_cap().get();
        let (spec, per_update) = match sub
            .view(self.st.cfg.gateway.max_range_days, now)
            .and_then(|spec| Ok((spec, sub.events_per_update(cap)?)))
        {
            Ok(taken) => taken,
            Err(e) => return self.error("bad_command", e.message),
        };
        self.events_per_update = per_update;
        self.view = Some(View {
            spec,
            live: sub.is_live(),
        });
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

    /// Answers a `trend` command and keeps the trend current (one with the same id is
    /// replaced); a refused one is an `error` naming the id and the parameter.
    async fn trend(&mut self, id: String, params: &serde_json::Map<String, Json>, deltas: bool) {
        if id.is_empty() || id.chars().count() > 64 {
            return self.error("bad_command", "a trend's 'id' is 1 to 64 characters");
        }
        self.trends.retain(|t| t.id != id);
        if self.trends.len() >= MAX_TRENDS {
            return self.error(
                "bad_command",
                format!("trend '{id}': a session keeps at most {MAX_TRENDS} trends; send 'untrend' first"),
            );
        }
        let now = chrono::Utc::now().timestamp_micros();
        let org = *self.org.as_bytes();
        let parsed = async {
            let mut pairs = trends::pairs_of(params)?;
            let zone = trends::org_zone(&self.st, org).await?;
            let live = pairs.0.iter().all(|(k, v)| k != "to" || v.is_empty());
            let req = trends::parse(
                org,
                &pairs,
                self.st.cfg.gateway.max_range_days,
                zone,
                Some(now),
            )?;
            let live_len = if live {
                let from = pairs
                    .0
                    .iter()
                    .find(|(k, _)| k == "from")
                    .map(|(_, v)| v.clone());
                let from_us = super::super::params::parse_time("from", &from.unwrap_or_default())?;
                pairs.0.retain(|(k, _)| k != "from");
                Some(now - from_us)
            } else {
                None
            };
            Ok::<_, ApiError>((pairs, zone, live_len, req))
        }
        .await;
        let (pairs, zone, live_len, req) = match parsed {
            Ok(p) => p,
            Err(e) => return self.error("bad_command", format!("trend '{id}': {}", e.message)),
        };
        match trends::answer(&self.st, self.org, req).await {
            Ok(a) => {
                self.send(&ServerMsg::Trend {
                    id: id.clone(),
                    trend: a.json.clone(),
                });
                self.trends.push(TrendSub {
                    id,
                    pairs,
                    live_len,
                    zone,
                    sent: a.json,
                    moves_at: a.boundaries.last().copied().unwrap_or(i64::MAX),
                    deltas,
                });
            }
            Err(e) => self.error("bad_command", format!("trend '{id}': {}", e.message)),
        }
    }

    /// Sends a `trend_update` for each kept trend that changed: looked at after new events
    /// (and while the stats workers settle), and when a live range slides into a new bucket.
    async fn push_trends(&mut self, changed: bool) {
        if self.trends.is_empty() || self.tx.capacity() == 0 {
            return;
        }
        let now = chrono::Utc::now().timestamp_micros();
        let org = *self.org.as_bytes();
        let max_days = self.st.cfg.gateway.max_range_days;
        for i in 0..self.trends.len() {
            let t = &self.trends[i];
            let slid = t.live_len.is_some() && now >= t.moves_at;
            if !(changed || slid) {
                continue;
            }
            let mut pairs = Pairs(t.pairs.0.clone());
            if let Some(len) = t.live_len {
                pairs
                    .0
                    .push(("from".into(), ((now - len) / 1000).to_string()));
            }
            let req = match trends::parse(org, &pairs, max_days, t.zone, Some(now)) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e.message, "websocket trend: parameters no longer valid");
                    continue;
                }
            };
            let a = match view::trend_answer(&self.st, self.org, req).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e.message, "websocket trend update failed");
                    continue;
                }
            };
            let t = &mut self.trends[i];
            let moved = a.json["buckets"] != t.sent["buckets"];
            let series_changed = a.json["series"] != t.sent["series"];
            let prev_changed = a.json["previous"] != t.sent["previous"];
            t.moves_at = a.boundaries.last().copied().unwrap_or(i64::MAX);
            if !moved && !series_changed && !prev_changed {
                continue;
            }
            // Same buckets and series: with deltas, the values from the first changed bucket.
            let from_bucket = (t.deltas && !moved)
                .then(|| first_changed_bucket(&t.sent["series"], &a.json["series"]))
                .flatten()
                .filter(|k| *k > 0);
            let series = match from_bucket {
                Some(k) => values_from(&a.json["series"], k),
                None => a.json["series"].clone(),
            };
            let msg = ServerMsg::TrendUpdate {
                id: t.id.clone(),
                from: moved.then(|| a.json["from"].as_str().unwrap_or_default().to_string()),
                to: moved.then(|| a.json["to"].as_str().unwrap_or_default().to_string()),
                buckets: moved.then(|| {
                    a.json["buckets"]
                        .as_array()
                        .map(|b| {
                            b.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                }),
                series,
                from_bucket,
                previous: prev_changed.then(|| a.json["previous"].clone()),
            };
            t.sent = a.json;
            self.send(&msg);
        }
    }

    fn lag(&self) -> LagOut {
        let m = &self.st.metrics;
        LagOut {
            events: m.total_lag.load(std::sync::atomic::Ordering::Relaxed),
            freshness_ms: m.freshness_ms(),
        }
    }

    /// The `snapshot` message, as text.
    async fn snapshot(&mut self) -> Result<String, ApiError> {
        let view = self.view.clone().ok_or_else(|| {
            ApiError::internal("a websocket snapshot", "no view to take a snapshot of")
        })?;
        let data = view::view_data(&self.st, self.org, &view).await?;
        let counters = view::counters(&self.st, self.org).await?;
        let n = RECENT_EVENTS_LIMIT.default as usize;
        let (recent, _) = group::recent_events(&self.st, self.org, n).await?;
        let now = chrono::Utc::now().timestamp_micros();
        let msg = ServerMsg::Snapshot(Snapshot {
            view: view.out(now),
            timeseries: view.timeseries(self.org, &data.points, data.coverage.clone()),
            top_events: &data.top,
            unique_users: &data.unique,
            counters: &counters,
            recent_events: recent,
            lag: self.lag(),
        })
        .to_text();
        self.sent = Some((counters, Some(data.values())));
        self.sent_points = data.points;
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
        let counters = match view::counters(&self.st, self.org).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "websocket update: counters failed");
                return Flow::Continue;
            }
        };
        let data = self.view_data().await;
        let changed: Vec<Point> = data.as_ref().map_or_else(Vec::new, |d| {
            let sent = &self.sent_points;
            d.points
                .iter()
                .filter(|p| !sent.contains(p))
                .copied()
                .collect()
        });
        let now_sent = (counters, data.as_ref().map(ViewData::values));
        if !events && changed.is_empty() && self.sent.as_ref() == Some(&now_sent) {
            return Flow::Continue;
        }
        let msg = self.update(
            &now_sent.0,
            data.as_ref().zip(now_sent.1.as_ref()),
            &changed,
        );
        match self.tx.try_send(Message::Text(Utf8Bytes::from(msg))) {
            Ok(()) => {
                self.skips = 0;
                self.clear_pending();
                if let Some(d) = data {
                    self.sent_points = d.points;
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

    /// The subscribed view's data, if there is a view (a failed read is logged: the update
    /// goes without it).
    async fn view_data(&self) -> Option<ViewData> {
        let view = self.view.as_ref()?;
        view::view_data(&self.st, self.org, view)
            .await
            .map_err(|e| tracing::warn!(error = %e, "websocket update: view failed"))
            .ok()
    }

    /// The `update` message as text: the pending events (newest first, at most the
    /// subscribe's `events`, else `recent_events_cap`), each one's JSON made once and shared
    /// by every session of the org, and how many arrived; the view's `changed` points; the
    /// counters, top events and unique users only when they differ from the last message's.
    fn update(
        &self,
        counters: &CountersBody,
        data: Option<(&ViewData, &ViewValues)>,
        changed: &[Point],
    ) -> String {
        let events = self
            .pending
            .iter()
            .rev()
            .flat_map(|b| b.events.iter().rev())
            .take(self.events_per_update)
            .map(|ev| {
                &**ev
                    .json
                    .get_or_init(|| EventJson::from_row(&ev.row).to_raw())
            })
            .collect();
        // What the client has already (the last message's) is not sent again.
        let (sent_counters, sent_view) = match &self.sent {
            Some((c, v)) => (Some(c), v.as_ref()),
            None => (None, None),
        };
        ServerMsg::Update(Update {
            events,
            new_events: self.arrived,
            counters: (sent_counters != Some(counters)).then_some(counters),
            lag: self.lag(),
            view: data.map(|(d, now)| {
                let (top, unique) = match sent_view {
                    Some(was) => (was.top != now.top, was.unique != now.unique),
                    None => (true, true),
                };
                ViewUpdate {
                    timeseries: changed.iter().map(PointOut::from).collect(),
                    top_events: top.then_some(&d.top),
                    unique_users: unique.then_some(&d.unique),
                }
            }),
        })
        .to_text()
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
