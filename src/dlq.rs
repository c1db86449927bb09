//! `streamtally dlq list|replay`: reads a dead-letter topic from its start to its end (no
//! consumer group, nothing committed), says what it holds by reason and source, and sends a
//! chosen subset back to its source topic (or another). A replayed record keeps its key, its
//! value and its headers minus the dead-letter ones, plus `streamtally.replayed_from`; the
//! connector stores an event whose payload has an id at most once within
//! `store.dedup_window`, so a replay run twice stores nothing more.

use crate::config::Config;
use crate::ingest::deadletter::{
    producer_config, HEADER_REASON, HEADER_REASON_CODE, HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC, HEADER_TRUNCATED, HEADER_VERSION,
};
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The header a replayed record carries: `<dead-letter topic>/<partition>/<offset>`.
pub const HEADER_REPLAYED_FROM: &str = "streamtally.replayed_from";

const DEAD_LETTER_HEADERS: [&str; 7] = [
    HEADER_REASON,
    HEADER_REASON_CODE,
    HEADER_SOURCE_TOPIC,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_OFFSET,
    HEADER_VERSION,
    HEADER_TRUNCATED,
];

/// One dead letter as read back.
#[derive(Debug, Clone)]
pub struct Letter {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Every header, in order (the dead-letter ones included).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Letter {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn reason_code(&self) -> String {
        self.header(HEADER_REASON_CODE)
            .unwrap_or_else(|| "(none)".into())
    }

    pub fn reason(&self) -> String {
        self.header(HEADER_REASON).unwrap_or_default()
    }

    pub fn source_topic(&self) -> Option<String> {
        self.header(HEADER_SOURCE_TOPIC)
    }

    pub fn source_partition(&self) -> Option<i32> {
        self.header(HEADER_SOURCE_PARTITION)?.parse().ok()
    }

    pub fn source_offset(&self) -> Option<i64> {
        self.header(HEADER_SOURCE_OFFSET)?.parse().ok()
    }

    /// An envelope: the record was too big to dead-letter whole, so it cannot be replayed.
    pub fn truncated(&self) -> bool {
        self.header(HEADER_TRUNCATED).as_deref() == Some("true")
    }

    /// Whether the value is a JSON object with an event id (`id` or `messageId`): the
    /// connector then stores it at most once, however often it is replayed.
    pub fn has_id(&self) -> bool {
        let Some(v) = &self.value else {
            return false;
        };
        match serde_json::from_slice::<serde_json::Value>(v) {
            Ok(serde_json::Value::Object(o)) => ["id", "messageId"]
                .iter()
                .any(|k| o.get(*k).is_some_and(|x| x.is_string() || x.is_number())),
            _ => false,
        }
    }
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Reason codes (any of them); empty = every reason.
    pub reasons: Vec<String>,
    /// Dead-lettered at or after (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Dead-lettered before (ms since the epoch).
    pub until_ms: Option<i64>,
    /// The source partition.
    pub source_partition: Option<i32>,
    /// Source offsets, inclusive.
    pub source_offsets: Option<(i64, i64)>,
}

impl Filter {
    pub fn matches(&self, l: &Letter) -> bool {
        let t = l.timestamp_ms.unwrap_or(0);
        (self.reasons.is_empty() || self.reasons.contains(&l.reason_code()))
            && self.since_ms.is_none_or(|s| t >= s)
            && self.until_ms.is_none_or(|u| t < u)
            && self
                .source_partition
                .is_none_or(|p| l.source_partition() == Some(p))
            && self
                .source_offsets
                .is_none_or(|(a, b)| l.source_offset().is_some_and(|o| o >= a && o <= b))
    }
}

/// The dead-letter topics of the configuration: `kafka.dead_letter.topic`, else each
/// subscribed topic plus `kafka.dead_letter.topic_suffix`.
pub fn configured_topics(cfg: &Config) -> Vec<String> {
    let mut out: Vec<String> = cfg
        .kafka
        .topics
        .iter()
        .filter_map(|t| cfg.kafka.dead_letter.topic_for(t))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Reads `topic` from its start to the end it had when the read began, calling `each` for
/// every record; `progress(read, total)` now and then. Returns how many were read.
pub fn scan(
    cfg: &Config,
    topic: &str,
    mut each: impl FnMut(Letter),
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<u64> {
    // The connector's own consumer properties (brokers, [kafka.client], no auto commit),
    // under a group of its own that is never joined nor committed to: partitions are
    // assigned, not subscribed.
    let mut cc = rdkafka::ClientConfig::new();
    for (k, v) in cfg.kafka.consumer_properties() {
        cc.set(k, v);
    }
    cc.set("group.id", "streamtally-dlq")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cc.create().context("creating the dead-letter reader")?;
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of topic '{topic}'"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        anyhow::bail!("topic '{topic}' does not exist on {}", cfg.kafka.brokers);
    }
    // Where each partition ends now: records written later are left for the next run.
    let mut ends = BTreeMap::new();
    let mut total = 0u64;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .with_context(|| format!("reading the offsets of '{topic}' partition {p}"))?;
        if high > low {
            ends.insert(*p, high);
            total += (high - low) as u64;
            tpl.add_partition_offset(topic, *p, Offset::Offset(low))?;
        }
    }
    progress(0, total);
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl)?;
    let mut read = 0u64;
    let mut last_progress = Instant::now();
    let mut idle_since = Instant::now();
    while !ends.is_empty() {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            if idle_since.elapsed() > Duration::from_secs(30) {
                anyhow::bail!(
                    "no record from '{topic}' for 30 s with {} partition(s) not read to their end",
                    ends.len()
                );
            }
            continue;
        };
        idle_since = Instant::now();
        let msg = msg.with_context(|| format!("reading '{topic}'"))?;
        let (p, offset) = (msg.partition(), msg.offset());
        if ends.get(&p).is_some_and(|end| offset < *end) {
            read += 1;
            let headers = msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            each(Letter {
                partition: p,
                offset,
                timestamp_ms: msg.timestamp().to_millis(),
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
        if ends.get(&p).is_some_and(|end| offset + 1 >= *end) {
            ends.remove(&p);
        }
        if last_progress.elapsed() > Duration::from_millis(100) {
            progress(read, total);
            last_progress = Instant::now();
        }
    }
    progress(read, total);
    Ok(read)
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters read.
    pub read: u64,
    /// Matching the filter.
    pub matched: u64,
    /// Sent (or, dry, to be sent), by target topic.
    pub sent: BTreeMap<String, u64>,
    /// Of those, without an event id: stored again by each replay.
    pub without_id: u64,
    /// Envelopes (too big to dead-letter whole): not replayable.
    pub envelopes: u64,
    /// No source topic header and no `--to-topic`.
    pub no_target: u64,
    /// Refused by the producer or the broker, with the first error.
    pub failed: u64,
    pub first_error: Option<String>,
}

/// The headers of a replayed record: the original ones, `streamtally.replayed_from` added.
pub fn replay_headers(dlq_topic: &str, l: &Letter) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    for (k, v) in &l.headers {
        if DEAD_LETTER_HEADERS.contains(&k.as_str()) || k == HEADER_REPLAYED_FROM {
            continue;
        }
        h = h.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let from = format!("{dlq_topic}/{}/{}", l.partition, l.offset);
    h.insert(Header {
        key: HEADER_REPLAYED_FROM,
        value: Some(from.as_bytes()),
    })
}

/// Counts the records the broker refused (delivery reports).
#[derive(Default)]
struct Deliveries {
    failed: std::sync::atomic::AtomicU64,
    first_error: parking_lot::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.first_error
                .lock()
                .get_or_insert_with(|| format!("{} (to '{}'): {e}", m.offset(), m.topic()));
        }
    }
}

/// Replays the dead letters of `dlq_topic` that `filter` takes, to their source topic or
/// `to_topic`; with `dry_run` only counts.
pub fn replay(
    cfg: &Config,
    dlq_topic: &str,
    filter: &Filter,
    to_topic: Option<&str>,
    dry_run: bool,
    progress: impl FnMut(u64, u64),
) -> anyhow::Result<ReplaySummary> {
    let producer: Option<ThreadedProducer<Deliveries>> = if dry_run {
        None
    } else {
        Some(
            producer_config(cfg)
                .set("enable.idempotence", "true")
                .create_with_context(Deliveries::default())
                .context("creating the replay producer")?,
        )
    };
    let mut s = ReplaySummary::default();
    let read = scan(
        cfg,
        dlq_topic,
        |l| {
            if !filter.matches(&l) {
                return;
            }
            s.matched += 1;
            if l.truncated() {
                s.envelopes += 1;
                return;
            }
            let Some(target) = to_topic.map(str::to_string).or_else(|| l.source_topic()) else {
                s.no_target += 1;
                return;
            };
            if !l.has_id() {
                s.without_id += 1;
            }
            if let Some(p) = &producer {
                let mut record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(&target).headers(replay_headers(dlq_topic, &l));
                if let Some(k) = &l.key {
                    record = record.key(k.as_slice());
                }
                if let Some(v) = &l.value {
                    record = record.payload(v.as_slice());
                }
                // A full queue: wait for room rather than drop the record.
                let mut record = record;
                loop {
                    match p.send(record) {
                        Ok(()) => break,
                        Err((
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull,
                            ),
                            r,
                        )) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err((e, _)) => {
                            s.failed += 1;
                            s.first_error.get_or_insert_with(|| {
                                format!("{dlq_topic}/{}/{}: {e}", l.partition, l.offset)
                            });
                            return;
                        }
                    }
                }
            }
            *s.sent.entry(target).or_default() += 1;
        },
        progress,
    )?;
    s.read = read;
    if let Some(p) = producer {
        p.flush(Duration::from_secs(60))
            .context("waiting for the broker to acknowledge the replayed records")?;
        let refused = p
            .context()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed);
        if refused > 0 {
            s.failed += refused;
            if s.first_error.is_none() {
                s.first_error = p.context().first_error.lock().clone();
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: &[(&str, &str)], value: &str) -> Letter {
        Letter {
            partition: 2,
            offset: 7,
            timestamp_ms: Some(1_000),
            key: Some(b"k".to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec())))
                .collect(),
        }
    }

    #[test]
    fn a_replayed_record_keeps_its_own_headers_and_says_where_it_came_from() {
        let l = letter(
            &[
                ("trace", "abc"),
                (HEADER_REASON_CODE, "oversized"),
                (HEADER_SOURCE_TOPIC, "events"),
                (HEADER_REPLAYED_FROM, "old/0/1"),
            ],
            r#"{"id":"x"}"#,
        );
        let h = replay_headers("events.dlq", &l);
        let got: Vec<(String, String)> = h
            .iter()
            .map(|x| {
                (
                    x.key.to_string(),
                    String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("trace".to_string(), "abc".to_string()),
                (
                    HEADER_REPLAYED_FROM.to_string(),
                    "events.dlq/2/7".to_string()
                )
            ]
        );
        assert!(l.has_id());
        assert!(!letter(&[], r#"{"name":"x"}"#).has_id());
        assert!(!letter(&[], "not json").has_id());
    }

    #[test]
    fn the_filter_takes_reasons_times_partitions_and_offsets() {
        let l = letter(
            &[
                (HEADER_REASON_CODE, "oversized"),
                (HEADER_SOURCE_PARTITION, "3"),
                (HEADER_SOURCE_OFFSET, "40"),
            ],
            "{}",
        );
        assert!(Filter::default().matches(&l));
        let f = |f: Filter| f.matches(&l);
        assert!(f(Filter {
            reasons: vec!["invalid_json".into(), "oversized".into()],
            ..Default::default()
        }));
        assert!(!f(Filter {
            reasons: vec!["invalid_json".into()],
            ..Default::default()
        }));
        assert!(!f(Filter {
            since_ms: Some(1_001),
            ..Default::default()
        }));
        assert!(!f(Filter {
            until_ms: Some(1_000),
            ..Default::default()
        }));
        assert!(!f(Filter {
            source_partition: Some(2),
            ..Default::default()
        }));
        assert!(f(Filter {
            source_offsets: Some((40, 40)),
            ..Default::default()
        }));
        assert!(!f(Filter {
            source_offsets: Some((41, 50)),
            ..Default::default()
        }));
    }
}
