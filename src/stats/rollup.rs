//! The rollup worker: change feed -> HourlyStats, DailyStats, EventNameDaily.
//!
//! It reads feed entries from its durable cursor, applies each Event insert/update/delete to
//! in-memory bucket states (loaded from the store on first touch), and writes every changed
//! bucket together with the new cursor in ONE store write. On a failed write it forgets its
//! cache and starts again from the durable cursor, so a change is applied exactly once
//! whatever fails. A removal that a sketch cannot take makes it recompute that (org, day)
//! from the raw events, as of the feed position being applied.

use super::bucket::{day_start_us, EventFacts, RollupKey, RollupState, DAILY, HOURLY, NAMES};
use super::parts::{self, Parts, Pending};
use super::replica::{ReplicaFeed, ReplicaMsg, RowChange, SnapshotRequest, SNAPSHOT_CHUNK};
use super::{uuid_str, StatsError, ROLLUP_CURSOR};
use crate::metrics::{KindLabel, Metrics};
use crate::store::{ChangeEntry, ChangeOp, Query, Store, Value, WriteBatch, WriteTicket};
use chrono::NaiveDate;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Tuning of the rollup worker.
#[derive(Debug, Clone)]
pub struct RollupOptions {
    /// Distinct users/sessions kept exactly per bucket before switching to a sketch.
    pub exact_threshold: u64,
    /// Most feed entries applied between two writes.
    pub max_batch_changes: usize,
    /// Longest time changes wait in memory before they are written.
    pub flush_interval: Duration,
    /// Bucket states kept in memory between writes (least recently used are dropped).
    pub cache_buckets: usize,
    /// ... and at most about this many bytes of them: a bucket's exact unique-user and
    /// session sets take ~24 bytes a value (10,000 users: ~240 KB), so a count alone let a
    /// connector that runs for weeks keep every past day's buckets.
    pub cache_bytes: usize,
    /// Whole UTC days of rollups kept before today's (None: forever); older rows are
    /// deleted at start and every [`EXPIRE_EVERY`] (`store.retention.rollups_days`).
    pub keep_days: Option<u32>,
    /// Rows per source partition (topic, partition) instead of one row for every partition
    /// of the store (`scale_out.enabled`: a partition's history can then be answered by
    /// whichever instance owns it). The store must hold its rollups in this layout
    /// ([`super::rebuild::switch_layout`]).
    pub per_partition: bool,
}

/// How often the rollup worker deletes rollups older than `keep_days`.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

impl Default for RollupOptions {
    fn default() -> Self {
        RollupOptions {
            exact_threshold: 10_000,
            max_batch_changes: 100_000,
            flush_interval: Duration::from_millis(1000),
            cache_buckets: 50_000,
            cache_bytes: 64 << 20,
            keep_days: None,
            per_partition: false,
        }
    }
}

struct Entry {
    state: RollupState,
    /// The row exists in the store.
    stored: bool,
    /// The parts its unique sets are stored in (as of the last write submitted).
    parts: Option<Parts>,
    /// What changed in those sets since.
    pending: Pending,
    dirty: bool,
    used: u64,
}

impl Entry {
    fn memory_bytes(&self) -> usize {
        self.state.memory_bytes() + self.pending.memory_bytes()
    }

    /// Replaces the state: the next write stores its sets whole.
    fn replace(&mut self, state: RollupState) {
        self.state = state;
        self.pending.clear();
        self.pending.rewrite = true;
        self.dirty = true;
    }
}

/// An (org, UTC day): the unit a recomputation replaces.
pub type Group = ([u8; 16], NaiveDate);

pub struct RollupWorker {
    store: Store,
    opts: RollupOptions,
    metrics: Option<Arc<Metrics>>,
    cache: FxHashMap<RollupKey, Entry>,
    /// Next feed entry to apply (in memory).
    next: u64,
    /// The cursor as stored.
    durable: u64,
    /// The write in flight (at most one) and the cursor it carries: the worker keeps
    /// applying changes while the store writes the previous batch.
    in_flight: Option<(WriteTicket, u64, Instant)>,
    /// The cursor of the last write submitted.
    submitted: u64,
    tick: u64,
    /// The tick of the last settled write: buckets used after it are the ones the writes
    /// since touched.
    hot_since: u64,
    pending_changes: usize,
    label: KindLabel,
    /// Event's `@feed` carries exactly [`EventFacts::FIELDS`].
    feed_has_facts: bool,
    /// Peers copying this instance's rollups (docs/SCALE-OUT.md, "Replicated rollups").
    replicas: Option<ReplicaFeed>,
    /// The rows the write in flight changes, sent to `replicas` once it is durable.
    in_flight_rows: Vec<RowChange>,
    /// Test-only fault hook: SIGKILL during the N-th write.
    #[cfg(feature = "fault-injection")]
    writes: u64,
}

impl RollupWorker {
    /// Opens the worker at its durable cursor, registering the cursor at the start of the
    /// feed if it has none (so the feed is kept from there).
    pub fn new(store: Store, opts: RollupOptions) -> Result<RollupWorker, StatsError> {
        super::rebuild::check_layout(&store, opts.per_partition)?;
        let durable = match store.cursor(ROLLUP_CURSOR)? {
            Some(c) => c,
            None => {
                let floor = store.feed_floor();
                if floor > crate::store::FIRST_SEQ {
                    // Another reader let the feed be truncated before this one registered.
                    return Err(StatsError::FeedGone {
                        needed: crate::store::FIRST_SEQ,
                        oldest: floor,
                    });
                }
                let mut b = WriteBatch::new();
                b.set_cursor(ROLLUP_CURSOR, floor);
                store.write_blocking(b)?;
                floor
            }
        };
        let with_facts = feed_has_facts(&store)?;
        Ok(RollupWorker {
            store,
            opts,
            metrics: None,
            cache: FxHashMap::default(),
            next: durable,
            durable,
            in_flight: None,
            submitted: durable,
            tick: 0,
            hot_since: 0,
            pending_changes: 0,
            label: KindLabel {
                kind: "rollups".into(),
            },
            feed_has_facts: with_facts,
            replicas: None,
            in_flight_rows: Vec::new(),
            #[cfg(feature = "fault-injection")]
            writes: 0,
        })
    }

    /// Serves the snapshot requests `requests` carries, and sends every later change of a
    /// row kept per partition to the requesters (src/stats/replica.rs).
    pub fn with_replicas(
        mut self,
        requests: tokio::sync::mpsc::UnboundedReceiver<SnapshotRequest>,
    ) -> Self {
        self.replicas = Some(ReplicaFeed::new(requests));
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The next feed entry the worker will apply.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Tails the feed until `shutdown`; writes what it applied before returning.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StatsError> {
        let mut last_write = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut expired_at: Option<Instant> = None;
        loop {
            if let Some(days) = self.opts.keep_days {
                if expired_at.is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
                    expired_at = Some(Instant::now());
                    let today = chrono::Utc::now().date_naive();
                    let before = today - chrono::Days::new(days as u64);
                    match self.expire_before(before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(buckets = n, %before, days,
                            "stats: rollups older than the retention deleted"),
                        Err(error) => tracing::warn!(%error,
                            "stats: deleting rollups older than the retention failed; will retry"),
                    }
                }
            }
            if let Err(e) = self.serve_snapshots(None).await {
                tracing::warn!(error = %e, "stats: a rollup snapshot for a peer failed; the peer asks again");
            }
            if shutdown.is_cancelled() {
                let last = async {
                    self.flush().await?;
                    self.settle().await
                };
                return match last.await {
                    Ok(()) => Ok(()),
                    // Nothing is lost: the next start resumes from the durable cursor.
                    Err(e) => {
                        tracing::warn!(error = %e, "stats: last rollup write on shutdown failed");
                        Ok(())
                    }
                };
            }
            let step = async {
                let applied = self.step().await?;
                let head = self.store.feed_head();
                let due = self.pending_changes >= self.opts.max_batch_changes
                    || self.over_budget()
                    || (self.pending_changes > 0
                        && last_write.elapsed() >= self.opts.flush_interval);
                if due {
                    self.flush().await?;
                    last_write = Instant::now();
                }
                if applied == 0 {
                    // Before idling: the write in flight either is durable or fails now,
                    // not at the next feed change, which may be an hour away.
                    self.settle().await?;
                }
                Ok::<_, StatsError>((applied, head))
            }
            .await;
            match step {
                Ok((applied, head)) => {
                    backoff = Duration::from_millis(100);
                    if let Some(m) = &self.metrics {
                        m.stats_lag_changes
                            .get_or_create(&self.label)
                            .set(head.saturating_sub(self.durable) as i64);
                    }
                    if applied == 0 {
                        let wait = if self.pending_changes > 0 {
                            self.opts
                                .flush_interval
                                .saturating_sub(last_write.elapsed())
                        } else {
                            Duration::from_secs(3600)
                        };
                        let store = &self.store;
                        let next = self.next;
                        let replicas = &mut self.replicas;
                        let requested = async {
                            match replicas.as_mut() {
                                Some(feed) => feed.requests.recv().await,
                                None => std::future::pending().await,
                            }
                        };
                        let mut asked = None;
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = store.feed_wait_for(next) => {}
                            _ = tokio::time::sleep(wait) => {}
                            r = requested => asked = r,
                        }
                        if let Some(request) = asked {
                            if let Err(e) = self.serve_snapshots(Some(request)).await {
                                tracing::warn!(error = %e, "stats: a rollup snapshot for a peer failed; the peer asks again");
                            }
                        }
                    }
                }
                Err(e) if e.is_retryable() => {
                    if let Some(m) = &self.metrics {
                        m.stats_write_errors.get_or_create(&self.label).inc();
                    }
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "stats: rollup write failed; retrying from the durable cursor");
                    self.reset().await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies and writes everything up to the feed head as it is now; returns the number
    /// of feed entries applied. For the CLI and tests (nothing else may write meanwhile).
    pub async fn catch_up(&mut self) -> Result<u64, StatsError> {
        let start = self.next;
        loop {
            let applied = self.step().await?;
            if self.pending_changes >= self.opts.max_batch_changes
                || self.over_budget()
                || applied == 0
            {
                self.flush().await?;
            }
            if applied == 0 {
                self.settle().await?;
                return Ok(self.next - start);
            }
        }
    }

    /// Forgets everything not yet written; the next step starts at the durable cursor. A
    /// write still in flight is waited for first, so the cursor it may have stored is known.
    async fn reset(&mut self) {
        let rows = std::mem::take(&mut self.in_flight_rows);
        if let Some((ticket, next, _)) = self.in_flight.take() {
            if ticket.finished().await.is_ok() {
                self.durable = next;
                if let Some(feed) = self.replicas.as_mut() {
                    feed.publish_rows(rows);
                }
            }
        }
        self.cache.clear();
        self.next = self.durable;
        self.submitted = self.durable;
        self.pending_changes = 0;
    }

    /// Applies up to one read of the feed; returns the number of entries read.
    async fn step(&mut self) -> Result<usize, StatsError> {
        let want = self
            .opts
            .max_batch_changes
            .saturating_sub(self.pending_changes)
            .clamp(1, 10_000);
        let entries = self
            .store
            .feed_read(self.next, want)
            .map_err(StatsError::from_feed)?;
        let n = entries.len();
        let mut events = 0u64;
        // Groups a removal hit: recomputed once, as of the end of this read, however many
        // of their events it removes (deleting a person's events removes thousands).
        let mut redo: BTreeSet<Group> = BTreeSet::new();
        for e in &entries {
            if e.entity == "Event" {
                self.apply(e, &mut redo)?;
                events += 1;
            }
            self.next = e.seq + 1;
        }
        for group in redo {
            self.recompute_group(group, self.next).await?;
        }
        self.pending_changes += n;
        if let Some(m) = &self.metrics {
            m.stats_changes_applied
                .get_or_create(&self.label)
                .inc_by(events);
        }
        Ok(n)
    }

    /// The event before (`old`) or after a change: from the values the feed entry carries
    /// (Event's `@feed`), else read from the row version.
    fn image(&self, e: &ChangeEntry, old: bool) -> Result<EventFacts, StatsError> {
        event_image(&self.store, self.feed_has_facts, e, old)
    }

    /// Applies one Event change to the cached buckets; a removal the buckets cannot take
    /// adds its (org, day) to `redo` instead, and changes to such a group are left to the
    /// recomputation.
    fn apply(&mut self, e: &ChangeEntry, redo: &mut BTreeSet<Group>) -> Result<(), StatsError> {
        let pp = self.opts.per_partition;
        let new = match e.op {
            ChangeOp::Insert | ChangeOp::Update => Some(self.image(e, false)?.counted(pp)),
            ChangeOp::Delete => None,
        };
        let old = match e.op {
            ChangeOp::Update | ChangeOp::Delete => Some(self.image(e, true)?.counted(pp)),
            ChangeOp::Insert => None,
        };
        if let Some(o) = old.as_ref().filter(|o| !redo.contains(&o.group())) {
            for key in RollupKey::for_event(o) {
                let entry = self.entry(key.clone())?;
                entry.dirty = true;
                if entry.state.remove(&key, o).is_err() {
                    redo.insert(o.group());
                    break;
                }
            }
        }
        if let Some(n) = new.as_ref().filter(|n| !redo.contains(&n.group())) {
            let threshold = self.opts.exact_threshold;
            for key in RollupKey::for_event(n) {
                let entry = self.entry(key.clone())?;
                entry.dirty = true;
                let added = entry.state.add(&key, n, threshold);
                entry.pending.note(added, n.user, n.session);
            }
        }
        Ok(())
    }

    /// The cached entry for `key`, loaded from the store on first touch.
    fn entry(&mut self, key: RollupKey) -> Result<&mut Entry, StatsError> {
        self.tick += 1;
        let tick = self.tick;
        let store = &self.store;
        let metrics = &self.metrics;
        let entry = match self.cache.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let key = v.key();
                if let Some(m) = metrics {
                    m.stats_cache_loads.inc();
                }
                let (state, parts, stored) = match store.get(key.entity(), &key.row_id())? {
                    Some(row) => {
                        let (state, parts) = parts::read_state(store, key, &row)?;
                        (state, parts, true)
                    }
                    None => (RollupState::default(), None, false),
                };
                v.insert(Entry {
                    state,
                    stored,
                    parts,
                    pending: Pending::default(),
                    dirty: false,
                    used: tick,
                })
            }
        };
        entry.used = tick;
        Ok(entry)
    }

    /// Submits every changed bucket and the cursor as one store write, after the previous
    /// write has finished; does not wait for this one (see [`RollupWorker::settle`]).
    async fn flush(&mut self) -> Result<(), StatsError> {
        if self.pending_changes == 0 && self.next == self.submitted {
            return Ok(());
        }
        self.settle().await?;
        let mut batch = WriteBatch::new();
        let copying = self
            .replicas
            .as_ref()
            .is_some_and(|f| !f.subscribers.is_empty());
        let mut rows = Vec::new();
        for (key, entry) in self.cache.iter_mut() {
            if !entry.dirty {
                continue;
            }
            if copying {
                if let Some(change) = RowChange::changed(key, &entry.state, &entry.pending) {
                    rows.push(change);
                }
            }
            entry.parts = parts::write_bucket(
                &mut batch,
                key,
                &entry.state,
                entry.stored,
                entry.parts,
                &entry.pending,
            );
            entry.pending.clear();
            // As of this write (writes apply in submission order; a failure resets all).
            entry.dirty = false;
            entry.stored = entry.state.events != 0;
        }
        batch.set_cursor(ROLLUP_CURSOR, self.next);
        #[cfg(feature = "fault-injection")]
        {
            self.writes += 1;
            if crate::fault::armed("stats_write_kill", self.writes) {
                // Mid-flush: the write is submitted; it may or may not become durable.
                let _ticket = self.store.submit(batch);
                std::thread::sleep(Duration::from_micros(self.writes % 7 * 300));
                crate::fault::kill("during a stats rollup write");
            }
        }
        self.in_flight = Some((self.store.submit(batch), self.next, Instant::now()));
        self.in_flight_rows = rows;
        self.submitted = self.next;
        self.pending_changes = 0;
        Ok(())
    }

    /// Waits for the write in flight; then its cursor is durable and clean buckets may be
    /// dropped from memory.
    async fn settle(&mut self) -> Result<(), StatsError> {
        let Some((ticket, next, started)) = self.in_flight.take() else {
            return Ok(());
        };
        let rows = std::mem::take(&mut self.in_flight_rows);
        if let Err(e) = ticket.finished().await {
            // Nothing of it was applied; `reset` starts again from `durable`.
            return Err(e.into());
        }
        self.durable = next;
        if let Some(feed) = self.replicas.as_mut() {
            feed.publish_rows(rows);
        }
        if let Some(m) = &self.metrics {
            m.stats_flush_seconds
                .get_or_create(&self.label)
                .observe(started.elapsed().as_secs_f64());
        }
        self.cache.retain(|_, e| e.dirty || e.state.events != 0);
        let cached = self.evict();
        self.hot_since = self.tick;
        if let Some(m) = &self.metrics {
            m.stats_cache_bytes.set(cached as i64);
        }
        Ok(())
    }

    /// Twice `cache_buckets` in memory: write now, so that the written ones can be dropped
    /// (a write leaves at most `cache_buckets`: twice, so that a working set larger than the
    /// budget does not make every read of the feed a write).
    fn over_budget(&self) -> bool {
        self.cache.len() > 2 * self.opts.cache_buckets
    }

    /// Bytes of bucket state held in memory (an estimate: [`RollupState::memory_bytes`]).
    pub fn cached_bytes(&self) -> usize {
        self.cache.values().map(Entry::memory_bytes).sum()
    }

    /// Over `cache_buckets` or `cache_bytes`: drops the least recently used clean buckets
    /// down to half of both, but keeps the buckets the last write touched (at full speed a
    /// write touches every current hour and day: dropping them meant reading them back at
    /// once) unless they alone are over the budget. Dirty ones wait for their write.
    /// Returns the bytes left ([`RollupWorker::cached_bytes`]).
    fn evict(&mut self) -> usize {
        let bytes = self.cached_bytes();
        let (max_len, max_bytes) = (self.opts.cache_buckets, self.opts.cache_bytes);
        if self.cache.len() <= max_len && bytes <= max_bytes {
            return bytes;
        }
        let mut clean: Vec<(u64, usize)> = self
            .cache
            .values()
            .filter(|e| !e.dirty)
            .map(|e| (e.used, e.memory_bytes()))
            .collect();
        clean.sort_unstable();
        let (mut len, mut bytes) = (self.cache.len(), bytes);
        let mut cut = None;
        for (used, size) in clean {
            let enough = if used > self.hot_since {
                len <= max_len && bytes <= max_bytes
            } else {
                len <= max_len / 2 && bytes <= max_bytes / 2
            };
            if enough {
                break;
            }
            len -= 1;
            bytes -= size;
            cut = Some(used);
        }
        if let Some(cut) = cut {
            // Exactly the entries counted out above: clean, and used (ticks are distinct)
            // no later than the cut.
            self.cache.retain(|_, e| e.dirty || e.used > cut);
        }
        bytes
    }

    /// Serves `first` and every snapshot request waiting: after the write in flight is
    /// durable (so the stored rows are everything sent as changes so far), sends each
    /// requester the stored rows of the partitions it asks for, then adds it to the
    /// subscribers of every later change.
    async fn serve_snapshots(&mut self, first: Option<SnapshotRequest>) -> Result<(), StatsError> {
        let Some(feed) = self.replicas.as_mut() else {
            return Ok(());
        };
        let mut asked: Vec<SnapshotRequest> = first.into_iter().collect();
        while let Ok(r) = feed.requests.try_recv() {
            asked.push(r);
        }
        if asked.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        let wanted: HashSet<&super::bucket::Source> =
            asked.iter().flat_map(|r| r.partitions.iter()).collect();
        let mut by_source: HashMap<super::bucket::Source, Vec<RowChange>> = HashMap::new();
        if !wanted.is_empty() {
            for entity in [HOURLY, DAILY, NAMES] {
                for (key, row) in stored_rows(&self.store, entity, None, None)? {
                    let Some(source) = key.source().filter(|s| wanted.contains(s)) else {
                        continue;
                    };
                    let source = source.clone();
                    let (state, _) = parts::read_state(&self.store, &key, &row)?;
                    by_source
                        .entry(source)
                        .or_default()
                        .extend(RowChange::whole(&key, &state));
                }
            }
        }
        let feed = self.replicas.as_mut().expect("checked above");
        for request in asked {
            let send = |msg: ReplicaMsg| request.to.send(std::sync::Arc::new(msg)).is_ok();
            let mut open = true;
            for s in &request.partitions {
                let (topic, partition) = (s.topic.to_string(), s.partition);
                open &= send(ReplicaMsg::SnapshotStart {
                    topic: topic.clone(),
                    partition,
                });
                for rows in by_source
                    .get(s)
                    .map_or(&[][..], |v| v)
                    .chunks(SNAPSHOT_CHUNK)
                {
                    open &= send(ReplicaMsg::Rows {
                        rows: rows.to_vec(),
                    });
                }
                open &= send(ReplicaMsg::SnapshotEnd { topic, partition });
            }
            if open {
                feed.add(request.to);
            }
        }
        Ok(())
    }

    /// Deletes every rollup row (hourly, daily, per name) dated before `before`, with the
    /// parts of its unique sets, after writing what is pending; returns how many. Orgs are
    /// found from the daily rows (every event has one), then each org's rows are read
    /// through the `[org_id, date]` index.
    pub async fn expire_before(&mut self, before: NaiveDate) -> Result<usize, StatsError> {
        self.flush().await?;
        self.settle().await?;
        let Some(last) = before.pred_opt() else {
            return Ok(0);
        };
        let mut orgs: BTreeSet<[u8; 16]> = BTreeSet::new();
        self.store.for_each_row(DAILY, |row| {
            if let Some(key) = RollupKey::from_row(DAILY, &row) {
                if key.date() < before {
                    orgs.insert(key.org());
                }
            }
        })?;
        let mut batch = WriteBatch::new();
        let mut deleted = 0;
        let mut gone = Vec::new();
        for org in orgs {
            for entity in [HOURLY, DAILY, NAMES] {
                let rows =
                    stored_rows(&self.store, entity, Some(org), Some((NaiveDate::MIN, last)))?;
                for (key, row) in rows {
                    let parts = parts::parts_of(&key, &row)?;
                    let none = RollupState::default();
                    parts::write_bucket(&mut batch, &key, &none, true, parts, &Pending::default());
                    gone.extend(RowChange::whole(&key, &none));
                    self.cache.remove(&key);
                    deleted += 1;
                    if batch.len() >= 10_000 {
                        self.store.write(std::mem::take(&mut batch)).await?;
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.store.write(batch).await?;
        }
        if let (Some(feed), false) = (self.replicas.as_mut(), gone.is_empty()) {
            for rows in gone.chunks(SNAPSHOT_CHUNK) {
                feed.publish(ReplicaMsg::Rows {
                    rows: rows.to_vec(),
                });
            }
        }
        self.cache.retain(|k, _| k.date() >= before);
        Ok(deleted)
    }

    /// Replaces every bucket of `group` with a recomputation from the raw events as they
    /// were after feed entry `as_of - 1`.
    async fn recompute_group(&mut self, group: Group, as_of: u64) -> Result<(), StatsError> {
        if let Some(m) = &self.metrics {
            m.stats_recomputes.inc();
        }
        // Everything submitted must be durable first: the barrier below rewrites the cursor.
        self.settle().await?;
        let (org, date) = group;
        if let Some(from) = self.store.retained_from("Event") {
            if day_start_us(date) < from {
                // The day's raw events are (partly) gone: a recomputation would lose what
                // they counted. Exact counts took the removal; a set or sketch keeps it.
                tracing::warn!(org = %uuid_str(&org), %date,
                    "stats: a removal hit a day older than the raw-event retention; its unique counts are left as they were");
                return Ok(());
            }
        }
        tracing::info!(org = %uuid_str(&org), %date, as_of,
            "stats: recomputing a day's rollups from raw events (a removal hit a sketch or a set without per-id counts)");
        let mut events = group_events_now(&self.store, group)?;
        // Everything visible to that scan is in the feed below the head once a later write
        // has committed (writes commit in order): a cursor write that changes nothing.
        let mut barrier = WriteBatch::new();
        barrier.set_cursor(ROLLUP_CURSOR, self.durable);
        self.store.write(barrier).await?;
        let head = self.store.feed_head();
        // Undo every change after `as_of`: an id's state at `as_of` is its image before its
        // first later change (absent if that change is an insert).
        let mut seen: HashSet<[u8; 16]> = HashSet::new();
        let mut pos = as_of;
        while pos < head {
            let entries = self
                .store
                .feed_read(pos, 10_000)
                .map_err(StatsError::from_feed)?;
            if entries.is_empty() {
                break;
            }
            for e in &entries {
                pos = e.seq + 1;
                if e.entity != "Event" || !seen.insert(e.id) {
                    continue;
                }
                events.remove(&e.id);
                if let ChangeOp::Update | ChangeOp::Delete = e.op {
                    let f = self.image(e, true)?;
                    if f.group() == group {
                        events.insert(e.id, f);
                    }
                }
            }
        }
        let fresh = compute_states(
            events.values(),
            self.opts.exact_threshold,
            self.opts.per_partition,
        );
        let stored = stored_keys(&self.store, Some(org), Some((date, date)))?;
        // Buckets of the group that exist (stored or cached) but have no events now: zero.
        let mut stale: Vec<RollupKey> = stored
            .into_iter()
            .chain(
                self.cache
                    .keys()
                    .filter(|k| (k.org(), k.date()) == group)
                    .cloned(),
            )
            .filter(|k| !fresh.contains_key(k))
            .collect();
        stale.sort();
        stale.dedup();
        for key in stale {
            self.entry(key)?.replace(RollupState::default());
        }
        for (key, state) in fresh {
            self.entry(key)?.replace(state);
        }
        Ok(())
    }
}

/// Whether Event's change-feed entries carry [`EventFacts::FIELDS`] (schema `@feed`).
pub(crate) fn feed_has_facts(store: &Store) -> Result<bool, StatsError> {
    Ok(store.feed_fields("Event")? == EventFacts::FIELDS)
}

/// The event before (`old`) or after the change `e`.
pub(crate) fn event_image(
    store: &Store,
    feed_has_facts: bool,
    e: &ChangeEntry,
    old: bool,
) -> Result<EventFacts, StatsError> {
    let version = if old { e.prev_version } else { Some(e.version) };
    let missing = || StatsError::MissingVersion {
        seq: e.seq,
        id: uuid_str(&e.id),
        version: version.unwrap_or(0),
    };
    let carried = if old { &e.old_fields } else { &e.new_fields };
    if let (true, Some(values)) = (feed_has_facts, carried) {
        return EventFacts::from_values(e.id, values).ok_or_else(missing);
    }
    let version = version.ok_or_else(missing)?;
    let values = store
        .get_version_fields("Event", &e.id, version, &EventFacts::FIELDS)?
        .ok_or_else(missing)?;
    EventFacts::from_values(e.id, &values).ok_or_else(missing)
}

/// The rollup states of a set of events (per source partition or not, see
/// [`RollupOptions::per_partition`]).
pub fn compute_states<'a>(
    events: impl IntoIterator<Item = &'a EventFacts>,
    threshold: u64,
    per_partition: bool,
) -> BTreeMap<RollupKey, RollupState> {
    let mut out: BTreeMap<RollupKey, RollupState> = BTreeMap::new();
    for f in events {
        for key in RollupKey::for_event(f) {
            let key = if per_partition {
                key
            } else {
                key.with_source(None)
            };
            let state = out.entry(key.clone()).or_default();
            state.add(&key, f, threshold);
        }
    }
    out
}

/// The events of one (org, day) as the store holds them now, by id.
pub fn group_events_now(
    store: &Store,
    group: Group,
) -> Result<HashMap<[u8; 16], EventFacts>, StatsError> {
    let (org, date) = group;
    let start = day_start_us(date);
    let rows = store.query(&Query::new("Event").eq("org_id", Value::Uuid(org)).range(
        "timestamp",
        std::ops::Bound::Included(Value::Timestamp(start)),
        std::ops::Bound::Excluded(Value::Timestamp(start + 86_400_000_000)),
    ))?;
    Ok(rows
        .iter()
        .filter_map(EventFacts::from_row)
        .filter(|f| f.group() == group)
        .map(|f| (f.id, f))
        .collect())
}

/// Keys of the stored rollup rows, optionally only one org and/or a date range (inclusive).
pub fn stored_keys(
    store: &Store,
    org: Option<[u8; 16]>,
    dates: Option<(NaiveDate, NaiveDate)>,
) -> Result<Vec<RollupKey>, StatsError> {
    let mut out = Vec::new();
    for entity in [HOURLY, DAILY, NAMES] {
        for (key, _) in stored_rows(store, entity, org, dates)? {
            out.push(key);
        }
    }
    Ok(out)
}

/// Stored rollup rows of `entity` with their keys, filtered like [`stored_keys`].
pub fn stored_rows(
    store: &Store,
    entity: &'static str,
    org: Option<[u8; 16]>,
    dates: Option<(NaiveDate, NaiveDate)>,
) -> Result<Vec<(RollupKey, crate::store::Row)>, StatsError> {
    let day = |d: NaiveDate| Value::String(d.format("%Y-%m-%d").to_string());
    let rows = match org {
        Some(org) => {
            let mut q = Query::new(entity).eq("org_id", Value::Uuid(org));
            if let Some((from, to)) = dates {
                q = q.range(
                    "date",
                    std::ops::Bound::Included(day(from)),
                    std::ops::Bound::Included(day(to)),
                );
            }
            store.query(&q)?
        }
        None => store.scan_all(entity)?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let key = RollupKey::from_row(entity, &row).ok_or_else(|| StatsError::BadState {
            entity,
            key: format!("{:?}", row.id().map(|id| uuid_str(&id))),
            message: "the row's key fields are missing or malformed".into(),
        })?;
        if let Some((from, to)) = dates {
            if key.date() < from || key.date() > to {
                continue;
            }
        }
        out.push((key, row));
    }
    Ok(out)
}
