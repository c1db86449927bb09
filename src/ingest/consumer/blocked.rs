//! Partitions and offsets that need the broker's word: a partition held at a record whose
//! dead letter is not delivered (paused, then sought past it and resumed once it is), and
//! offsets skipped because the broker deleted them before they were read.

use super::{context::IngestContext, IngestError, Shared};
use crate::config::{Config, DeadLetterPolicy};
use crate::ingest::ledger::TopicPartition;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Pauses one partition (its dead letter is not delivered yet).
pub(super) fn pause_partition(consumer: &BaseConsumer<IngestContext>, tp: &TopicPartition) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.0, tp.1);
    if let Err(e) = consumer.pause(&tpl) {
        // Its records are skipped by the poll loop anyway, and read again after the seek.
        tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot pause the partition");
    }
}

/// Moves dead letters on; a partition whose dead letter was delivered is sought past the
/// record and resumed. Also keeps the lag of waiting partitions current.
pub(super) fn release_dead_lettered(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    watermarks_read: &mut Instant,
) -> Result<(), IngestError> {
    let delivered = match shared.dead_letters.lock().as_mut() {
        Some(d) => d.progress(),
        None => return Ok(()),
    };
    for (tp, next) in delivered {
        resume_past(shared, consumer, tp, next)?;
    }
    let blocked: Vec<TopicPartition> = shared.ledger.lock().blocked().cloned().collect();
    if !blocked.is_empty() && watermarks_read.elapsed() >= Duration::from_secs(2) {
        *watermarks_read = Instant::now();
        for tp in blocked {
            if let Ok((_, high)) =
                consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_millis(500))
            {
                shared.ledger.lock().set_blocked_high(&tp, high);
            }
        }
    }
    Ok(())
}

/// Seeks `tp` to `next`, past its dead-lettered record, and resumes it.
fn resume_past(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    tp: TopicPartition,
    next: i64,
) -> Result<(), IngestError> {
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
        shared
            .ledger
            .lock()
            .dead_letter_delivered(&tp, next, Instant::now());
        return Err(IngestError::Kafka {
            what: format!(
                "seeking topic '{}' partition {} to offset {next} after its dead letter was delivered",
                tp.0, tp.1
            ),
            source,
        });
    }
    // While backpressure holds every partition, this one waits with them (the backpressure
    // resume takes it along, as it is no longer blocked).
    if !shared.ledger.lock().paused() {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        if let Err(e) = consumer.resume(&tpl) {
            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot resume the partition");
        }
    }
    shared
        .ledger
        .lock()
        .dead_letter_delivered(&tp, next, Instant::now());
    Ok(())
}

/// Whether `topic` is where this connector sends dead letters (of any source topic).
pub(super) fn is_dead_letter_topic(cfg: &Config, topic: &str) -> bool {
    let dl = &cfg.kafka.dead_letter;
    dl.policy == DeadLetterPolicy::Topic
        && (dl.topic.as_deref() == Some(topic)
            || (dl.topic.is_none()
                && !dl.topic_suffix.is_empty()
                && topic.ends_with(&dl.topic_suffix)))
}

/// Offsets were skipped before `offset` (`expected` was next, says the ledger). If the broker
/// deleted them before this connector read them (retention, or a `DeleteRecords`: the
/// consumer then jumps past, librdkafka resets an out-of-range position to the log start),
/// they are gone from Kafka: counted in `streamtally_events_skipped_total{reason="retention"}`
/// and logged as an error, never passed over silently. Other jumps (a transaction marker, an
/// aborted transaction, compaction) leave the log start at or below `expected`.
pub(super) fn count_deleted(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    tp: &TopicPartition,
    expected: i64,
    offset: i64,
) {
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
