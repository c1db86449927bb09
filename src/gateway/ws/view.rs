//! A session's subscribed view and the reads that WebSocket pushes share: the counters per
//! org and each view's data per org and view, kept for half a push interval
//! ([`PushCache`]), so 1,000 clients of one org watching the same range cost one set of
//! queries.

use super::super::error::ApiError;
use super::super::group::{self, Coverage};
use super::super::params::{fmt_time, ViewSpec, TOP_EVENTS_LIMIT};
use super::super::trends::{self, Answer, TrendRequest};
use super::super::wire::{CountersBody, TimeseriesBody, TopEventsBody, UniqueUsersBody, ViewOut};
use super::super::GatewayState;
use crate::cache::{BudgetCache, Eviction};
use crate::stats::query::Point;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// What WebSocket pushes read, shared by all sessions for half a push interval: the
/// counters per org, each view's data (points, top events, unique users) per org and
/// view, and each kept trend's answer per org and question (a dashboard in a zone other
/// than UTC, or filtered, keeps four).
#[derive(Clone)]
pub struct PushCache {
    counters: Shared<Uuid, CountersBody>,
    views: Shared<String, ViewData>,
    trends: Shared<String, Answer>,
}

impl PushCache {
    /// Reads are shared for `fresh_for` (see [`GatewayConfig::push_read_shared_for`]).
    ///
    /// [`GatewayConfig::push_read_shared_for`]: crate::config::GatewayConfig::push_read_shared_for
    pub fn new(fresh_for: Duration) -> Self {
        PushCache {
            counters: Shared::new(fresh_for),
            views: Shared::new(fresh_for),
            trends: Shared::new(fresh_for),
        }
    }
}

/// Values read less than a while ago, shared between sessions: at most [`MAX_CACHED`]
/// keys, the oldest read going first.
#[derive(Clone)]
struct Shared<K, V>(Arc<Mutex<BudgetCache<K, V>>>);

/// Keys cached at most per kind (custom ranges make view keys without end).
const MAX_CACHED: usize = 4096;

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Shared<K, V> {
    fn new(fresh_for: Duration) -> Self {
        let cache = BudgetCache::new(MAX_CACHED, Eviction::Fifo).with_ttl(fresh_for);
        Shared(Arc::new(Mutex::new(cache)))
    }

    /// The value read less than the freshness interval ago, if any.
    fn fresh(&self, key: &K) -> Option<V> {
        self.0.lock().get(key).cloned()
    }

    /// Keeps `v` as read now (each key weighs 1 of the [`MAX_CACHED`] budget).
    fn put(&self, key: K, v: V) {
        self.0.lock().insert(key, v, 1);
    }
}

/// What a `subscribe` asked for, checked.
#[derive(Debug, Clone)]
pub(super) struct View {
    pub spec: ViewSpec,
    /// The range ends now and slides, keeping its length.
    pub live: bool,
}

impl View {
    /// Sessions of one org with equal keys see the same data (a live range slides with the
    /// clock, so only its length counts).
    fn cache_key(&self, org: Uuid) -> String {
        let v = &self.spec;
        let (from, to) = if self.live {
            (None, None)
        } else {
            (Some(v.from_us), Some(v.to_us))
        };
        format!(
            "{org}|{from:?}|{to:?}|{}|{}|{:?}",
            v.to_us - v.from_us,
            v.granularity.as_str(),
            v.event_type
        )
    }

    /// The range at `now_us`.
    pub fn range(&self, now_us: i64) -> (i64, i64) {
        let v = &self.spec;
        if self.live {
            (now_us - (v.to_us - v.from_us), now_us)
        } else {
            (v.from_us, v.to_us)
        }
    }

    /// The view as its snapshot echoes it.
    pub fn out(&self, now_us: i64) -> ViewOut {
        let (from, to) = self.range(now_us);
        ViewOut {
            from: fmt_time(from),
            to: (!self.live).then(|| fmt_time(to)),
            granularity: self.spec.granularity.as_str(),
            event_type: self.spec.event_type.clone(),
        }
    }

    pub fn timeseries(
        &self,
        org: Uuid,
        points: &[Point],
        coverage: Option<Coverage>,
    ) -> TimeseriesBody {
        let now = chrono::Utc::now().timestamp_micros();
        TimeseriesBody::new(org, &self.spec, self.range(now), points).covering(coverage)
    }
}

/// A view's timeseries points, top events (of its last day) and unique users.
#[derive(Debug, Clone)]
pub(super) struct ViewData {
    pub points: Vec<Point>,
    /// What the points cover (a scaled-out group only).
    pub coverage: Option<Coverage>,
    pub top: TopEventsBody,
    pub unique: UniqueUsersBody,
}

/// The values of a view's top events and unique users, without the range's bounds (a live
/// range's end moves with the clock: that alone is not a change worth an update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ViewValues {
    pub top: TopEventsBody,
    pub unique: (u64, u64, bool),
}

impl ViewData {
    pub fn values(&self) -> ViewValues {
        let u = &self.unique;
        ViewValues {
            top: self.top.clone(),
            unique: (u.unique_users, u.unique_sessions, u.exact),
        }
    }
}

/// A kept trend's answer, read at most once per push-read interval for all sessions asking
/// the same question (the parsed question, its buckets included, is the key: a live range
/// that slid into a new bucket is another question).
pub(super) async fn trend_answer(
    st: &GatewayState,
    org: Uuid,
    req: TrendRequest,
) -> Result<Answer, ApiError> {
    let cache = &st.push_cache.trends;
    // The buckets are named by their first and last boundary and count (not listed: a 90-day
    // hourly trend has 2,161).
    let t = &req.spec;
    let b = &t.boundaries;
    let key = format!(
        "{org}|{}|{:?}|{:?}|{:?}|{:?}|{}|{}|{}|{}|{:?}|{:?}|{}",
        req.compare,
        t.events,
        t.event_type,
        t.conditions,
        t.breakdown,
        t.breakdown_limit,
        t.measure.as_str(),
        t.step.as_str(),
        t.zone.name(),
        b.first(),
        b.last(),
        b.len()
    );
    if let Some(a) = cache.fresh(&key) {
        return Ok(a);
    }
    let a = trends::answer(st, org, req).await?;
    cache.put(key, a.clone());
    Ok(a)
}

/// The org's counters, read at most once per push-read interval for all its sessions.
pub(super) async fn counters(st: &GatewayState, org: Uuid) -> Result<CountersBody, ApiError> {
    let cache = &st.push_cache.counters;
    if let Some(c) = cache.fresh(&org) {
        return Ok(c);
    }
    let (c, coverage) = group::counters(st, org).await?;
    let c = CountersBody::new(org, &c).covering(coverage);
    cache.put(org, c.clone());
    Ok(c)
}

/// The view's data, read at most once per push-read interval for all sessions with the
/// same view.
pub(super) async fn view_data(
    st: &GatewayState,
    org: Uuid,
    view: &View,
) -> Result<ViewData, ApiError> {
    let cache = &st.push_cache.views;
    let key = view.cache_key(org);
    if let Some(d) = cache.fresh(&key) {
        return Ok(d);
    }
    let data = read_view(st, org, view).await?;
    cache.put(key, data.clone());
    Ok(data)
}

async fn read_view(st: &GatewayState, org: Uuid, view: &View) -> Result<ViewData, ApiError> {
    let now = chrono::Utc::now().timestamp_micros();
    let (from, to) = view.range(now);
    let (g, et) = (view.spec.granularity, view.spec.event_type.clone());
    let day = chrono::DateTime::from_timestamp_micros(to - 1)
        .unwrap_or_default()
        .date_naive();
    // Read on the blocking pool (a view may span many buckets), the three at once.
    let n = crate::gateway::INLINE_READ_BUCKETS + 1;
    let limit = TOP_EVENTS_LIMIT.default as usize;
    let (series, top, unique) = tokio::join!(
        group::timeseries(st, org, (from, to), g, et, n),
        group::top_events(st, org, day, limit),
        group::unique(st, org, (from, to)),
    );
    let ((points, coverage), (top, top_cov), (unique, unique_cov)) = (series?, top?, unique?);
    Ok(ViewData {
        points,
        coverage,
        top: TopEventsBody::new(org, day, &top).covering(top_cov),
        unique: UniqueUsersBody::new(org, (from, to), &unique).covering(unique_cov),
    })
}
