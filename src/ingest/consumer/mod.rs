//! The consumer group: drains event topics into batched store writes, exactly once.
//!
//! One thread owns a librdkafka `BaseConsumer` and polls it (rebalance callbacks run inside
//! `poll`, on this thread). The exactly-once bookkeeping lives in the broker-free
//! [`Ledger`](super::ledger::Ledger): decoded events accumulate in its open batch together
//! with the next offset of every partition they came from; a batch is submitted to the store
//! when it is full or old enough, and several batches may be in flight (the store
//! group-commits them). The store, not Kafka, holds the positions: offsets ride in the same
//! atomic write as the events, partitions are assigned at their stored position, and only
//! after a write is durable is the offset committed to Kafka (for lag tooling). Event ids are
//! the payload's or derived from (topic, partition, offset), and inserts skip ids already
//! stored, so a re-read never becomes a second row.
//!
//! This module is the Kafka shell: the poll loop (here), the client and rebalance callbacks
//! (`context`), store writes and Kafka commits (`writes`), and partitions held for a dead
//! letter (`blocked`). Each translates between librdkafka, the store and the ledger.

mod blocked;
mod context;
mod writes;

use super::deadletter::{DeadLetter, DeadLetterQueue, Rejected};
use super::decode::{decode, DecodeOptions, RejectReason, SourceMeta};
use super::dedup::IdClaims;
use super::ledger::{BatchId, Ledger, Limits, Seen, TopicPartition};
use crate::config::{Config, DeadLetterPolicy, Subscription};
use crate::metrics::{Metrics, TopicLabel};
use crate::store::{Store, StoreError, WriteTicket};
use context::IngestContext;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

/// State shared by the poll loop and the callbacks (same thread, so the locks never contend;
/// they exist because the callbacks only get `&self`). Never held across a call into the
/// consumer or a wait for the store.
struct Shared {
    cfg: Config,
    store: Store,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    limits: Limits,
    ledger: Mutex<Ledger>,
    /// The store's answers for the batches in flight, in submission order (the ledger holds
    /// what they are for).
    tickets: Mutex<VecDeque<(BatchId, WriteTicket)>>,
    claims: Mutex<IdClaims>,
    /// The group's membership, told of every change of the partitions held (`[scale_out]`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Dead letters under way (set by `run`: creating the producer can fail).
    dead_letters: Mutex<Option<DeadLetterQueue>>,
    /// A failure inside a rebalance callback, reported by the poll loop.
    callback_error: Mutex<Option<IngestError>>,
    /// The positions Kafka last accepted in a synchronous commit (see `writes::drain`).
    sync_committed: Mutex<Option<crate::ingest::ledger::Positions>>,
    #[cfg(feature = "fault-injection")]
    durable_batches: std::sync::atomic::AtomicU64,
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
        let limits = Limits {
            max_events: cfg.batching.max_batch_events().get(),
            max_delay: cfg.batching.max_batch_delay(),
            max_inflight_bytes: cfg.batching.max_inflight_bytes().get(),
        };
        Ingest {
            shared: Arc::new(Shared {
                cfg,
                store,
                metrics,
                shutdown,
                limits,
                ledger: Mutex::new(Ledger::new()),
                tickets: Mutex::new(VecDeque::new()),
                claims: Mutex::new(IdClaims::default()),
                cluster: None,
                dead_letters: Mutex::new(None),
                callback_error: Mutex::new(None),
                sync_committed: Mutex::new(None),
                #[cfg(feature = "fault-injection")]
                durable_batches: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Tells `cluster` the partitions held after every rebalance, and keeps the history of
    /// each partition it is given (restored from its own stored position or the start of
    /// the log: see [`Ledger::restoring_history`]).
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Ingest {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.cluster = Some(cluster);
            shared.ledger = Mutex::new(Ledger::restoring_history());
        }
        self
    }

    fn consumer(&self) -> Result<BaseConsumer<IngestContext>, IngestError> {
        crate::tune_c_allocator();
        let mut cc = rdkafka::ClientConfig::new();
        for (k, v) in self.shared.cfg.kafka.consumer_properties() {
            cc.set(k, v);
        }
        cc.set("statistics.interval.ms", "1000");
        let consumer: BaseConsumer<IngestContext> = cc
            .create_with_context(IngestContext::new(self.shared.clone()))
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
        let mut poll = PollLoop {
            shared,
            consumer: &consumer,
            opts: DecodeOptions {
                max_message_bytes: shared.cfg.kafka.max_message_bytes as usize,
                max_future_skew: Duration::from_secs(shared.cfg.kafka.max_future_skew_s),
                default_org_id: None,
                org_id_header: shared.cfg.kafka.org_id_header.clone(),
                now: chrono::Utc::now(),
            },
            watermarks_read: Instant::now(),
        };
        let result = poll.run();
        // Shutdown (or a fatal error): a dead letter under way gets a moment; one that is not
        // delivered keeps its partition at the record, which is read again on the next start.
        let delivered = shared
            .dead_letters
            .lock()
            .as_mut()
            .map(|d| d.shutdown(Duration::from_secs(2)))
            .unwrap_or_default();
        for (tp, next) in delivered {
            shared
                .ledger
                .lock()
                .dead_letter_delivered(&tp, next, Instant::now());
        }
        // Write what was read, commit, leave the group.
        let drained = writes::drain(shared, &consumer, true);
        let paused = shared.ledger.lock().paused();
        if paused {
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.resume(&a);
            }
        }
        drop(consumer);
        result.and(drained)
    }
}

/// The poll loop: one message at a time, then the timers.
struct PollLoop<'a> {
    shared: &'a Shared,
    consumer: &'a BaseConsumer<IngestContext>,
    opts: DecodeOptions,
    /// When the high watermarks of partitions held for a dead letter were last read.
    watermarks_read: Instant,
}

impl PollLoop<'_> {
    fn run(&mut self) -> Result<(), IngestError> {
        let shared = self.shared;
        while !shared.shutdown.is_cancelled() {
            let wait = shared
                .ledger
                .lock()
                .poll_wait(Instant::now(), &shared.limits);
            match self.consumer.poll(wait) {
                Some(Ok(msg)) => self.on_message(&msg)?,
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consume error (retrying)");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            self.tick()?;
        }
        Ok(())
    }

    /// After every poll: submits a due batch, handles finished writes, backpressure, commit
    /// confirmation and dead letters.
    fn tick(&mut self) -> Result<(), IngestError> {
        let shared = self.shared;
        if let Some(e) = shared.callback_error.lock().take() {
            return Err(e);
        }
        let due = shared.ledger.lock().due(Instant::now(), &shared.limits);
        if due {
            writes::flush(shared);
        }
        writes::reap(shared, self.consumer, false)?;
        writes::backpressure(shared, self.consumer)?;
        writes::confirm_commits(shared, self.consumer);
        // Only a scaled-out instance restores (this runs after every message).
        if let Some(cluster) = &shared.cluster {
            let restoring = shared.ledger.lock().restore_lag();
            cluster.set_restoring(&restoring);
            shared.metrics.set_restoring(restoring);
        }
        blocked::release_dead_lettered(shared, self.consumer, &mut self.watermarks_read)
    }

    fn on_message(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), IngestError> {
        let shared = self.shared;
        let tp = (msg.topic().to_string(), msg.partition());
        if blocked::is_dead_letter_topic(&shared.cfg, &tp.0) {
            // A regex subscription can match our own dead-letter topics; re-ingesting dead
            // letters would loop them forever.
            return Ok(());
        }
        // Not ours (fetched before a revoke: the new owner reads it), or fetched before a
        // dead letter's pause took effect (read again once it is delivered).
        let seen = shared.ledger.lock().observe(&tp, msg.offset());
        let Seen::Read { gap_from } = seen else {
            return Ok(());
        };
        if let Some(expected) = gap_from {
            blocked::count_deleted(shared, self.consumer, &tp, expected, msg.offset());
        }
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
        self.opts.now = chrono::Utc::now();
        self.opts.default_org_id = shared.cfg.kafka.default_org_id(msg.topic());
        let topic_label = TopicLabel {
            topic: tp.0.clone(),
        };
        shared
            .metrics
            .events_consumed
            .get_or_create(&topic_label)
            .inc();
        let id_conflicts = shared.cfg.kafka.dead_letter.id_conflicts;
        let decoded = decode(msg.payload(), &meta, &self.opts)
            .and_then(|ev| shared.claims.lock().check(&shared.store, id_conflicts, ev));
        match decoded {
            Ok(ev) => {
                if ev.dropped_fields > 0 {
                    shared
                        .metrics
                        .events_fields_dropped
                        .get_or_create(&topic_label)
                        .inc_by(ev.dropped_fields as u64);
                }
                let size = msg.payload().map(|p| p.len()).unwrap_or(0) + 200;
                let now = Instant::now();
                shared
                    .ledger
                    .lock()
                    .record(&tp, msg.offset(), ev, size, now);
                Ok(())
            }
            Err(reason) => self.on_rejected(msg, tp, headers, reason),
        }
    }

    /// An invalid record, handled by `kafka.dead_letter.policy`.
    fn on_rejected(
        &mut self,
        msg: &BorrowedMessage<'_>,
        tp: TopicPartition,
        headers: Vec<(String, Option<Vec<u8>>)>,
        reason: RejectReason,
    ) -> Result<(), IngestError> {
        let shared = self.shared;
        match shared.cfg.kafka.dead_letter.policy {
            DeadLetterPolicy::Topic => {
                // The partition never moves past a record whose dead letter is not
                // acknowledged; while it waits, it waits alone (paused), and the others go on.
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
                    shared.ledger.lock().block(&tp, msg.offset());
                    blocked::pause_partition(self.consumer, &tp);
                    return Ok(());
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
                writes::flush(shared);
                writes::reap(shared, self.consumer, true)?;
                return Err(IngestError::BadMessage {
                    topic: tp.0,
                    partition: tp.1,
                    offset: msg.offset(),
                    reason: reason.to_string(),
                });
            }
        }
        shared
            .ledger
            .lock()
            .reject_passed(&tp, msg.offset(), Instant::now());
        Ok(())
    }
}
