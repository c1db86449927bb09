//! Item 3, "the gateway keeps idle and oversized clients from exhausting it": the real
//! gateway (`gateway::serve`) on 127.0.0.1:0 over a temp-dir store, driven through raw TCP
//! sockets and tokio-tungstenite clients.
//!
//! - 2,000 connections that send nothing or half a request line are closed after the
//!   (lowered) header-read timeout while `/healthz` keeps answering; a keep-alive
//!   connection may idle longer than that, up to the idle timeout; an upgraded WebSocket
//!   outlives both; a connection over `gateway.max_connections` is closed and counted.
//! - A WebSocket message over `gateway.ws_max_message_bytes`, in one frame or fragmented, at
//!   any size (beyond tungstenite's own 16 MiB frame limit too), ends in a 1009 Close.
//! - 413 and 415 answer the JSON error body; a dashboard name with a control character is a
//!   400 naming `name`.
//! - A WebSocket upgrade from a foreign `Origin` is a 403 naming it; the allowed origin, the
//!   gateway's own and none at all are upgraded.

use crate::common::test_org;
use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamtally::config::{AuthToken, Config};
use streamtally::gateway::auth::token_sha256_hex;
use streamtally::gateway::{bind, router, serve, GatewayState, ServeOptions};
use streamtally::metrics::{Metrics, ReasonLabel};
use streamtally::stats::query::StatsReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message};
use tower::ServiceExt;

const TOKEN: &str = "token-of-the-limits-org";

/// The gateway on a real socket, as `streamtally run` serves it (no broker: nothing here
/// needs ingest).
struct Gateway {
    addr: SocketAddr,
    app: axum::Router,
    metrics: Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), streamtally::gateway::GatewayError>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::common::open(dir.path());
        let mut cfg = Config::default();
        cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
        cfg.auth.tokens.push(AuthToken {
            org_id: test_org(3),
            token_sha256: token_sha256_hex(TOKEN),
            name: None,
        });
        tweak(&mut cfg);
        cfg.validate().unwrap();
        let metrics = Arc::new(Metrics::new());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let state = GatewayState::new(
            store.clone(),
            StatsReader::new(store),
            cfg.clone(),
            metrics.clone(),
        )
        .with_shutdown(shutdown.clone());
        let app = router(state);
        let listener = bind(cfg.gateway.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(
            listener,
            app.clone(),
            ServeOptions::new(&cfg.gateway, metrics.clone()),
            shutdown.clone(),
        ));
        Gateway {
            addr,
            app,
            metrics,
            shutdown,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the gateway stops within 10 s")
            .unwrap()
            .unwrap();
    }

    fn timed_out(&self, reason: &str) -> u64 {
        self.metrics
            .gateway_connections_timed_out
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .get()
    }

    /// `GET path` on a new connection: the status line and the body.
    async fn get(&self, path: &str) -> String {
        let mut c = TcpStream::connect(self.addr).await.unwrap();
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    fn ws_request(&self, origin: Option<&str>) -> tungstenite::handshake::client::Request {
        let mut req = format!("ws://{}/ws/dashboard?token={TOKEN}", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        req
    }

    async fn ws(&self) -> Ws {
        let (mut ws, _) = tokio_tungstenite::connect_async(self.ws_request(None))
            .await
            .unwrap();
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "hello", "{hello}");
        ws
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The next text message as JSON (pings skipped), within 5 s.
async fn next_json(ws: &mut Ws) -> Json {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("the connection is open")
            .expect("a message");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Raises this process's open-files soft limit to `want` (or the hard limit); returns it.
fn raise_open_files(want: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Waits up to `within` for the server to close `c`: true on EOF or reset.
async fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_limits_idle_and_half_request_floods_are_closed_while_healthz_answers() {
    const FLOOD: usize = 2_000;
    let nofile = raise_open_files(8_192);
    assert!(
        nofile >= (2 * FLOOD + 200) as libc::rlim_t,
        "the open-files limit is {nofile}: the flood needs {} (both ends in this process)",
        2 * FLOOD + 200
    );
    let header = Duration::from_millis(2_000);
    let idle = Duration::from_millis(8_000);
    let gw = Gateway::start(|c| {
        c.gateway.header_read_timeout_ms = header.as_millis() as u64;
        c.gateway.idle_timeout_ms = idle.as_millis() as u64;
        c.gateway.max_connections = 2 * FLOOD as u64;
    })
    .await;

    // A WebSocket (upgraded: neither timeout applies) and a keep-alive client.
    let mut ws = gw.ws().await;
    let mut keep_alive = TcpStream::connect(gw.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    keep_alive.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = keep_alive.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_since = Instant::now();

    // The flood: half send nothing, half half a request line.
    let started = Instant::now();
    let mut flood = Vec::with_capacity(FLOOD);
    while flood.len() < FLOOD {
        let batch = futures::future::join_all((0..100).map(|i| {
            let addr = gw.addr;
            async move {
                let mut c = TcpStream::connect(addr).await.unwrap();
                if i % 2 == 1 {
                    c.write_all(b"GET /api/v1/orgs/x/coun").await.unwrap();
                }
                c
            }
        }))
        .await;
        flood.extend(batch);
    }
    let flooded_in = started.elapsed();

    // /healthz answers on new connections throughout.
    let stop_probing = tokio_util::sync::CancellationToken::new();
    let probes = tokio::spawn({
        let stop = stop_probing.clone();
        let addr = gw.addr;
        async move {
            let mut answered = 0;
            while !stop.is_cancelled() {
                let probe = async {
                    let mut c = TcpStream::connect(addr).await.unwrap();
                    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .await
                        .unwrap();
                    let mut out = String::new();
                    c.read_to_string(&mut out).await.unwrap();
                    out
                };
                let answer = tokio::time::timeout(Duration::from_secs(2), probe)
                    .await
                    .expect("/healthz answers within 2 s during the flood");
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                answered += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answered
        }
    });

    // The keep-alive client idles past the header timeout and is still served.
    tokio::time::sleep((header + Duration::from_millis(500)).saturating_sub(idle_since.elapsed()))
        .await;
    keep_alive.write_all(request).await.unwrap();
    let n = keep_alive.read(&mut buf).await.unwrap();
    let idled = idle_since.elapsed();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "a keep-alive connection idle for {idled:?} is served: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(idled < idle, "the test idled {idled:?}, not under {idle:?}");
    let idle_since = Instant::now();

    // Every flood connection is closed by the server, none before the header timeout.
    let closes = futures::future::join_all(flood.iter_mut().map(|c| async move {
        closed_within(c, header + Duration::from_secs(10))
            .await
            .then(|| started.elapsed())
    }))
    .await;
    let open = closes.iter().filter(|closed| closed.is_none()).count();
    assert_eq!(
        open,
        0,
        "{open} of {FLOOD} flood connections (opened in {flooded_in:?}) still open after {:?}",
        started.elapsed()
    );
    let first = closes.iter().flatten().min().copied().unwrap_or_default();
    assert!(
        first >= header,
        "a flood connection closed after {first:?} (< {header:?})"
    );
    assert!(gw.timed_out("header") >= FLOOD as u64);
    drop(flood);
    stop_probing.cancel();
    let answered = probes.await.unwrap();
    assert!(answered >= 5, "{answered} /healthz probes");

    // The WebSocket outlived the header timeout (and, by now, the idle one too).
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");

    // The keep-alive connection closes at its idle timeout.
    assert!(closed_within(&mut keep_alive, idle + Duration::from_secs(5)).await);
    let idled = idle_since.elapsed();
    assert!(
        idled >= idle - Duration::from_millis(200),
        "closed after {idled:?} idle (< {idle:?})"
    );
    assert!(gw.timed_out("idle") >= 1);

    // What remains open: the WebSocket.
    wait_until("only the WebSocket left", Duration::from_secs(10), || {
        gw.metrics.gateway_connections.get() == 1
    })
    .await;
    ws.close(None).await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_limits_a_connection_over_the_cap_is_closed_and_counted() {
    let gw = Gateway::start(|c| c.gateway.max_connections = 3).await;
    // An upgraded WebSocket and two idle connections fill the cap.
    let ws = gw.ws().await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    wait_until("3 open connections", Duration::from_secs(5), || {
        gw.metrics.gateway_connections.get() == 3
    })
    .await;

    // The fourth is accepted and closed at once (not left waiting in the backlog).
    let mut over = TcpStream::connect(gw.addr).await.unwrap();
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut over, Duration::from_secs(2)).await,
        "a connection over gateway.max_connections is closed at once"
    );
    assert_eq!(gw.metrics.gateway_connections_refused.get(), 1);
    let text = gw.metrics.encode();
    assert!(
        text.contains("streamtally_gateway_connections_refused_total 1"),
        "{text}"
    );
    assert!(text.contains("streamtally_gateway_connections 3"), "{text}");

    // A slot freed is a slot for the next client.
    drop(idle.pop());
    wait_until("a slot freed", Duration::from_secs(5), || {
        gw.metrics.gateway_connections.get() == 2
    })
    .await;
    assert!(gw.get("/healthz").await.starts_with("HTTP/1.1 200"));
    drop(ws);
    drop(idle);
    gw.stop().await;
}

/// Sends `size` bytes of text in frames of `fragment` bytes (one frame if `fragment >= size`)
/// and returns the Close frame the server answers with.
async fn send_oversized(gw: &Gateway, size: usize, fragment: usize) -> Option<(CloseCode, String)> {
    let mut ws = gw.ws().await;
    let payload = vec![b'x'; size];
    let chunks: Vec<&[u8]> = payload.chunks(fragment).collect();
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(chunk.to_vec(), opcode, i == last);
        // The server may stop reading once the message is over the limit.
        if ws.send(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
        {
            Some(Ok(Message::Close(frame))) => {
                return frame.map(|f| (f.code, f.reason.as_str().to_string()))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("{size} bytes in frames of {fragment}: {e}"),
            None => panic!("{size} bytes in frames of {fragment}: closed without a Close frame"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_limits_websocket_messages_over_the_limit_close_with_1009_at_any_size() {
    let limit = 65_536;
    let gw = Gateway::start(|c| c.gateway.ws_max_message_bytes = limit as u64).await;
    let cases = [
        // One frame: just over the limit, 200 KiB, 1 MiB, and over tungstenite's own
        // 16 MiB frame limit.
        (limit + 1, usize::MAX),
        (200 << 10, usize::MAX),
        (1 << 20, usize::MAX),
        ((16 << 20) + 1, usize::MAX),
        // Fragmented: just over the limit in two, 1 MiB in 16 KiB fragments.
        (limit + 1, limit / 2 + 1),
        (1 << 20, 16 << 10),
    ];
    for (size, fragment) in cases {
        let close = send_oversized(&gw, size, fragment.min(size)).await;
        let (code, reason) = close.unwrap_or_else(|| {
            panic!("{size} bytes in frames of {fragment}: a Close frame without a code")
        });
        assert_eq!(
            code,
            CloseCode::Size,
            "{size} bytes in frames of {fragment}: {reason}"
        );
        assert!(
            reason.contains("gateway.ws_max_message_bytes") && reason.contains("65536"),
            "{reason}"
        );
    }

    // At the limit, in fragments: delivered (not JSON, so answered with an error).
    let mut ws = gw.ws().await;
    let payload = vec![b' '; limit];
    for (i, chunk) in payload.chunks(limit / 4).enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        ws.send(Message::Frame(Frame::message(
            chunk.to_vec(),
            opcode,
            i == 3,
        )))
        .await
        .unwrap();
    }
    let answer = next_json(&mut ws).await;
    assert_eq!(answer["type"], "error", "{answer}");
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_limits_413_415_and_control_characters_answer_json_errors() {
    let gw = Gateway::start(|_| {}).await;
    let uri = format!("/api/v1/orgs/{}/dashboards", test_org(3));
    let send = |content_type: Option<&'static str>, body: Vec<u8>| {
        let mut req = Request::post(&uri).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let app = gw.app.clone();
        let req = req.body(Body::from(body)).unwrap();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            let json: Json = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "{status}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            });
            (status, json)
        }
    };

    // 413: a body over the limit, with the JSON error body.
    let big = format!(
        "{{\"name\":\"{}\",\"widgets\":[]}}",
        "n".repeat(streamtally::gateway::body::MAX_BODY_BYTES)
    );
    let (status, j) = send(Some("application/json"), big.clone().into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{j}");
    assert_eq!(j["error"]["code"], "payload_too_large", "{j}");
    assert!(
        j["error"]["message"].as_str().unwrap().contains("2097152"),
        "{j}"
    );

    // 415: a body declared as something else than JSON.
    let ok = json!({"name": "Main", "widgets": []})
        .to_string()
        .into_bytes();
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, j) = send(Some(ct), ok.clone()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}: {j}");
        assert_eq!(j["error"]["code"], "unsupported_media_type", "{j}");
        assert!(j["error"]["message"].as_str().unwrap().contains(ct), "{j}");
    }
    let (status, j) = send(Some("application/json; charset=utf-8"), ok.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{j}");

    // 400 naming the field: control characters in a name or a widget's title.
    for name in [
        "a\u{0}b",
        "line\nbreak",
        "esc\u{1b}[31m",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        let body = json!({"name": name, "widgets": []})
            .to_string()
            .into_bytes();
        let (status, j) = send(Some("application/json"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {j}");
        assert_eq!(j["error"]["parameter"], "name", "{j}");
        assert_eq!(j["error"]["value"], name, "{j}");
        assert!(
            j["error"]["message"]
                .as_str()
                .unwrap()
                .contains("control character"),
            "{j}"
        );
    }
    let body = json!({"name": "ok", "widgets": [
        {"id": "w1", "kind": "line", "title": "tab\there", "x": 0, "y": 0, "w": 6, "h": 4}
    ]})
    .to_string()
    .into_bytes();
    let (status, j) = send(Some("application/json"), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{j}");
    assert_eq!(j["error"]["parameter"], "widgets[0].title", "{j}");

    // On a real socket the 413 reaches a client still sending its body (no reset).
    let mut c = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST {uri} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let _ = c.write_all(big.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("\"payload_too_large\""), "{out}");
    gw.stop().await;
}

/// The upgrade's status, and its body when refused.
async fn upgrade(gw: &Gateway, origin: Option<&str>) -> (u16, String) {
    match tokio_tungstenite::connect_async(gw.ws_request(origin)).await {
        Ok((mut ws, resp)) => {
            let _ = ws.close(None).await;
            (resp.status().as_u16(), String::new())
        }
        Err(tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("{origin:?}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_limits_websocket_upgrades_check_the_origin() {
    let foreign = "https://evil.example";
    let listed = "https://dash.example.com";

    // A list: the listed origins, the gateway's own, and clients without Origin.
    let gw = Gateway::start(|c| c.gateway.cors_allowed_origins = vec![listed.to_string()]).await;
    let own = format!("http://{}", gw.addr);
    let (status, body) = upgrade(&gw, Some(foreign)).await;
    assert_eq!(status, 403, "{body}");
    let j: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(j["error"]["code"], "forbidden", "{j}");
    assert!(
        j["error"]["message"].as_str().unwrap().contains(foreign),
        "{j}"
    );
    for origin in [Some(listed), Some(own.as_str()), None] {
        assert_eq!(upgrade(&gw, origin).await.0, 101, "{origin:?}");
    }
    gw.stop().await;

    // Empty (the default): the gateway's own origin only, as for CORS.
    let gw = Gateway::start(|_| {}).await;
    let own = format!("http://{}", gw.addr);
    assert_eq!(upgrade(&gw, Some(foreign)).await.0, 403);
    assert_eq!(upgrade(&gw, Some(listed)).await.0, 403);
    assert_eq!(upgrade(&gw, Some(&own)).await.0, 101);
    assert_eq!(upgrade(&gw, None).await.0, 101);
    gw.stop().await;

    // "*": every origin.
    let gw = Gateway::start(|c| c.gateway.cors_allowed_origins = vec!["*".to_string()]).await;
    assert_eq!(upgrade(&gw, Some(foreign)).await.0, 101);
    gw.stop().await;
}
