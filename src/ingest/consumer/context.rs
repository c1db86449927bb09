//! The librdkafka callbacks: statistics (consumer lag), logging, and rebalances, which
//! translate assignments and revocations into ledger calls (Vector's source keeps them thin
//! the same way). A revocation drains first: what was read from the partitions is durable and
//! committed before they are let go.

use super::{writes, Shared};
use crate::ingest::ledger::TopicPartition;
use crate::metrics::{KindLabel, PartitionLabel};
use crate::store::Store;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub struct IngestContext {
    shared: Arc<Shared>,
}

impl IngestContext {
    pub(super) fn new(shared: Arc<Shared>) -> IngestContext {
        IngestContext { shared }
    }
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        let metrics = &self.shared.metrics;
        let ledger = self.shared.ledger.lock();
        let mut total = 0u64;
        for (topic, t) in statistics.topics {
            for (p, part) in t.partitions {
                if p < 0 || part.hi_offset < 0 {
                    continue;
                }
                let Some(lag) = ledger.lag(&(topic.clone(), p), part.hi_offset) else {
                    continue;
                };
                total += lag as u64;
                metrics
                    .partition_lag
                    .get_or_create(&PartitionLabel {
                        topic: topic.clone(),
                        partition: p.to_string(),
                    })
                    .set(lag);
            }
        }
        drop(ledger);
        metrics.total_lag.store(total, Ordering::Relaxed);
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
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use RDKafkaRespErr::*;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let kind = match err {
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => "assign",
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => "revoke",
            _ => "error",
        };
        let kind = KindLabel { kind: kind.into() };
        self.shared.metrics.rebalances.get_or_create(&kind).inc();
        match err {
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl, cooperative),
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl, cooperative),
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

impl IngestContext {
    /// Starts every partition at the position the store holds; without one, librdkafka falls
    /// back to the committed offset, then `auto.offset.reset`.
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList, coop: bool) {
        let tps = partitions(tpl);
        let stored = stored_positions(&self.shared.store, &tps);
        let (start, from_beginning) = {
            let mut ledger = self.shared.ledger.lock();
            let start = ledger.assign(&tps, &stored, Instant::now());
            // A scaled-out group's instance holds the whole history of what it is given.
            let from_beginning: Vec<&TopicPartition> = if ledger.restores() {
                tps.iter().filter(|tp| !start.contains_key(*tp)).collect()
            } else {
                Vec::new()
            };
            let n = ledger.assigned_count() as i64;
            self.shared.metrics.assigned_partitions.set(n);
            if let Some(cluster) = &self.shared.cluster {
                cluster.set_local(ledger.assigned().cloned());
            }
            (start, from_beginning)
        };
        for ((topic, p), next) in &start {
            let _ = tpl.set_partition_offset(topic, *p, Offset::Offset(*next));
        }
        for (topic, p) in from_beginning {
            let _ = tpl.set_partition_offset(topic, *p, Offset::Beginning);
        }
        let r = if coop {
            consumer.incremental_assign(tpl)
        } else {
            consumer.assign(tpl)
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "assigning partitions failed");
        }
        tracing::info!(partitions = %describe(&tps), cooperative = coop, "partitions assigned at their stored positions");
    }

    /// Finishes and durably writes everything read so far before letting go.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, coop: bool) {
        let lost = consumer.assignment_lost();
        if let Err(e) = writes::drain(&self.shared, consumer, !lost) {
            tracing::error!(error = %e, "flushing before revoke failed");
            *self.shared.callback_error.lock() = Some(e);
        }
        let tps = partitions(tpl);
        {
            let mut ledger = self.shared.ledger.lock();
            if ledger.holds_any(&tps) {
                // Only after a failed drain: the next owner reads them again.
                tracing::error!(partitions = %describe(&tps),
                    "revoking partitions with records not yet durable");
            }
            ledger.revoke(&tps);
            let n = ledger.assigned_count() as i64;
            self.shared.metrics.assigned_partitions.set(n);
            if let Some(cluster) = &self.shared.cluster {
                cluster.set_local(ledger.assigned().cloned());
            }
            // A dead letter of a revoked partition is sent by its next owner (the partition
            // did not move past the record).
            if let Some(d) = self.shared.dead_letters.lock().as_mut() {
                d.forget(|tp| ledger.is_assigned(tp));
            }
        }
        let r = if coop {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "unassigning partitions failed");
        }
        tracing::info!(partitions = %describe(&tps), lost, "partitions revoked after a durable flush");
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// The positions the store holds for `tps` (a partition it cannot read is logged and left to
/// what this instance knows, or to librdkafka).
fn stored_positions(store: &Store, tps: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
    let mut stored = Vec::new();
    for (topic, p) in tps {
        match store.offset(topic, *p) {
            Ok(Some(next)) => stored.push(((topic.clone(), *p), next)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, topic, partition = p, "cannot read the stored position");
            }
        }
    }
    stored
}

fn describe(tps: &[TopicPartition]) -> String {
    tps.iter()
        .map(|(topic, p)| format!("{topic}[{p}]"))
        .collect::<Vec<_>>()
        .join(",")
}
