//! The monitoring files of docker/ against a running connector: every `streamtally_*` metric
//! name that docker/prometheus/alerts.yaml and docker/grafana/streamtally.json use is one
//! that `streamtally run` (against Tansu, started from its binary without Docker) exports
//! on `/metrics`, so a renamed metric cannot leave a dashboard panel empty or an alert rule
//! silent. (promtool checks the rules' syntax in .ci/check-packaging.sh.)
//!
//! Outside CI the test skips (saying so) when the Tansu binary is missing
//! (`bash .ci/install-tansu.sh`).

mod common;

use common::broker::{free_port, random_name, TestBroker};
use common::http;
use common::run::{self, sigterm};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Every `streamtally_*` name in `text`.
fn names_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("streamtally_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not a longer identifier's tail (e.g. a file name).
        let before = rest[..i].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '.') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The sample names `/metrics` can carry, from its `# TYPE` lines: a counter's `_total`, a
/// histogram's `_bucket`, `_sum` and `_count`.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = name.trim_end_matches("_total");
        out.insert(name.to_string());
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_metric_the_dashboard_and_alert_rules_use_is_exported() {
    let Some(broker) = TestBroker::tansu() else {
        return;
    };
    let topic = broker.new_topic("monitoring");
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let listen = addr.clone();
    let mut child = run::spawn_run(
        &broker.bootstrap,
        &topic,
        &random_name("monitoring"),
        &dir.path().join("store"),
        &dir.path().join("run.log"),
        &[("STREAMTALLY__GATEWAY__LISTEN", listen.as_str())],
    );
    // Three events and a dead letter: series labelled by partition and reason appear once
    // they have something to count.
    broker.create_topic(&format!("{topic}.dlq"), 1);
    let mut records = common::broker::synth_records(&common::synth(3), 0..3, 1);
    records.push((None, Some(b"not json".to_vec()), Vec::new(), None));
    common::broker::produce(&broker.bootstrap, &topic, &records);
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Some((200, body)) = http::status_body(&addr, "/metrics", None) {
            // The second scrape also sees the first one's latency.
            if body.contains("streamtally_events_dead_lettered_total{")
                && body.contains("streamtally_http_request_seconds_bucket{")
                && body.contains("streamtally_stats_lag_changes{")
                && body.contains("streamtally_partition_lag_events{")
            {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "no complete /metrics on {addr}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(sigterm(&mut child).success());
    let have = exported(&body);
    assert!(have.contains("streamtally_events_stored_total"), "{body}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "docker/prometheus/alerts.yaml",
        "docker/grafana/streamtally.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let used = names_used(&text);
        assert!(used.len() >= 5, "{file}: {used:?}");
        let missing: Vec<&String> = used.iter().filter(|n| !have.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics /metrics does not export: {missing:?}\nexported: {have:?}"
        );
    }
}

#[test]
fn the_name_scanner_finds_metric_names_and_not_file_names() {
    let used = names_used(
        "expr: rate(streamtally_events_stored_total[1m]) / streamtally_ready ; see docker/streamtally_x.json",
    );
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["streamtally_events_stored_total", "streamtally_ready"]
    );
    let have =
        exported("# TYPE streamtally_flush_seconds histogram\n# TYPE streamtally_x counter\n");
    assert!(have.contains("streamtally_flush_seconds_bucket"));
    assert!(have.contains("streamtally_x_total"));
}
