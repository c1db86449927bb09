//! The exactly-once bookkeeping of the consumer group, without Kafka or the store, so that a
//! unit test can drive every rule (Vector's kafka source keeps its rules the same way).
//!
//! It owns the open batch (events read, the next offset per partition), the batches in
//! flight in submission order (with what to write again if one fails), the durably stored
//! positions, the assigned partitions (and where each assignment started), the partitions
//! held at a record whose dead letter is not delivered, the backpressure pause, and when to
//! read Kafka's committed offsets back. The Kafka shell (`consumer`) only translates between
//! librdkafka, the store and these methods; time is passed in.
//!
//! The rules: a position is the NEXT offset to read (Kafka's committed offset means the
//! same); no position advances past a failed batch, and the batches behind it are written
//! again in order; a revoked partition's position is not committed by this instance
//! afterwards; a blocked partition stays at its record until the dead letter is delivered;
//! records before an assignment's stored position are ignored; confirming Kafka's copy only
//! re-commits where Kafka is behind, never backwards.
//!
//! In a scaled-out group ([`Ledger::restoring_history`]) the owner of a partition holds its
//! whole history: a partition assigned without a stored position is read from the start of
//! the log, and one whose stored position is behind the group's committed offset (another
//! instance read it meanwhile) is *restoring* from its own position until it reaches that
//! offset. Nothing of a partition is committed to Kafka until its committed offset has been
//! read and, if it was restoring, until it caught up: its lower positions would move the
//! group's offset back.

use super::decode::DecodedEvent;
use super::dedup::EVENT_ID_SCOPE;
use crate::store::WriteBatch;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

pub type TopicPartition = (String, i32);
/// Next offset to read, per partition.
pub type Positions = BTreeMap<TopicPartition, i64>;

/// Batches kept in flight at once; the poll loop then waits for the store.
pub const MAX_INFLIGHT_BATCHES: usize = 4;
/// How long after an asynchronous offset commit (or an assignment) Kafka's copy is read back
/// and, if it is behind the store, committed again.
pub const COMMIT_CHECK: Duration = Duration::from_secs(5);
/// The longest single poll, so that timers are looked at.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// When the open batch is submitted, and how much may be in flight.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
    pub max_delay: Duration,
    pub max_inflight_bytes: usize,
}

/// Identifies a submitted batch (in submission order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchId(u64);

/// A batch to submit: its events and positions as one atomic store write.
pub struct Batch {
    pub id: BatchId,
    pub write: WriteBatch,
    pub events: usize,
}

/// A batch that is durable: what to count.
pub struct Durable {
    pub events: Vec<DecodedEvent>,
    pub offsets: Positions,
    pub newest_event_ms: i64,
    pub submitted: Instant,
}

/// What the shell does with a record it fetched, before decoding it.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not ours (revoked, or fetched before an assignment's position) or its partition waits
    /// for a dead letter: read again by whoever owns it, from the stored position.
    Skip,
    /// Read it; `gap_from` is the offset expected instead when offsets were skipped (more
    /// than one control record), for the shell to tell whether the broker deleted them.
    Read { gap_from: Option<i64> },
}

/// Events read but not yet submitted.
#[derive(Default)]
struct Open {
    events: Vec<DecodedEvent>,
    bytes: usize,
    offsets: Positions,
    newest_event_ms: i64,
    first_at: Option<Instant>,
}

/// A submitted batch, kept until durable: the events rather than a copy of the rows (the
/// rows are built again only for a retry, which is rare).
struct InFlight {
    id: BatchId,
    events: Vec<DecodedEvent>,
    offsets: Positions,
    bytes: usize,
    newest_event_ms: i64,
    submitted: Instant,
}

/// A partition held at a record whose dead letter is not delivered.
struct Blocked {
    offset: i64,
    /// Its high watermark as read from the broker (librdkafka's statistics stop updating it
    /// while the partition is paused).
    high: Option<i64>,
}

#[derive(Default)]
pub struct Ledger {
    open: Open,
    inflight: VecDeque<InFlight>,
    /// Batches to write again, in order: a failed one and every one submitted after it.
    retry: VecDeque<InFlight>,
    next_id: u64,
    /// Next offset per partition as durably stored.
    stored: HashMap<TopicPartition, i64>,
    /// Assigned partitions and the position each assignment started at.
    assigned: HashMap<TopicPartition, Option<i64>>,
    /// The next offset expected per partition since the last (re)assignment.
    read_next: HashMap<TopicPartition, i64>,
    blocked: HashMap<TopicPartition, Blocked>,
    paused: bool,
    /// When positions were last committed asynchronously (or partitions assigned), until
    /// reading them back found Kafka caught up.
    unconfirmed_commit: Option<Instant>,
    /// Partitions' histories are restored (see the module's notes).
    restores: bool,
    /// Assigned partitions whose committed offset has not been read since (restores only).
    unverified: BTreeSet<TopicPartition>,
    /// Partitions restoring, with the group's committed offset they restore to.
    restoring: BTreeMap<TopicPartition, i64>,
    /// When the committed offsets of `unverified` were last asked for.
    verify_asked: Option<Instant>,
}

/// How often the committed offsets of newly assigned partitions are asked for until they
/// are read (restores only).
const VERIFY_RETRY: Duration = Duration::from_secs(1);

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// A ledger of a scaled-out group's instance: partitions' histories are restored.
    pub fn restoring_history() -> Ledger {
        Ledger {
            restores: true,
            ..Ledger::default()
        }
    }

    /// Whether partitions' histories are restored (a partition without a stored position
    /// starts at the beginning of its log).
    pub fn restores(&self) -> bool {
        self.restores
    }

    /// Partitions restoring and how many offsets each still has to read (its target minus
    /// its stored position).
    pub fn restore_lag(&self) -> Vec<(TopicPartition, i64)> {
        self.restoring
            .iter()
            .map(|(tp, target)| {
                let at = self.stored.get(tp).copied().unwrap_or(0);
                (tp.clone(), (target - at).max(0))
            })
            .collect()
    }

    /// Whether `tp` may be committed to Kafka now.
    fn may_commit(&self, tp: &TopicPartition) -> bool {
        self.assigned.contains_key(tp)
            && !self.unverified.contains(tp)
            && !self.restoring.contains_key(tp)
    }

    pub fn is_assigned(&self, tp: &TopicPartition) -> bool {
        self.assigned.contains_key(tp)
    }

    pub fn assigned_count(&self) -> usize {
        self.assigned.len()
    }

    /// The partitions held now.
    pub fn assigned(&self) -> impl Iterator<Item = &TopicPartition> {
        self.assigned.keys()
    }

    /// Whether a fetched record is read, and whether offsets were skipped before it.
    pub fn observe(&mut self, tp: &TopicPartition, offset: i64) -> Seen {
        let Some(start) = self.assigned.get(tp) else {
            return Seen::Skip;
        };
        if start.is_some_and(|s| offset < s) || self.blocked.contains_key(tp) {
            return Seen::Skip;
        }
        let expected = match self.read_next.get(tp) {
            Some(&n) => Some(n),
            None => self.stored.get(tp).copied(),
        };
        self.read_next.insert(tp.clone(), offset + 1);
        // Contiguous, or one control record (a transaction marker) in between.
        Seen::Read {
            gap_from: expected.filter(|&e| offset > e + 1),
        }
    }

    /// Adds a decoded event (`bytes` is its share of the in-flight budget).
    pub fn record(
        &mut self,
        tp: &TopicPartition,
        offset: i64,
        event: DecodedEvent,
        bytes: usize,
        now: Instant,
    ) {
        let o = &mut self.open;
        o.newest_event_ms = o.newest_event_ms.max(event.timestamp.timestamp_millis());
        o.events.push(event);
        o.bytes += bytes;
        Self::advance(o, tp, offset + 1, now);
    }

    /// A rejected record whose dead letter was delivered, or that was skipped: the position
    /// moves past it. Refused (false) while the partition waits for a dead letter.
    pub fn reject_passed(&mut self, tp: &TopicPartition, offset: i64, now: Instant) -> bool {
        if self.blocked.contains_key(tp) {
            return false;
        }
        Self::advance(&mut self.open, tp, offset + 1, now);
        true
    }

    fn advance(open: &mut Open, tp: &TopicPartition, next: i64, now: Instant) {
        // The partition is usually known already: no key copy.
        match open.offsets.get_mut(tp) {
            Some(n) => *n = next,
            None => {
                open.offsets.insert(tp.clone(), next);
            }
        }
        open.first_at.get_or_insert(now);
    }

    /// Holds `tp` at `offset` until [`Ledger::dead_letter_delivered`].
    pub fn block(&mut self, tp: &TopicPartition, offset: i64) {
        self.blocked
            .insert(tp.clone(), Blocked { offset, high: None });
    }

    pub fn is_blocked(&self, tp: &TopicPartition) -> bool {
        !self.blocked.is_empty() && self.blocked.contains_key(tp)
    }

    pub fn blocked(&self) -> impl Iterator<Item = &TopicPartition> {
        self.blocked.keys()
    }

    pub fn set_blocked_high(&mut self, tp: &TopicPartition, high: i64) {
        if let Some(b) = self.blocked.get_mut(tp) {
            b.high = Some(high);
        }
    }

    /// The dead letter of `tp`'s record was delivered: its position moves to `next`.
    pub fn dead_letter_delivered(&mut self, tp: &TopicPartition, next: i64, now: Instant) {
        if let Some(b) = self.blocked.remove(tp) {
            debug_assert_eq!(b.offset + 1, next, "dead letter of {tp:?}");
        }
        Self::advance(&mut self.open, tp, next, now);
    }

    /// How long the poll loop may wait before the open batch is due.
    pub fn poll_wait(&self, now: Instant, limits: &Limits) -> Duration {
        match self.open.first_at {
            Some(t) => limits
                .max_delay
                .saturating_sub(now.saturating_duration_since(t))
                .min(MAX_POLL_WAIT),
            None => MAX_POLL_WAIT,
        }
    }

    /// Whether the open batch should be submitted now.
    pub fn due(&self, now: Instant, limits: &Limits) -> bool {
        let o = &self.open;
        o.events.len() >= limits.max_events
            || o.bytes >= limits.max_inflight_bytes / MAX_INFLIGHT_BATCHES
            || o.first_at
                .is_some_and(|t| now.saturating_duration_since(t) >= limits.max_delay)
    }

    /// Whether the open batch or a batch in flight holds anything read from `tps`.
    pub fn holds_any(&self, tps: &[TopicPartition]) -> bool {
        let open = tps.iter().any(|tp| self.open.offsets.contains_key(tp));
        open || self
            .inflight
            .iter()
            .chain(&self.retry)
            .any(|f| tps.iter().any(|tp| f.offsets.contains_key(tp)))
    }

    /// The open batch as a store write (events and positions together), now in flight.
    pub fn take(&mut self, now: Instant) -> Option<Batch> {
        if self.open.offsets.is_empty() {
            return None;
        }
        let open = std::mem::take(&mut self.open);
        let id = BatchId(self.next_id);
        self.next_id += 1;
        let batch = Batch {
            id,
            write: write_batch(&open.events, &open.offsets),
            events: open.events.len(),
        };
        self.inflight.push_back(InFlight {
            id,
            events: open.events,
            offsets: open.offsets,
            bytes: open.bytes,
            newest_event_ms: open.newest_event_ms,
            submitted: now,
        });
        Some(batch)
    }

    /// Batches and bytes in flight.
    pub fn inflight_load(&self) -> (usize, usize) {
        let n = self.inflight.len();
        (n, self.inflight.iter().map(|f| f.bytes).sum())
    }

    /// Whether so much is in flight that reading should stop.
    pub fn over_limit(&self, limits: &Limits) -> bool {
        let (n, bytes) = self.inflight_load();
        n >= MAX_INFLIGHT_BATCHES || bytes >= limits.max_inflight_bytes
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// The oldest batch in flight is durable (the store answers in submission order). After a
    /// failure it is written again instead (the store refused it): `None`.
    pub fn on_durable(&mut self, id: BatchId) -> Option<Durable> {
        let f = self.pop(id)?;
        if !self.retry.is_empty() {
            // Cannot happen (the store refuses writes behind a failed one); if it did,
            // writing the batch again is harmless: inserts skip stored ids.
            self.retry.push_back(f);
            return None;
        }
        Some(self.durable(f))
    }

    /// The oldest batch in flight failed: it and every later one are written again, in order.
    pub fn on_failed(&mut self, id: BatchId) {
        if let Some(f) = self.pop(id) {
            self.retry.push_back(f);
        }
    }

    fn pop(&mut self, id: BatchId) -> Option<InFlight> {
        match self.inflight.front() {
            Some(f) if f.id == id => self.inflight.pop_front(),
            _ => {
                debug_assert!(false, "batch {id:?} is not the oldest in flight");
                None
            }
        }
    }

    /// Whether failed batches wait to be written again.
    pub fn failed(&self) -> bool {
        !self.retry.is_empty()
    }

    /// The positions the batches to write again hold (committed once they are durable).
    pub fn retry_positions(&self) -> Positions {
        let mut p = Positions::new();
        for f in &self.retry {
            p.extend(f.offsets.iter().map(|(k, v)| (k.clone(), *v)));
        }
        p
    }

    /// The next failed batch to write again, as a store write.
    pub fn next_retry(&self) -> Option<(WriteBatch, usize)> {
        let f = self.retry.front()?;
        Some((write_batch(&f.events, &f.offsets), f.events.len()))
    }

    /// The run stops without the failed batches written: nothing past them is stored, so
    /// they are read again on the next start.
    pub fn give_up(&mut self) {
        self.retry.clear();
    }

    /// The batch from [`Ledger::next_retry`] is durable now.
    pub fn on_retried(&mut self) -> Option<Durable> {
        let f = self.retry.pop_front()?;
        Some(self.durable(f))
    }

    fn durable(&mut self, f: InFlight) -> Durable {
        for (tp, next) in &f.offsets {
            self.stored.insert(tp.clone(), *next);
            if self.restoring.get(tp).is_some_and(|target| next >= target) {
                self.restoring.remove(tp);
            }
        }
        Durable {
            events: f.events,
            offsets: f.offsets,
            newest_event_ms: f.newest_event_ms,
            submitted: f.submitted,
        }
    }

    /// Of `offsets` (a durable batch's), those this instance may commit: its own partitions
    /// (not those whose committed offset is unread or that are restoring).
    pub fn committable(&self, offsets: &Positions) -> Positions {
        offsets
            .iter()
            .filter(|(tp, _)| self.may_commit(tp))
            .map(|(tp, o)| (tp.clone(), *o))
            .collect()
    }

    /// The consumer lag of `tp` given librdkafka's high watermark.
    pub fn lag(&self, tp: &TopicPartition, hi_offset: i64) -> Option<i64> {
        let pos = self.stored.get(tp)?;
        let high = match self.blocked.get(tp).and_then(|b| b.high) {
            Some(h) => h.max(hi_offset),
            None => hi_offset,
        };
        Some((high - pos).max(0))
    }

    /// Partitions assigned, with the positions the store holds (`stored`, read at
    /// assignment). Returns where each should start; a partition without one starts where
    /// librdkafka says (the committed offset, then `auto.offset.reset`).
    pub fn assign(
        &mut self,
        tps: &[TopicPartition],
        stored: &[(TopicPartition, i64)],
        now: Instant,
    ) -> Positions {
        for (tp, next) in stored {
            self.stored.insert(tp.clone(), *next);
        }
        let mut start = Positions::new();
        for tp in tps {
            let at = self.stored.get(tp).copied();
            if let Some(at) = at {
                start.insert(tp.clone(), at);
            }
            self.assigned.insert(tp.clone(), at);
            if self.restores {
                self.unverified.insert(tp.clone());
                self.restoring.remove(tp);
            }
        }
        self.verify_asked = None;
        self.read_next.clear();
        // A run killed after a durable write and before its Kafka commit leaves Kafka
        // behind the store; with nothing new to read this instance would never commit.
        self.unconfirmed_commit = Some(now);
        start
    }

    /// Partitions revoked (flush and wait for what [`Ledger::holds_any`] first).
    pub fn revoke(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            self.assigned.remove(tp);
            self.unverified.remove(tp);
            self.restoring.remove(tp);
        }
        // A dead letter of a revoked partition is sent by its next owner.
        let assigned = &self.assigned;
        self.blocked.retain(|tp, _| assigned.contains_key(tp));
        self.read_next.clear();
    }

    /// The stored positions of the partitions this instance owns and may commit (not those
    /// whose committed offset is unread or that are restoring).
    pub fn positions(&self) -> Positions {
        self.stored
            .iter()
            .filter(|(tp, _)| self.may_commit(tp))
            .map(|(tp, o)| (tp.clone(), *o))
            .collect()
    }

    /// Positions were committed to Kafka asynchronously.
    pub fn committed_async(&mut self, now: Instant) {
        self.unconfirmed_commit = Some(now);
    }

    /// Whether Kafka's committed offsets should be read back now: a while after a commit,
    /// and at once for newly assigned partitions whose committed offset is unread.
    pub fn commit_check_due(&self, now: Instant) -> bool {
        let verify = !self.unverified.is_empty()
            && self
                .verify_asked
                .is_none_or(|t| now.saturating_duration_since(t) >= VERIFY_RETRY);
        verify
            || self
                .unconfirmed_commit
                .is_some_and(|t| now.saturating_duration_since(t) >= COMMIT_CHECK)
    }

    /// The partitions whose committed offsets to read back: the committable ones and the
    /// unverified ones.
    pub fn offsets_to_check(&mut self, now: Instant) -> Positions {
        if !self.unverified.is_empty() {
            self.verify_asked = Some(now);
        }
        let mut out = self.positions();
        for tp in &self.unverified {
            out.insert(tp.clone(), self.stored.get(tp).copied().unwrap_or(0));
        }
        out
    }

    /// Kafka's committed offsets were read back (`None`: the read failed; a partition missing
    /// from the map has none): returns the positions to commit again, where Kafka is behind.
    pub fn on_commit_read(
        &mut self,
        committed: Option<&HashMap<TopicPartition, i64>>,
        now: Instant,
    ) -> Positions {
        let Some(committed) = committed else {
            self.unconfirmed_commit = Some(now);
            return Positions::new();
        };
        // Newly assigned partitions: restoring while behind the group's committed offset.
        for tp in std::mem::take(&mut self.unverified) {
            let at = self.stored.get(&tp).copied().unwrap_or(0);
            match committed.get(&tp) {
                Some(&c) if c > at => {
                    self.restoring.insert(tp, c);
                }
                _ => {}
            }
        }
        let behind: Positions = self
            .positions()
            .into_iter()
            .filter(|(tp, next)| committed.get(tp).is_none_or(|c| c < next))
            .collect();
        self.unconfirmed_commit = if behind.is_empty() { None } else { Some(now) };
        behind
    }
}

/// The store write for `events`, with the partitions' next offsets.
fn write_batch(events: &[DecodedEvent], offsets: &Positions) -> WriteBatch {
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

#[cfg(test)]
mod tests;
