//! The alert worker's evaluation: it reads the change feed into per-10-second counts and
//! user/session sets of what the rules filter on (as long as their windows need), evaluates every rule
//! every `alerts.evaluate_interval_ms` on them (and on the daily rollups for `day` windows),
//! and writes each transition with the firing and the deliveries it causes in one store
//! write, before anything is sent.

use super::rule::{Measure, NoData, Rule, Window};
use super::{idempotency_key, Evaluated, Hub, ALERTS_CURSOR};
use crate::config::Config;
use crate::gateway::params::fmt_time;
use crate::metrics::{Metrics, StateLabel, ToLabel};
use crate::stats::query::{Granularity, StatsReader};
use crate::stats::rollup::{event_image, feed_has_facts};
use crate::stats::sketch::{Uniq, UniqUnion};
use crate::stats::trailing::TrailingCursor;
use crate::stats::StatsError;
use crate::store::{ChangeOp, Query, Row, Store, Value, WriteBatch};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The span of one bucket of counts.
pub const BUCKET_US: i64 = 10_000_000;
/// How much event time the worker keeps: two hours (an hour window and the one before) and
/// a minute.
pub const KEEP_US: i64 = 121 * 60_000_000;
/// An event stored this long after its event time is late.
pub const LATE_US: i64 = 5_000_000;
const MINUTE_US: i64 = 60_000_000;
const DAY_US: i64 = 86_400_000_000;

/// A rule's states.
pub const INACTIVE: &str = "inactive";
pub const PENDING: &str = "pending";
pub const FIRING: &str = "firing";
pub const RESOLVED: &str = "resolved";

#[derive(Default)]
struct Bucket {
    events: i64,
    users: Uniq,
    sessions: Uniq,
    late: i64,
}

/// A rule's filter: (event_type, event_name), None for any. (None, None) is every event of
/// the org, also what "no data" is judged on.
type FilterKey = (Option<Arc<str>>, Option<Arc<str>>);

/// One org's buckets: bucket index -> filter -> counts. Only the filters its rules use are
/// kept (plus every event), so memory follows the rules, not the org's event names.
#[derive(Default)]
struct OrgBuckets {
    filters: Vec<FilterKey>,
    buckets: BTreeMap<i64, HashMap<FilterKey, Bucket>>,
}

fn filter_of(rule: &Rule) -> FilterKey {
    (
        rule.event_type.as_deref().map(Arc::from),
        rule.event_name.as_deref().map(Arc::from),
    )
}

fn matches(f: &FilterKey, event_type: &str, event_name: &str) -> bool {
    f.0.as_deref().is_none_or(|t| t == event_type) && f.1.as_deref().is_none_or(|n| n == event_name)
}

/// A rule's persisted state (the AlertState row).
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub state: String,
    pub since_us: i64,
    pub seq: i64,
    pub value: Option<f64>,
    pub previous_value: Option<f64>,
    pub evaluated_at_us: i64,
}

impl State {
    fn initial(now_us: i64) -> State {
        State {
            state: INACTIVE.into(),
            since_us: now_us,
            seq: 0,
            value: None,
            previous_value: None,
            evaluated_at_us: now_us,
        }
    }

    pub fn from_row(r: &Row) -> Option<State> {
        let float = |f: &str| match r.get(f) {
            Some(Value::Float64(x)) => Some(*x),
            _ => None,
        };
        Some(State {
            state: match r.get("state")? {
                Value::String(s) => s.clone(),
                _ => return None,
            },
            since_us: match r.get("since")? {
                Value::Timestamp(t) => *t,
                _ => return None,
            },
            seq: match r.get("seq")? {
                Value::Int64(n) => *n,
                _ => return None,
            },
            value: float("value"),
            previous_value: float("previous_value"),
            evaluated_at_us: match r.get("evaluated_at") {
                Some(Value::Timestamp(t)) => *t,
                _ => 0,
            },
        })
    }

    fn row(&self, rule: [u8; 16], org: [u8; 16]) -> Row {
        let opt = |x: Option<f64>| x.map_or(Value::Null, Value::Float64);
        Row::new()
            .with("rule_id", Value::Uuid(rule))
            .with("org_id", Value::Uuid(org))
            .with("state", Value::String(self.state.clone()))
            .with("since", Value::Timestamp(self.since_us))
            .with("seq", Value::Int64(self.seq))
            .with("value", opt(self.value))
            .with("previous_value", opt(self.previous_value))
            .with("evaluated_at", Value::Timestamp(self.evaluated_at_us))
    }
}

/// A rule as the worker holds it.
pub struct Loaded {
    pub id: [u8; 16],
    pub org: [u8; 16],
    pub rule: Rule,
    pub state: State,
}

/// The AlertState row of `rule`, if any.
pub fn load_state(store: &Store, rule: [u8; 16]) -> Result<Option<State>, StatsError> {
    let rows = store.query(&Query::new("AlertState").eq("rule_id", Value::Uuid(rule)))?;
    Ok(rows.iter().find_map(State::from_row))
}

/// Every rule with its state.
pub fn load_rules(store: &Store, now_us: i64) -> Result<Vec<Loaded>, StatsError> {
    let states: HashMap<[u8; 16], State> = store
        .query(&Query::new("AlertState"))?
        .iter()
        .filter_map(|r| match r.get("rule_id") {
            Some(Value::Uuid(id)) => Some((*id, State::from_row(r)?)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for r in store.query(&Query::new("AlertRule"))? {
        let (Some(id), Some(Value::Uuid(org)), Some(Value::String(spec))) =
            (r.id(), r.get("org_id"), r.get("spec"))
        else {
            continue;
        };
        let Ok(rule) = serde_json::from_str::<Rule>(spec) else {
            tracing::warn!(rule = %uuid::Uuid::from_bytes(id), "alerts: a stored rule is unreadable; skipped");
            continue;
        };
        out.push(Loaded {
            id,
            org: *org,
            state: states
                .get(&id)
                .cloned()
                .unwrap_or_else(|| State::initial(now_us)),
            rule,
        });
    }
    Ok(out)
}

/// A number as JSON: whole numbers without a fraction.
pub fn num(x: f64) -> Json {
    super::rule::shown(x)
}

/// What one evaluation of a rule measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    value: f64,
    previous: f64,
    /// Whether the org stored any event in the window.
    data: bool,
    late: i64,
    from_us: i64,
    to_us: i64,
}

pub struct AlertWorker {
    store: Store,
    stats: StatsReader,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    hub: Hub,
    sent: mpsc::UnboundedSender<[u8; 16]>,
    next: u64,
    /// The replay cursor, trailing `next` by what the rules' windows need.
    cursor: TrailingCursor,
    orgs: HashMap<[u8; 16], OrgBuckets>,
    rules: Vec<Loaded>,
    feed_has_facts: bool,
    firings: u64,
}

impl AlertWorker {
    /// `sent` receives the id of every delivery written, for [`super::deliver`].
    pub fn new(
        store: Store,
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        hub: Hub,
        sent: mpsc::UnboundedSender<[u8; 16]>,
    ) -> Result<AlertWorker, StatsError> {
        let cursor = TrailingCursor::open(&store, ALERTS_CURSOR)?;
        Ok(AlertWorker {
            feed_has_facts: feed_has_facts(&store)?,
            stats: StatsReader::new(store.clone()),
            store,
            cfg,
            metrics,
            hub,
            sent,
            next: cursor.pin(),
            cursor,
            orgs: HashMap::new(),
            rules: Vec::new(),
            firings: 0,
        })
    }

    fn now_us() -> i64 {
        chrono::Utc::now().timestamp_micros()
    }

    /// Reloads the rules; an org or a filter new to the worker makes it read the feed again
    /// from its cursor (what the windows keep), so that its windows are whole at once.
    fn reload(&mut self) -> Result<bool, StatsError> {
        self.rules = load_rules(&self.store, Self::now_us())?;
        let live: HashSet<[u8; 16]> = self.rules.iter().map(|r| r.id).collect();
        self.hub.evaluated.lock().retain(|id, _| live.contains(id));
        let mut wanted: HashMap<[u8; 16], Vec<FilterKey>> = HashMap::new();
        for r in &self.rules {
            let filters = wanted.entry(r.org).or_insert_with(|| vec![(None, None)]);
            let f = filter_of(&r.rule);
            if !filters.contains(&f) {
                filters.push(f);
            }
        }
        self.orgs.retain(|org, _| wanted.contains_key(org));
        let new = wanted.iter().any(|(org, filters)| {
            self.orgs
                .get(org)
                .is_none_or(|o| filters.iter().any(|f| !o.filters.contains(f)))
        });
        if new {
            self.orgs = wanted
                .into_iter()
                .map(|(org, filters)| {
                    (
                        org,
                        OrgBuckets {
                            filters,
                            buckets: BTreeMap::new(),
                        },
                    )
                })
                .collect();
            self.next = self.cursor.pin();
        }
        Ok(new)
    }

    /// Reads the feed up to its head.
    fn catch_up(&mut self, replaying: bool) -> Result<u64, StatsError> {
        let mut n = 0;
        loop {
            let read = self.read_some(replaying)?;
            n += read as u64;
            if read == 0 {
                return Ok(n);
            }
        }
    }

    fn read_some(&mut self, replaying: bool) -> Result<usize, StatsError> {
        let entries = match self.store.feed_read(self.next, 10_000) {
            Ok(e) => e,
            Err(crate::store::StoreError::FeedTruncated { oldest, .. }) => {
                self.next = oldest;
                self.store
                    .feed_read(self.next, 10_000)
                    .map_err(StatsError::from_feed)?
            }
            Err(e) => return Err(StatsError::Store(e)),
        };
        let now = Self::now_us();
        let floor = now - KEEP_US;
        for e in &entries {
            self.next = e.seq + 1;
            if e.entity != "Event" || self.orgs.is_empty() {
                continue;
            }
            let sides: &[(bool, i64)] = match e.op {
                ChangeOp::Insert => &[(false, 1)],
                ChangeOp::Delete => &[(true, -1)],
                ChangeOp::Update => &[(true, -1), (false, 1)],
            };
            for &(old, delta) in sides {
                let f = event_image(&self.store, self.feed_has_facts, e, old)?;
                if f.ts_us < floor {
                    continue;
                }
                let Some(org) = self.orgs.get_mut(&f.org) else {
                    continue;
                };
                let bucket = org
                    .buckets
                    .entry(f.ts_us.div_euclid(BUCKET_US))
                    .or_default();
                let late = !replaying && delta > 0 && now - f.ts_us > LATE_US;
                for filter in &org.filters {
                    if !matches(filter, &f.event_type, &f.event_name) {
                        continue;
                    }
                    let b = bucket.entry(filter.clone()).or_default();
                    b.events += delta;
                    if delta > 0 {
                        let threshold = self.cfg.stats.unique_exact_threshold;
                        if let Some(u) = f.user {
                            b.users.add(u, threshold);
                        }
                        if let Some(s) = f.session {
                            b.sessions.add(s, threshold);
                        }
                        if late {
                            b.late += 1;
                        }
                    }
                }
            }
        }
        Ok(entries.len())
    }

    /// How much event time the rules need: each minute window and the one before, two
    /// hours for an hour window (none for a day: the rollups keep it), and a minute.
    fn keep_us(&self) -> i64 {
        self.rules
            .iter()
            .map(|l| match l.rule.window {
                Window::Minutes(n) => i64::from(2 * n + 1) * MINUTE_US,
                Window::Hour => KEEP_US,
                Window::Day => MINUTE_US,
            })
            .max()
            .unwrap_or(0)
    }

    /// Drops buckets older than what the windows need; moves the feed cursor along, so the
    /// change feed is kept only as long as the rules' windows need it.
    async fn trim(&mut self) -> Result<(), StatsError> {
        let now_us = Self::now_us();
        let keep = self.keep_us();
        let floor = (now_us - keep).div_euclid(BUCKET_US);
        for org in self.orgs.values_mut() {
            org.buckets = org.buckets.split_off(&floor);
        }
        self.cursor.advance(now_us / 1000, self.next, keep / 1000);
        let mut b = WriteBatch::new();
        self.cursor.stage(&self.store, &mut b)?;
        if !b.is_empty() {
            self.store.write(b).await?;
        }
        Ok(())
    }

    /// Reads the feed, then evaluates every rule each interval, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StatsError> {
        self.reload()?;
        let replayed = self.catch_up(true)?;
        tracing::info!(
            rules = self.rules.len(),
            changes = replayed,
            "alerts: rules loaded, windows rebuilt from the feed"
        );
        let mut tick = tokio::time::interval(self.cfg.alerts.evaluate_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let changed = self.hub.rules_changed.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.store.feed_wait_for(self.next) => {
                    self.catch_up(false)?;
                }
                _ = changed.notified() => {
                    if self.reload()? {
                        self.catch_up(true)?;
                    }
                    self.evaluate_all().await?;
                }
                _ = tick.tick() => {
                    self.catch_up(false)?;
                    self.evaluate_all().await?;
                    self.trim().await?;
                }
            }
        }
    }

    async fn evaluate_all(&mut self) -> Result<(), StatsError> {
        let started = std::time::Instant::now();
        let now = Self::now_us();
        for i in 0..self.rules.len() {
            if let Err(e) = self.evaluate(i, now).await {
                if !e.is_retryable() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "alerts: an evaluation's write failed; retried at the next");
            }
        }
        self.metrics.alert_evaluations.inc();
        self.metrics
            .alert_evaluation_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut by_state: HashMap<&str, i64> = [INACTIVE, PENDING, FIRING, RESOLVED, "disabled"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        for r in &self.rules {
            let s = if r.rule.enabled {
                r.state.state.as_str()
            } else {
                "disabled"
            };
            *by_state.entry(s).or_default() += 1;
        }
        for (state, n) in by_state {
            self.metrics
                .alert_rules
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n);
        }
        Ok(())
    }

    /// The rule's measure over its window and the one before.
    fn measure(&self, l: &Loaded, now: i64) -> Result<Measured, StatsError> {
        let r = &l.rule;
        if r.window == Window::Day {
            return self.measure_day(l, now);
        }
        let ((from, to), (pfrom, pto)) = match r.window {
            Window::Minutes(n) => {
                // The bucket holding `now` and the ones before it: n minutes to 10 s.
                let last = now.div_euclid(BUCKET_US);
                let len = i64::from(n) * (MINUTE_US / BUCKET_US);
                let from = (last + 1 - len) * BUCKET_US;
                ((from, now), (from - len * BUCKET_US, from))
            }
            w => w.spans(now),
        };
        let Some(org) = self.orgs.get(&l.org) else {
            return Ok(Measured {
                value: 0.0,
                previous: 0.0,
                data: false,
                late: 0,
                from_us: from,
                to_us: to,
            });
        };
        let filter = filter_of(r);
        let every: FilterKey = (None, None);
        let span = |a: i64, b: i64| {
            let mut events = 0i64;
            let mut any = 0i64;
            let mut late = 0i64;
            let mut users = UniqUnion::new();
            let mut sessions = UniqUnion::new();
            let range = a.div_euclid(BUCKET_US)..(b + BUCKET_US - 1).div_euclid(BUCKET_US);
            for (_, by_filter) in org.buckets.range(range) {
                any += by_filter.get(&every).map_or(0, |b| b.events);
                let Some(bucket) = by_filter.get(&filter) else {
                    continue;
                };
                events += bucket.events;
                late += bucket.late;
                if r.measure == Measure::UniqueUsers {
                    users.add(&bucket.users);
                }
                if r.measure == Measure::UniqueSessions {
                    sessions.add(&bucket.sessions);
                }
            }
            let value = match r.measure {
                Measure::Events => events as f64,
                Measure::UniqueUsers => users.count().0 as f64,
                Measure::UniqueSessions => sessions.count().0 as f64,
            };
            (value, any > 0, late)
        };
        let (value, data, late) = span(from, to);
        let (previous, _, plate) = span(pfrom, pto);
        Ok(Measured {
            value,
            previous,
            data,
            late: late + plate,
            from_us: from,
            to_us: to,
        })
    }

    /// A `day` window, from the daily rollups.
    fn measure_day(&self, l: &Loaded, now: i64) -> Result<Measured, StatsError> {
        let r = &l.rule;
        let ((from, to), (pfrom, _)) = Window::Day.spans(now);
        let day = |start: i64| -> Result<(f64, bool), StatsError> {
            let all =
                self.stats
                    .timeseries(l.org, start, start + DAY_US, Granularity::Day, None)?;
            let data = all.first().is_some_and(|p| p.events > 0);
            if let Some(name) = &r.event_name {
                let date = chrono::DateTime::from_timestamp_micros(start)
                    .unwrap_or_default()
                    .date_naive();
                let count = self
                    .stats
                    .top_events(l.org, date, usize::MAX)?
                    .into_iter()
                    .find(|t| &t.event_name == name)
                    .map_or(0, |t| t.count);
                return Ok((count as f64, data));
            }
            let points = match &r.event_type {
                None => all,
                Some(t) => self.stats.timeseries(
                    l.org,
                    start,
                    start + DAY_US,
                    Granularity::Day,
                    Some(t),
                )?,
            };
            let p = points.first();
            let value = match r.measure {
                Measure::Events => p.map_or(0, |p| p.events) as f64,
                Measure::UniqueUsers => p.map_or(0, |p| p.unique_users) as f64,
                Measure::UniqueSessions => p.map_or(0, |p| p.unique_sessions) as f64,
            };
            Ok((value, data))
        };
        let (value, data) = day(from)?;
        let (previous, _) = day(pfrom)?;
        Ok(Measured {
            value,
            previous,
            data,
            late: 0,
            from_us: from,
            to_us: to,
        })
    }

    async fn evaluate(&mut self, i: usize, now: i64) -> Result<(), StatsError> {
        let l = &self.rules[i];
        if !l.rule.enabled {
            // Not evaluated: a firing is resolved (with the values it last had), then the
            // rule rests `inactive`.
            self.hub.evaluated.lock().remove(&l.id);
            let last = Measured {
                value: l.state.value.unwrap_or(0.0),
                previous: l.state.previous_value.unwrap_or(0.0),
                data: false,
                late: 0,
                from_us: now,
                to_us: now,
            };
            return match l.state.state.as_str() {
                FIRING => self.transition(i, RESOLVED, last, now).await,
                PENDING | RESOLVED => self.transition(i, INACTIVE, last, now).await,
                _ => Ok(()),
            };
        }
        let m = self.measure(l, now)?;
        self.hub.evaluated.lock().insert(
            l.id,
            Evaluated {
                value: m.value,
                previous_value: m.previous,
                at_us: now,
            },
        );
        let holds = if m.data {
            l.rule.condition.holds(m.value, m.previous)
        } else {
            match l.rule.no_data {
                NoData::Ok => false,
                NoData::Alerting => true,
                NoData::Keep => return Ok(()),
            }
        };
        let state = l.state.state.as_str();
        let next = match (state, holds) {
            (INACTIVE | RESOLVED, true) if l.rule.for_seconds == 0 => FIRING,
            (INACTIVE | RESOLVED, true) => PENDING,
            (PENDING, true)
                if now - l.state.since_us >= i64::from(l.rule.for_seconds) * 1_000_000 =>
            {
                FIRING
            }
            (PENDING, false) => INACTIVE,
            (FIRING, false) => RESOLVED,
            _ => return Ok(()),
        };
        self.transition(i, next, m, now).await
    }

    /// Writes the rule's new state, and for a firing or a resolution the firing row and
    /// the deliveries, in one store write; then hands the deliveries to the sender.
    async fn transition(
        &mut self,
        i: usize,
        to: &'static str,
        m: Measured,
        now: i64,
    ) -> Result<(), StatsError> {
        let l = &self.rules[i];
        let mut state = State {
            state: to.into(),
            since_us: now,
            seq: l.state.seq,
            value: Some(m.value),
            previous_value: Some(m.previous),
            evaluated_at_us: now,
        };
        let mut batch = WriteBatch::new();
        let mut deliveries = Vec::new();
        if to == FIRING {
            state.seq += 1;
            batch.insert(
                "AlertFiring",
                Row::new()
                    .with("id", Value::Uuid(firing_id(&l.id, state.seq)))
                    .with("org_id", Value::Uuid(l.org))
                    .with("rule_id", Value::Uuid(l.id))
                    .with("seq", Value::Int64(state.seq))
                    .with("fired_at", Value::Timestamp(now))
                    .with("value", Value::Float64(m.value))
                    .with("late_events", Value::Int64(m.late)),
            );
        }
        let mut fired_at = now;
        if to == RESOLVED {
            let id = firing_id(&l.id, state.seq);
            if let Some(mut row) = self.store.get("AlertFiring", &id)? {
                if let Some(Value::Timestamp(t)) = row.get("fired_at") {
                    fired_at = *t;
                }
                row.set("resolved_at", Value::Timestamp(now));
                row.set("resolved_value", Value::Float64(m.value));
                batch.update("AlertFiring", id, row);
            }
        }
        if to == FIRING || to == RESOLVED {
            let status = if to == FIRING { "firing" } else { "resolved" };
            let body = message(l, status, state.seq, &m, fired_at, now);
            let outcome = if l.rule.muted(now) {
                "muted"
            } else {
                "pending"
            };
            let contacts = std::iter::once("websocket".to_string())
                .chain(l.rule.webhooks.iter().map(|w| format!("webhook {}", w.url)));
            for contact in contacts {
                let id = delivery_id(&l.id, state.seq, status, &contact);
                batch.insert(
                    "AlertDelivery",
                    Row::new()
                        .with("id", Value::Uuid(id))
                        .with("org_id", Value::Uuid(l.org))
                        .with("rule_id", Value::Uuid(l.id))
                        .with(
                            "idempotency_key",
                            Value::String(idempotency_key(&l.id, state.seq)),
                        )
                        .with("status", Value::String(status.into()))
                        .with("contact", Value::String(contact.clone()))
                        .with("outcome", Value::String(outcome.into()))
                        .with("attempts", Value::Int32(0))
                        .with("payload", Value::String(body.to_string()))
                        .with("created_at", Value::Timestamp(now))
                        .with("next_attempt_at", Value::Timestamp(now)),
                );
                if outcome == "pending" {
                    deliveries.push(id);
                } else {
                    let channel = contact.split(' ').next().unwrap_or_default();
                    self.metrics
                        .alert_deliveries
                        .get_or_create(&crate::metrics::DeliveryLabel {
                            channel: channel.into(),
                            outcome: "muted".into(),
                        })
                        .inc();
                }
            }
        }
        batch.upsert("AlertState", state.row(l.id, l.org));
        self.store.write(batch).await?;
        tracing::info!(
            rule = %uuid::Uuid::from_bytes(l.id),
            from = %l.state.state, to, value = m.value, previous = m.previous,
            late_events = m.late, "alerts: a rule changed state"
        );
        self.metrics
            .alert_transitions
            .get_or_create(&ToLabel { to: to.into() })
            .inc();
        self.rules[i].state = state;
        if to == FIRING {
            self.firings += 1;
            #[cfg(feature = "fault-injection")]
            if crate::fault::armed("alert_killed_after_firing", self.firings) {
                crate::fault::kill("after a firing and its deliveries were stored, before sending");
            }
        }
        for id in deliveries {
            let _ = self.sent.send(id);
        }
        Ok(())
    }
}

/// The AlertFiring row id of a rule's firing `seq`.
pub fn firing_id(rule: &[u8; 16], seq: i64) -> [u8; 16] {
    *uuid::Uuid::new_v5(
        &uuid::Uuid::from_bytes(*rule),
        format!("firing:{seq}").as_bytes(),
    )
    .as_bytes()
}

fn delivery_id(rule: &[u8; 16], seq: i64, status: &str, contact: &str) -> [u8; 16] {
    *uuid::Uuid::new_v5(
        &uuid::Uuid::from_bytes(*rule),
        format!("delivery:{seq}:{status}:{contact}").as_bytes(),
    )
    .as_bytes()
}

/// The message of a firing or a resolution (docs/ALERTS.md, "Messages").
fn message(l: &Loaded, status: &str, seq: i64, m: &Measured, fired_at: i64, now: i64) -> Json {
    let r = &l.rule;
    json!({
        "type": "alert",
        "status": status,
        "idempotency_key": idempotency_key(&l.id, seq),
        "org_id": uuid::Uuid::from_bytes(l.org).to_string(),
        "rule_id": uuid::Uuid::from_bytes(l.id).to_string(),
        "rule_name": r.name,
        "seq": seq,
        "labels": r.labels,
        "measure": r.measure,
        "event_name": r.event_name,
        "event_type": r.event_type,
        "window": r.window,
        "condition": r.condition,
        "value": num(m.value),
        "previous_value": num(m.previous),
        "window_from": fmt_time(m.from_us),
        "window_to": fmt_time(m.to_us),
        "fired_at": fmt_time(fired_at),
        "resolved_at": (status == "resolved").then(|| fmt_time(now)),
        "late_events": m.late,
    })
}
