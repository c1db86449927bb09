//! The dashboard in a real browser: `streamtally run` against an end-to-end broker (Tansu
//! here, see tests/common/broker.rs), the page it serves opened in Debian's headless
//! Chromium, driven by playwright-core from `frontend/e2e/dashboard.e2e.mjs` and then, on the
//! same connector, `frontend/e2e/alerts.e2e.mjs` (alert rules made in the page; a spike of
//! events produced here must show the firing banner) and `frontend/e2e/trends.e2e.mjs` (the
//! Trends panel's numbers against the REST trends, zones, compare, the URL, CSV; it prints
//! `ws_bytes_per_s=<n>`). Each script runs axe-core on the page (no serious or critical
//! accessibility finding). `STREAMTALLY_E2E_SCRIPTS=trends` (comma-separated names) runs only
//! those scripts.
//!
//! This test owns the processes; the browser scripts own the page. A script asks for what
//! only this side can do by printing `@@ <command>` lines and reading one answer line:
//! `@@ produce N NAME` (N events named NAME for the org, event time now), `@@ stream RATE
//! SECONDS NAME` (events of the demo's shape at RATE a second, in the background), `@@ kill` (SIGKILL
//! the connector, gateway included), `@@ start` (start it again on the same address). Every
//! other line the script prints is passed through.
//!
//! Needs /usr/bin/chromium (`apt-get install chromium`) and `npm ci` in frontend/ (both done
//! by `.ci/run`). Without them the test fails and says so; `STREAMTALLY_SKIP_BROWSER=1`
//! skips it explicitly.

mod common;

use common::broker::{produce, random_name, TestBroker, TestRecord};
use common::run::{sigkill, sigterm, spawn_run};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamtally::gateway::auth::token_sha256_hex;
use uuid::Uuid;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Each browser script as a whole, whatever happens inside it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(420);

fn frontend_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("frontend")
}

/// None when the browser test can run here, else what is missing.
fn missing_prerequisites() -> Option<String> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (apt-get install chromium)"));
    }
    if !frontend_dir().join("node_modules/playwright-core").exists() {
        missing.push("frontend/node_modules/playwright-core (cd frontend && npm ci)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (Node.js 20.19 or later)".into());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// `n` native-format events for `org` named `name`, at `at` (ms since the epoch) minus
/// `spread_ms * i / n`, with a few users, sessions and properties.
fn events(org: Uuid, name: &str, n: usize, at: i64, spread_ms: i64) -> Vec<TestRecord> {
    (0..n)
        .map(|i| {
            let user = format!("user-{}", i % 37);
            let ts = at - spread_ms * i as i64 / n.max(1) as i64;
            let payload = json!({
                "org_id": org,
                "id": Uuid::new_v4(),
                "event_type": if i % 5 == 0 { "pageview" } else { "track" },
                "event_name": name,
                "user_id": user,
                "session_id": format!("s-{}", i % 11),
                "timestamp": ts,
                "properties": {"plan": if i % 2 == 0 { "pro" } else { "free" }, "n": i},
            });
            (
                Some(user.into_bytes()),
                Some(payload.to_string().into_bytes()),
                vec![],
                None,
            )
        })
        .collect()
}

/// Produces events of the demo's shape (`streamtally demo`'s generator: its names, users,
/// sessions and properties) for `org`, named `name`, at `rate` a second for `seconds`, in the
/// background (four batches a second).
fn stream(bootstrap: &str, topic: &str, org: Uuid, name: &str, rate: usize, seconds: u64) {
    let (bootstrap, topic, name) = (bootstrap.to_string(), topic.to_string(), name.to_string());
    std::thread::spawn(move || {
        let cfg = streamtally::synth::SynthConfig::new(rate as u64 * seconds);
        let started = Instant::now();
        let mut i = 0u64;
        for tick in 0..seconds * 4 {
            let batch: Vec<TestRecord> = (0..rate / 4)
                .map(|_| {
                    i += 1;
                    let e =
                        streamtally::synth::SynthEvent::generate_at(&cfg, i, chrono::Utc::now());
                    let props: serde_json::Value =
                        serde_json::from_str(&e.properties).expect("the generator's properties");
                    let payload = json!({
                        "org_id": org, "id": Uuid::from_bytes(e.id), "event_type": e.event_type,
                        "event_name": name, "user_id": e.user_id, "session_id": e.session_id,
                        "timestamp": now_ms(), "properties": props,
                    });
                    (
                        Some(e.user_id.into_bytes()),
                        Some(payload.to_string().into_bytes()),
                        vec![],
                        None,
                    )
                })
                .collect();
            produce(&bootstrap, &topic, &batch);
            let next = started + Duration::from_millis(250 * (tick + 1));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The connector as a child process, restartable on the same gateway address.
struct Connector {
    bootstrap: String,
    topic: String,
    group: String,
    store: PathBuf,
    log: PathBuf,
    addr: String,
    child: Option<Child>,
}

impl Connector {
    fn start(&mut self) {
        assert!(self.child.is_none(), "the connector is already running");
        self.child = Some(spawn_run(
            &self.bootstrap,
            &self.topic,
            &self.group,
            &self.store,
            &self.log,
            &[("STREAMTALLY__GATEWAY__LISTEN", self.addr.as_str())],
        ));
        // Serving again: the page's reconnect is what the script checks, not this wait.
        let started = Instant::now();
        while common::http::get(&self.addr, "/healthz", None).map(|r| r.status) != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the gateway never answered /healthz at {}; log:\n{}",
                self.addr,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("the connector is running");
        sigkill(&mut child);
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The org's events over the last 8 days as the REST timeseries counts them.
fn stored_total(addr: &str, org: Uuid, token: &str) -> Option<i64> {
    let now = now_ms();
    let path = format!(
        "/api/v1/orgs/{org}/timeseries?from={}&to={}&granularity=day",
        now - 8 * 24 * 3_600_000,
        now + 3_600_000
    );
    let response = common::http::get(addr, &path, Some(token))?;
    let body: serde_json::Value = serde_json::from_str(&response.body).ok()?;
    body["points"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["events"].as_i64()).sum())
}

#[test]
fn the_dashboard_in_headless_chromium() {
    if let Some(missing) = missing_prerequisites() {
        if std::env::var_os("STREAMTALLY_SKIP_BROWSER").is_some() {
            eprintln!(
                "dashboard_e2e: SKIPPED (STREAMTALLY_SKIP_BROWSER is set; missing: {missing})"
            );
            return;
        }
        panic!(
            "the browser test needs: {missing}. `bash .ci/run` installs them; \
             STREAMTALLY_SKIP_BROWSER=1 skips this test"
        );
    }
    let broker = TestBroker::end_to_end();
    eprintln!(
        "dashboard_e2e: broker {} at {}",
        broker.kind, broker.bootstrap
    );
    let topic = random_name("dashboard");
    broker.create_topic(&topic, 3);

    // What the page shows first: a week of history and the last hour.
    let org = Uuid::new_v4();
    let token = format!("e2e-{}", Uuid::new_v4().simple());
    let now = now_ms();
    let mut seed = events(org, "page_view", 300, now, 7 * 24 * 3_600_000);
    seed.extend(events(org, "signup", 40, now, 45 * 60_000));
    seed.extend(events(org, "add_to_cart", 60, now, 4 * 60_000));
    // Another org's events must never show.
    seed.extend(events(Uuid::new_v4(), "other_org_event", 50, now, 60_000));
    produce(&broker.bootstrap, &topic, &seed);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("connector.toml"),
        format!(
            "[[auth.tokens]]\norg_id = \"{org}\"\ntoken_sha256 = \"{}\"\nname = \"e2e\"\n",
            token_sha256_hex(&token)
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut connector = Connector {
        bootstrap: broker.bootstrap.clone(),
        topic: topic.clone(),
        group: random_name("dashboard"),
        store: dir.path().join("data"),
        log: dir.path().join("run.log"),
        addr: format!("127.0.0.1:{port}"),
        child: None,
    };
    connector.start();
    // The page's "before" must hold the whole seed: the live-update step checks the chart
    // total grew by exactly the events it produced.
    let seeded = Instant::now();
    while stored_total(&connector.addr, org, &token) != Some(400) {
        assert!(
            seeded.elapsed() < Duration::from_secs(60),
            "the seed (400 events of the org) not in the rollups within 60 s: {:?}",
            stored_total(&connector.addr, org, &token)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let only = std::env::var("STREAMTALLY_E2E_SCRIPTS").ok();
    for name in ["dashboard", "alerts", "trends"] {
        if let Some(only) = &only {
            if !only.split(',').any(|o| o.trim() == name) {
                eprintln!("dashboard_e2e: e2e/{name}.e2e.mjs left out (STREAMTALLY_E2E_SCRIPTS)");
                continue;
            }
        }
        let script = format!("e2e/{name}.e2e.mjs");
        run_script(&script, &broker, &topic, org, &token, &mut connector);
    }

    if let Some(mut child) = connector.child.take() {
        let exit = sigterm(&mut child);
        assert!(exit.success(), "connector exit {exit:?}");
    }
}

/// Runs one browser script against the connector, answering its `@@` commands, and fails
/// the test when the script fails.
fn run_script(
    script: &str,
    broker: &TestBroker,
    topic: &str,
    org: Uuid,
    token: &str,
    connector: &mut Connector,
) {
    eprintln!("dashboard_e2e: node {script}");
    let mut node = Command::new("node")
        .arg(script)
        .current_dir(frontend_dir())
        .env("STREAMTALLY_URL", format!("http://{}/", connector.addr))
        .env("STREAMTALLY_ORG", org.to_string())
        .env("STREAMTALLY_TOKEN", token)
        .env("STREAMTALLY_E2E_CONTROL", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start node {script}: {e}"));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        let script = script.to_string();
        let pid = node.id() as i32;
        std::thread::spawn(move || {
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if started.elapsed() > SCRIPT_TIMEOUT {
                    eprintln!("dashboard_e2e: {script} ran over {SCRIPT_TIMEOUT:?}: killing it");
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let mut answers = node.stdin.take().unwrap();
    let lines = BufReader::new(node.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.expect("read the script's output");
        let Some(command) = line.strip_prefix("@@ ") else {
            println!("{line}");
            continue;
        };
        let words: Vec<&str> = command.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["produce", n, name] => {
                let n: usize = n.parse().expect("produce N");
                produce(&broker.bootstrap, topic, &events(org, name, n, now_ms(), 0));
                format!("produced {n}")
            }
            ["stream", rate, seconds, name] => {
                let rate: usize = rate.parse().expect("stream RATE");
                let seconds: u64 = seconds.parse().expect("stream SECONDS");
                stream(&broker.bootstrap, topic, org, name, rate, seconds);
                format!("streaming {rate} events/s for {seconds} s")
            }
            ["kill"] => {
                connector.kill();
                "killed".to_string()
            }
            ["start"] => {
                connector.start();
                "started".to_string()
            }
            _ => panic!("unknown command from the browser script: {line}"),
        };
        println!("  (test: {command} -> {answer})");
        writeln!(answers, "{answer}").expect("answer the script");
    }
    let status = node.wait().expect("wait for the browser script");
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    assert!(
        status.success(),
        "{script} failed ({status}); connector log:\n{}",
        connector.log_text()
    );
}
