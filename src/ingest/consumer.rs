//! The consumer group: drains event topics into batched store writes, exactly once.
//!
//! One thread owns a librdkafka `BaseConsumer` and polls it (rebalance callbacks run inside
//! `poll`, on this thread). Decoded events accumulate in a pending batch together with the
//! next offset of every partition they came from; a batch is submitted to the store when it
//! is full or old enough, and several batches may be in flight (the store group-commits them).
//! The store, not Kafka, holds the positions: offsets ride in the same atomic write as the
//! events, partitions are assigned at their stored position, and only after a write is
//! durable is the offset committed to Kafka (for lag tooling). Event ids are the payload's or
//! derived from (topic, partition, offset), and inserts skip ids already stored, so a re-read
//! never becomes a second row.

use super::deadletter::{DeadLetter, DeadLetterQueue, Rejected};
use super::decode::{decode, DecodeOptions, DecodedEvent, RejectReason, SourceMeta};
use crate::config::{Config, DeadLetterPolicy, Subscription};
use crate::metrics::{DuplicateLabel, KindLabel, Metrics, PartitionLabel, TopicLabel};
use crate::store::{CommitInfo, Duplicate, IdScope, Store, StoreError, WriteBatch, WriteTicket};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Batches kept in flight at once; the poll loop then waits for the store.
const MAX_INFLIGHT_BATCHES: usize = 4;
/// How long the poll loop waits for the store to make room before it pauses the partitions.
/// A pause purges librdkafka's prefetched messages (a resume fetches them again), so the
/// ordinary case, a store a group commit behind, is a wait; a pause is for a store that stalls.
/// Measured (ingest bench, 200k events on Tansu): pausing at every 4th batch (then polling up
/// to 100 ms per loop) left the store's committer idle 56% of the time: 4.2k events/s; waiting
/// here instead: 8.2k events/s.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// How long after an asynchronous offset commit Kafka's copy is read back and, if it is
/// behind the store, committed again.
const COMMIT_CHECK: Duration = Duration::from_secs(5);
/// How long that read-back may block the poll loop.
const COMMIT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a conflicting event id is logged (each is counted).
const CONFLICT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Event ids from payloads are unique per org: the same id in another org is another event,
/// and the same (org, id) with other content is a conflict (the first write wins).
static EVENT_ID_SCOPE: std::sync::LazyLock<Arc<IdScope>> = std::sync::LazyLock::new(|| {
    Arc::new(IdScope {
        scope_field: "org_id".into(),
        original_id_field: "event_id".into(),
        content_fields: [
            "event_type",
            "event_name",
            "user_id",
            "session_id",
            "properties",
            "timestamp",
        ]
        .map(String::from)
        .to_vec(),
    })
});

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("kafka: {what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    #[error("invalid message on topic '{topic}' partition {partition} offset {offset}: {reason} (kafka.dead_letter.policy = \"fail\")")]
    BadMessage {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("configuration: {0}")]
    Config(String),
}

type TopicPartition = (String, i32);

/// Events read but not yet submitted, with the next offset per partition.
#[derive(Default)]
struct Pending {
    decoded: Vec<DecodedEvent>,
    events: usize,
    bytes: usize,
    offsets: BTreeMap<TopicPartition, i64>,
    newest_event_ms: i64,
    first_at: Option<Instant>,
}

/// A submitted batch: what to commit to Kafka and count once it is durable, and its events
/// to write again if it fails.
struct InFlight {
    ticket: WriteTicket,
    batch: Submitted,
}

struct Submitted {
    /// The events themselves rather than a copy of the submitted rows: the rows are built
    /// again (`write_batch`) only for a retry, which is rare.
    retry: Vec<DecodedEvent>,
    offsets: BTreeMap<TopicPartition, i64>,
    bytes: usize,
    newest_event_ms: i64,
    submitted: Instant,
}

/// State shared by the poll loop and the rebalance callbacks (same thread, so the locks never
/// contend; they exist because the callbacks only get `&self`).
struct Shared {
    cfg: Config,
    store: Store,
    metrics: Arc<Metrics>,
    pending: Mutex<Pending>,
    inflight: Mutex<VecDeque<InFlight>>,
    assigned: Mutex<HashSet<TopicPartition>>,
    /// Next offset per partition as durably stored.
    stored: Mutex<HashMap<TopicPartition, i64>>,
    paused: Mutex<bool>,
    /// When positions were last committed to Kafka asynchronously (or partitions were
    /// assigned), until reading them back found Kafka caught up with the store (see
    /// [`confirm_commits`]).
    unconfirmed_commit: Mutex<Option<Instant>>,
    shutdown: CancellationToken,
    /// A failure inside a rebalance callback, reported by the poll loop.
    callback_error: Mutex<Option<IngestError>>,
    /// Bumped by every assignment and revocation: the poll loop's expected offsets restart
    /// from the stored positions.
    assign_epoch: std::sync::atomic::AtomicU64,
    /// Dead letters under way, and the partitions paused until theirs is delivered (set by
    /// `run`: creating the producer can fail).
    dead_letters: Mutex<Option<DeadLetterQueue>>,
    /// The high watermark of each partition paused for a dead letter, read from the broker
    /// (librdkafka's statistics stop updating it while a partition is paused).
    blocked_high: Mutex<HashMap<TopicPartition, i64>>,
    /// With `kafka.dead_letter.id_conflicts`: the content of each payload-id event read but
    /// not yet durable, by (org, id), so that a conflict is caught before either is stored.
    claims: Mutex<HashMap<(uuid::Uuid, uuid::Uuid), EventContent>>,
    /// When a conflicting event id was last logged, and how many since.
    conflict_logged: Mutex<(Option<Instant>, u64)>,
    #[cfg(feature = "fault-injection")]
    durable_batches: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn is_blocked(&self, topic: &str, partition: i32) -> bool {
        self.dead_letters
            .lock()
            .as_ref()
            .is_some_and(|d| d.is_blocked(topic, partition))
    }
}

pub struct IngestContext {
    shared: Arc<Shared>,
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        let stored = self.shared.stored.lock().clone();
        let blocked_high = self.shared.blocked_high.lock().clone();
        let mut total = 0u64;
        for (topic, t) in statistics.topics {
            for (p, part) in t.partitions {
                if p < 0 || part.hi_offset < 0 {
                    continue;
                }
                let Some(pos) = stored.get(&(topic.clone(), p)) else {
                    continue;
                };
                let high = blocked_high
                    .get(&(topic.clone(), p))
                    .map_or(part.hi_offset, |h| (*h).max(part.hi_offset));
                let lag = (high - pos).max(0);
                total += lag as u64;
                self.shared
                    .metrics
                    .partition_lag
                    .get_or_create(&PartitionLabel {
                        topic: topic.clone(),
                        partition: p.to_string(),
                    })
                    .set(lag);
            }
        }
        self.shared
            .metrics
            .total_lag
            .store(total, Ordering::Relaxed);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error => {
                tracing::error!(facility = fac, "librdkafka: {log_message}")
            }
            Warning => tracing::warn!(facility = fac, "librdkafka: {log_message}"),
            _ => tracing::debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, "kafka client error (librdkafka retries): {reason}");
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr::*;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let m = &self.shared.metrics;
        self.shared
            .assign_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match err {
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                m.rebalances
                    .get_or_create(&KindLabel {
                        kind: "assign".into(),
                    })
                    .inc();
                // Start every partition at the position the store holds; without one,
                // librdkafka falls back to the committed offset, then auto.offset.reset.
                let mut stored = self.shared.stored.lock();
                for el in tpl.elements() {
                    let (topic, p) = (el.topic().to_string(), el.partition());
                    match self.shared.store.offset(&topic, p) {
                        Ok(Some(next)) => {
                            stored.insert((topic.clone(), p), next);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %e, topic, partition = p, "cannot read the stored position");
                        }
                    }
                }
                for ((topic, p), next) in stored.iter() {
                    if tpl.find_partition(topic, *p).is_some() {
                        let _ = tpl.set_partition_offset(topic, *p, Offset::Offset(*next));
                    }
                }
                drop(stored);
                let mut assigned = self.shared.assigned.lock();
                for el in tpl.elements() {
                    assigned.insert((el.topic().to_string(), el.partition()));
                }
                m.assigned_partitions.set(assigned.len() as i64);
                drop(assigned);
                // A run killed after a durable write and before its Kafka commit leaves
                // Kafka behind the store; with nothing new to read this instance would
                // never commit, so Kafka's copy is checked after an assignment too.
                *self.shared.unconfirmed_commit.lock() = Some(Instant::now());
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "assigning partitions failed");
                }
                tracing::info!(partitions = %describe(tpl), cooperative, "partitions assigned at their stored positions");
            }
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                m.rebalances
                    .get_or_create(&KindLabel {
                        kind: "revoke".into(),
                    })
                    .inc();
                // Finish and durably write everything read so far before letting go.
                let lost = consumer.assignment_lost();
                if let Err(e) = drain(&self.shared, consumer, !lost) {
                    tracing::error!(error = %e, "flushing before revoke failed");
                    *self.shared.callback_error.lock() = Some(e);
                }
                let mut assigned = self.shared.assigned.lock();
                for el in tpl.elements() {
                    assigned.remove(&(el.topic().to_string(), el.partition()));
                }
                m.assigned_partitions.set(assigned.len() as i64);
                // A dead letter of a revoked partition is sent by its next owner (the
                // partition did not move past the record).
                if let Some(d) = self.shared.dead_letters.lock().as_mut() {
                    d.forget(|tp| assigned.contains(tp));
                }
                self.shared
                    .blocked_high
                    .lock()
                    .retain(|tp, _| assigned.contains(tp));
                drop(assigned);
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "unassigning partitions failed");
                }
                tracing::info!(partitions = %describe(tpl), lost, "partitions revoked after a durable flush");
            }
            other => {
                m.rebalances
                    .get_or_create(&KindLabel {
                        kind: "error".into(),
                    })
                    .inc();
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The ingest loop: `run` it on a thread of its own.
pub struct Ingest {
    shared: Arc<Shared>,
}

impl Ingest {
    pub fn new(
        cfg: Config,
        store: Store,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Ingest {
        Ingest {
            shared: Arc::new(Shared {
                cfg,
                store,
                metrics,
                pending: Mutex::new(Pending::default()),
                inflight: Mutex::new(VecDeque::new()),
                assigned: Mutex::new(HashSet::new()),
                stored: Mutex::new(HashMap::new()),
                paused: Mutex::new(false),
                unconfirmed_commit: Mutex::new(None),
                shutdown,
                callback_error: Mutex::new(None),
                dead_letters: Mutex::new(None),
                blocked_high: Mutex::new(HashMap::new()),
                conflict_logged: Mutex::new((None, 0)),
                claims: Mutex::new(HashMap::new()),
                assign_epoch: std::sync::atomic::AtomicU64::new(0),
                #[cfg(feature = "fault-injection")]
                durable_batches: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    fn consumer(&self) -> Result<BaseConsumer<IngestContext>, IngestError> {
        let mut cc = rdkafka::ClientConfig::new();
        for (k, v) in self.shared.cfg.kafka.consumer_properties() {
            cc.set(k, v);
        }
        cc.set("statistics.interval.ms", "1000");
        let consumer: BaseConsumer<IngestContext> = cc
            .create_with_context(IngestContext {
                shared: self.shared.clone(),
            })
            .map_err(|source| IngestError::Kafka {
                what: format!(
                    "creating the consumer for {}",
                    self.shared.cfg.kafka.brokers
                ),
                source,
            })?;
        let topics: Vec<String> = match self.shared.cfg.kafka.subscription() {
            Subscription::Topics(t) => t,
            Subscription::Regex(r) => vec![r],
        };
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&refs)
            .map_err(|source| IngestError::Kafka {
                what: format!("subscribing to {topics:?}"),
                source,
            })?;
        tracing::info!(brokers = %self.shared.cfg.kafka.brokers, ?topics,
            group = %self.shared.cfg.kafka.group_id, "consumer subscribed");
        Ok(consumer)
    }

    /// Consumes until `shutdown` is cancelled (then flushes, commits and returns Ok) or a
    /// fatal error.
    pub fn run(self) -> Result<(), IngestError> {
        let consumer = self.consumer()?;
        let shared = &self.shared;
        *shared.dead_letters.lock() =
            Some(DeadLetterQueue::new(&shared.cfg, shared.metrics.clone())?);
        let mut watermarks_read = Instant::now();
        let max_events = shared.cfg.batching.max_batch_events().get();
        let max_delay = shared.cfg.batching.max_batch_delay();
        let max_bytes = shared.cfg.batching.max_inflight_bytes().get();
        let mut opts = DecodeOptions {
            max_message_bytes: shared.cfg.kafka.max_message_bytes as usize,
            max_future_skew: Duration::from_secs(shared.cfg.kafka.max_future_skew_s),
            default_org_id: None,
            org_id_header: shared.cfg.kafka.org_id_header.clone(),
            now: chrono::Utc::now(),
        };
        let mut gaps = GapCheck::default();
        let result = (|| -> Result<(), IngestError> {
            while !shared.shutdown.is_cancelled() {
                let wait = {
                    let p = shared.pending.lock();
                    match p.first_at {
                        Some(t) => max_delay
                            .saturating_sub(t.elapsed())
                            .min(Duration::from_millis(100)),
                        None => Duration::from_millis(100),
                    }
                };
                match consumer.poll(wait) {
                    Some(Ok(msg)) => {
                        let tp = (msg.topic().to_string(), msg.partition());
                        if !shared.assigned.lock().contains(&tp) {
                            continue; // fetched before a revoke: the new owner reads it
                        }
                        if is_dead_letter_topic(&shared.cfg, &tp.0) {
                            // A regex subscription can match our own dead-letter topics;
                            // re-ingesting dead letters would loop them forever.
                            continue;
                        }
                        if shared.is_blocked(&tp.0, tp.1) {
                            // Fetched before the pause took effect: read again after the
                            // dead letter is delivered (the partition is sought back then).
                            continue;
                        }
                        gaps.check(shared, &consumer, &tp, msg.offset());
                        let headers: Vec<(String, Option<Vec<u8>>)> = msg
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let meta = SourceMeta {
                            topic: msg.topic(),
                            partition: msg.partition(),
                            offset: msg.offset(),
                            kafka_timestamp_ms: msg.timestamp().to_millis(),
                            key: msg.key(),
                            headers: &headers,
                        };
                        opts.now = chrono::Utc::now();
                        opts.default_org_id = shared.cfg.kafka.default_org_id(msg.topic());
                        shared
                            .metrics
                            .events_consumed
                            .get_or_create(&TopicLabel {
                                topic: tp.0.clone(),
                            })
                            .inc();
                        match decode(msg.payload(), &meta, &opts)
                            .and_then(|ev| check_id_conflict(shared, ev))
                        {
                            Ok(ev) => {
                                if ev.dropped_fields > 0 {
                                    shared
                                        .metrics
                                        .events_fields_dropped
                                        .get_or_create(&TopicLabel {
                                            topic: tp.0.clone(),
                                        })
                                        .inc_by(ev.dropped_fields as u64);
                                }
                                let size = msg.payload().map(|p| p.len()).unwrap_or(0) + 200;
                                let ts = ev.timestamp.timestamp_millis();
                                let mut p = shared.pending.lock();
                                p.decoded.push(ev);
                                p.events += 1;
                                p.bytes += size;
                                // The partition and topic are usually known already: no key copy.
                                match p.offsets.get_mut(&tp) {
                                    Some(next) => *next = msg.offset() + 1,
                                    None => {
                                        p.offsets.insert(tp.clone(), msg.offset() + 1);
                                    }
                                }
                                p.newest_event_ms = p.newest_event_ms.max(ts);
                                p.first_at.get_or_insert_with(Instant::now);
                            }
                            Err(reason) => {
                                match shared.cfg.kafka.dead_letter.policy {
                                    DeadLetterPolicy::Topic => {
                                        // The partition never moves past a record whose dead
                                        // letter is not acknowledged; while it waits, it waits
                                        // alone (paused), and the others go on.
                                        let letter = DeadLetter {
                                            topic: tp.0.clone(),
                                            partition: tp.1,
                                            offset: msg.offset(),
                                            key: msg.key().map(<[u8]>::to_vec),
                                            payload: msg.payload().map(<[u8]>::to_vec),
                                            headers,
                                            reason,
                                        };
                                        let outcome = match shared.dead_letters.lock().as_mut() {
                                            Some(d) => d.reject(letter),
                                            None => Rejected::Delivered,
                                        };
                                        if let Rejected::Blocked = outcome {
                                            pause_partition(&consumer, &tp);
                                            continue;
                                        }
                                    }
                                    DeadLetterPolicy::Skip => {
                                        tracing::warn!(topic = %tp.0, partition = tp.1, offset = msg.offset(),
                                            reason = %reason, "skipping invalid message (dead_letter.policy = skip)");
                                        shared
                                            .metrics
                                            .events_skipped
                                            .get_or_create(&crate::metrics::DeadLetterLabel {
                                                topic: tp.0.clone(),
                                                reason: reason.code().into(),
                                            })
                                            .inc();
                                    }
                                    DeadLetterPolicy::Fail => {
                                        flush(shared)?;
                                        wait_all(shared, Some(&consumer))?;
                                        return Err(IngestError::BadMessage {
                                            topic: tp.0,
                                            partition: tp.1,
                                            offset: msg.offset(),
                                            reason: reason.to_string(),
                                        });
                                    }
                                }
                                let mut p = shared.pending.lock();
                                p.offsets.insert(tp, msg.offset() + 1);
                                p.first_at.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "kafka consume error (retrying)");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    None => {}
                }
                if let Some(e) = shared.callback_error.lock().take() {
                    return Err(e);
                }
                let due = {
                    let p = shared.pending.lock();
                    p.events >= max_events
                        || p.bytes >= max_bytes / MAX_INFLIGHT_BATCHES
                        || p.first_at.is_some_and(|t| t.elapsed() >= max_delay)
                };
                if due {
                    flush(shared)?;
                }
                reap(shared, &consumer, false)?;
                backpressure(shared, &consumer, max_bytes)?;
                confirm_commits(shared, &consumer);
                release_dead_lettered(shared, &consumer, &mut watermarks_read)?;
            }
            Ok(())
        })();
        // Shutdown (or a fatal error): a dead letter under way gets a moment; one that is not
        // delivered keeps its partition at the record, which is read again on the next start.
        let delivered = shared
            .dead_letters
            .lock()
            .as_mut()
            .map(|d| d.shutdown(Duration::from_secs(2)))
            .unwrap_or_default();
        for (tp, next) in delivered {
            advance_past_dead_letter(shared, tp, next);
        }
        // Write what was read, commit, leave the group.
        let drained = drain(shared, &consumer, true);
        if *shared.paused.lock() {
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.resume(&a);
            }
        }
        drop(consumer);
        result.and(drained)
    }
}

/// Detects offsets the broker deleted before this connector read them (retention, or a
/// `DeleteRecords`): the consumer then jumps past the next expected offset (librdkafka resets
/// an out-of-range position to the log start). Such events are gone from Kafka; they are
/// counted in `streamtally_events_skipped_total{reason="retention"}` and logged as an error,
/// never passed over silently. Other jumps (a transaction marker, an aborted transaction,
/// compaction) leave the log start at or below the expected offset and count nothing.
#[derive(Default)]
struct GapCheck {
    /// The next offset expected per partition, since the last (re)assignment.
    next: HashMap<TopicPartition, i64>,
    epoch: u64,
}

impl GapCheck {
    fn check(
        &mut self,
        shared: &Shared,
        consumer: &BaseConsumer<IngestContext>,
        tp: &TopicPartition,
        offset: i64,
    ) {
        let epoch = shared
            .assign_epoch
            .load(std::sync::atomic::Ordering::Relaxed);
        if epoch != self.epoch {
            // Reassigned partitions start at their stored positions.
            self.next.clear();
            self.epoch = epoch;
        }
        let expected = match self.next.get(tp) {
            Some(&n) => Some(n),
            None => shared.stored.lock().get(tp).copied(),
        };
        self.next.insert(tp.clone(), offset + 1);
        // Contiguous, or one control record (a transaction marker) in between.
        let Some(expected) = expected.filter(|&e| offset > e + 1) else {
            return;
        };
        let low = match consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(5)) {
            Ok((low, _)) => low,
            Err(e) => {
                tracing::warn!(topic = %tp.0, partition = tp.1, expected, offset, error = %e,
                    "offsets skipped; cannot read the log start to tell whether events were deleted");
                return;
            }
        };
        if low <= expected {
            return;
        }
        let lost = low.min(offset) - expected;
        tracing::error!(topic = %tp.0, partition = tp.1, from = expected, to = low.min(offset) - 1, lost,
            "events deleted by the broker before they were read (retention): they are not in the store; \
             raise the topic's retention or let the connector keep up");
        shared
            .metrics
            .events_skipped
            .get_or_create(&crate::metrics::DeadLetterLabel {
                topic: tp.0.clone(),
                reason: "retention".into(),
            })
            .inc_by(lost as u64);
    }
}

/// Pauses one partition (its dead letter is not delivered yet).
fn pause_partition(consumer: &BaseConsumer<IngestContext>, tp: &TopicPartition) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.0, tp.1);
    if let Err(e) = consumer.pause(&tpl) {
        // Its records are skipped by the poll loop anyway, and read again after the seek.
        tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot pause the partition");
    }
}

/// Moves dead letters on; a partition whose dead letter was delivered is sought past the
/// record and resumed. Also keeps the lag of waiting partitions current.
fn release_dead_lettered(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    watermarks_read: &mut Instant,
) -> Result<(), IngestError> {
    let (delivered, blocked) = match shared.dead_letters.lock().as_mut() {
        Some(d) => (
            d.progress(),
            d.blocked_partitions().cloned().collect::<Vec<_>>(),
        ),
        None => return Ok(()),
    };
    for (tp, next) in delivered {
        // Records after the dead letter may have been fetched (and skipped) before the pause:
        // read from the next one on.
        let mut sought = consumer.seek(&tp.0, tp.1, Offset::Offset(next), Duration::from_secs(2));
        for _ in 0..2 {
            if sought.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            sought = consumer.seek(&tp.0, tp.1, Offset::Offset(next), Duration::from_secs(2));
        }
        if let Err(source) = sought {
            // Stopping is safe: the position stored with the next write is `next`, and the
            // records after it are read again on the next start.
            advance_past_dead_letter(shared, tp.clone(), next);
            return Err(IngestError::Kafka {
                what: format!(
                    "seeking topic '{}' partition {} to offset {next} after its dead letter was delivered",
                    tp.0, tp.1
                ),
                source,
            });
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        if let Err(e) = consumer.resume(&tpl) {
            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot resume the partition");
        }
        shared.blocked_high.lock().remove(&tp);
        advance_past_dead_letter(shared, tp, next);
    }
    if !blocked.is_empty() && watermarks_read.elapsed() >= Duration::from_secs(2) {
        *watermarks_read = Instant::now();
        for tp in blocked {
            if let Ok((_, high)) =
                consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_millis(500))
            {
                shared.blocked_high.lock().insert(tp, high);
            }
        }
    }
    Ok(())
}

/// The partition's next position is past its dead-lettered record.
fn advance_past_dead_letter(shared: &Shared, tp: TopicPartition, next: i64) {
    let mut p = shared.pending.lock();
    p.offsets.insert(tp, next);
    p.first_at.get_or_insert_with(Instant::now);
}

/// Whether `topic` is where this connector sends dead letters (of any source topic).
fn is_dead_letter_topic(cfg: &Config, topic: &str) -> bool {
    let dl = &cfg.kafka.dead_letter;
    dl.policy == DeadLetterPolicy::Topic
        && (dl.topic.as_deref() == Some(topic)
            || (dl.topic.is_none()
                && !dl.topic_suffix.is_empty()
                && topic.ends_with(&dl.topic_suffix)))
}

/// Submits the pending batch (if any) to the store.
fn flush(shared: &Shared) -> Result<(), IngestError> {
    let pending = std::mem::take(&mut *shared.pending.lock());
    if pending.offsets.is_empty() {
        return Ok(());
    }
    let batch = write_batch(&pending.decoded, &pending.offsets);
    // A refused submission comes back as a failed ticket and is retried in order by `reap`.
    let ticket = shared.store.submit(batch);
    shared.metrics.batch_size.observe(pending.events as f64);
    shared.inflight.lock().push_back(InFlight {
        ticket,
        batch: Submitted {
            retry: pending.decoded,
            offsets: pending.offsets,
            bytes: pending.bytes,
            newest_event_ms: pending.newest_event_ms,
            submitted: Instant::now(),
        },
    });
    Ok(())
}

/// The store write for `events`, with the partitions' next offsets.
fn write_batch(events: &[DecodedEvent], offsets: &BTreeMap<TopicPartition, i64>) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for ev in events {
        if ev.id_from_payload {
            // Producers choose these ids: unique per org, not across orgs.
            batch.insert_scoped("Event", ev.to_row(), &EVENT_ID_SCOPE);
        } else {
            // Derived from the Kafka position: unique across orgs already.
            batch.insert("Event", ev.to_row());
        }
    }
    for ((topic, p), next) in offsets {
        batch.set_offset(topic, *p, *next);
    }
    batch
}

/// A failed batch to write again: its events, positions and newest event time.
type Retry = (Vec<DecodedEvent>, BTreeMap<TopicPartition, i64>, i64);

/// Handles finished writes in submission order; `block` waits for all of them. After a
/// failure every later batch is waited for too (the store refuses them until
/// `resume_writes`), then all of them are written again in order.
fn reap(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    block: bool,
) -> Result<(), IngestError> {
    let mut failed: Vec<Retry> = Vec::new();
    let mut committed: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    loop {
        let next = {
            let mut q = shared.inflight.lock();
            let ready = match q.front_mut() {
                None => break,
                Some(f) => f.ticket.try_take(),
            };
            match ready {
                Some(r) => q.pop_front().map(|f| (f.batch, r)),
                None if block || !failed.is_empty() => {
                    q.pop_front().map(|f| (f.batch, f.ticket.wait()))
                }
                None => None,
            }
        };
        let Some((f, result)) = next else {
            break;
        };
        match result {
            Ok(info) if failed.is_empty() => {
                shared
                    .metrics
                    .flush_seconds
                    .observe(f.submitted.elapsed().as_secs_f64());
                record_durable(shared, &f.retry, &f.offsets, f.newest_event_ms, &info);
                committed.extend(f.offsets.iter().map(|(k, v)| (k.clone(), *v)));
                #[cfg(feature = "fault-injection")]
                fault_after_durable(shared);
            }
            Ok(_) => {
                // Cannot happen (the store refuses writes behind a failed one); if it did,
                // writing the batch again is harmless: inserts skip stored ids.
                failed.push((f.retry, f.offsets, f.newest_event_ms));
            }
            Err(e) => {
                shared.metrics.store_write_errors.inc();
                tracing::error!(error = %e, "store write failed; retrying the batch (no offset advances)");
                failed.push((f.retry, f.offsets, f.newest_event_ms));
            }
        }
    }
    if !failed.is_empty() {
        for (_, offsets, ..) in &failed {
            committed.extend(offsets.iter().map(|(k, v)| (k.clone(), *v)));
        }
        recover(shared, failed)?;
    }
    if !committed.is_empty() {
        let _ = commit_to_kafka(consumer, &committed, CommitMode::Async);
        *shared.unconfirmed_commit.lock() = Some(Instant::now());
    }
    Ok(())
}

/// Makes sure Kafka's copy of the positions catches up even when the connector then goes
/// idle. Commits after each durable batch are asynchronous, and a commit the broker refuses
/// is only reported in librdkafka's log; the next batch would repair it, but an idle
/// connector has no next batch; and a run killed between a durable write and its commit
/// leaves Kafka behind with nothing left to read. So [`COMMIT_CHECK`] after the last commit
/// or assignment the committed offsets of the assigned partitions are read back, and where
/// Kafka is behind the stored position they are committed again (and checked again
/// [`COMMIT_CHECK`] later). Kafka is never moved backwards by this: a partition where it is
/// ahead is left alone.
fn confirm_commits(shared: &Shared, consumer: &BaseConsumer<IngestContext>) {
    let due = shared
        .unconfirmed_commit
        .lock()
        .is_some_and(|t| t.elapsed() >= COMMIT_CHECK);
    if !due {
        return;
    }
    let stored = assigned_positions(shared);
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in stored.keys() {
        tpl.add_partition(topic, *p);
    }
    let committed = if stored.is_empty() {
        TopicPartitionList::new()
    } else {
        match consumer.committed_offsets(tpl, COMMIT_CHECK_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the committed offsets back from Kafka (trying again later)");
                *shared.unconfirmed_commit.lock() = Some(Instant::now());
                return;
            }
        }
    };
    let behind: BTreeMap<TopicPartition, i64> = stored
        .into_iter()
        .filter(|((topic, p), next)| {
            match committed
                .find_partition(topic, *p)
                .filter(|e| e.error().is_ok())
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o < *next,
                _ => true,
            }
        })
        .collect();
    if behind.is_empty() {
        *shared.unconfirmed_commit.lock() = None;
        return;
    }
    tracing::warn!(partitions = %describe_positions(&behind),
        "Kafka's committed offsets are behind the stored positions; committing them again");
    shared.metrics.kafka_commit_repairs.inc();
    let _ = commit_to_kafka(consumer, &behind, CommitMode::Async);
    *shared.unconfirmed_commit.lock() = Some(Instant::now());
}

/// The stored positions of the partitions this instance owns.
fn assigned_positions(shared: &Shared) -> BTreeMap<TopicPartition, i64> {
    let assigned = shared.assigned.lock();
    shared
        .stored
        .lock()
        .iter()
        .filter(|(tp, _)| assigned.contains(*tp))
        .map(|(tp, o)| (tp.clone(), *o))
        .collect()
}

fn describe_positions(positions: &BTreeMap<TopicPartition, i64>) -> String {
    positions
        .iter()
        .map(|((topic, p), next)| format!("{topic}/{p}@{next}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Counts a durable batch (new rows as stored, the rest as duplicates of the same content
/// or conflicting content) and records its partitions' positions.
fn record_durable(
    shared: &Shared,
    events: &[DecodedEvent],
    offsets: &BTreeMap<TopicPartition, i64>,
    newest_event_ms: i64,
    info: &CommitInfo,
) {
    let mut stored_per_topic: HashMap<&str, u64> = HashMap::new();
    for ev in events {
        *stored_per_topic.entry(ev.topic.as_str()).or_default() += 1;
    }
    let mut duplicates: HashMap<(&str, &'static str), u64> = HashMap::new();
    for &(n, kind) in &info.duplicates {
        let Some(ev) = events.get(n) else { continue };
        if let Some(c) = stored_per_topic.get_mut(ev.topic.as_str()) {
            *c = c.saturating_sub(1);
        }
        let kind = match kind {
            Duplicate::Same => "same",
            Duplicate::Conflict => {
                log_conflict(shared, ev);
                "conflict"
            }
        };
        *duplicates.entry((ev.topic.as_str(), kind)).or_default() += 1;
    }
    // Plain inserts (ids derived from the Kafka position) skipped as stored: re-reads.
    let unlisted = events
        .len()
        .saturating_sub(info.inserted + info.duplicates.len()) as u64;
    if unlisted > 0 {
        if let Some(ev) = events.first() {
            if let Some(c) = stored_per_topic.get_mut(ev.topic.as_str()) {
                *c = c.saturating_sub(unlisted);
            }
            *duplicates.entry((ev.topic.as_str(), "same")).or_default() += unlisted;
        }
    }
    for (topic, n) in stored_per_topic {
        shared
            .metrics
            .events_stored
            .get_or_create(&TopicLabel {
                topic: topic.to_string(),
            })
            .inc_by(n);
    }
    for ((topic, kind), n) in duplicates {
        shared
            .metrics
            .events_duplicate
            .get_or_create(&DuplicateLabel {
                topic: topic.to_string(),
                kind: kind.to_string(),
            })
            .inc_by(n);
    }
    if shared.cfg.kafka.dead_letter.id_conflicts {
        // Stored now: later events are checked against the store.
        let mut claims = shared.claims.lock();
        for ev in events.iter().filter(|ev| ev.id_from_payload) {
            claims.remove(&(ev.org_id, ev.id));
        }
    }
    shared.metrics.flushed(newest_event_ms);
    let mut stored = shared.stored.lock();
    for (tp, next) in offsets {
        stored.insert(tp.clone(), *next);
    }
}

/// What makes two events with the same (org, id) the same event (see `EVENT_ID_SCOPE`).
#[derive(Debug, PartialEq)]
struct EventContent {
    event_type: String,
    event_name: String,
    user_id: Option<String>,
    session_id: Option<String>,
    properties: Option<serde_json::Value>,
    timestamp_us: i64,
}

impl EventContent {
    fn of(ev: &DecodedEvent) -> EventContent {
        EventContent {
            event_type: ev.event_type.clone(),
            event_name: ev.event_name.clone(),
            user_id: ev.user_id.clone(),
            session_id: ev.session_id.clone(),
            properties: ev
                .properties
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
            timestamp_us: ev.timestamp.timestamp_micros(),
        }
    }
}

/// With `kafka.dead_letter.id_conflicts`, an event whose (org, id) is stored, or read and on
/// its way to the store, with other content is rejected (reason `id_conflict`) before it is
/// written; a re-send of the same content goes on (the store counts it as `same`).
fn check_id_conflict(shared: &Shared, ev: DecodedEvent) -> Result<DecodedEvent, RejectReason> {
    if !ev.id_from_payload || !shared.cfg.kafka.dead_letter.id_conflicts {
        return Ok(ev);
    }
    let content = EventContent::of(&ev);
    let key = (ev.org_id, ev.id);
    let conflict = match shared.claims.lock().get(&key) {
        Some(claimed) => *claimed != content,
        None => match shared
            .store
            .scoped_duplicate("Event", &ev.to_row(), &EVENT_ID_SCOPE)
        {
            Ok(found) => found == Some(Duplicate::Conflict),
            Err(e) => {
                // The store decides at write time anyway (counted, not dead-lettered).
                tracing::warn!(error = %e, org = %ev.org_id, id = %ev.id,
                    "cannot look the event id up before writing; a conflict is only counted");
                false
            }
        },
    };
    if conflict {
        return Err(RejectReason::IdConflict {
            org: ev.org_id.to_string(),
            id: ev.id.to_string(),
        });
    }
    shared.claims.lock().entry(key).or_insert(content);
    Ok(ev)
}

/// Logs an event whose (org, id) was stored with other content, at most every
/// [`CONFLICT_LOG_EVERY`] (the counter has them all).
fn log_conflict(shared: &Shared, ev: &DecodedEvent) {
    let mut last = shared.conflict_logged.lock();
    let (at, suppressed) = &mut *last;
    if at.is_some_and(|t| t.elapsed() < CONFLICT_LOG_EVERY) {
        *suppressed += 1;
        return;
    }
    tracing::warn!(org = %ev.org_id, id = %ev.id, topic = %ev.topic, partition = ev.partition,
        offset = ev.offset, suppressed_since_last = *suppressed,
        "event id already stored for this org with other content; kept the first (counted as kind=\"conflict\")");
    *at = Some(Instant::now());
    *suppressed = 0;
}

/// Writes failed batches again, in order, with backoff, until they are durable.
fn recover(shared: &Shared, failed: Vec<Retry>) -> Result<(), IngestError> {
    let initial = shared.cfg.kafka.retry_backoff_initial();
    let max = shared.cfg.kafka.retry_backoff_max();
    let mut backoff = initial;
    for (decoded, offsets, newest) in failed {
        loop {
            if let Err(e) = shared.store.resume_writes() {
                return Err(e.into());
            }
            match shared.store.submit(write_batch(&decoded, &offsets)).wait() {
                Ok(info) => {
                    backoff = initial;
                    record_durable(shared, &decoded, &offsets, newest, &info);
                    tracing::info!(events = decoded.len(), "store write succeeded after retry");
                    break;
                }
                Err(e) => {
                    shared.metrics.store_write_errors.inc();
                    if !e.is_retryable() {
                        return Err(e.into());
                    }
                    tracing::error!(error = %e, backoff_ms = backoff.as_millis() as u64,
                        "store write failed again; retrying (no offset advances)");
                    if shared.shutdown.is_cancelled() && backoff >= max {
                        return Err(e.into());
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(max);
                }
            }
        }
    }
    Ok(())
}

/// Blocks until every in-flight batch is durable.
fn wait_all(
    shared: &Shared,
    consumer: Option<&BaseConsumer<IngestContext>>,
) -> Result<(), IngestError> {
    match consumer {
        Some(c) => reap(shared, c, true),
        None => Ok(()),
    }
}

/// Flushes the pending batch, waits until everything is durable, and (if `commit`) commits
/// the stored positions of the assigned partitions to Kafka synchronously.
fn drain(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    commit: bool,
) -> Result<(), IngestError> {
    flush(shared)?;
    wait_all(shared, Some(consumer))?;
    if commit {
        let positions = assigned_positions(shared);
        if !positions.is_empty() {
            // The next owner of these partitions starts from this commit (its own store has
            // no position for them), so a refused commit (rebalance in progress) is retried.
            for attempt in 0..10 {
                if commit_to_kafka(consumer, &positions, CommitMode::Sync) {
                    break;
                }
                tracing::warn!(
                    attempt,
                    "retrying the offset commit before letting partitions go"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Ok(())
}

/// Returns whether Kafka accepted the commit.
fn commit_to_kafka(
    consumer: &BaseConsumer<IngestContext>,
    offsets: &BTreeMap<TopicPartition, i64>,
    mode: CommitMode,
) -> bool {
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), next) in offsets {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*next));
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => true,
        Err(e) => {
            // This instance keeps its positions in the store; Kafka's copy serves lag
            // tooling and the next owner of a partition, and catches up on the next commit.
            tracing::warn!(error = %e, "committing offsets to Kafka failed");
            false
        }
    }
}

/// While too much is in flight, first waits up to [`ROOM_WAIT`] for the store (handling
/// each write as it finishes), then pauses every assigned partition; resumes when it drains.
fn backpressure(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    max_bytes: usize,
) -> Result<(), IngestError> {
    let load = || {
        let q = shared.inflight.lock();
        (q.len(), q.iter().map(|f| f.batch.bytes).sum::<usize>())
    };
    let is_over = |(n, bytes): (usize, usize)| n >= MAX_INFLIGHT_BATCHES || bytes >= max_bytes;
    let (mut n, mut bytes) = load();
    let waiting = Instant::now();
    while is_over((n, bytes))
        && !*shared.paused.lock()
        && waiting.elapsed() < ROOM_WAIT
        && !shared.shutdown.is_cancelled()
    {
        std::thread::sleep(Duration::from_millis(1));
        reap(shared, consumer, false)?;
        (n, bytes) = load();
    }
    let over = is_over((n, bytes));
    let mut paused = shared.paused.lock();
    if over != *paused {
        if let Ok(a) = consumer.assignment() {
            let r = if over {
                consumer.pause(&a)
            } else {
                // Partitions waiting for a dead letter stay paused.
                let mut unblocked = TopicPartitionList::new();
                for el in a.elements() {
                    if !shared.is_blocked(el.topic(), el.partition()) {
                        unblocked.add_partition(el.topic(), el.partition());
                    }
                }
                consumer.resume(&unblocked)
            };
            if r.is_ok() {
                *paused = over;
                if over {
                    shared.metrics.backpressure_pauses.inc();
                }
                shared
                    .metrics
                    .paused_partitions
                    .set(if over { a.count() as i64 } else { 0 });
                tracing::debug!(
                    paused = over,
                    inflight_batches = n,
                    inflight_bytes = bytes,
                    "backpressure"
                );
            }
        }
    }
    if over {
        // Give the store a moment instead of spinning on an empty poll.
        drop(paused);
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[cfg(feature = "fault-injection")]
fn fault_after_durable(shared: &Shared) {
    // STREAMTALLY_FAULT=crash_after_store_durable:N kills the process right after the N-th
    // durable batch, before its offsets are committed to Kafka.
    let n = shared.durable_batches.fetch_add(1, Ordering::SeqCst) + 1;
    if let Ok(spec) = std::env::var("STREAMTALLY_FAULT") {
        if let Some(k) = spec.strip_prefix("crash_after_store_durable:") {
            if k.parse::<u64>().ok() == Some(n) {
                eprintln!(
                    "fault injection: SIGKILL after durable batch {n}, before the Kafka commit"
                );
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
            }
        }
    }
}
