//! Real-time counters: events and active users per org over sliding windows of event time
//! (5 minutes, and any extra windows), plus the window just before each (for trends).
//!
//! Kept incrementally in memory from the change feed, per second of event time: each second
//! holds its event count and its users (hash -> events); each window holds its totals and
//! adds/subtracts whole seconds as the clock moves. Nothing re-scans raw events. The worker
//! persists the values to RealtimeCounter at least every `persist_interval`, and its cursor
//! (`stats.realtime`) trails the feed by the longest window (twice, for the previous
//! window) plus a minute, so a restart replays just that much of the feed.

use super::rollup::{event_image, feed_has_facts};
use super::trailing::TrailingCursor;
use super::{StatsError, REALTIME_CURSOR};
use crate::metrics::{KindLabel, Metrics};
use crate::store::{ChangeOp, Row, Store, Value, WriteBatch};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Where "now" comes from (the system clock, or a test's).
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to.
#[derive(Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set_ms(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The values of one window of one org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct WindowValues {
    pub window_seconds: i64,
    pub events: i64,
    pub active_users: i64,
    /// The same over the window just before (for trends).
    pub prev_events: i64,
    pub prev_active_users: i64,
}

#[derive(Default)]
struct Sec {
    events: i64,
    users: HashMap<u64, u32>,
}

/// Totals over the seconds (now - offset - len, now - offset].
struct Win {
    len: i64,
    offset: i64,
    events: i64,
    users: HashMap<u64, u32>,
}

fn bump(users: &mut HashMap<u64, u32>, user: u64, delta: i64) {
    if delta > 0 {
        *users.entry(user).or_insert(0) += delta as u32;
    } else if let Some(n) = users.get_mut(&user) {
        let take = (-delta) as u32;
        if *n <= take {
            users.remove(&user);
        } else {
            *n -= take;
        }
    }
}

impl Win {
    fn covers(&self, now: i64, sec: i64) -> bool {
        let hi = now - self.offset;
        sec > hi - self.len && sec <= hi
    }

    fn add_sec(&mut self, s: &Sec, sign: i64) {
        self.events += sign * s.events;
        for (&u, &n) in &s.users {
            bump(&mut self.users, u, sign * n as i64);
        }
    }
}

struct OrgCounters {
    secs: BTreeMap<i64, Sec>,
    wins: Vec<Win>,
}

/// Sliding-window counters of every org, in memory.
pub struct RealtimeCounters {
    windows: Vec<i64>,
    /// Current second.
    now: i64,
    /// Seconds at or below `now - retention` can be in no window, now or later.
    retention: i64,
    orgs: HashMap<[u8; 16], OrgCounters>,
}

impl RealtimeCounters {
    /// `windows` in seconds; `now_s` the current second.
    pub fn new(windows: &[u64], now_s: i64) -> Self {
        let windows: Vec<i64> = windows.iter().map(|&w| w as i64).collect();
        let retention = 2 * windows.iter().copied().max().unwrap_or(300);
        RealtimeCounters {
            windows,
            now: now_s,
            retention,
            orgs: HashMap::new(),
        }
    }

    pub fn now_s(&self) -> i64 {
        self.now
    }

    /// Counts (`delta = 1`) or uncounts (`-1`) one event of `org` at `ts_us`.
    pub fn apply(&mut self, org: [u8; 16], ts_us: i64, user: Option<u64>, delta: i64) {
        let sec = ts_us.div_euclid(1_000_000);
        if sec <= self.now - self.retention {
            return;
        }
        let now = self.now;
        let windows = &self.windows;
        let oc = self.orgs.entry(org).or_insert_with(|| OrgCounters {
            secs: BTreeMap::new(),
            wins: windows
                .iter()
                .flat_map(|&len| [0, len].map(move |offset| (len, offset)))
                .map(|(len, offset)| Win {
                    len,
                    offset,
                    events: 0,
                    users: HashMap::new(),
                })
                .collect(),
        });
        let s = oc.secs.entry(sec).or_default();
        s.events += delta;
        if let Some(u) = user {
            bump(&mut s.users, u, delta);
        }
        if s.events <= 0 && s.users.is_empty() {
            oc.secs.remove(&sec);
        }
        for w in oc.wins.iter_mut().filter(|w| w.covers(now, sec)) {
            w.events += delta;
            if let Some(u) = user {
                bump(&mut w.users, u, delta);
            }
        }
    }

    /// Moves the clock to second `now_s` (backwards too).
    pub fn advance(&mut self, now_s: i64) {
        let old = self.now;
        if now_s == old {
            return;
        }
        for oc in self.orgs.values_mut() {
            for w in &mut oc.wins {
                let (hi, nhi) = (old - w.offset, now_s - w.offset);
                if now_s < old || now_s - old >= w.len {
                    w.events = 0;
                    w.users.clear();
                    for (_, s) in oc.secs.range(nhi - w.len + 1..=nhi) {
                        w.add_sec(s, 1);
                    }
                    continue;
                }
                for (_, s) in oc.secs.range(hi + 1..=nhi) {
                    w.add_sec(s, 1);
                }
                for (_, s) in oc.secs.range(hi - w.len + 1..=nhi - w.len) {
                    w.add_sec(s, -1);
                }
            }
            let floor = now_s - self.retention;
            oc.secs = oc.secs.split_off(&(floor + 1));
        }
        self.now = now_s;
    }

    /// Every org's values, windows in configuration order.
    pub fn snapshot(&self) -> Vec<([u8; 16], Vec<WindowValues>)> {
        self.orgs
            .iter()
            .map(|(org, oc)| (*org, Self::values(oc)))
            .collect()
    }

    /// One org's values (zeros if it has had no events).
    pub fn org(&self, org: &[u8; 16]) -> Vec<WindowValues> {
        match self.orgs.get(org) {
            Some(oc) => Self::values(oc),
            None => self
                .windows
                .iter()
                .map(|&w| WindowValues {
                    window_seconds: w,
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn values(oc: &OrgCounters) -> Vec<WindowValues> {
        oc.wins
            .chunks(2)
            .map(|pair| WindowValues {
                window_seconds: pair[0].len,
                events: pair[0].events,
                active_users: pair[0].users.len() as i64,
                prev_events: pair[1].events,
                prev_active_users: pair[1].users.len() as i64,
            })
            .collect()
    }
}

/// One newly stored event, for live push.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub row: Arc<Row>,
    /// The event's JSON as pushed to clients, made once by the first session that needs it
    /// and shared by all the others.
    pub json: Arc<std::sync::OnceLock<Box<serde_json::value::RawValue>>>,
}

/// Newly stored events of one org, oldest first, as the real-time worker publishes them.
#[derive(Debug)]
pub struct LiveBatch {
    pub org: [u8; 16],
    pub events: Vec<LiveEvent>,
    /// Events of the org stored since its last batch: `events` and the older ones left out
    /// past the cap (what a client's "N new events" counts).
    pub arrived: u64,
    /// Received from another instance of a scaled-out group (not sent on again).
    pub relayed: bool,
}

/// Where live events are published.
pub type LiveSender = broadcast::Sender<Arc<LiveBatch>>;

/// Collects the inserts of the worker's feed reads and publishes, at most once per
/// `interval`, the newest `cap` of each org since the last publish, one batch per org.
/// Clients are sent at most `cap` events per update (the newest) once per push interval,
/// so a row is only read from the store if some client may be sent it: at 20,000 events/s
/// the worker used to read every stored row again for live push.
struct LivePublisher {
    tx: LiveSender,
    cap: usize,
    interval: Duration,
    /// Per org, the ids of the newest `cap` inserts not published yet, oldest first.
    unpublished: HashMap<[u8; 16], VecDeque<[u8; 16]>>,
    /// Per org, the inserts since the last publish, kept or not.
    arrived: HashMap<[u8; 16], u64>,
    last: tokio::time::Instant,
}

impl LivePublisher {
    fn listening(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    fn add(&mut self, org: [u8; 16], id: [u8; 16]) {
        *self.arrived.entry(org).or_default() += 1;
        let q = self.unpublished.entry(org).or_default();
        q.push_back(id);
        if q.len() > self.cap {
            q.pop_front();
        }
    }

    /// When the unpublished inserts are due, if there are any.
    fn due(&self) -> Option<tokio::time::Instant> {
        (!self.unpublished.is_empty()).then(|| self.last + self.interval)
    }

    fn publish(&mut self, store: &Store) -> Result<(), StatsError> {
        self.last = tokio::time::Instant::now();
        // One read for every org's inserts: a block holds many of them, and is decoded once.
        let ids: Vec<[u8; 16]> = self
            .unpublished
            .values()
            .flat_map(|q| q.iter().copied())
            .collect();
        let mut rows = store.get_many("Event", &ids)?;
        for (org, inserts) in self.unpublished.drain() {
            let events: Vec<LiveEvent> = inserts
                .into_iter()
                .filter_map(|id| rows.remove(&id))
                .map(|row| LiveEvent {
                    row: Arc::new(row),
                    json: Arc::default(),
                })
                .collect();
            if !events.is_empty() {
                // No receivers is fine: nobody is watching.
                let arrived = self.arrived.remove(&org).unwrap_or(0);
                let _ = self.tx.send(Arc::new(LiveBatch {
                    org,
                    arrived: arrived.max(events.len() as u64),
                    events,
                    relayed: false,
                }));
            }
        }
        Ok(())
    }
}

/// Waits until `at`, or forever without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Tuning of the real-time worker.
#[derive(Debug, Clone)]
pub struct RealtimeOptions {
    pub windows_s: Vec<u64>,
    pub persist_interval: Duration,
}

impl Default for RealtimeOptions {
    fn default() -> Self {
        RealtimeOptions {
            windows_s: vec![300],
            persist_interval: Duration::from_secs(1),
        }
    }
}

pub struct RealtimeWorker {
    store: Store,
    opts: RealtimeOptions,
    clock: Arc<dyn Clock>,
    counters: RealtimeCounters,
    next: u64,
    /// The replay cursor, trailing `next` by the longest window (twice) and a minute.
    cursor: TrailingCursor,
    written: HashMap<([u8; 16], i64), WindowValues>,
    live: Option<LivePublisher>,
    metrics: Option<Arc<Metrics>>,
    label: KindLabel,
    feed_has_facts: bool,
}

impl RealtimeWorker {
    pub fn new(
        store: Store,
        opts: RealtimeOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<RealtimeWorker, StatsError> {
        // Without a cursor (first start), replay at most the last million changes.
        let cursor = TrailingCursor::open(&store, REALTIME_CURSOR)?;
        let now_s = clock.now_ms().div_euclid(1000);
        let with_facts = feed_has_facts(&store)?;
        Ok(RealtimeWorker {
            feed_has_facts: with_facts,
            counters: RealtimeCounters::new(&opts.windows_s, now_s),
            store,
            opts,
            clock,
            next: cursor.pin(),
            cursor,
            written: HashMap::new(),
            live: None,
            metrics: None,
            label: KindLabel {
                kind: "realtime".into(),
            },
        })
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Newly stored events are published here once the worker has replayed what it needed
    /// after a start: every `interval` at most, the newest `cap` of each org since the last
    /// publish (`gateway.recent_events_cap`: what a client is sent at most per update), and
    /// nothing while nobody listens.
    pub fn with_live(mut self, live: LiveSender, cap: usize, interval: Duration) -> Self {
        self.live = Some(LivePublisher {
            tx: live,
            cap: cap.max(1),
            interval,
            unpublished: HashMap::new(),
            arrived: HashMap::new(),
            last: tokio::time::Instant::now(),
        });
        self
    }

    /// The counters of one org as the worker holds them now.
    pub fn values(&self, org: &[u8; 16]) -> Vec<WindowValues> {
        self.counters.org(org)
    }

    /// Replays the feed from the cursor to the head (no live push), then persists.
    pub async fn replay(&mut self) -> Result<u64, StatsError> {
        let mut n = 0;
        loop {
            let read = self.read_some(false)?;
            n += read as u64;
            if read == 0 {
                break;
            }
        }
        self.persist().await?;
        Ok(n)
    }

    /// Replays, then tails the feed until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StatsError> {
        let replayed = self.replay().await?;
        tracing::info!(
            changes = replayed,
            "stats: real-time counters rebuilt from the feed"
        );
        let mut tick = tokio::time::interval(self.opts.persist_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if let Err(e) = self.persist().await {
                        tracing::warn!(error = %e, "stats: last real-time counter write failed");
                    }
                    return Ok(());
                }
                _ = self.store.feed_wait_for(self.next) => {
                    while self.read_some(true)? > 0 {}
                }
                _ = until(self.live.as_ref().and_then(LivePublisher::due)) => {
                    if let Some(live) = self.live.as_mut() {
                        live.publish(&self.store)?;
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.persist().await {
                        if let Some(m) = &self.metrics {
                            m.stats_write_errors.get_or_create(&self.label).inc();
                        }
                        if !e.is_retryable() {
                            return Err(e);
                        }
                        tracing::warn!(error = %e, "stats: real-time counter write failed; retrying");
                        self.written.clear();
                    }
                }
            }
        }
    }

    /// Applies up to 10,000 feed entries; returns how many were read.
    fn read_some(&mut self, push: bool) -> Result<usize, StatsError> {
        let entries = match self.store.feed_read(self.next, 10_000) {
            Ok(entries) => entries,
            Err(crate::store::StoreError::FeedTruncated { requested, oldest }) => {
                // Counters only need the last windows' worth: skip ahead, say so.
                tracing::warn!(
                    requested,
                    oldest,
                    "stats: real-time counters skip changes the feed no longer holds"
                );
                self.next = oldest;
                self.store
                    .feed_read(self.next, 10_000)
                    .map_err(StatsError::from_feed)?
            }
            Err(e) => return Err(StatsError::Store(e)),
        };
        let live = match self.live.as_mut() {
            Some(l) if push && l.listening() => Some(l),
            Some(l) => {
                l.unpublished.clear();
                l.arrived.clear();
                None
            }
            None => None,
        };
        // Inserts of this read to publish: (org, id, version), in feed order.
        let mut inserted: Vec<([u8; 16], [u8; 16])> = Vec::new();
        let mut events = 0u64;
        for e in &entries {
            self.next = e.seq + 1;
            if e.entity != "Event" {
                continue;
            }
            events += 1;
            if matches!(e.op, ChangeOp::Update | ChangeOp::Delete) {
                let f = event_image(&self.store, self.feed_has_facts, e, true)?;
                self.counters.apply(f.org, f.ts_us, f.user, -1);
            }
            if matches!(e.op, ChangeOp::Insert | ChangeOp::Update) {
                let f = event_image(&self.store, self.feed_has_facts, e, false)?;
                self.counters.apply(f.org, f.ts_us, f.user, 1);
                if live.is_some() && e.op == ChangeOp::Insert {
                    inserted.push((f.org, e.id));
                }
            }
        }
        if let Some(live) = live {
            for (org, id) in inserted {
                live.add(org, id);
            }
            if live.last.elapsed() >= live.interval {
                live.publish(&self.store)?;
            }
        }
        if let Some(m) = &self.metrics {
            m.stats_changes_applied
                .get_or_create(&self.label)
                .inc_by(events);
        }
        Ok(entries.len())
    }

    /// Moves the clock, writes the windows that changed and the replay cursor.
    pub async fn persist(&mut self) -> Result<(), StatsError> {
        let now_ms = self.clock.now_ms();
        self.counters.advance(now_ms.div_euclid(1000));
        let retention_ms = (self.counters.retention + 60) * 1000;
        self.cursor.advance(now_ms, self.next, retention_ms);
        let mut batch = WriteBatch::new();
        let mut changed = Vec::new();
        for (org, values) in self.counters.snapshot() {
            for v in values {
                if self.written.get(&(org, v.window_seconds)) == Some(&v) {
                    continue;
                }
                batch.upsert("RealtimeCounter", counter_row(org, &v));
                changed.push(((org, v.window_seconds), v));
            }
        }
        self.cursor.stage(&self.store, &mut batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.store.write(batch).await?;
        if let Some(m) = &self.metrics {
            m.stats_flush_seconds
                .get_or_create(&self.label)
                .observe(started.elapsed().as_secs_f64());
            m.stats_lag_changes
                .get_or_create(&self.label)
                .set(self.store.feed_head().saturating_sub(self.next) as i64);
        }
        self.written.extend(changed);
        Ok(())
    }
}

/// The RealtimeCounter row of one org and window.
pub fn counter_row(org: [u8; 16], v: &WindowValues) -> Row {
    let key = [Value::Uuid(org), Value::Int32(v.window_seconds as i32)];
    let id = crate::store::codec::upsert_id("RealtimeCounter", &key.iter().collect::<Vec<_>>());
    Row::new()
        .with("id", Value::Uuid(id))
        .with("org_id", Value::Uuid(org))
        .with("window_seconds", Value::Int32(v.window_seconds as i32))
        .with("events", Value::Int64(v.events))
        .with("active_users", Value::Int64(v.active_users))
        .with("prev_events", Value::Int64(v.prev_events))
        .with("prev_active_users", Value::Int64(v.prev_active_users))
}
