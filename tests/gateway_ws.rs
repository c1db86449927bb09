//! `/ws/dashboard` on a real socket (127.0.0.1:0) with tokio-tungstenite clients, against a
//! real store fed by real ingestion (librdkafka's mock cluster), the real stats workers and
//! the real gateway: live updates within 2 s of produce, subscribe/snapshot/delta, malformed
//! commands, limits, auth failures, cross-org isolation, and a slow client dropped while a
//! fast one keeps receiving.

mod common;

use common::broker::{produce, random_name, TestBroker, TestRecord};
use common::test_org as org;
use common::{rt_multi_thread, Connector};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use streamtally::gateway::auth::token_sha256_hex;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const TOKEN_A: &str = "token-for-org-a";
const TOKEN_B: &str = "token-for-org-b";
const ADMIN: &str = "the-admin-token";

/// The slow-client test floods ingest and the sockets on purpose; it runs alone (write
/// lock) so that its load does not eat into the time limits of the other tests (read lock).
static EXCLUSIVE: std::sync::RwLock<()> = std::sync::RwLock::new(());

enum Guard {
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>),
}

/// Ingest, stats workers and the gateway, in this process, on the mock cluster.
struct Stack {
    broker: TestBroker,
    topic: String,
    connector: Connector,
    services: Option<streamtally::app::Services>,
    addr: SocketAddr,
    /// Last, so it is released after the rest is torn down.
    _guard: Guard,
}

impl Stack {
    fn start(tweak: impl FnOnce(&mut streamtally::config::Config)) -> Stack {
        let guard = Guard::Shared(EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner()));
        Stack::start_with(guard, tweak)
    }

    /// As [`Stack::start`], with no other test of this file running meanwhile.
    fn start_alone(tweak: impl FnOnce(&mut streamtally::config::Config)) -> Stack {
        let guard = Guard::Alone(EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner()));
        Stack::start_with(guard, tweak)
    }

    fn start_with(guard: Guard, tweak: impl FnOnce(&mut streamtally::config::Config)) -> Stack {
        let broker = TestBroker::mock(3);
        let topic = random_name("ws-events");
        broker.create_topic(&topic, 3);
        let mut gateway_cfg = None;
        let connector = Connector::start(&broker.bootstrap, &[&topic], &random_name("ws"), |cfg| {
            cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
            cfg.gateway.push_interval_ms = 200;
            cfg.batching.max_batch_delay_ms = 20;
            cfg.stats.persist_interval_ms = 100;
            cfg.auth.admin_token_sha256 = Some(token_sha256_hex(ADMIN));
            cfg.auth.tokens = vec![
                streamtally::config::AuthToken {
                    org_id: org(1),
                    token_sha256: token_sha256_hex(TOKEN_A),
                    name: None,
                },
                streamtally::config::AuthToken {
                    org_id: org(2),
                    token_sha256: token_sha256_hex(TOKEN_B),
                    name: None,
                },
            ];
            tweak(cfg);
            gateway_cfg = Some(cfg.clone());
        });
        let services = streamtally::app::Services::start(
            gateway_cfg.expect("config"),
            connector.store.clone(),
            connector.metrics.clone(),
            connector.shutdown.clone(),
        )
        .expect("stats workers and gateway start");
        let addr = services.gateway_addr;
        Stack {
            broker,
            topic,
            connector,
            services: Some(services),
            addr,
            _guard: guard,
        }
    }

    /// Produces `n` events for `org` (ids returned) and returns when they are acknowledged.
    fn produce(&self, org: uuid::Uuid, n: usize, tag: &str) -> Vec<String> {
        produce_events(&self.broker.bootstrap, &self.topic, org, n, tag)
    }

    /// Waits until the connector is consuming: one event of an unused org is stored.
    fn warm_up(&self) {
        let before = self.connector.stored(&self.topic, 3);
        self.produce(org(3), 1, "warmup");
        self.connector
            .wait_for("the connector to consume", Duration::from_secs(30), |c| {
                c.stored(&self.topic, 3) > before
            });
    }

    async fn connect(&self, auth: Auth<'_>) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let url = match auth {
            Auth::Query(token, None) => format!("ws://{}/ws/dashboard?token={token}", self.addr),
            Auth::Query(token, Some(org)) => {
                format!("ws://{}/ws/dashboard?token={token}&org={org}", self.addr)
            }
            _ => format!("ws://{}/ws/dashboard", self.addr),
        };
        let mut req = url.into_client_request()?;
        if let Auth::Header(token) = auth {
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.connector.stop();
        if let Some(s) = self.services.take() {
            if let Err(e) = s.join() {
                eprintln!("services stopped with an error: {e:#}");
            }
        }
    }
}

fn produce_events(
    bootstrap: &str,
    topic: &str,
    org: uuid::Uuid,
    n: usize,
    tag: &str,
) -> Vec<String> {
    produce_events_with(bootstrap, topic, org, n, tag, json!({"tag": tag}))
}

/// [`produce_events`] with the given `properties` on every event.
fn produce_events_with(
    bootstrap: &str,
    topic: &str,
    org: uuid::Uuid,
    n: usize,
    tag: &str,
    properties: serde_json::Value,
) -> Vec<String> {
    let mut ids = Vec::new();
    let records: Vec<TestRecord> = (0..n)
        .map(|i| {
            let id = uuid::Uuid::new_v4().to_string();
            ids.push(id.clone());
            let payload = json!({
                "id": id,
                "org_id": org.to_string(),
                "event_type": "track",
                "event_name": format!("{tag}_{}", i % 3),
                "user_id": format!("user_{}", i % 7),
                "session_id": format!("session_{}", i % 11),
                "properties": properties,
            });
            (
                Some(format!("k{i}").into_bytes()),
                Some(payload.to_string().into_bytes()),
                Vec::new(),
                None,
            )
        })
        .collect();
    produce(bootstrap, topic, &records);
    ids
}

enum Auth<'a> {
    Header(&'a str),
    Query(&'a str, Option<uuid::Uuid>),
    None,
}

/// The next JSON text message (pings skipped), or None on close/timeout.
async fn next_json(ws: &mut Ws, timeout: Duration) -> Option<Json> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Reads messages until one of type `ty` arrives (None on timeout).
async fn wait_type(ws: &mut Ws, ty: &str, timeout: Duration) -> Option<Json> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_json(ws, left).await {
            Some(m) if m["type"] == ty => return Some(m),
            Some(_) => continue,
            None => return None,
        }
    }
    None
}

/// Event ids of the org seen in updates within `timeout`, until `want` are all seen.
async fn collect_ids(ws: &mut Ws, want: &HashSet<String>, timeout: Duration) -> HashSet<String> {
    let mut seen = HashSet::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !want.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_json(ws, left).await {
            Some(m) if m["type"] == "update" => {
                for e in m["events"].as_array().into_iter().flatten() {
                    seen.insert(e["id"].as_str().unwrap_or_default().to_string());
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    seen
}

#[test]
fn live_updates_arrive_within_two_seconds_and_never_cross_orgs() {
    let stack = Stack::start(|_| {});
    stack.warm_up();
    // Orgs become known to the gateway through the configured tokens.
    rt_multi_thread().block_on(async {
        let mut a = stack
            .connect(Auth::Header(TOKEN_A))
            .await
            .expect("A connects");
        let mut b = stack
            .connect(Auth::Query(TOKEN_B, None))
            .await
            .expect("B connects");
        let hello = next_json(&mut a, Duration::from_secs(2))
            .await
            .expect("hello");
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["org_id"], org(1).to_string());
        assert_eq!(
            next_json(&mut b, Duration::from_secs(2)).await.unwrap()["org_id"],
            org(2).to_string()
        );

        // The clock starts when the broker has acknowledged the events (produce returns then).
        let ids_a: HashSet<String> = stack.produce(org(1), 20, "a").into_iter().collect();
        let produced = Instant::now();
        let seen_a = collect_ids(&mut a, &ids_a, Duration::from_secs(5)).await;
        let latency = produced.elapsed();
        assert!(
            ids_a.is_subset(&seen_a),
            "A got {} of 20 events",
            ids_a.intersection(&seen_a).count()
        );
        assert!(
            latency <= Duration::from_secs(2),
            "live update after {latency:?}"
        );
        eprintln!(
            "gateway_ws: 20 events acknowledged by the broker -> all pushed to the org's client in {latency:?}"
        );

        // B's client saw none of A's events; then B's own events reach B only.
        let ids_b: HashSet<String> = stack.produce(org(2), 10, "b").into_iter().collect();
        let seen_b = collect_ids(&mut b, &ids_b, Duration::from_secs(5)).await;
        assert!(ids_b.is_subset(&seen_b));
        assert!(
            seen_b.is_disjoint(&ids_a),
            "org B's client received org A's events"
        );
        let more_a = collect_ids(&mut a, &ids_b, Duration::from_secs(1)).await;
        assert!(
            more_a.is_disjoint(&ids_b),
            "org A's client received org B's events"
        );
    });
}

#[test]
fn subscribe_answers_a_snapshot_then_keeps_the_view_current() {
    let stack = Stack::start(|_| {});
    stack.warm_up();
    stack.produce(org(1), 30, "s");
    rt_multi_thread().block_on(async {
        let mut a = stack.connect(Auth::Header(TOKEN_A)).await.unwrap();
        // Wait until the rollups hold the first 30 events.
        let deadline = Instant::now() + Duration::from_secs(30);
        let snapshot = loop {
            let from = chrono::Utc::now() - chrono::Duration::hours(24);
            a.send(Message::text(
                json!({"type": "subscribe", "from": from.to_rfc3339(), "to": null}).to_string(),
            ))
            .await
            .unwrap();
            let snap = wait_type(&mut a, "snapshot", Duration::from_secs(2))
                .await
                .expect("snapshot");
            let total: i64 = snap["timeseries"]["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["events"].as_i64().unwrap())
                .sum();
            if total == 30 || Instant::now() > deadline {
                break snap;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let points = snapshot["timeseries"]["points"].as_array().unwrap();
        assert_eq!(snapshot["view"]["granularity"], "hour");
        assert_eq!(points.len(), 25, "24 h live view: 25 hourly buckets");
        assert_eq!(
            points
                .iter()
                .map(|p| p["events"].as_i64().unwrap())
                .sum::<i64>(),
            30
        );
        assert_eq!(snapshot["unique_users"]["unique_users"], 7);
        assert_eq!(snapshot["recent_events"].as_array().unwrap().len(), 30);
        assert_eq!(snapshot["top_events"]["events"][0]["count"], 10);
        assert!(snapshot["counters"]["events_today"].as_i64().is_some());
        assert!(snapshot["lag"]["events"].as_u64().is_some());

        // New events: an update whose view carries the changed bucket with the new total.
        stack.produce(org(1), 12, "s");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut latest = 0;
        while Instant::now() < deadline && latest != 42 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(u) = wait_type(&mut a, "update", left).await else {
                break;
            };
            if let Some(p) = u["view"]["timeseries"].as_array().and_then(|p| p.last()) {
                latest = p["events"].as_i64().unwrap_or(0);
            }
        }
        assert_eq!(latest, 42, "the current hour's point reaches 30 + 12");
    });
}

#[test]
fn malformed_commands_get_errors_and_limits_close_with_the_right_codes() {
    let stack = Stack::start(|cfg| {
        cfg.gateway.ws_max_message_bytes = 1000;
        cfg.gateway.ws_max_commands_per_s = 5;
    });
    rt_multi_thread().block_on(async {
        let mut a = stack.connect(Auth::Header(TOKEN_A)).await.unwrap();
        assert_eq!(
            next_json(&mut a, Duration::from_secs(2)).await.unwrap()["type"],
            "hello"
        );
        for (cmd, needle) in [
            ("not json", "not JSON"),
            (r#"{"type":"dance"}"#, "unknown command type 'dance'"),
            (r#"{"type":"subscribe"}"#, "'from' is required"),
            (r#"{"type":"subscribe","from":"yesterday"}"#, "yesterday"),
        ] {
            a.send(Message::text(cmd)).await.unwrap();
            let err = wait_type(&mut a, "error", Duration::from_secs(2))
                .await
                .expect("error message");
            assert_eq!(err["code"], "bad_command");
            assert!(
                err["message"].as_str().unwrap().contains(needle),
                "{cmd}: {err}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        a.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
        assert!(
            wait_type(&mut a, "pong", Duration::from_secs(2))
                .await
                .is_some(),
            "still open"
        );

        // Oversized: 1009.
        a.send(Message::text("x".repeat(1500))).await.unwrap();
        assert_eq!(close_code(&mut a).await, Some(CloseCode::Size));

        // A flood: 1008.
        let mut b = stack.connect(Auth::Header(TOKEN_A)).await.unwrap();
        for _ in 0..10 {
            let _ = b.send(Message::text(r#"{"type":"ping"}"#)).await;
        }
        assert_eq!(close_code(&mut b).await, Some(CloseCode::Policy));
    });
}

async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
    None
}

#[test]
fn upgrades_without_a_valid_token_are_refused() {
    let stack = Stack::start(|_| {});
    rt_multi_thread().block_on(async {
        let status = |r: Result<Ws, tokio_tungstenite::tungstenite::Error>| match r {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => 101,
        };
        assert_eq!(status(stack.connect(Auth::None).await), 401);
        assert_eq!(status(stack.connect(Auth::Query("wrong", None)).await), 401);
        assert_eq!(status(stack.connect(Auth::Header("wrong")).await), 401);
        assert_eq!(
            status(stack.connect(Auth::Query(TOKEN_B, Some(org(1)))).await),
            403
        );
        assert_eq!(
            status(stack.connect(Auth::Query(ADMIN, Some(org(9)))).await),
            404
        );
        assert_eq!(status(stack.connect(Auth::Query(ADMIN, None)).await), 400);
        assert_eq!(
            status(stack.connect(Auth::Query(ADMIN, Some(org(2)))).await),
            101
        );
    });
}

#[test]
fn a_slow_client_is_dropped_while_a_fast_one_keeps_receiving() {
    // Big updates (up to 1,000 events of ~1 KiB each) fill the server's socket buffer
    // towards a client that never reads (4 KiB receive buffer); then its 2-message queue,
    // then three skipped updates disconnect it. The fast client reads everything meanwhile.
    // The padding makes even the small updates of a slow (loaded) ingest fill the buffer
    // (up to 4 MiB on Linux loopback) in a few seconds.
    let stack = Stack::start_alone(|cfg| {
        cfg.gateway.push_interval_ms = 100;
        cfg.gateway.ws_send_queue = 2;
        cfg.gateway.recent_events_cap = 1000;
    });
    stack.warm_up();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (bootstrap, topic) = (stack.broker.bootstrap.clone(), stack.topic.clone());
        let done = done.clone();
        std::thread::spawn(move || {
            let mut round = 0;
            let pad = "x".repeat(1024);
            while !done.load(std::sync::atomic::Ordering::SeqCst) && round < 200 {
                let tag = format!("flood{round}");
                let properties = json!({"tag": tag, "pad": pad});
                produce_events_with(&bootstrap, &topic, org(1), 1000, &tag, properties);
                round += 1;
            }
        })
    };
    rt_multi_thread().block_on(async {
        let slow = {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let stream = sock.connect(stack.addr).await.unwrap();
            let mut req = format!("ws://{}/ws/dashboard", stack.addr)
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("authorization", format!("Bearer {TOKEN_A}").parse().unwrap());
            tokio_tungstenite::client_async(req, stream).await.unwrap().0
        };
        let mut fast = stack.connect(Auth::Header(TOKEN_A)).await.unwrap();
        let metrics = stack.connector.metrics.clone();
        // Both sessions are counted once their tasks run on the session runtime, which
        // can be after the handshake returned here: until then "one client left" would
        // read as the slow one being dropped (CI once saw it 7 ms in).
        let counted = Instant::now();
        while metrics.ws_clients.get() != 2 {
            assert!(
                counted.elapsed() < Duration::from_secs(10),
                "two sessions not counted within 10 s: {}",
                metrics.ws_clients.get()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        let mut updates = 0;
        let mut last_update = Instant::now();
        let mut longest_gap = Duration::ZERO;
        let mut dropped_at = None;
        while started.elapsed() < Duration::from_secs(40) {
            match next_json(&mut fast, Duration::from_secs(5)).await {
                Some(m) if m["type"] == "update" => {
                    updates += 1;
                    longest_gap = longest_gap.max(last_update.elapsed());
                    last_update = Instant::now();
                }
                Some(_) => {}
                None => panic!(
                    "the fast client got no message for 5 s or lost its connection, after {updates} updates, {:?}",
                    started.elapsed()
                ),
            }
            if metrics.ws_clients.get() == 1 && dropped_at.is_none() {
                dropped_at = Some(started.elapsed());
            }
            // Keep reading a while after the slow client is gone.
            if dropped_at.is_some_and(|d| started.elapsed() > d + Duration::from_secs(2)) {
                break;
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let dropped = metrics.ws_messages_dropped.get();
        eprintln!(
            "gateway_ws: slow client disconnected after {dropped_at:?} ({dropped} updates skipped); fast client: {updates} updates, longest gap {longest_gap:?}"
        );
        assert!(dropped_at.is_some(), "the slow client was not disconnected within 40 s");
        assert!(dropped >= 3, "skipped updates: {dropped}");
        assert!(updates >= 5, "the fast client kept receiving ({updates} updates)");
        assert!(longest_gap < Duration::from_secs(3), "gap {longest_gap:?}");
        drop(slow);
    });
    producer.join().unwrap();
}

#[test]
fn the_dashboard_is_served_from_the_binary_with_revalidation() {
    let stack = Stack::start(|_| {});
    rt_multi_thread().block_on(async {
        let client = |path: &str, etag: Option<&str>| {
            let addr = stack.addr;
            let path = path.to_string();
            let etag = etag.map(str::to_string);
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = TcpStream::connect(addr).await.unwrap();
                let extra = etag
                    .map(|e| format!("If-None-Match: {e}\r\n"))
                    .unwrap_or_default();
                s.write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.unwrap();
                String::from_utf8_lossy(&out).into_owned()
            }
        };
        let index = client("/", None).await;
        assert!(index.starts_with("HTTP/1.1 200"), "{index}");
        assert!(index
            .to_ascii_lowercase()
            .contains("content-type: text/html"));
        assert!(index.contains("<div id=\"app\"></div>"));
        let etag = index
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("etag:")
                    .then(|| l[5..].trim().to_string())
            })
            .expect("etag");
        assert!(client("/", Some(&etag)).await.starts_with("HTTP/1.1 304"));
        for file in streamtally::gateway::assets::files() {
            let r = client(&format!("/{file}"), None).await;
            assert!(
                r.starts_with("HTTP/1.1 200"),
                "{file}: {}",
                &r[..r.len().min(200)]
            );
        }
        let js = client("/assets/index.js", None).await;
        assert!(js
            .to_ascii_lowercase()
            .contains("content-type: text/javascript"));
        let missing = client("/assets/nope.js", None).await;
        assert!(
            missing.starts_with("HTTP/1.1 404") && missing.contains("not_found"),
            "{missing}"
        );
        assert!(client("/api/v1/nope", None)
            .await
            .starts_with("HTTP/1.1 404"));
    });
}

/// The real-time counters are persisted after the events they count reach the gateway
/// (here every 1 s, pushes every 200 ms): the updates that follow carry the settled counters
/// even when no further event arrives, and then, idle, nothing is sent.
#[test]
fn counters_written_after_the_events_still_reach_the_client_then_idle_is_quiet() {
    let stack = Stack::start(|cfg| cfg.stats.persist_interval_ms = 1000);
    stack.warm_up();
    rt_multi_thread().block_on(async {
        let mut a = stack
            .connect(Auth::Header(TOKEN_A))
            .await
            .expect("A connects");
        assert_eq!(
            next_json(&mut a, Duration::from_secs(2)).await.unwrap()["type"],
            "hello"
        );
        // A live view: its range's end moves with the clock, which alone is no update.
        let from = chrono::Utc::now() - chrono::Duration::hours(1);
        a.send(Message::text(
            json!({"type": "subscribe", "from": from.to_rfc3339(), "to": null}).to_string(),
        ))
        .await
        .unwrap();
        wait_type(&mut a, "snapshot", Duration::from_secs(5))
            .await
            .expect("snapshot");
        stack.produce(org(1), 12, "settle");
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < Duration::from_secs(20) {
            match next_json(&mut a, Duration::from_secs(20)).await {
                Some(m) if m["type"] == "update" => {
                    last = m["counters"]["events_5m"].as_i64();
                    if last == Some(12) {
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        assert_eq!(
            last,
            Some(12),
            "the updates never carried the persisted counters"
        );
        // Idle: once the settling ticks are over (a rollup or counter write that lands
        // within them is still sent), no update at all (pings are not text). Updates that
        // never stop within 20 s fail here.
        let settling = Instant::now();
        while next_json(&mut a, Duration::from_secs(3)).await.is_some() {
            assert!(
                settling.elapsed() < Duration::from_secs(20),
                "updates still coming 20 s after the last events"
            );
        }
        let quiet = next_json(&mut a, Duration::from_secs(2)).await;
        assert!(quiet.is_none(), "an update while idle: {quiet:?}");
    });
}

#[test]
fn updates_carry_the_newest_events_up_to_the_cap_newest_first() {
    let cap = 5;
    let stack = Stack::start(|cfg| cfg.gateway.recent_events_cap = cap);
    stack.warm_up();
    // One key: one partition, so the store's order is the produce order.
    let n = 300;
    let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let records: Vec<TestRecord> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let payload = json!({
                "id": id, "org_id": org(1).to_string(), "event_type": "track",
                "event_name": format!("cap_{}", i % 3), "user_id": format!("user_{i}"),
            });
            (
                Some(b"one-key".to_vec()),
                Some(payload.to_string().into_bytes()),
                Vec::new(),
                None,
            )
        })
        .collect();
    let index: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    rt_multi_thread().block_on(async {
        let mut a = stack.connect(Auth::Header(TOKEN_A)).await.unwrap();
        wait_type(&mut a, "hello", Duration::from_secs(2)).await.unwrap();
        // Client b asks for at most 2 events an update (more than the cap is refused,
        // naming the field and the value) and counts the rest from `new_events`.
        let mut b = stack.connect(Auth::Header(TOKEN_A)).await.unwrap();
        wait_type(&mut b, "hello", Duration::from_secs(2)).await.unwrap();
        let from = chrono::Utc::now() - chrono::Duration::hours(1);
        for (events, answer) in [(cap + 1, "error"), (2, "snapshot")] {
            let sub = json!({"type": "subscribe", "from": from.to_rfc3339(), "to": null, "events": events});
            b.send(Message::text(sub.to_string())).await.unwrap();
            let m = wait_type(&mut b, answer, Duration::from_secs(5)).await.unwrap();
            if answer == "error" {
                let said = m["message"].as_str().unwrap();
                assert!(said.contains(&format!("parameter 'events': '{events}'")), "{said}");
            }
        }
        produce(&stack.broker.bootstrap, &stack.topic, &records);
        let newest: HashSet<usize> = (n - cap as usize..n).collect();
        let mut seen: HashSet<usize> = HashSet::new();
        let mut updates = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !newest.is_subset(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = next_json(&mut a, left).await else {
                break;
            };
            if m["type"] != "update" {
                continue;
            }
            updates += 1;
            let got: Vec<usize> = m["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| index[e["id"].as_str().unwrap()])
                .collect();
            assert!(got.len() <= cap as usize, "an update carried {} events", got.len());
            assert!(
                got.windows(2).all(|w| w[0] > w[1]),
                "events of an update are newest first: {got:?}"
            );
            seen.extend(got);
        }
        assert!(
            newest.is_subset(&seen),
            "the {cap} newest events reached the client ({updates} updates)"
        );
        assert!(
            seen.len() < n,
            "older events beyond the cap were left out ({} of {n} sent)",
            seen.len()
        );
        eprintln!("gateway_ws: {n} events in a burst -> {} sent in {updates} updates of at most {cap}, the newest {cap} included", seen.len());
        // b: every event counted once in `new_events`, at most 2 carried an update.
        let (mut counted, mut carried) = (0u64, 0usize);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && counted < n as u64 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = next_json(&mut b, left).await else {
                break;
            };
            if m["type"] != "update" {
                continue;
            }
            let events = m["events"].as_array().unwrap().len();
            assert!(events <= 2, "an update carried {events} events; b asked for 2");
            counted += m["new_events"].as_u64().unwrap();
            carried += events;
        }
        assert_eq!(counted, n as u64, "new_events adds up to the events produced");
        eprintln!("gateway_ws: with events=2, {carried} events carried, {counted} counted");
    });
}

#[test]
fn a_trend_kept_with_deltas_sends_the_changed_buckets_only_and_adds_up_to_the_rest_answer() {
    let stack = Stack::start(|_| {});
    stack.warm_up();
    rt_multi_thread().block_on(async {
        let mut ws = stack.connect(Auth::Header(TOKEN_A)).await.unwrap();
        wait_type(&mut ws, "hello", Duration::from_secs(2)).await.unwrap();
        let from = chrono::Utc::now().timestamp_millis() - 3_600_000;
        let cmd = json!({"type": "trend", "id": "m", "params": {"from": from, "granularity": "minute"}, "deltas": true});
        ws.send(Message::text(cmd.to_string())).await.unwrap();
        let first = wait_type(&mut ws, "trend", Duration::from_secs(5)).await.unwrap();
        let mut held = first["trend"].clone();
        let buckets = held["buckets"].as_array().unwrap().len();
        assert!((60..=61).contains(&buckets), "{held}");
        let total = |t: &Json| t["series"][0]["total"].as_i64().unwrap_or(0);
        let (mut deltas, mut whole) = (0, 0);
        for round in 1..=3 {
            stack.produce(org(1), 20, "delta");
            let deadline = Instant::now() + Duration::from_secs(10);
            while total(&held) < 20 * round && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                let Some(m) = next_json(&mut ws, left).await else {
                    break;
                };
                if m["type"] != "trend_update" || m["id"] != "m" {
                    continue;
                }
                if let Some(b) = m.get("buckets") {
                    held["buckets"] = b.clone();
                }
                match m["from_bucket"].as_u64() {
                    Some(k) => {
                        deltas += 1;
                        let k = k as usize;
                        for (i, s) in m["series"].as_array().unwrap().iter().enumerate() {
                            let sent = s["values"].as_array().unwrap();
                            assert!(k > 0 && sent.len() < buckets, "a delta carries the changed buckets only: {m}");
                            let mut values: Vec<Json> = held["series"][i]["values"].as_array().unwrap()[..k].to_vec();
                            values.extend(sent.iter().cloned());
                            held["series"][i]["values"] = Json::Array(values);
                            held["series"][i]["total"] = s["total"].clone();
                        }
                    }
                    None => {
                        whole += 1;
                        held["series"] = m["series"].clone();
                    }
                }
            }
            assert_eq!(total(&held), 20 * round, "round {round}: {held}");
        }
        assert!(deltas > 0, "no update came as a delta ({whole} whole)");
        // What the client holds is what REST answers for the same range.
        let path = format!(
            "/api/v1/orgs/{}/trends?from={from}&to={}&granularity=minute",
            org(1),
            chrono::Utc::now().timestamp_millis()
        );
        let r = common::http::get(&stack.addr.to_string(), &path, Some(TOKEN_A)).unwrap();
        let rest: Json = serde_json::from_str(&r.body).unwrap();
        let sum = |t: &Json| -> i64 {
            t["series"][0]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .sum()
        };
        assert_eq!((total(&rest), sum(&rest)), (60, 60), "{rest}");
        assert_eq!(sum(&held), 60, "the values held add up: {held}");
        if held["buckets"] == rest["buckets"] {
            assert_eq!(held["series"][0]["values"], rest["series"][0]["values"]);
        }
        eprintln!("gateway_ws: a kept per-minute trend, 3 rounds of 20 events: {deltas} delta updates, {whole} whole");
    });
}
