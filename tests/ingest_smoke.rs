mod common;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::{Duration, Instant};
use streamtally::config::Config;

#[test]
fn smoke() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 6, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let n = 20_000u64;
    for i in 0..n {
        let org = uuid::Uuid::from_u128(1 + (i % 3) as u128);
        let payload = format!(
            r#"{{"org_id":"{org}","event_type":"track","event_name":"click","user_id":"u{}","timestamp":"2026-01-01T00:00:00Z"}}"#,
            i % 100
        );
        loop {
            match producer.send(
                BaseRecord::<[u8], str>::to("events")
                    .payload(&payload)
                    .partition((i % 6) as i32),
            ) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.kafka.brokers = bootstrap.clone();
    cfg.kafka.session_timeout_ms = 6000;
    cfg.store.path = dir.path().to_path_buf();
    let store = common::open(dir.path());
    let metrics = std::sync::Arc::new(streamtally::metrics::Metrics::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ingest =
        streamtally::ingest::Ingest::new(cfg, store.clone(), metrics.clone(), shutdown.clone());
    let t = std::thread::spawn(move || ingest.run());
    let started = Instant::now();
    loop {
        let total: i64 = (0..6)
            .map(|p| store.offset("events", p).unwrap().unwrap_or(0))
            .sum();
        if total as u64 >= n || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("took {:?}", started.elapsed());
    shutdown.cancel();
    t.join().unwrap().unwrap();
    assert_eq!(store.scan_all("Event").unwrap().len() as u64, n);
    eprintln!("{}", metrics.encode());
}
