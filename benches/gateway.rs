//! `cargo bench --bench gateway -- --clients C --rate R [--seconds S]`: streamtally (ingest,
//! stats workers, gateway) in this process on librdkafka's mock cluster; a producer sends R
//! events/s over 10 orgs, each stamped with its produce time; C WebSocket clients
//! (tokio-tungstenite, spread over the orgs) measure freshness (produce time -> the update
//! carrying that event received); an HTTP poller times the dashboard queries meanwhile.
//! Last stdout line is JSON.
//!
//! `--instances N` (default 1): N connectors in one consumer group, scaled out
//! (`scale_out.enabled`, docs/SCALE-OUT.md), in this process: the clients and the HTTP
//! poller go to the instances in turn, so every answer merges the partial states of the
//! instances owning the partitions and every client's events come partly from the other
//! instances' streams. The JSON says `"instances":N`; compare its `http_p50_ms` with a run
//! of one instance.
//!
//! Two runs, each on a fresh topic and an empty store, identical but for the WebSocket
//! clients: a control run without them, then the measured run with them. Each run waits for
//! the consumer group to join, connects its clients, then produces for 2 + S seconds and
//! measures the last S. Ingest with and without clients is thus compared over the same
//! store sizes: the store ingests more slowly as it grows (sled's page cache covers a
//! smaller share of it), so measuring "without" first on a smaller store and "with" later
//! on a larger one charged the clients for the store's growth.
//!
//! The broker, the producer and the clients stand in for systems on other machines (a Kafka
//! cluster, the app, browsers); here they share the connector's cores, so they run at
//! `--external-nice N` (default 10; 0 shares the cores equally): the connector gets the CPU
//! first, as it would on its own host. The HTTP poller, which measures, is not niced.

#[path = "../tests/common/broker.rs"]
mod broker;
#[path = "support/mod.rs"]
mod common;
use common::{arg, percentile};

use futures::StreamExt;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamtally::config::Config;
use streamtally::metrics::{DeadLetterLabel, Metrics, TopicLabel};
use streamtally::schema::Schema;
use streamtally::store::{Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORGS: u8 = 10;
const PARTITIONS: i32 = 6;
/// Clients whose every freshness sample is kept (the others only count events).
const SAMPLED_CLIENTS: usize = 50;

fn org(n: u8) -> uuid::Uuid {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &[b'g', b'w', n])
}

/// The part of a server message the clients read.
#[derive(serde::Deserialize)]
struct Update<E> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "Vec::new")]
    events: Vec<E>,
}

#[derive(serde::Deserialize)]
struct Stamped {
    timestamp: String,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Lowers the calling thread's priority to `nice` (threads it starts inherit it).
fn nice_this_thread(nice: i32) {
    // SAFETY: setpriority on the calling thread (who = 0: this thread, on Linux).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
}

/// Lowers the priority of this process's threads whose name starts with `prefix`.
fn nice_threads(prefix: &str, nice: i32) -> usize {
    nice_tasks("/proc/self/task", prefix, nice)
}

/// Lowers the priority of every thread of process `pid` (an out-of-process broker).
fn nice_process(pid: u32, nice: i32) -> usize {
    nice_tasks(&format!("/proc/{pid}/task"), "", nice)
}

fn nice_tasks(dir: &str, prefix: &str, nice: i32) -> usize {
    let Ok(tasks) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let tid = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok());
        if let (true, Some(tid)) = (comm.starts_with(prefix), tid) {
            // SAFETY: setpriority on one of this process's threads.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, tid, nice);
            }
            n += 1;
        }
    }
    n
}

/// Produces `rate` events/s until `stop`; returns the number sent.
fn producer(bootstrap: String, topic: String, rate: u64, stop: Arc<AtomicBool>, nice: i32) -> u64 {
    nice_this_thread(nice);
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let payload = format!(
                r#"{{"org_id":"{}","event_type":"track","event_name":"e{}","user_id":"u{}","session_id":"s{}","timestamp":{},"properties":{{"n":{sent}}}}}"#,
                org((sent % ORGS as u64) as u8),
                sent % 20,
                sent % 5000,
                sent % 9000,
                now_ms()
            );
            let key = sent.to_string();
            if p.send(BaseRecord::to(&topic).key(&key).payload(&payload))
                .is_err()
            {
                p.poll(Duration::from_millis(5));
                continue;
            }
            sent += 1;
        }
        p.poll(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = p.flush(Duration::from_secs(10));
    sent
}

/// Events stored (rows written) and events skipped because the broker deleted them before
/// they were read, for `topic`, so far. The stored positions would count skipped offsets as
/// ingested.
fn stored_and_skipped(metrics: &Metrics, topic: &str) -> (u64, u64) {
    let topic = topic.to_string();
    let stored = metrics
        .events_stored
        .get_or_create(&TopicLabel {
            topic: topic.clone(),
        })
        .get();
    let skipped = metrics
        .events_skipped
        .get_or_create(&DeadLetterLabel {
            topic,
            reason: "retention".into(),
        })
        .get();
    (stored, skipped)
}

/// [`stored_and_skipped`] summed over instances.
fn stored_and_skipped_all(metrics: &[Arc<Metrics>], topic: &str) -> (u64, u64) {
    metrics
        .iter()
        .map(|m| stored_and_skipped(m, topic))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Events stored per second over `secs` by every instance (and how many were skipped
/// meanwhile).
fn ingest_rate(metrics: &[Arc<Metrics>], topic: &str, secs: u64) -> (f64, u64) {
    let before = stored_and_skipped_all(metrics, topic);
    std::thread::sleep(Duration::from_secs(secs));
    let after = stored_and_skipped_all(metrics, topic);
    (
        (after.0 - before.0) as f64 / secs as f64,
        after.1 - before.1,
    )
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<()> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    out.starts_with(b"HTTP/1.1 200").then_some(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let clients = arg("--clients", 1000) as usize;
    let rate = arg("--rate", 20_000);
    let seconds = arg("--seconds", 30);
    let external_nice = arg("--external-nice", 10).min(19) as i32;
    let instances = arg("--instances", 1).clamp(1, 12) as usize;
    let broker_kind = std::env::args()
        .skip_while(|a| a != "--broker")
        .nth(1)
        .unwrap_or_else(|| "mock".to_string());
    let broker = match broker_kind.as_str() {
        "mock" => broker::TestBroker::mock(PARTITIONS),
        "tansu" => broker::TestBroker::tansu()
            .expect("--broker tansu: the Tansu binary is missing (bash .ci/install-tansu.sh)"),
        other => panic!("--broker expects mock or tansu, got {other:?}"),
    };
    let opts = Opts {
        rate,
        seconds,
        external_nice,
        instances,
    };
    let control = run(&broker, &opts, 0);
    eprintln!(
        "control run, no WebSocket clients: {:.0} events/s stored (producing {rate}/s); {} deleted by the broker before they were read; http p99 timeseries {:.2} ms",
        control.ingest, control.skipped, percentile(&control.routes[0], 0.99)
    );
    let measured = run(&broker, &opts, clients);
    eprintln!(
        "run with {} of {clients} clients connected: {:.0} events/s stored; {} deleted by the broker before they were read; produced {}; clients received {} events; dropped {}",
        measured.connected, measured.ingest, measured.skipped, measured.produced, measured.received, measured.dropped
    );
    let routes = &measured.routes;
    for (name, r) in ["timeseries", "top_events", "unique_users", "counters"]
        .iter()
        .zip(routes)
    {
        eprintln!(
            "http {name} ({instances} instance(s)): {} requests, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            r.len(),
            percentile(r, 0.5),
            percentile(r, 0.9),
            percentile(r, 0.99),
            r.last().copied().unwrap_or(0.0)
        );
    }
    let fresh = &measured.freshness;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{{\"bench\":\"gateway\",\"clients\":{clients},\"rate\":{rate},\"freshness_p50_ms\":{:.0},\"freshness_p99_ms\":{:.0},\"push_dropped\":{},\"http_p99_ms\":{{\"timeseries\":{},\"top_events\":{},\"unique_users\":{},\"counters\":{}}},\"http_p50_ms\":{{\"timeseries\":{},\"top_events\":{},\"unique_users\":{},\"counters\":{}}},\"instances\":{instances},\"ingest_events_per_sec\":{:.0},\"ingest_events_per_sec_without_clients\":{:.0},\"freshness_samples\":{},\"external_nice\":{external_nice}}}",
        percentile(fresh, 0.5),
        percentile(fresh, 0.99),
        measured.dropped,
        r2(percentile(&routes[0], 0.99)),
        r2(percentile(&routes[1], 0.99)),
        r2(percentile(&routes[2], 0.99)),
        r2(percentile(&routes[3], 0.99)),
        r2(percentile(&routes[0], 0.5)),
        r2(percentile(&routes[1], 0.5)),
        r2(percentile(&routes[2], 0.5)),
        r2(percentile(&routes[3], 0.5)),
        measured.ingest,
        control.ingest,
        fresh.len()
    );
}

struct Opts {
    rate: u64,
    seconds: u64,
    external_nice: i32,
    instances: usize,
}

/// One connector of a run.
struct Node {
    addr: std::net::SocketAddr,
    store: Store,
    metrics: Arc<Metrics>,
    services: streamtally::app::Services,
    ingest: std::thread::JoinHandle<Result<(), streamtally::ingest::IngestError>>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts connector `k` of `n` in the consumer group `group`.
fn node(
    broker: &broker::TestBroker,
    topic: &str,
    group: &str,
    (k, n): (usize, usize),
    shutdown: &tokio_util::sync::CancellationToken,
) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = Config::default();
    cfg.kafka.brokers = broker.bootstrap.clone();
    cfg.kafka.topics = vec![topic.to_string()];
    cfg.kafka.group_id = group.to_string();
    cfg.store.path = dir.path().to_path_buf();
    cfg.auth.enabled = false;
    if n > 1 {
        let port = free_port();
        cfg.gateway.listen = format!("127.0.0.1:{port}").parse().expect("addr");
        cfg.gateway.advertised_url = format!("http://127.0.0.1:{port}");
        cfg.scale_out.enabled = true;
        cfg.scale_out.instance_id = format!("bench-{k}");
        cfg.scale_out.cluster_secret = "bench-cluster-secret-0123456789".into();
        cfg.scale_out.announce_interval_ms = 500;
    } else {
        cfg.gateway.listen = "127.0.0.1:0".parse().expect("addr");
    }
    let schema = Schema::parse(include_str!("../schema.ormdb")).expect("schema");
    let store = Store::open(StoreOptions::from_config(&cfg.store), &schema).expect("store");
    let metrics = Arc::new(Metrics::new());
    let services = streamtally::app::Services::start(
        cfg.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .expect("services");
    let ingest = services.ingest(
        cfg.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    Node {
        addr: services.gateway_addr,
        store,
        metrics,
        services,
        ingest: std::thread::spawn(move || ingest.run()),
        _dir: dir,
    }
}

/// Waits until every node says each partition has one live owner and all `n` instances
/// are live.
fn wait_for_group(nodes: &[Node]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    for node in nodes {
        loop {
            let body = rt.block_on(http_body(node.addr, "/api/v1/cluster"));
            let v: serde_json::Value = body
                .and_then(|b| serde_json::from_str(&b).ok())
                .unwrap_or_default();
            let live = v["instances"].as_array().map_or(0, |a| a.len());
            if v["complete"] == true && live == nodes.len() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the group did not settle within 90 s: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn http_body(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// What one run measured over its window.
struct Outcome {
    /// Events stored per second.
    ingest: f64,
    /// Events the broker deleted before they were read.
    skipped: u64,
    produced: u64,
    connected: u64,
    /// Events carried by updates, over all clients.
    received: u64,
    /// Updates skipped for slow clients.
    dropped: u64,
    /// Freshness samples (ms), sorted.
    freshness: Vec<f64>,
    /// Latencies (ms) per dashboard query, sorted: timeseries, top events, unique users,
    /// counters.
    routes: Vec<Vec<f64>>,
}

/// One run on a fresh topic and an empty store, with `clients` WebSocket clients.
fn run(broker: &broker::TestBroker, opts: &Opts, clients: usize) -> Outcome {
    let Opts {
        rate,
        seconds,
        external_nice,
        ..
    } = *opts;
    let topic = broker::random_name("gw-bench");
    broker.create_topic(&topic, PARTITIONS);
    let group = broker::random_name("gw-bench");
    let n = opts.instances;
    if n > 1 && broker.pid().is_none() {
        // The mock cluster cannot create topics through the admin API.
        broker.create_topic(&format!("{group}.members"), 1);
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let nodes: Vec<Node> = (0..n)
        .map(|k| node(broker, &topic, &group, (k, n), &shutdown))
        .collect();
    if n > 1 {
        wait_for_group(&nodes);
    }
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let metrics: Vec<Arc<Metrics>> = nodes.iter().map(|n| n.metrics.clone()).collect();
    let addr = addrs[0];
    warm_up(&broker.bootstrap, &topic, addr);
    // The mock cluster's thread may start only with the first topic's traffic.
    let (what, reniced) = match broker.pid() {
        Some(pid) => (
            format!("broker process {pid}"),
            nice_process(pid, external_nice),
        ),
        None => (
            "mock cluster".to_string(),
            nice_threads("rdk:mock", external_nice),
        ),
    };
    if clients == 0 {
        eprintln!("{what}: {reniced} thread(s) at nice {external_nice}");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-clients")
        .on_thread_start(move || nice_this_thread(external_nice))
        .enable_all()
        .build()
        .expect("client runtime");
    let samples: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    for c in 0..clients {
        let (samples, received, connected, done) = (
            samples.clone(),
            received.clone(),
            connected.clone(),
            done.clone(),
        );
        rt.spawn(client(c, addrs[c % n], samples, received, connected, done));
    }
    let connecting = Instant::now();
    while connected.load(Ordering::Relaxed) < clients as u64
        && connecting.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let http: Arc<Mutex<Vec<(usize, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let poller = poller(addrs.clone(), http.clone(), done.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let prod = {
        let (b, t, s) = (broker.bootstrap.clone(), topic.clone(), stop.clone());
        std::thread::spawn(move || producer(b, t, rate, s, external_nice))
    };
    // The first 2 s ramp up (the producer's first batches, the first pushes); then measure.
    std::thread::sleep(Duration::from_secs(2));
    samples.lock().expect("samples").clear();
    http.lock().expect("http").clear();
    received.store(0, Ordering::Relaxed);
    let dropped_now = || -> u64 { metrics.iter().map(|m| m.ws_messages_dropped.get()).sum() };
    let dropped_before = dropped_now();
    let (ingest, skipped) = ingest_rate(&metrics, &topic, seconds);
    let dropped = dropped_now() - dropped_before;
    done.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    poller.join().expect("HTTP poller");
    let produced = prod.join().expect("producer");
    let mut freshness = samples.lock().expect("samples").clone();
    freshness.sort_by(|a, b| a.partial_cmp(b).expect("number"));
    let mut routes: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for (k, ms) in http.lock().expect("http").iter() {
        routes[*k].push(*ms);
    }
    for r in &mut routes {
        r.sort_by(|a, b| a.partial_cmp(b).expect("number"));
    }
    shutdown.cancel();
    rt.shutdown_timeout(Duration::from_secs(2));
    for node in nodes {
        let _ = node.ingest.join();
        let _ = node.services.join();
        let _ = node.store.close();
    }
    Outcome {
        ingest,
        skipped,
        produced,
        connected: connected.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        dropped,
        freshness,
        routes,
    }
}

/// Produces one event per org and waits until the gateway knows every org (404 before its
/// first event): the consumer group has joined and the clients can connect.
fn warm_up(bootstrap: &str, topic: &str, addr: std::net::SocketAddr) {
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for o in 0..ORGS {
        let payload = format!(
            r#"{{"org_id":"{}","event_type":"track","event_name":"warm_up","user_id":"u0","timestamp":{}}}"#,
            org(o),
            now_ms()
        );
        p.send(BaseRecord::<str, str>::to(topic).payload(&payload))
            .map_err(|(e, _)| e)
            .expect("warm-up event");
    }
    p.flush(Duration::from_secs(30)).expect("warm-up flush");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("warm-up runtime");
    let started = Instant::now();
    for o in 0..ORGS {
        let path = format!("/api/v1/orgs/{}/counters", org(o));
        while rt.block_on(http_get(addr, &path)).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "org {o}'s warm-up event did not reach the gateway within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Client `c`: connects to its org's live feed and counts (the first [`SAMPLED_CLIENTS`]
/// also time) the events its updates carry, until `done`.
async fn client(
    c: usize,
    addr: std::net::SocketAddr,
    samples: Arc<Mutex<Vec<f64>>>,
    received: Arc<AtomicU64>,
    connected: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) {
    let url = format!(
        "ws://{addr}/ws/dashboard?org={}",
        org((c % ORGS as usize) as u8)
    );
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    connected.fetch_add(1, Ordering::Relaxed);
    while let Some(Ok(msg)) = ws.next().await {
        if done.load(Ordering::Relaxed) {
            break;
        }
        let tokio_tungstenite::tungstenite::Message::Text(t) = msg else {
            continue;
        };
        let at = now_ms();
        // Typed and skipping what is not needed: 1,000 clients parsing every update into
        // serde_json::Value cost the process more CPU than the server.
        if c < SAMPLED_CLIENTS {
            let Ok(u) = serde_json::from_str::<Update<Stamped>>(t.as_str()) else {
                continue;
            };
            if u.kind != "update" {
                continue;
            }
            received.fetch_add(u.events.len() as u64, Ordering::Relaxed);
            let mut s = samples.lock().expect("samples");
            for e in &u.events {
                if let Ok(ts) = chrono::DateTime::parse_from_rfc3339(&e.timestamp) {
                    s.push((at - ts.timestamp_millis()) as f64);
                }
            }
        } else if let Ok(u) = serde_json::from_str::<Update<serde::de::IgnoredAny>>(t.as_str()) {
            if u.kind == "update" {
                received.fetch_add(u.events.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Times the dashboard queries (route index, ms) in a loop until `done`. It has a thread
/// and runtime of its own: on the clients' runtime its requests waited behind 1,000 client
/// tasks, which measured the bench, not the gateway.
fn poller(
    addrs: Vec<std::net::SocketAddr>,
    http: Arc<Mutex<Vec<(usize, f64)>>>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let poller_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("poller runtime");
    std::thread::spawn(move || {
        poller_rt.block_on(async move {
            let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
            let from = (chrono::Utc::now() - chrono::Duration::days(7)).timestamp_millis();
            let to = chrono::Utc::now().timestamp_millis() + 3_600_000;
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) {
                let o = org((i % ORGS as usize) as u8);
                let paths = [
                    format!("/api/v1/orgs/{o}/timeseries?from={from}&to={to}&granularity=hour"),
                    format!("/api/v1/orgs/{o}/top-events?date={day}"),
                    format!("/api/v1/orgs/{o}/unique-users?from={from}&to={to}"),
                    format!("/api/v1/orgs/{o}/counters"),
                ];
                for (k, p) in paths.iter().enumerate() {
                    let t = Instant::now();
                    if http_get(addrs[i % addrs.len()], p).await.is_some() {
                        http.lock()
                            .expect("http")
                            .push((k, t.elapsed().as_secs_f64() * 1000.0));
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    })
}
