//! `cargo bench --bench ingest -- --events N [--ids v4|v7]`: ~300-byte seed-shaped JSON events on 6
//! partitions of an out-of-process Tansu broker (or KAFKA_BOOTSTRAP_SERVERS). In one run:
//! (a) the raw-consume ceiling, an rdkafka consumer that only counts; (b) streamtally from an
//! empty store to every event durable and its offsets committed. Last stdout line is JSON.

#[path = "../tests/common/broker.rs"]
mod broker;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
#[path = "support/mod.rs"]
mod common;
use common::{arg, ids_arg, peak_rss_mb};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamtally::schema::Schema;
use streamtally::store::{Store, StoreOptions};
use streamtally::synth::{SynthConfig, SynthEvent};

const PARTITIONS: i32 = 6;

/// A ~300-byte event in the native format.
fn event_json(cfg: &SynthConfig, i: u64) -> String {
    let e = SynthEvent::generate(cfg, i);
    format!(
        r#"{{"id":"{}","org_id":"{}","event_type":"{}","event_name":"{}","user_id":"{}","session_id":"{}","timestamp":"{}","properties":{{"path":"/app/item/{}","browser":"Chrome","plan":"pro","value":{}}}}}"#,
        uuid::Uuid::from_bytes(e.id),
        uuid::Uuid::from_bytes(e.org_id),
        e.event_type,
        e.event_name,
        e.user_id,
        e.session_id,
        e.timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        i % 1000,
        i % 97
    )
}

/// p99 from a Prometheus text histogram: the upper bound of the bucket holding the 99th
/// percentile.
fn histogram_p99(text: &str, name: &str) -> f64 {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let (le, count) = rest.split_once("\"} ").unwrap_or(("0", "0"));
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(0.0)
            };
            buckets.push((le, count.trim().parse().unwrap_or(0.0)));
        }
    }
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, c)| *c >= total * 0.99)
        .map(|(le, _)| *le)
        .unwrap_or(0.0)
}

fn main() {
    let n = arg("--events", 1_000_000);
    let broker = broker::TestBroker::end_to_end();
    eprintln!(
        "ingest bench: broker {} at {}",
        broker.kind, broker.bootstrap
    );
    let topic = broker::random_name("bench");
    broker.create_topic(&topic, PARTITIONS);
    let cfg = SynthConfig {
        span_days: 1,
        ids: ids_arg(),
        ..SynthConfig::new(n)
    };
    let t = Instant::now();
    let chunk = 50_000u64;
    for start in (0..n).step_by(chunk as usize) {
        let records: Vec<broker::TestRecord> = (start..(start + chunk).min(n))
            .map(|i| {
                (
                    None,
                    Some(event_json(&cfg, i).into_bytes()),
                    Vec::new(),
                    Some((i % PARTITIONS as u64) as i32),
                )
            })
            .collect();
        broker::produce(&broker.bootstrap, &topic, &records);
        eprintln!("  produced {}", (start + chunk).min(n));
    }
    eprintln!(
        "ingest bench: produced {n} events in {:.1} s (avg {} bytes)",
        t.elapsed().as_secs_f64(),
        event_json(&cfg, 0).len()
    );

    // (a) The ceiling: a consumer that only counts.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", broker::random_name("ceiling"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let t = Instant::now();
    let mut seen = 0u64;
    while seen < n && t.elapsed() < Duration::from_secs(600) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
        }
    }
    let ceiling = seen as f64 / t.elapsed().as_secs_f64();
    drop(consumer);
    eprintln!("ingest bench: ceiling {ceiling:.0} events/s ({seen} read)");

    // (b) streamtally: empty store -> every event durable and committed.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conf = streamtally::config::Config::default();
    conf.kafka.brokers = broker.bootstrap.clone();
    conf.kafka.topics = vec![topic.clone()];
    conf.kafka.group_id = broker::random_name("streamtally");
    conf.kafka.session_timeout_ms = 6000;
    conf.store.path = dir.path().to_path_buf();
    let schema = Schema::parse(include_str!("../schema.ormdb")).expect("schema");
    let store = Store::open(StoreOptions::from_config(&conf.store), &schema).expect("store");
    let metrics = Arc::new(streamtally::metrics::Metrics::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ingest =
        streamtally::ingest::Ingest::new(conf, store.clone(), metrics.clone(), shutdown.clone());
    let t = Instant::now();
    let thread = std::thread::spawn(move || ingest.run());
    let mut last_report = Instant::now();
    loop {
        let stored: i64 = (0..PARTITIONS)
            .map(|p| store.offset(&topic, p).unwrap().unwrap_or(0))
            .sum();
        if stored as u64 >= n || t.elapsed() > Duration::from_secs(3600) {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  stored {stored} ({:.0}/s)",
                stored as f64 / t.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    shutdown.cancel();
    thread
        .join()
        .expect("ingest thread")
        .expect("ingest ran cleanly");
    let secs = t.elapsed().as_secs_f64();
    let events_per_sec = n as f64 / secs;
    let flush_p99_ms = histogram_p99(&metrics.encode(), "streamtally_flush_seconds") * 1000.0;

    let rows = store.scan_all("Event").expect("scan");
    let ids: HashSet<[u8; 16]> = rows.iter().filter_map(|r| r.id()).collect();
    let missing = (0..n)
        .filter(|i| !ids.contains(&SynthEvent::generate(&cfg, *i).id))
        .count();
    let duplicates = rows.len() - (n as usize - missing);
    store.close().expect("close");
    println!(
        "{{\"bench\":\"ingest\",\"events\":{n},\"events_per_sec\":{events_per_sec:.0},\"ceiling_events_per_sec\":{ceiling:.0},\"ratio\":{:.3},\"flush_p99_ms\":{flush_p99_ms:.1},\"peak_rss_mb\":{:.1},\"missing\":{missing},\"duplicates\":{duplicates},\"broker\":\"{}\",\"ids\":\"{}\"}}",
        events_per_sec / ceiling,
        peak_rss_mb(),
        broker.kind,
        cfg.ids.name()
    );
}
