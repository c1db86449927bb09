//! Live push across a scaled-out group (docs/SCALE-OUT.md, "Live push"): every instance
//! keeps a WebSocket to each other live instance (`GET /internal/v1/stream`, signed with
//! `scale_out.cluster_secret`) on which the other sends the events its real-time worker
//! publishes, as they are published. Received batches join this instance's live channel,
//! so a browser connected anywhere is pushed the events of every partition. Only an
//! instance's own events go out (never ones it received), and none of a partition it is
//! restoring (history, not news).

use super::error::ApiError;
use super::events::EventJson;
use super::GatewayState;
use crate::cluster::Cluster;
use crate::stats::bucket::Source;
use crate::stats::query::OrgWindows;
use crate::stats::realtime::{LiveBatch, LiveEvent};
use crate::stats::replica::ReplicaMsg;
use crate::store::{Row, Value};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The internal route peers open.
pub const STREAM_PATH: &str = "/internal/v1/stream";
/// How often the set of peers is compared with the members topic's live instances (and a
/// dropped stream opened again).
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// How often the sender compares the partitions it serves with the ones its peers copy,
/// and sends its real-time windows.
const SERVING_EVERY: Duration = Duration::from_millis(250);
const WINDOWS_EVERY: Duration = Duration::from_secs(1);

/// One message of a peer stream: a batch of an org's new events, a message of the rollup
/// copy (src/stats/replica.rs) or the sender's real-time windows. A plain struct with
/// optional fields, not a tagged enum: events travel as raw JSON, which a tagged enum
/// cannot carry.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Relayed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    events: Vec<Box<RawValue>>,
    /// Events of the org stored since the last batch, `events` and the ones left out.
    #[serde(default, skip_serializing_if = "is_zero")]
    arrived: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollup: Option<ReplicaMsg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    windows: Option<Vec<OrgWindows>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// [`Relayed`]'s rollup message, written without a copy.
#[derive(Serialize)]
struct RollupOut<'a> {
    rollup: &'a ReplicaMsg,
}

/// The partitions this instance serves (held and restored), as sources.
fn serving(cluster: &Cluster) -> BTreeSet<Source> {
    let (local, restoring) = cluster.local_state();
    local
        .into_iter()
        .filter(|tp| !restoring.contains_key(tp))
        .map(|(t, p)| Source::new(&t, p))
        .collect()
}

/// `GET /internal/v1/stream` (WebSocket): another instance of the group subscribes to this
/// instance's new events. The upgrade request is signed like a partials request, over an
/// empty body.
pub async fn stream(
    State(st): State<GatewayState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let cluster = super::group::from_peer(&st, &headers, b"")?;
    Ok(ws.on_upgrade(move |socket| send_own_events(st, cluster, socket)))
}

/// Whether `row` is of a partition this instance is restoring.
fn restoring(row: &Row, restoring: &std::collections::BTreeMap<(String, i32), i64>) -> bool {
    match (row.get("topic"), row.get("partition")) {
        (Some(Value::String(t)), Some(Value::Int32(p))) => {
            restoring.contains_key(&(t.to_string(), *p))
        }
        _ => false,
    }
}

async fn send_own_events(st: GatewayState, cluster: Arc<Cluster>, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let mut live = st.live.subscribe();
    // The copy of this instance's rollups: a snapshot of each partition it serves, then
    // every change; a partition it stops serving is released.
    let (copy_to, mut copies) = tokio::sync::mpsc::unbounded_channel::<Arc<ReplicaMsg>>();
    let mut copied: BTreeSet<Source> = BTreeSet::new();
    let mut serving_tick = tokio::time::interval(SERVING_EVERY);
    let mut windows_tick = tokio::time::interval(WINDOWS_EVERY);
    let mut sent_windows: Option<Vec<OrgWindows>> = None;
    let mut unchanged = 0u32;
    loop {
        let text = tokio::select! {
            _ = st.shutdown.cancelled() => break,
            msg = incoming.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
            },
            batch = live.recv() => match batch {
                Ok(batch) if !batch.relayed => {
                    let (_, held_back) = cluster.local_state();
                    let events: Vec<Box<RawValue>> = batch
                        .events
                        .iter()
                        .filter(|ev| !restoring(&ev.row, &held_back))
                        .map(|ev| ev.json.get_or_init(|| EventJson::from_row(&ev.row).to_raw()).clone())
                        .collect();
                    if events.is_empty() {
                        continue;
                    }
                    let held = (batch.events.len() - events.len()) as u64;
                    serde_json::to_string(&Relayed {
                        org: Some(Uuid::from_bytes(batch.org)),
                        arrived: batch.arrived.saturating_sub(held),
                        events,
                        ..Relayed::default()
                    })
                    .unwrap_or_default()
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(batches = n, "gateway: a peer stream fell behind; batches skipped");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            msg = copies.recv() => match msg {
                Some(msg) => serde_json::to_string(&RollupOut { rollup: &msg }).unwrap_or_default(),
                None => continue,
            },
            _ = serving_tick.tick() => {
                let Some(hub) = &st.replica_hub else { continue };
                let now = serving(&cluster);
                let mut sent = true;
                for s in copied.difference(&now) {
                    let release = ReplicaMsg::Release {
                        topic: s.topic.to_string(),
                        partition: s.partition,
                    };
                    let text = serde_json::to_string(&RollupOut { rollup: &release }).unwrap_or_default();
                    sent &= sink.send(Message::Text(text.into())).await.is_ok();
                }
                let gained: Vec<Source> = now.difference(&copied).cloned().collect();
                if !gained.is_empty() && !hub.subscribe(gained, copy_to.clone()) {
                    tracing::warn!("gateway: the rollup worker is gone; peers cannot copy this instance's rollups");
                }
                copied = now;
                if !sent {
                    break;
                }
                continue;
            }
            _ = windows_tick.tick() => {
                let stats = st.stats.clone();
                let now = match super::blocking(move || stats.all_windows()).await {
                    Ok(Ok(w)) => w,
                    _ => continue,
                };
                // Unchanged windows are sent again every other second: the receiver takes
                // windows older than its freshness limit as gone.
                unchanged = if sent_windows.as_ref() == Some(&now) { unchanged + 1 } else { 0 };
                if unchanged % 2 == 1 {
                    continue;
                }
                let text = serde_json::to_string(&Relayed {
                    windows: Some(now.clone()),
                    ..Relayed::default()
                })
                .unwrap_or_default();
                sent_windows = Some(now);
                text
            }
        };
        if sink.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
}

/// Opens a stream to every other live instance of the group and keeps them open while the
/// instances are live, until `shutdown`.
pub fn start(st: GatewayState, cluster: Arc<Cluster>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut open: HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> =
            HashMap::new();
        let mut tick = tokio::time::interval(RECONNECT_EVERY);
        loop {
            tokio::select! {
                _ = st.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            st.replica.forget(&serving(&cluster));
            let peers: HashMap<String, String> = cluster
                .snapshot()
                .instances
                .into_iter()
                .filter(|i| i.instance != cluster.instance())
                .map(|i| (i.url, i.instance))
                .collect();
            open.retain(|url, (stop, task)| {
                let keep = peers.contains_key(url) && !task.is_finished();
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for (url, instance) in peers {
                if open.contains_key(&url) {
                    continue;
                }
                let stop = st.shutdown.child_token();
                let task = tokio::spawn(receive(st.clone(), url.clone(), instance, stop.clone()));
                open.insert(url, (stop, task));
            }
        }
        for (stop, _) in open.values() {
            stop.cancel();
        }
    })
}

/// Receives `url`'s events into this instance's live channel until the stream ends or
/// `stop`.
async fn receive(st: GatewayState, url: String, instance: String, stop: CancellationToken) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = format!(
        "{}{STREAM_PATH}",
        url.replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    let mut request = match ws_url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(peer = %instance, url = %ws_url, error = %e, "gateway: a peer's stream URL is unusable");
            return;
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let sig = crate::sign::header_value(&st.cfg.scale_out.cluster_secret, now, b"");
    if let Ok(v) = sig.parse() {
        request.headers_mut().insert(crate::sign::HEADER, v);
    }
    let connected = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio_tungstenite::connect_async(request) => r,
    };
    let mut socket = match connected {
        Ok((socket, _)) => socket,
        Err(e) => {
            tracing::debug!(peer = %instance, url = %ws_url, error = %e, "gateway: cannot open a peer's stream (retried)");
            return;
        }
    };
    tracing::info!(peer = %instance, url = %ws_url, "gateway: receiving a peer's live events and rollups");
    let stream = st.replica.opened(&instance);
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            msg = socket.next() => msg,
        };
        let text = match msg {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => t,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None | Some(Err(_)) => {
                break
            }
            Some(Ok(_)) => continue,
        };
        let batch: Relayed = match serde_json::from_str(text.as_str()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(peer = %instance, error = %e, "gateway: a peer sent an unreadable message");
                continue;
            }
        };
        if let Some(msg) = &batch.rollup {
            if let Err(e) = st.replica.apply(&instance, msg) {
                // The copy can no longer be trusted: drop it and open the stream again.
                tracing::warn!(peer = %instance, error = %e, "gateway: a peer sent an unreadable rollup row");
                break;
            }
            if !matches!(msg, ReplicaMsg::Rows { .. }) {
                st.metrics
                    .copied_partitions
                    .set(st.replica.complete_partitions() as i64);
            }
        }
        if let Some(windows) = batch.windows {
            st.replica.set_windows(&instance, windows);
        }
        let Some(org) = batch.org.filter(|_| !batch.events.is_empty()) else {
            continue;
        };
        let arrived = batch.arrived.max(batch.events.len() as u64);
        let events = batch
            .events
            .into_iter()
            .map(|json| LiveEvent {
                row: Arc::new(Row::new()),
                json: Arc::new(std::sync::OnceLock::from(json)),
            })
            .collect();
        // No receivers is fine: nobody here is watching.
        let _ = st.live.send(Arc::new(LiveBatch {
            org: *org.as_bytes(),
            events,
            arrived,
            relayed: true,
        }));
    }
    st.replica.closed(&instance, stream);
    st.metrics
        .copied_partitions
        .set(st.replica.complete_partitions() as i64);
    let _ = socket.close(None).await;
}
