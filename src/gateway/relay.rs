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
use crate::stats::realtime::{LiveBatch, LiveEvent};
use crate::store::{Row, Value};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
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

/// One batch of an org's new events as it travels between instances.
#[derive(Debug, Serialize, Deserialize)]
struct Relayed {
    org: Uuid,
    events: Vec<Box<RawValue>>,
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
    loop {
        tokio::select! {
            _ = st.shutdown.cancelled() => break,
            msg = incoming.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
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
                    let text = serde_json::to_string(&Relayed {
                        org: Uuid::from_bytes(batch.org),
                        events,
                    })
                    .unwrap_or_default();
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(batches = n, "gateway: a peer stream fell behind; batches skipped");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
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
    tracing::info!(peer = %instance, url = %ws_url, "gateway: receiving a peer's live events");
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
                tracing::warn!(peer = %instance, error = %e, "gateway: a peer sent an unreadable batch");
                continue;
            }
        };
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
            org: *batch.org.as_bytes(),
            events,
            relayed: true,
        }));
    }
    let _ = socket.close(None).await;
}
