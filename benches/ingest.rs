//! `cargo bench --bench ingest -- --events N [--ids v4|v7] [--stats|--no-stats]`: ~300-byte
//! seed-shaped JSON events on 6 partitions of an out-of-process Tansu broker (or
//! KAFKA_BOOTSTRAP_SERVERS). In one run: (a) the raw-consume ceiling, an rdkafka consumer that
//! only counts; (b) streamtally from an empty store to every event durable and its offsets
//! committed, with the stats workers (rollups, real-time counters) and the gateway running
//! beside ingest as `streamtally run` starts them (`app::Services`); `--no-stats` leaves the
//! stats workers out (`stats.enabled = false`). `--scale-out`: as one instance of a scaled-out
//! group (`scale_out.enabled`: membership on the members topic, rollups kept per partition,
//! partitions' histories restored); the JSON says `"scale_out":true`. Last stdout line is JSON.

#[path = "../tests/common/broker.rs"]
mod broker;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
#[path = "support/mod.rs"]
mod common;
use common::{arg, ids_arg, peak_rss_mb, reset_peak_rss, rss_mb, switch};

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
    // As `streamtally` does first: the producer and the ceiling's consumer below allocate
    // through the C allocator too.
    streamtally::tune_c_allocator();
    let n = arg("--events", 1_000_000);
    let stats = switch("stats", true);
    let scale_out = switch("scale-out", false);
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

    // (b) streamtally: empty store -> every event durable and committed, with the stats
    // workers and the gateway started as `streamtally run` starts them. `peak_rss_mb` is
    // this phase's: producing the events and the ceiling's consumer come before it.
    eprintln!(
        "ingest bench: RSS {:.0} MB before streamtally starts (peak so far {:.0} MB){}",
        rss_mb(),
        peak_rss_mb(),
        if reset_peak_rss() {
            "; peak restarted from here"
        } else {
            "; the peak cannot be restarted here, so it includes them"
        }
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conf = streamtally::config::Config::default();
    conf.kafka.brokers = broker.bootstrap.clone();
    conf.kafka.topics = vec![topic.clone()];
    conf.kafka.group_id = broker::random_name("streamtally");
    conf.kafka.session_timeout_ms = 6000;
    conf.store.path = dir.path().to_path_buf();
    conf.stats.enabled = stats;
    conf.gateway.listen = "127.0.0.1:0".parse().expect("addr");
    conf.auth.enabled = false;
    conf.scale_out.enabled = scale_out;
    let schema = Schema::parse(include_str!("../schema.ormdb")).expect("schema");
    let store = Store::open(StoreOptions::from_config(&conf.store), &schema).expect("store");
    let metrics = Arc::new(streamtally::metrics::Metrics::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let services = streamtally::app::Services::start(
        conf.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .expect("services");
    eprintln!(
        "ingest bench: stats workers {}",
        if stats { "running" } else { "off (--no-stats)" }
    );
    let ingest = services.ingest(conf, store.clone(), metrics.clone(), shutdown.clone());
    let t = Instant::now();
    let thread = std::thread::spawn(move || ingest.run());
    let mut last_report = Instant::now();
    // The rate of the tail of the run: the last 500,000 events, or in a run of fewer than 1M
    // events the second half. Measured between two polls of the stored offsets: the last
    // one that had at most `n - tail` events stored, and the first that had all `n`.
    let tail = if n >= 1_000_000 { 500_000 } else { n / 2 };
    let mut tail_start = (0i64, t);
    let tail_end;
    loop {
        let stored: i64 = (0..PARTITIONS)
            .map(|p| store.offset(&topic, p).unwrap().unwrap_or(0))
            .sum();
        let now = Instant::now();
        // A failed stats worker cancels the token, which stops ingest too.
        if stored as u64 >= n || thread.is_finished() || t.elapsed() > Duration::from_secs(3600) {
            tail_end = (stored, now);
            break;
        }
        if stored as u64 <= n - tail {
            tail_start = (stored, now);
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  stored {stored} ({:.0}/s; RSS {:.0} MB; rollup cache {:.0} MB, {} loads)",
                stored as f64 / t.elapsed().as_secs_f64(),
                rss_mb(),
                metrics.stats_cache_bytes.get() as f64 / 1e6,
                metrics.stats_cache_loads.get()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    shutdown.cancel();
    let ingest_result = thread.join().expect("ingest thread");
    if stats {
        eprintln!(
            "ingest bench: at stop the rollup cursor was at {} of feed head {}",
            store
                .cursor(streamtally::stats::ROLLUP_CURSOR)
                .ok()
                .flatten()
                .unwrap_or(0),
            store.feed_head()
        );
    }
    let services_result = services.join();
    ingest_result.expect("ingest ran cleanly");
    services_result.expect("stats workers and gateway stopped cleanly");
    let secs = t.elapsed().as_secs_f64();
    let events_per_sec = n as f64 / secs;
    let events_per_sec_last_500k =
        (tail_end.0 - tail_start.0) as f64 / (tail_end.1 - tail_start.1).as_secs_f64().max(1e-9);
    let flush_p99_ms = histogram_p99(&metrics.encode(), "streamtally_flush_seconds") * 1000.0;
    // Before the check below, which adds its own id set to the process's memory.
    let peak_rss_mb = peak_rss_mb();

    // Every event exactly once: ids streamed from the store, not collected as rows.
    let mut ids: HashSet<[u8; 16]> = HashSet::with_capacity(n as usize);
    let mut rows = 0usize;
    store
        .for_each_row("Event", |r| {
            rows += 1;
            if let Some(id) = r.id() {
                ids.insert(id);
            }
        })
        .expect("scan");
    let missing = (0..n)
        .filter(|i| !ids.contains(&SynthEvent::generate(&cfg, *i).id))
        .count();
    let duplicates = rows - (n as usize - missing);
    store.close().expect("close");
    println!(
        "{{\"bench\":\"ingest\",\"events\":{n},\"events_per_sec\":{events_per_sec:.0},\"events_per_sec_last_500k\":{events_per_sec_last_500k:.0},\"ceiling_events_per_sec\":{ceiling:.0},\"ratio\":{:.3},\"flush_p99_ms\":{flush_p99_ms:.1},\"peak_rss_mb\":{peak_rss_mb:.1},\"missing\":{missing},\"duplicates\":{duplicates},\"stats\":{stats},\"scale_out\":{scale_out},\"broker\":\"{}\",\"ids\":\"{}\"}}",
        events_per_sec / ceiling,
        broker.kind,
        cfg.ids.name()
    );
}
