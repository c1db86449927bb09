//! `streamtally demo` as a user runs it: the built binary, in a temp working directory, on a
//! free gateway port and its own embedded broker. It must print the dashboard URL, one token
//! per org and the broker; through the HTTP API, events, today's hourly rollups and the
//! real-time counters grow while the generator runs, and the backfilled history is there;
//! SIGTERM stops it with exit code 0 and removes its temporary store. Also: `--keep --data`
//! keeps the store (and a second run on it goes on storing), an unreachable `--brokers` is
//! a clear error, and bad flag values exit with code 2 naming the flag.

mod common;

use chrono::{DurationRound, Utc};
use common::http::status_body;
use serde_json::Value as Json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Two full demos at once would share the machine's two cores with each other.
static ONE_DEMO_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running `streamtally demo` and what it printed at start.
struct Demo {
    child: Child,
    lines: Receiver<String>,
    addr: String,
    orgs: Vec<(String, String)>,
    broker: String,
    data: PathBuf,
    log: PathBuf,
}

/// [`common::run::command`] with its temporary directory in `dir` and info logs.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = common::run::command(dir, args);
    cmd.env("TMPDIR", dir)
        .env("STREAMTALLY__LOG__LEVEL", "info");
    cmd
}

impl Demo {
    fn start(dir: &Path, extra: &[&str]) -> Demo {
        let log = dir.join(format!("demo-{}.log", extra.len()));
        let mut args = vec!["demo", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = command(dir, &args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn streamtally demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                println!("demo> {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut demo = Demo {
            child,
            lines,
            addr: String::new(),
            orgs: Vec::new(),
            broker: String::new(),
            data: PathBuf::new(),
            log,
        };
        demo.read_banner();
        demo
    }

    fn read_banner(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(e) => panic!("no start-up banner ({e}); log:\n{}", self.log_text()),
            };
            if let Some(url) = line.strip_prefix("dashboard: ") {
                let addr = url.trim_start_matches("http://").trim_end_matches('/');
                self.addr = addr.to_string();
            } else if let Some(rest) = line.strip_prefix("org ") {
                let parts: Vec<&str> = rest.split(' ').collect();
                assert_eq!(parts.len(), 3, "org line: {line}");
                assert_eq!(parts[1], "token", "org line: {line}");
                self.orgs.push((parts[0].to_string(), parts[2].to_string()));
            } else if let Some(rest) = line.strip_prefix("broker: ") {
                self.broker = rest.split(' ').next().unwrap().to_string();
            } else if let Some(rest) = line.strip_prefix("data: ") {
                self.data = PathBuf::from(rest.split(" (").next().unwrap());
            } else if line.starts_with("Ctrl-C") {
                break;
            }
        }
        assert!(self.addr.starts_with("127.0.0.1:"), "{}", self.addr);
        assert!(!self.addr.ends_with(":0"), "the real port: {}", self.addr);
        assert!(self.broker.starts_with("127.0.0.1:"), "{}", self.broker);
        assert!(!self.orgs.is_empty());
        assert!(!self.data.as_os_str().is_empty());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` with org `n`'s token: (status, JSON body).
    fn api(&self, n: usize, path: &str) -> (u16, Json) {
        let (org, token) = &self.orgs[n];
        let path = path.replace("{org}", org);
        let (status, body) =
            status_body(&self.addr, &path, Some(token)).expect("an HTTP response from the gateway");
        let json = serde_json::from_str(&body).unwrap_or(Json::Null);
        (status, json)
    }

    /// `streamtally_events_stored_total` from /metrics.
    fn stored(&self) -> u64 {
        let (status, body) =
            status_body(&self.addr, "/metrics", None).expect("an HTTP response from the gateway");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .filter(|l| l.starts_with("streamtally_events_stored_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Sum of org `n`'s hourly events in [from, to).
    fn hourly_sum(&self, n: usize, from: chrono::DateTime<Utc>, to: chrono::DateTime<Utc>) -> u64 {
        let fmt = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let (status, body) = self.api(
            n,
            &format!(
                "/api/v1/orgs/{{org}}/timeseries?from={}&to={}&granularity=hour",
                fmt(from),
                fmt(to)
            ),
        );
        assert_eq!(status, 200, "{body}");
        body["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["events"].as_u64().unwrap())
            .sum()
    }

    /// SIGTERM; the exit status (within 30 s) and the rest of stdout.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("no exit within 30 s of SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        println!(
            "exit after SIGTERM in {:.1} s: {status}",
            started.elapsed().as_secs_f64()
        );
        let mut rest = Vec::new();
        // Until the child's stdout closes (or 5 s of silence).
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(l);
        }
        (status, rest)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn demo_serves_growing_stats_and_stops_cleanly() {
    let _one = ONE_DEMO_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let start_time = Utc::now();
    let demo = Demo::start(
        dir.path(),
        &[
            "--rate",
            "500",
            "--orgs",
            "2",
            "--backfill-days",
            "1",
            "--backfill-events-per-day",
            "5000",
        ],
    );
    assert_eq!(demo.orgs.len(), 2);
    assert!(
        demo.data.starts_with(dir.path()),
        "temp store under TMPDIR: {:?}",
        demo.data
    );
    assert!(demo.data.is_dir());

    // Wait until the backfill is stored and live events flow: the counters see them, and
    // so do today's hourly rollups (written up to stats.rollup_flush_interval_ms later).
    let today = Utc::now()
        .duration_trunc(chrono::Duration::days(1))
        .unwrap();
    let ahead = Utc::now() + chrono::Duration::hours(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, counters) = demo.api(0, "/api/v1/orgs/{org}/counters");
        assert_eq!(status, 200, "{counters}");
        if counters["events_5m"].as_u64().unwrap_or(0) > 0
            && demo.hourly_sum(0, today, ahead) + demo.hourly_sum(1, today, ahead) > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no events_5m or no hourly rollups of today after 60 s; log:\n{}",
            demo.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("live after {:.1} s", began.elapsed().as_secs_f64());

    // Poll for ~15 s: stored events and today's hourly rollups keep growing.
    let mut samples = Vec::new();
    for _ in 0..6 {
        let stored = demo.stored();
        let today_events = demo.hourly_sum(0, today, ahead) + demo.hourly_sum(1, today, ahead);
        let (_, counters) = demo.api(0, "/api/v1/orgs/{org}/counters");
        println!(
            "t={:>5.1}s stored={stored} today_hourly={today_events} events_5m={} events_today={}",
            began.elapsed().as_secs_f64(),
            counters["events_5m"],
            counters["events_today"]
        );
        samples.push((stored, today_events));
        std::thread::sleep(Duration::from_secs(3));
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    assert!(
        last.0 > first.0 + 2000,
        "stored events grow at ~500/s: {samples:?}"
    );
    assert!(
        first.1 > 0 && last.1 > first.1,
        "today's hourly rollups grow: {samples:?}"
    );
    for pair in samples.windows(2) {
        assert!(
            pair[1].0 >= pair[0].0 && pair[1].1 >= pair[0].1,
            "never shrink: {samples:?}"
        );
    }

    // Counters, recent events (fresh), the backfilled history, isolation, the dashboard.
    let (_, counters) = demo.api(1, "/api/v1/orgs/{org}/counters");
    assert!(counters["events_5m"].as_u64().unwrap() > 0, "{counters}");
    assert!(
        counters["active_users_5m"].as_u64().unwrap() > 0,
        "{counters}"
    );
    let (status, recent) = demo.api(0, "/api/v1/orgs/{org}/events/recent?limit=20");
    assert_eq!(status, 200, "{recent}");
    let events = recent["events"].as_array().unwrap();
    assert_eq!(events.len(), 20, "{recent}");
    let newest: chrono::DateTime<Utc> = events[0]["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(
        Utc::now() - newest < chrono::Duration::seconds(30),
        "newest event at {newest}"
    );
    assert_eq!(events[0]["topic"], "events");
    let backfill_to = start_time
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap()
        - chrono::Duration::hours(1);
    let history = demo.hourly_sum(0, start_time - chrono::Duration::hours(24), backfill_to)
        + demo.hourly_sum(1, start_time - chrono::Duration::hours(24), backfill_to);
    println!("backfilled events in the 23 hours before the start: {history}");
    assert!(
        history > 2000,
        "backfill of ~5000 events/day visible: {history}"
    );
    let other_org = demo.orgs[1].0.clone();
    let (status, _) = demo.api(0, &format!("/api/v1/orgs/{other_org}/counters"));
    assert_eq!(status, 403, "one org's token does not read another org");
    let (org, token) = &demo.orgs[0];
    let (status, page) = status_body(&demo.addr, &format!("/?org={org}&token={token}"), None)
        .expect("an HTTP response from the gateway");
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));

    let data = demo.data.clone();
    let (status, rest) = demo.stop();
    assert_eq!(status.code(), Some(0), "clean exit: {rest:?}");
    assert!(
        !data.exists(),
        "the temporary store {} is removed",
        data.display()
    );
    assert!(
        rest.iter().any(|l| l.starts_with("data: removed")),
        "{rest:?}"
    );
    println!("whole test: {:.1} s", began.elapsed().as_secs_f64());
}

#[test]
fn demo_keep_data_keeps_the_store_and_a_second_run_goes_on() {
    let _one = ONE_DEMO_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let mut rows = Vec::new();
    for run in 0..2 {
        let demo = Demo::start(
            dir.path(),
            &[
                "--keep",
                "--data",
                store_arg,
                "--backfill-days",
                "0",
                "--rate",
                "300",
            ],
        );
        assert_eq!(demo.data, store);
        let deadline = Instant::now() + Duration::from_secs(60);
        while demo.stored() < 1000 {
            assert!(
                Instant::now() < deadline,
                "run {run}: nothing stored; log:\n{}",
                demo.log_text()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let (status, rest) = demo.stop();
        assert_eq!(status.code(), Some(0), "run {run}: {rest:?}");
        assert!(
            rest.iter().any(|l| l.starts_with("data: kept at")),
            "{rest:?}"
        );
        assert!(store.is_dir());
        let info = command(dir.path(), &["store", "info", "--data", store_arg])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout).to_string();
        assert!(info.status.success(), "{text}");
        let events: u64 = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Event: ")?
                    .strip_suffix(" rows")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no Event count in: {text}"));
        println!("run {run}: store info says {events} events");
        rows.push(events);
    }
    assert!(
        rows[0] >= 1000 && rows[1] >= rows[0] + 1000,
        "the second run stores more: {rows:?}"
    );
}

#[test]
fn demo_with_an_unreachable_broker_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let started = Instant::now();
    let out = command(
        dir.path(),
        &["demo", "--listen", "127.0.0.1:0", "--brokers", &closed],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("--brokers '{closed}'")),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn bad_demo_flags_exit_2_naming_the_flag_and_value() {
    let dir = tempfile::tempdir().unwrap();
    for (args, flag, value) in [
        (vec!["--rate", "0"], "--rate", "0"),
        (vec!["--orgs", "0"], "--orgs", "0"),
        (vec!["--backfill-days", "91"], "--backfill-days", "91"),
        (vec!["--listen", "nowhere"], "--listen", "nowhere"),
        (vec!["--rate", "fast"], "--rate", "fast"),
    ] {
        let mut all = vec!["demo"];
        all.extend(args);
        let out = command(dir.path(), &all).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(&format!("'{value}'")),
            "{all:?}: {stderr}"
        );
    }
}
