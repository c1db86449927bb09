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

use base64::Engine as _;
use parking_lot::Mutex;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use sha2::Digest as _;
use std::sync::Arc;
use std::time::Duration;

mod queue;
#[cfg(test)]
mod tests;

pub use queue::{DeadLetterQueue, Rejected};

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
pub(super) const FIRST_SEND_WAIT: Duration = Duration::from_millis(100);
/// A send with no delivery report after this long counts as failed (librdkafka reports one
/// within `message.timeout.ms`, set below it).
pub(super) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
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

/// A producer's settings: the brokers, no lingering, and the `[kafka.client]` properties
/// that apply to producers (the dead-letter producer's, and the members topic's).
pub fn producer_config(cfg: &Config) -> rdkafka::ClientConfig {
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.kafka.brokers);
    cc.set("linger.ms", "0");
    for (k, v) in &cfg.kafka.client {
        if applies_to_producer(k) {
            cc.set(k, v);
        }
    }
    cc
}

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
            let mut cc = producer_config(cfg);
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
