//! Store writes and Kafka commits: submitting the ledger's batches, handling the store's
//! answers in submission order (writing failed batches again, in order), committing durable
//! positions to Kafka and confirming that Kafka kept them, and pausing reads while too much
//! is in flight.

use super::{context::IngestContext, IngestError, Shared};
use crate::ingest::dedup::count_durable;
use crate::ingest::ledger::{BatchId, Durable, Positions};
use crate::store::{CommitInfo, StoreError};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the poll loop waits for the store to make room before it pauses the partitions.
/// A pause purges librdkafka's prefetched messages (a resume fetches them again), so the
/// ordinary case, a store a group commit behind, is a wait; a pause is for a store that stalls.
/// Measured (ingest bench, 200k events on Tansu): pausing at every 4th batch (then polling up
/// to 100 ms per loop) left the store's committer idle 56% of the time: 4.2k events/s; waiting
/// here instead: 8.2k events/s.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// How long reading Kafka's committed offsets back may block the poll loop.
const COMMIT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Submits the open batch (if any) to the store.
pub(super) fn flush(shared: &Shared) {
    let Some(batch) = shared.ledger.lock().take(Instant::now()) else {
        return;
    };
    // A refused submission comes back as a failed ticket and is retried in order by `reap`.
    let ticket = shared.store.submit(batch.write);
    shared.metrics.batch_size.observe(batch.events as f64);
    shared.tickets.lock().push_back((batch.id, ticket));
}

/// Handles finished writes in submission order; `block` waits for all of them. After a
/// failure every later batch is waited for too (the store refuses them until
/// `resume_writes`), then all of them are written again in order.
pub(super) fn reap(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    block: bool,
) -> Result<(), IngestError> {
    let mut commit = Positions::new();
    while let Some((id, result)) = next_answer(shared, block) {
        on_answer(shared, id, result, &mut commit);
    }
    let failed = shared.ledger.lock().failed();
    if failed {
        let retried = {
            let ledger = shared.ledger.lock();
            ledger.committable(&ledger.retry_positions())
        };
        if let Err(e) = recover(shared) {
            shared.ledger.lock().give_up();
            return Err(e);
        }
        commit.extend(retried);
    }
    if !commit.is_empty() {
        let _ = commit_to_kafka(consumer, &commit, CommitMode::Async);
        shared.ledger.lock().committed_async(Instant::now());
    }
    Ok(())
}

/// The store's answer for the oldest batch in flight, if it is there (or must be waited for).
fn next_answer(shared: &Shared, block: bool) -> Option<(BatchId, Result<CommitInfo, StoreError>)> {
    let mut q = shared.tickets.lock();
    let ready = q.front_mut()?.1.try_take();
    match ready {
        Some(r) => q.pop_front().map(|(id, _)| (id, r)),
        None if block || shared.ledger.lock().failed() => {
            q.pop_front().map(|(id, t)| (id, t.wait()))
        }
        None => None,
    }
}

fn on_answer(
    shared: &Shared,
    id: BatchId,
    result: Result<CommitInfo, StoreError>,
    commit: &mut Positions,
) {
    match result {
        Ok(info) => {
            // `None` behind a failed batch: it is written again with it.
            let Some(durable) = shared.ledger.lock().on_durable(id) else {
                return;
            };
            shared
                .metrics
                .flush_seconds
                .observe(durable.submitted.elapsed().as_secs_f64());
            record_durable(shared, &durable, &info);
            commit.extend(shared.ledger.lock().committable(&durable.offsets));
            #[cfg(feature = "fault-injection")]
            fault_after_durable(shared);
        }
        Err(e) => {
            shared.metrics.store_write_errors.inc();
            tracing::error!(error = %e, "store write failed; retrying the batch (no offset advances)");
            shared.ledger.lock().on_failed(id);
        }
    }
}

/// Counts a durable batch.
fn record_durable(shared: &Shared, durable: &Durable, info: &CommitInfo) {
    let mut claims = shared.claims.lock();
    count_durable(&shared.metrics, &mut claims, &durable.events, info);
    shared.metrics.flushed(durable.newest_event_ms);
}

/// Writes failed batches again, in order, with backoff, until they are durable.
fn recover(shared: &Shared) -> Result<(), IngestError> {
    let initial = shared.cfg.kafka.retry_backoff_initial();
    let max = shared.cfg.kafka.retry_backoff_max();
    let mut backoff = initial;
    loop {
        let Some((write, events)) = shared.ledger.lock().next_retry() else {
            return Ok(());
        };
        shared.store.resume_writes()?;
        match shared.store.submit(write).wait() {
            Ok(info) => {
                backoff = initial;
                if let Some(durable) = shared.ledger.lock().on_retried() {
                    record_durable(shared, &durable, &info);
                }
                tracing::info!(events, "store write succeeded after retry");
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

/// Flushes the open batch, waits until everything is durable, and (if `commit`) commits
/// the stored positions of the assigned partitions to Kafka synchronously.
pub(super) fn drain(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    commit: bool,
) -> Result<(), IngestError> {
    flush(shared);
    reap(shared, consumer, true)?;
    if !commit {
        return Ok(());
    }
    let positions = shared.ledger.lock().positions();
    // Already accepted as they are (the stop's own drain, then the revoke that closing the
    // consumer calls): not again. That second synchronous commit, made while librdkafka
    // closes the consumer, was seen waiting forever for an answer from librdkafka's mock
    // cluster, and with it the stop.
    let unchanged = shared.sync_committed.lock().as_ref() == Some(&positions);
    if !positions.is_empty() && !unchanged {
        // The next owner of these partitions starts from this commit (its own store has
        // no position for them), so a refused commit (rebalance in progress) is retried.
        for attempt in 0..10 {
            if commit_to_kafka(consumer, &positions, CommitMode::Sync) {
                *shared.sync_committed.lock() = Some(positions.clone());
                break;
            }
            tracing::warn!(
                attempt,
                "retrying the offset commit before letting partitions go"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Returns whether Kafka accepted the commit.
fn commit_to_kafka(
    consumer: &BaseConsumer<IngestContext>,
    offsets: &Positions,
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

/// Makes sure Kafka's copy of the positions catches up even when the connector then goes
/// idle. Commits after each durable batch are asynchronous, and a commit the broker refuses
/// is only reported in librdkafka's log; the next batch would repair it, but an idle
/// connector has no next batch; and a run killed between a durable write and its commit
/// leaves Kafka behind with nothing left to read. So a while after the last commit or
/// assignment (the ledger says when) the committed offsets of the assigned partitions are
/// read back, and where Kafka is behind the stored position they are committed again. Kafka
/// is never moved backwards by this: a partition where it is ahead is left alone.
pub(super) fn confirm_commits(shared: &Shared, consumer: &BaseConsumer<IngestContext>) {
    let positions = {
        let mut ledger = shared.ledger.lock();
        if !ledger.commit_check_due(Instant::now()) {
            return;
        }
        ledger.offsets_to_check(Instant::now())
    };
    let committed = if positions.is_empty() {
        Some(HashMap::new())
    } else {
        read_committed(consumer, &positions)
    };
    let behind = shared
        .ledger
        .lock()
        .on_commit_read(committed.as_ref(), Instant::now());
    if behind.is_empty() {
        return;
    }
    let described = behind
        .iter()
        .map(|((topic, p), next)| format!("{topic}/{p}@{next}"))
        .collect::<Vec<_>>()
        .join(",");
    tracing::warn!(partitions = %described,
        "Kafka's committed offsets are behind the stored positions; committing them again");
    shared.metrics.kafka_commit_repairs.inc();
    let _ = commit_to_kafka(consumer, &behind, CommitMode::Async);
}

/// Kafka's committed offsets of `positions`' partitions (those it has), or `None`.
fn read_committed(
    consumer: &BaseConsumer<IngestContext>,
    positions: &Positions,
) -> Option<HashMap<(String, i32), i64>> {
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in positions.keys() {
        tpl.add_partition(topic, *p);
    }
    match consumer.committed_offsets(tpl, COMMIT_CHECK_TIMEOUT) {
        Ok(c) => Some(
            c.elements()
                .iter()
                .filter(|e| e.error().is_ok())
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the committed offsets back from Kafka (trying again later)");
            None
        }
    }
}

/// While too much is in flight, first waits up to [`ROOM_WAIT`] for the store (handling
/// each write as it finishes), then pauses every assigned partition; resumes when it drains.
pub(super) fn backpressure(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
) -> Result<(), IngestError> {
    let limits = &shared.limits;
    let waiting = Instant::now();
    let waits = || {
        let ledger = shared.ledger.lock();
        ledger.over_limit(limits) && !ledger.paused()
    };
    while waits() && waiting.elapsed() < ROOM_WAIT && !shared.shutdown.is_cancelled() {
        std::thread::sleep(Duration::from_millis(1));
        reap(shared, consumer, false)?;
    }
    let (over, paused, (n, bytes)) = {
        let ledger = shared.ledger.lock();
        (
            ledger.over_limit(limits),
            ledger.paused(),
            ledger.inflight_load(),
        )
    };
    if over != paused {
        if let Ok(a) = consumer.assignment() {
            let r = if over {
                consumer.pause(&a)
            } else {
                // Partitions waiting for a dead letter stay paused.
                let mut unblocked = TopicPartitionList::new();
                let ledger = shared.ledger.lock();
                for el in a.elements() {
                    if !ledger.is_blocked(&(el.topic().to_string(), el.partition())) {
                        unblocked.add_partition(el.topic(), el.partition());
                    }
                }
                drop(ledger);
                consumer.resume(&unblocked)
            };
            if r.is_ok() {
                shared.ledger.lock().set_paused(over);
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
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[cfg(feature = "fault-injection")]
fn fault_after_durable(shared: &Shared) {
    use std::sync::atomic::Ordering;
    // STREAMTALLY_FAULT=crash_after_store_durable:N kills the process right after the N-th
    // durable batch, before its offsets are committed to Kafka.
    let n = shared.durable_batches.fetch_add(1, Ordering::SeqCst) + 1;
    if crate::fault::armed("crash_after_store_durable", n) {
        crate::fault::kill(&format!("after durable batch {n}, before the Kafka commit"));
    }
}
