//! Dead letters: invalid messages go to a dead-letter topic (default `<topic>.dlq`) with
//! headers that say why and where they came from.
//!
//! A partition never moves past a record whose dead letter is not acknowledged, but it waits
//! alone: [`DeadLetterQueue`] tries a send for a short moment (the ordinary case: the broker
//! acknowledges in milliseconds), and when that does not succeed the partition is *blocked*:
//! the consumer pauses it, the send is retried with backoff from the poll loop (never sleeping
//! in it), and every other partition keeps flowing. Once the dead letter is acknowledged the
//! consumer seeks the partition past the record and resumes it.
//!
//! Every rejected record can be dead-lettered: the producer's size limit fits the largest
//! record the consumer can receive (librdkafka's `receive.message.max.bytes`), and when the
//! local producer or the broker still refuses the size, an *envelope* is sent instead: a small
//! JSON object with the first `envelope_prefix_kib` KiB of the value, its length and SHA-256,
//! the reason and the source coordinates, and the header `streamtally.truncated: true`.

use super::consumer::IngestError;
use super::decode::RejectReason;
use crate::config::{Config, DeadLetterConfig, DeadLetterPolicy};
use crate::metrics::{BlockedPartition, DeadLetterLabel, Metrics};
use base64::Engine as _;
use parking_lot::Mutex;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Header names on a dead letter.
pub const HEADER_REASON: &str = "streamtally.reason";
pub const HEADER_REASON_CODE: &str = "streamtally.reason_code";
pub const HEADER_SOURCE_TOPIC: &str = "streamtally.source_topic";
pub const HEADER_SOURCE_PARTITION: &str = "streamtally.source_partition";
pub const HEADER_SOURCE_OFFSET: &str = "streamtally.source_offset";
pub const HEADER_VERSION: &str = "streamtally.version";
/// `true` on an envelope (the value is a JSON description of the record, not the record).
pub const HEADER_TRUNCATED: &str = "streamtally.truncated";

/// How long a first send may hold the poll loop before the partition is blocked instead.
const FIRST_SEND_WAIT: Duration = Duration::from_millis(100);
/// A send with no delivery report after this long counts as failed (librdkafka reports one
/// within `message.timeout.ms`, set below it).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
const MESSAGE_TIMEOUT_MS: &str = "10000";
/// Headers and key bytes an envelope keeps from the record (more are dropped and counted).
const ENVELOPE_KEEP_BYTES: usize = 64 * 1024;
/// Room for the dead-letter headers and protocol framing above the largest record.
const HEADER_ROOM_BYTES: u64 = 1 << 20;
/// librdkafka's bounds of `message.max.bytes`, and its default `receive.message.max.bytes`.
const MAX_MESSAGE_MAX_BYTES: u64 = 1_000_000_000;
const DEFAULT_RECEIVE_MAX_BYTES: u64 = 100_000_000;

/// librdkafka properties that only a consumer takes (marked `C` in librdkafka's
/// CONFIGURATION.md); every other `[kafka.client]` property also configures the dead-letter
/// producer.
const CONSUMER_ONLY_PROPERTIES: &[&str] = &[
    "group.id",
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "offset.store.method",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "auto.offset.reset",
    "consume.callback.max.messages",
];

/// Whether `[kafka.client]` property `key` is passed to the dead-letter producer.
pub fn applies_to_producer(key: &str) -> bool {
    !CONSUMER_ONLY_PROPERTIES.contains(&key)
}

/// A rejected record, copied out of the consumer's buffers so that it can wait for delivery.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub reason: RejectReason,
}

impl DeadLetter {
    fn coordinates(&self) -> String {
        format!("{}[{}]@{}", self.topic, self.partition, self.offset)
    }

    /// The envelope's value: what the record was, without most of it.
    fn envelope_value(&self, prefix_bytes: usize, refused: &Refusal) -> Vec<u8> {
        let value = self.payload.as_deref().unwrap_or_default();
        let prefix = &value[..value.len().min(prefix_bytes)];
        let sha = sha2::Sha256::digest(value);
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        let body = serde_json::json!({
            "streamtally_envelope": 1,
            "reason": self.reason.to_string(),
            "reason_code": self.reason.code(),
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "value_length": value.len(),
            "value_sha256": hex,
            "value_null": self.payload.is_none(),
            "value_prefix_base64": base64::engine::general_purpose::STANDARD.encode(prefix),
            "key_length": self.key.as_ref().map(|k| k.len()),
            "refused": refused.to_string(),
        });
        body.to_string().into_bytes()
    }
}

/// Who refused a dead letter, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `local producer limit`, `local producer`, `broker` or `no delivery report`.
    pub by: &'static str,
    pub error: String,
    /// The refusal is about the message's size: an envelope may get through.
    pub too_large: bool,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by the {}: {}", self.by, self.error)
    }
}

impl Refusal {
    fn of(error: &KafkaError, at_send: bool, max_bytes: u64) -> Refusal {
        let code = error.rdkafka_error_code();
        // Brokers refuse an oversized record as MESSAGE_TOO_LARGE (10) or, for the batch
        // carrying it, RECORD_LIST_TOO_LARGE (18).
        let too_large = matches!(
            code,
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
        );
        // librdkafka's own errors have negative codes; the broker's are positive.
        let local = at_send || code.is_some_and(|c| (c as i32) < 0);
        let by = match (local, too_large) {
            (true, true) => "local producer limit",
            (true, false) => "local producer",
            (false, _) => "broker",
        };
        let error = if local && too_large {
            format!("{error} (the dead-letter producer's message.max.bytes is {max_bytes})")
        } else {
            error.to_string()
        };
        Refusal {
            by,
            error,
            too_large,
        }
    }
}

/// A delivery report, filled in by librdkafka's callback.
#[derive(Default)]
pub struct DeliveryStatus(Mutex<Option<Result<(), KafkaError>>>);

pub struct DeliveryContext;
impl ClientContext for DeliveryContext {}
impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<DeliveryStatus>;
    fn delivery(&self, result: &DeliveryResult<'_>, status: Self::DeliveryOpaque) {
        *status.0.lock() = Some(match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        });
    }
}

/// The dead-letter producer.
pub struct DeadLetters {
    producer: Option<BaseProducer<DeliveryContext>>,
    cfg: DeadLetterConfig,
    /// The producer's `message.max.bytes`.
    max_bytes: u64,
}

impl DeadLetters {
    pub fn new(cfg: &Config) -> Result<DeadLetters, IngestError> {
        let max_bytes = producer_max_bytes(cfg);
        let producer = if cfg.kafka.dead_letter.policy == DeadLetterPolicy::Topic {
            let mut cc = rdkafka::ClientConfig::new();
            cc.set("bootstrap.servers", &cfg.kafka.brokers);
            cc.set("linger.ms", "0");
            for (k, v) in &cfg.kafka.client {
                if applies_to_producer(k) {
                    cc.set(k, v);
                }
            }
            cc.set("message.max.bytes", max_bytes.to_string());
            cc.set("enable.idempotence", "true");
            cc.set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
            Some(
                cc.create_with_context(DeliveryContext)
                    .map_err(|source| IngestError::Kafka {
                        what: format!(
                            "creating the dead-letter producer for {}",
                            cfg.kafka.brokers
                        ),
                        source,
                    })?,
            )
        } else {
            None
        };
        Ok(DeadLetters {
            producer,
            cfg: cfg.kafka.dead_letter.clone(),
            max_bytes,
        })
    }

    fn dlq_topic(&self, source: &str) -> String {
        self.cfg
            .topic_for(source)
            .unwrap_or_else(|| format!("{source}.dlq"))
    }

    /// Hands `letter` (or its envelope) to the producer without waiting.
    fn start(
        &self,
        letter: &DeadLetter,
        envelope: Option<&Refusal>,
    ) -> Result<Arc<DeliveryStatus>, Refusal> {
        let Some(producer) = &self.producer else {
            let status = Arc::new(DeliveryStatus::default());
            *status.0.lock() = Some(Ok(()));
            return Ok(status);
        };
        let topic = self.dlq_topic(&letter.topic);
        let reason_text = letter.reason.to_string();
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let mut h = OwnedHeaders::new();
        let mut kept = 0usize;
        for (k, v) in &letter.headers {
            let size = k.len() + v.as_ref().map_or(0, Vec::len);
            if envelope.is_some() && kept + size > ENVELOPE_KEEP_BYTES {
                continue;
            }
            kept += size;
            h = h.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut ours = vec![
            (HEADER_REASON, reason_text.as_str()),
            (HEADER_REASON_CODE, letter.reason.code()),
            (HEADER_SOURCE_TOPIC, letter.topic.as_str()),
            (HEADER_SOURCE_PARTITION, partition.as_str()),
            (HEADER_SOURCE_OFFSET, offset.as_str()),
            (HEADER_VERSION, env!("CARGO_PKG_VERSION")),
        ];
        if envelope.is_some() {
            ours.push((HEADER_TRUNCATED, "true"));
        }
        for (k, v) in ours {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let status = Arc::new(DeliveryStatus::default());
        let body;
        let mut record: BaseRecord<'_, [u8], [u8], Arc<DeliveryStatus>> =
            BaseRecord::with_opaque_to(&topic, status.clone()).headers(h);
        match envelope {
            Some(refused) => {
                let prefix = (self.cfg.envelope_prefix_kib as usize).saturating_mul(1024);
                body = letter.envelope_value(prefix, refused);
                record = record.payload(body.as_slice());
                if let Some(k) = letter
                    .key
                    .as_deref()
                    .filter(|k| k.len() <= ENVELOPE_KEEP_BYTES)
                {
                    record = record.key(k);
                }
            }
            None => {
                if let Some(p) = letter.payload.as_deref() {
                    record = record.payload(p);
                }
                if let Some(k) = letter.key.as_deref() {
                    record = record.key(k);
                }
            }
        }
        match producer.send(record) {
            Ok(()) => Ok(status),
            Err((e, _)) => Err(Refusal::of(&e, true, self.max_bytes)),
        }
    }

    /// Serves delivery reports (non-blocking).
    fn poll(&self) {
        if let Some(p) = &self.producer {
            p.poll(Duration::ZERO);
        }
    }

    /// Waits up to `timeout` for outstanding deliveries.
    pub fn flush(&self, timeout: Duration) {
        if let Some(p) = &self.producer {
            let _ = p.flush(timeout);
        }
    }
}

/// The dead-letter producer's `message.max.bytes`: `[kafka.client] message.max.bytes` when
/// set, else room for the largest record the consumer can receive plus headers.
pub fn producer_max_bytes(cfg: &Config) -> u64 {
    if let Some(v) = cfg
        .kafka
        .client
        .get("message.max.bytes")
        .and_then(|v| v.parse::<u64>().ok())
    {
        return v;
    }
    let receive = cfg
        .kafka
        .client
        .get("receive.message.max.bytes")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_RECEIVE_MAX_BYTES);
    receive
        .max(cfg.kafka.max_message_bytes)
        .saturating_add(HEADER_ROOM_BYTES)
        .min(MAX_MESSAGE_MAX_BYTES)
}

/// Where one dead letter stands.
enum Attempt {
    /// Handed to the producer, waiting for its delivery report.
    Sent {
        status: Arc<DeliveryStatus>,
        at: Instant,
    },
    /// Refused; the next attempt is due then.
    Waiting { until: Instant },
}

/// A partition held at a record whose dead letter is not delivered yet.
struct Blocked {
    letter: DeadLetter,
    /// Set once the record itself was refused for its size: send envelopes from then on.
    envelope: Option<Refusal>,
    attempt: Attempt,
    backoff: Duration,
    since: Instant,
    since_ms: i64,
    last_refusal: Option<Refusal>,
}

/// What became of a record handed to [`DeadLetterQueue::reject`].
pub enum Rejected {
    /// Delivered (or nothing to deliver): the partition moves past the record.
    Delivered,
    /// Not delivered yet: pause the partition; [`DeadLetterQueue::progress`] says when it
    /// may move on.
    Blocked,
}

/// The dead letters in progress, one partition at most per record.
pub struct DeadLetterQueue {
    producer: DeadLetters,
    blocked: BTreeMap<(String, i32), Blocked>,
    metrics: Arc<Metrics>,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl DeadLetterQueue {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Result<DeadLetterQueue, IngestError> {
        Ok(DeadLetterQueue {
            producer: DeadLetters::new(cfg)?,
            blocked: BTreeMap::new(),
            metrics,
            backoff_initial: cfg.kafka.retry_backoff_initial(),
            backoff_max: cfg.kafka.retry_backoff_max(),
        })
    }

    /// Whether `topic`/`partition` waits for a dead letter (its records are not read).
    pub fn is_blocked(&self, topic: &str, partition: i32) -> bool {
        !self.blocked.is_empty() && self.blocked.contains_key(&(topic.to_string(), partition))
    }

    pub fn blocked_partitions(&self) -> impl Iterator<Item = &(String, i32)> {
        self.blocked.keys()
    }

    /// Sends the dead letter of `letter`, waiting a moment for the acknowledgement.
    pub fn reject(&mut self, letter: DeadLetter) -> Rejected {
        let now = Instant::now();
        let mut blocked = Blocked {
            since: now,
            since_ms: chrono::Utc::now().timestamp_millis(),
            envelope: None,
            attempt: Attempt::Waiting { until: now },
            backoff: self.backoff_initial,
            last_refusal: None,
            letter,
        };
        let started = Instant::now();
        self.send(&mut blocked);
        while let Attempt::Sent { status, .. } = &blocked.attempt {
            let status = status.clone();
            while status.0.lock().is_none() && started.elapsed() < FIRST_SEND_WAIT {
                self.producer.poll();
                std::thread::sleep(Duration::from_millis(1));
            }
            let report = status.0.lock().take();
            match report {
                None => break,
                Some(Ok(())) => {
                    self.delivered(&blocked);
                    return Rejected::Delivered;
                }
                Some(Err(e)) => {
                    let refusal = Refusal::of(&e, false, self.producer.max_bytes);
                    if !self.refused(&mut blocked, refusal) {
                        break;
                    }
                    self.send(&mut blocked);
                }
            }
        }
        let tp = (blocked.letter.topic.clone(), blocked.letter.partition);
        self.blocked.insert(tp, blocked);
        self.publish();
        Rejected::Blocked
    }

    /// Moves every blocked dead letter on without waiting; returns the partitions whose dead
    /// letter was delivered, with the offset to resume at.
    pub fn progress(&mut self) -> Vec<((String, i32), i64)> {
        if self.blocked.is_empty() {
            return Vec::new();
        }
        self.producer.poll();
        let mut done = Vec::new();
        let keys: Vec<(String, i32)> = self.blocked.keys().cloned().collect();
        for tp in keys {
            let Some(mut b) = self.blocked.remove(&tp) else {
                continue;
            };
            let delivered = match &b.attempt {
                Attempt::Sent { status, at } => {
                    let report = status.0.lock().take();
                    match report {
                        Some(Ok(())) => true,
                        Some(Err(e)) => {
                            let refusal = Refusal::of(&e, false, self.producer.max_bytes);
                            if self.refused(&mut b, refusal) {
                                self.send(&mut b);
                            }
                            false
                        }
                        None if at.elapsed() > DELIVERY_TIMEOUT => {
                            let refusal = Refusal {
                                by: "no delivery report",
                                error: format!("none after {} s", DELIVERY_TIMEOUT.as_secs()),
                                too_large: false,
                            };
                            self.refused(&mut b, refusal);
                            false
                        }
                        None => false,
                    }
                }
                Attempt::Waiting { until } => {
                    if Instant::now() >= *until {
                        self.send(&mut b);
                    }
                    false
                }
            };
            if delivered {
                self.delivered(&b);
                tracing::info!(partition = %b.letter.coordinates(), waited_ms = b.since.elapsed().as_millis() as u64,
                    "dead letter delivered after retrying; the partition resumes");
                done.push((tp, b.letter.offset + 1));
            } else {
                self.blocked.insert(tp, b);
            }
        }
        self.publish();
        done
    }

    /// Forgets the dead letters of partitions this instance no longer owns (their records
    /// are read again by the next owner, from the stored position).
    pub fn forget(&mut self, keep: impl Fn(&(String, i32)) -> bool) {
        let before = self.blocked.len();
        self.blocked.retain(|tp, _| keep(tp));
        if self.blocked.len() != before {
            self.publish();
        }
    }

    /// Before stopping: waits up to `timeout` for deliveries under way and says what stays
    /// undelivered (read again on the next start, since the partition did not move past it).
    pub fn shutdown(&mut self, timeout: Duration) -> Vec<((String, i32), i64)> {
        let deadline = Instant::now() + timeout;
        let mut done = Vec::new();
        while !self.blocked.is_empty() && Instant::now() < deadline {
            let sending = self
                .blocked
                .values()
                .any(|b| matches!(b.attempt, Attempt::Sent { .. }));
            if !sending {
                break;
            }
            done.extend(self.progress());
            std::thread::sleep(Duration::from_millis(5));
        }
        for b in self.blocked.values() {
            tracing::warn!(partition = %b.letter.coordinates(), reason = b.letter.reason.code(),
                last_refusal = %b.last_refusal.as_ref().map(|r| r.to_string()).unwrap_or_default(),
                "stopping with a dead letter undelivered; the record is read again on the next start");
        }
        self.blocked.clear();
        self.publish();
        self.producer.flush(Duration::from_secs(1));
        done
    }

    /// Hands the record (or its envelope) to the producer; a record too large for the local
    /// limit is replaced by its envelope at once.
    fn send(&self, b: &mut Blocked) {
        for _ in 0..2 {
            match self.producer.start(&b.letter, b.envelope.as_ref()) {
                Ok(status) => {
                    b.attempt = Attempt::Sent {
                        status,
                        at: Instant::now(),
                    };
                    return;
                }
                Err(refusal) => {
                    if !self.refused(b, refusal) {
                        return;
                    }
                }
            }
        }
    }

    /// Records a refusal and schedules the next attempt; returns true when the envelope
    /// should be sent at once (the record itself was too large).
    fn refused(&self, b: &mut Blocked, refusal: Refusal) -> bool {
        let dlq = self.producer.dlq_topic(&b.letter.topic);
        if refusal.too_large && b.envelope.is_none() {
            tracing::warn!(partition = %b.letter.coordinates(), dlq = %dlq,
                size = b.letter.payload.as_ref().map_or(0, Vec::len), refusal = %refusal,
                "dead letter too large; sending an envelope instead (streamtally.truncated: true)");
            b.envelope = Some(refusal.clone());
            b.last_refusal = Some(refusal);
            b.attempt = Attempt::Waiting {
                until: Instant::now(),
            };
            return true;
        }
        self.metrics.dead_letter_errors.inc();
        tracing::error!(partition = %b.letter.coordinates(), dlq = %dlq, reason = b.letter.reason.code(),
            refusal = %refusal, backoff_ms = b.backoff.as_millis() as u64,
            "dead letter not delivered; this partition waits (paused) and retries, the others go on");
        b.attempt = Attempt::Waiting {
            until: Instant::now() + b.backoff,
        };
        b.backoff = (b.backoff * 2).min(self.backoff_max);
        b.last_refusal = Some(refusal);
        false
    }

    fn delivered(&self, b: &Blocked) {
        let dlq = self.producer.dlq_topic(&b.letter.topic);
        tracing::warn!(partition = %b.letter.coordinates(), dlq = %dlq, reason = %b.letter.reason,
            envelope = b.envelope.is_some(), "invalid message sent to the dead-letter topic");
        self.metrics
            .events_dead_lettered
            .get_or_create(&DeadLetterLabel {
                topic: b.letter.topic.clone(),
                reason: b.letter.reason.code().to_string(),
            })
            .inc();
    }

    /// Shows the blocked partitions to `/readyz` and the metrics.
    fn publish(&self) {
        let list: Vec<BlockedPartition> = self
            .blocked
            .values()
            .map(|b| BlockedPartition {
                topic: b.letter.topic.clone(),
                partition: b.letter.partition,
                offset: b.letter.offset,
                reason_code: b.letter.reason.code(),
                refusal: b
                    .last_refusal
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "no acknowledgement yet".into()),
                since_ms: b.since_ms,
            })
            .collect();
        self.metrics.set_blocked_partitions(list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: RDKafkaErrorCode, at_send: bool) -> Refusal {
        Refusal::of(&KafkaError::MessageProduction(code), at_send, 1_000_000)
    }

    #[test]
    fn refusals_name_what_refused_the_record() {
        let local = refusal(RDKafkaErrorCode::MessageSizeTooLarge, true);
        assert_eq!((local.by, local.too_large), ("local producer limit", true));
        assert!(
            local.error.contains("message.max.bytes is 1000000"),
            "{}",
            local.error
        );
        let broker = refusal(RDKafkaErrorCode::MessageSizeTooLarge, false);
        assert_eq!((broker.by, broker.too_large), ("broker", true));
        assert!(refusal(RDKafkaErrorCode::MessageBatchTooLarge, false).too_large);
        let timeout = refusal(RDKafkaErrorCode::MessageTimedOut, false);
        assert_eq!((timeout.by, timeout.too_large), ("local producer", false));
        let auth = refusal(RDKafkaErrorCode::TopicAuthorizationFailed, false);
        assert_eq!((auth.by, auth.too_large), ("broker", false));
        assert!(auth.to_string().starts_with("refused by the broker: "));
    }

    #[test]
    fn the_producer_limit_fits_what_the_consumer_can_receive() {
        let mut cfg = Config::default();
        assert_eq!(producer_max_bytes(&cfg), 100_000_000 + (1 << 20));
        cfg.kafka
            .client
            .insert("receive.message.max.bytes".into(), "2000000000".into());
        assert_eq!(
            producer_max_bytes(&cfg),
            1_000_000_000,
            "librdkafka's ceiling"
        );
        cfg.kafka
            .client
            .insert("message.max.bytes".into(), "1000000".into());
        assert_eq!(
            producer_max_bytes(&cfg),
            1_000_000,
            "the user's setting wins"
        );
    }

    #[test]
    fn consumer_only_properties_stay_away_from_the_producer() {
        for key in [
            "fetch.max.bytes",
            "group.id",
            "isolation.level",
            "auto.offset.reset",
        ] {
            assert!(!applies_to_producer(key), "{key}");
        }
        for key in [
            "security.protocol",
            "sasl.username",
            "message.max.bytes",
            "client.id",
        ] {
            assert!(applies_to_producer(key), "{key}");
        }
    }

    #[test]
    fn an_envelope_describes_the_record_without_most_of_it() {
        let letter = DeadLetter {
            topic: "events".into(),
            partition: 3,
            offset: 812,
            key: Some(b"k".to_vec()),
            payload: Some(vec![b'a'; 10_000]),
            headers: Vec::new(),
            reason: RejectReason::Oversized {
                size: 10_000,
                limit: 100,
            },
        };
        let refused = refusal(RDKafkaErrorCode::MessageSizeTooLarge, false);
        let v: serde_json::Value =
            serde_json::from_slice(&letter.envelope_value(4096, &refused)).unwrap();
        assert_eq!(v["value_length"], 10_000);
        assert_eq!(
            v["source"],
            serde_json::json!({"topic": "events", "partition": 3, "offset": 812})
        );
        assert_eq!(v["reason_code"], "oversized");
        assert_eq!(
            v["value_prefix_base64"].as_str().unwrap().len(),
            4096 / 3 * 4 + 4
        );
        assert_eq!(
            v["value_sha256"].as_str().unwrap().len(),
            64,
            "hex SHA-256 of the whole value"
        );
        assert!(v["refused"]
            .as_str()
            .unwrap()
            .starts_with("refused by the broker"));
    }
}
