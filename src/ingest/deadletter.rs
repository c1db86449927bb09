//! Dead letters: invalid messages go to a dead-letter topic (default `<topic>.dlq`) with
//! headers that say why and where they came from. A send is retried with backoff until the
//! broker acknowledges it, so the source partition never advances past an undelivered one.

use super::consumer::IngestError;
use super::decode::RejectReason;
use crate::config::{Config, DeadLetterConfig, DeadLetterPolicy};
use crate::metrics::{DeadLetterLabel, Metrics};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Header names on a dead letter.
pub const HEADER_REASON: &str = "streamtally.reason";
pub const HEADER_REASON_CODE: &str = "streamtally.reason_code";
pub const HEADER_SOURCE_TOPIC: &str = "streamtally.source_topic";
pub const HEADER_SOURCE_PARTITION: &str = "streamtally.source_partition";
pub const HEADER_SOURCE_OFFSET: &str = "streamtally.source_offset";
pub const HEADER_VERSION: &str = "streamtally.version";

pub struct DeliveryContext;
impl ClientContext for DeliveryContext {}
impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<AtomicU8>;
    fn delivery(&self, result: &DeliveryResult<'_>, status: Self::DeliveryOpaque) {
        status.store(if result.is_ok() { 1 } else { 2 }, Ordering::SeqCst);
    }
}

pub struct DeadLetters {
    producer: Option<BaseProducer<DeliveryContext>>,
    cfg: DeadLetterConfig,
    metrics: Arc<Metrics>,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl DeadLetters {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Result<DeadLetters, IngestError> {
        let producer = if cfg.kafka.dead_letter.policy == DeadLetterPolicy::Topic {
            let mut cc = rdkafka::ClientConfig::new();
            cc.set("bootstrap.servers", &cfg.kafka.brokers);
            for (k, v) in &cfg.kafka.client {
                // Connection and security settings apply to the producer too; consumer-only
                // properties would be rejected by librdkafka.
                if is_shared_property(k) {
                    cc.set(k, v);
                }
            }
            cc.set("enable.idempotence", "true");
            cc.set("message.timeout.ms", "10000");
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
            metrics,
            backoff_initial: Duration::from_millis(cfg.kafka.retry_backoff_initial_ms.max(1)),
            backoff_max: Duration::from_millis(cfg.kafka.retry_backoff_max_ms.max(1)),
        })
    }

    /// Sends `msg` to its dead-letter topic and waits for the acknowledgement, retrying with
    /// backoff. Returns an error only when shutting down before it was delivered.
    pub fn send(
        &self,
        msg: &BorrowedMessage<'_>,
        headers: &[(String, Option<Vec<u8>>)],
        reason: &RejectReason,
        shutdown: &CancellationToken,
    ) -> Result<(), IngestError> {
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let topic = self
            .cfg
            .topic_for(msg.topic())
            .unwrap_or_else(|| format!("{}.dlq", msg.topic()));
        let reason_text = reason.to_string();
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let mut backoff = self.backoff_initial;
        loop {
            let mut h = OwnedHeaders::new();
            for (k, v) in headers {
                h = h.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            for (k, v) in [
                (HEADER_REASON, reason_text.as_str()),
                (HEADER_REASON_CODE, reason.code()),
                (HEADER_SOURCE_TOPIC, msg.topic()),
                (HEADER_SOURCE_PARTITION, partition.as_str()),
                (HEADER_SOURCE_OFFSET, offset.as_str()),
                (HEADER_VERSION, env!("CARGO_PKG_VERSION")),
            ] {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let status = Arc::new(AtomicU8::new(0));
            let mut record: BaseRecord<'_, [u8], [u8], Arc<AtomicU8>> =
                BaseRecord::with_opaque_to(&topic, status.clone()).headers(h);
            if let Some(p) = msg.payload() {
                record = record.payload(p);
            }
            if let Some(k) = msg.key() {
                record = record.key(k);
            }
            let sent = match producer.send(record) {
                Ok(()) => {
                    let deadline = Instant::now() + Duration::from_secs(15);
                    while status.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
                        producer.poll(Duration::from_millis(20));
                    }
                    status.load(Ordering::SeqCst) == 1
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, dlq = %topic, "dead-letter send was refused");
                    false
                }
            };
            if sent {
                tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                    dlq = %topic, reason = %reason_text, "invalid message sent to the dead-letter topic");
                self.metrics
                    .events_dead_lettered
                    .get_or_create(&DeadLetterLabel {
                        topic: msg.topic().to_string(),
                        reason: reason.code().to_string(),
                    })
                    .inc();
                return Ok(());
            }
            self.metrics.dead_letter_errors.inc();
            tracing::error!(dlq = %topic, source_topic = msg.topic(), partition = msg.partition(),
                offset = msg.offset(), backoff_ms = backoff.as_millis() as u64,
                "dead-letter produce failed; the partition waits and retries");
            if shutdown.is_cancelled() {
                return Err(IngestError::Config(format!(
                    "shutting down before the dead letter for {}[{}]@{} was delivered to '{topic}'; it will be read again on restart",
                    msg.topic(), msg.partition(), msg.offset()
                )));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.backoff_max);
        }
    }

    /// Waits for outstanding deliveries.
    pub fn flush(&self) {
        if let Some(p) = &self.producer {
            let _ = p.flush(Duration::from_secs(5));
        }
    }
}

/// librdkafka properties that apply to producers as well as consumers.
fn is_shared_property(key: &str) -> bool {
    key.starts_with("security.")
        || key.starts_with("sasl.")
        || key.starts_with("ssl.")
        || key.starts_with("ssl_")
        || key.starts_with("socket.")
        || key.starts_with("broker.")
        || key == "client.id"
        || key == "client.rack"
        || key.starts_with("metadata.")
        || key.starts_with("reconnect.")
        || key == "debug"
}
