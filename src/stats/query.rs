//! The questions the gateway asks, answered from rollups and indexes only (never a scan of
//! raw events, except `count_raw`, which walks the `[org_id, timestamp]` index).

use super::bucket::{utc_day_hour, RollupKey, Source, ALL_TYPES, DAILY, NAMES, ROLLUP_ENTITIES};
use super::parts;
use super::realtime::WindowValues;
use super::replica::{CopiedRow, Replica};
use super::sketch::{Uniq, UniqUnion};
use super::StatsError;
use crate::cache::{BudgetCache, Eviction};
use crate::store::{Order, Query, Row, Store, Value};
use chrono::NaiveDate;
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

/// One hour and one day in microseconds.
pub const HOUR_US: i64 = 3_600_000_000;
pub const DAY_US: i64 = 24 * HOUR_US;
/// Most points one timeseries answer may hold.
pub const MAX_POINTS: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }
    /// The bucket width in microseconds.
    pub fn step_us(self) -> i64 {
        match self {
            Granularity::Hour => HOUR_US,
            Granularity::Day => DAY_US,
        }
    }
}

/// One bucket of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Bucket start, microseconds since the epoch (UTC).
    pub t_us: i64,
    pub events: i64,
    pub unique_users: i64,
    pub unique_sessions: i64,
}

/// Distinct users and sessions over a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unique {
    pub users: u64,
    pub sessions: u64,
    /// False when a sketch took part (standard error 0.41%).
    pub exact: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopEvent {
    pub event_name: String,
    pub count: i64,
}

/// An org's real-time counters and today's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub windows: Vec<WindowValues>,
    pub events_today: i64,
    pub unique_users_today: i64,
    /// When the counters were last written (µs), if ever.
    pub updated_at_us: Option<i64>,
}

/// One org's real-time windows as an instance sends them to its peers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrgWindows {
    pub org: uuid::Uuid,
    pub windows: Vec<WindowValues>,
    pub updated_at_us: Option<i64>,
}

/// The windows of each length in `lengths` from an org's RealtimeCounter rows (zeros for a
/// length without a row), and the newest update among them.
fn windows_of(
    rows: &[&Row],
    lengths: impl Iterator<Item = i64>,
) -> (Vec<WindowValues>, Option<i64>) {
    let mut updated: Option<i64> = None;
    let windows = lengths
        .map(|w| {
            let row = rows
                .iter()
                .find(|r| r.get("window_seconds") == Some(&Value::Int32(w as i32)));
            if let Some(r) = row {
                let u = int(r, "updated_at");
                updated = Some(updated.map_or(u, |x: i64| x.max(u)));
            }
            WindowValues {
                window_seconds: w,
                events: row.map(|r| int(r, "events")).unwrap_or(0),
                active_users: row.map(|r| int(r, "active_users")).unwrap_or(0),
                prev_events: row.map(|r| int(r, "prev_events")).unwrap_or(0),
                prev_active_users: row.map(|r| int(r, "prev_active_users")).unwrap_or(0),
            }
        })
        .collect();
    (windows, updated)
}

/// Which rollup rows a question reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    /// The rows that count every partition of the store (rollups not kept per partition).
    Whole,
    /// The rows of these source partitions, merged: counts add, unique sets union.
    Partitions(Vec<Source>),
}

impl Sources {
    /// `key` (a key without a source) for each source read.
    pub(super) fn keys(&self, key: RollupKey) -> Vec<RollupKey> {
        match self {
            Sources::Whole => vec![key],
            Sources::Partitions(list) => list
                .iter()
                .map(|s| key.clone().with_source(Some(s.clone())))
                .collect(),
        }
    }

    /// Whether a row of `source` is read.
    fn holds(&self, source: Option<&Source>) -> bool {
        match (self, source) {
            (Sources::Whole, None) => true,
            (Sources::Partitions(list), Some(s)) => list.contains(s),
            _ => false,
        }
    }
}

/// Says which sources a reader answers for at the moment of each question (the partitions
/// an instance of a scaled-out group owns change with every rebalance).
pub type SourcesFn = Arc<dyn Fn() -> Sources + Send + Sync>;

/// Read-only access to the rollups. Their rows are read on every request and written a few
/// times a second, so the store keeps them in its row cache (`store.row_cache_mb`).
#[derive(Clone)]
pub struct StatsReader {
    pub(super) store: Store,
    states: StateCache,
    merged: MergedCache,
    /// Decoded event-block columns the trends read (src/stats/trends.rs).
    pub(super) columns: super::trends::ColumnCache,
    sources: SourcesFn,
    /// Copies of other instances' rollups and the sources read from them instead of the
    /// store (src/stats/replica.rs).
    copies: Option<(Replica, Arc<FxHashSet<Source>>)>,
    /// Row ids by key: an id is a name-based UUID of the key's fields (a SHA-1 and the
    /// fields formatted), which was most of a merged bucket's time when computed per read.
    ids: Arc<Mutex<FxHashMap<RollupKey, [u8; 16]>>>,
}

/// Most row ids kept (about 100 bytes each); past it the map starts again.
const IDS_KEPT: usize = 200_000;

/// Buckets merged over several sources, by the ids of the rows merged, with the versions
/// they were merged at: a past bucket's rows do not change, and merging their unique sets
/// again on every request (30 days of 12 partitions: ~4 ms) is what the cache saves.
#[derive(Clone)]
struct MergedCache(Arc<Mutex<BudgetCache<Vec<[u8; 16]>, Merged>>>);

/// A bucket merged from several rows: the rows' versions and the generations of their sets
/// (a generation changes when a row's sets are replaced whole, which may remove values;
/// None: unknown, never merged incrementally), the merged bucket and, for a bucket whose
/// rows changed since it was first merged, the unions of their sets.
struct Merged {
    versions: Vec<u64>,
    generations: Vec<Option<u64>>,
    point: Point,
    unions: Option<Box<(UniqUnion, UniqUnion)>>,
}

const MERGED_CACHE_BYTES: usize = 16 << 20;

impl Default for MergedCache {
    fn default() -> Self {
        MergedCache(Arc::new(Mutex::new(BudgetCache::new(
            MERGED_CACHE_BYTES,
            Eviction::Fifo,
        ))))
    }
}

/// A rollup row's distinct users and sessions.
type UniqStates = (Uniq, Uniq);

/// Decoded [`UniqStates`] by row id, with the row version they were decoded from, shared
/// by a reader's clones; over [`STATE_CACHE_BYTES`] the states kept longest ago go (rows
/// are decoded again on their next read).
#[derive(Clone)]
struct StateCache(Arc<Mutex<BudgetCache<[u8; 16], VersionedStates>>>);

/// A row's states and the generation of its parts (None: sets stored inline).
type StatesOfGeneration = (Arc<UniqStates>, Option<i64>);

/// A row version, the generation of its parts (None: sets stored inline) and the states
/// decoded from it.
type VersionedStates = (u64, Option<i64>, Arc<UniqStates>);

const STATE_CACHE_BYTES: usize = 64 << 20;

impl Default for StateCache {
    fn default() -> Self {
        let cache = BudgetCache::new(STATE_CACHE_BYTES, Eviction::Fifo);
        StateCache(Arc::new(Mutex::new(cache)))
    }
}

impl StateCache {
    fn get(&self, id: &[u8; 16], version: u64) -> Option<StatesOfGeneration> {
        let mut cache = self.0.lock();
        cache
            .get(id)
            .filter(|(v, _, _)| *v == version)
            .map(|(_, g, s)| (s.clone(), *g))
    }

    fn keep(&self, id: [u8; 16], version: u64, generation: Option<i64>, states: Arc<UniqStates>) {
        let size = 64 + states.0.memory_bytes() + states.1.memory_bytes();
        self.0
            .lock()
            .insert(id, (version, generation, states), size);
    }
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

fn int(row: &Row, name: &str) -> i64 {
    match row.get(name) {
        Some(Value::Int64(n)) | Some(Value::Timestamp(n)) => *n,
        Some(Value::Int32(n)) => *n as i64,
        _ => 0,
    }
}

impl StatsReader {
    pub fn new(store: Store) -> Self {
        for entity in ROLLUP_ENTITIES.iter().chain(&["RealtimeCounter"]) {
            if let Err(e) = store.cache_rows(entity) {
                tracing::warn!(error = %e, entity, "rollup rows are not cached");
            }
        }
        StatsReader {
            store,
            states: StateCache::default(),
            merged: MergedCache::default(),
            columns: Default::default(),
            sources: Arc::new(|| Sources::Whole),
            copies: None,
            ids: Arc::default(),
        }
    }

    /// `key.row_id()`, remembered.
    fn id_of(&self, key: &RollupKey) -> [u8; 16] {
        if let Some(id) = self.ids.lock().get(key) {
            return *id;
        }
        let id = key.row_id();
        let mut ids = self.ids.lock();
        if ids.len() >= IDS_KEPT {
            ids.clear();
        }
        ids.insert(key.clone(), id);
        id
    }

    /// The same reader, reading the rows of `copied` sources from `replica`.
    pub fn with_copies(&self, replica: Replica, copied: HashSet<Source>) -> StatsReader {
        StatsReader {
            copies: (!copied.is_empty()).then(|| (replica, Arc::new(copied.into_iter().collect()))),
            ..self.clone()
        }
    }

    /// The replica `key`'s row is read from, if its source is copied.
    fn copy_of(&self, key: &RollupKey) -> Option<&Replica> {
        self.copied(key.source())
    }

    /// A row's event count (None: no row).
    pub(super) fn row_events(&self, key: &RollupKey) -> Result<Option<i64>, StatsError> {
        if let Some(replica) = self.copy_of(key) {
            return Ok(replica.row(key).map(|r| r.events));
        }
        Ok(self.stored_counts(key)?.map(|v| v[0]))
    }

    /// A stored row's event count, distinct users and distinct sessions (None: no row).
    fn stored_counts(&self, key: &RollupKey) -> Result<Option<[i64; 3]>, StatsError> {
        let fields = ["event_count", "unique_users", "unique_sessions"];
        let Some(v) = self
            .store
            .get_fields(key.entity(), &self.id_of(key), &fields)?
        else {
            return Ok(None);
        };
        let n = |i: usize| match v.get(i) {
            Some(Value::Int64(n)) => *n,
            _ => 0,
        };
        Ok(Some([n(0), n(1), n(2)]))
    }

    /// The same reader with `mb` megabytes for the columns trends decode
    /// (`stats.trends_cache_mb`).
    pub fn with_trends_cache_mb(mut self, mb: u64) -> StatsReader {
        self.columns = super::trends::ColumnCache::new((mb as usize).saturating_mul(1 << 20));
        self
    }

    /// The same reader answering for `sources` (asked at each question); the decoded-state
    /// cache is shared.
    pub fn with_sources(&self, sources: SourcesFn) -> StatsReader {
        StatsReader {
            sources,
            ..self.clone()
        }
    }

    /// The replica rows of `source` are read from, if it is copied.
    fn copied(&self, source: Option<&Source>) -> Option<&Replica> {
        let (replica, copied) = self.copies.as_ref()?;
        copied.contains(source?).then_some(replica)
    }

    /// The sources it answers for now.
    pub fn sources(&self) -> Sources {
        (self.sources)()
    }

    /// One bucket's totals over `keys` (one key per source): counts add, distinct users and
    /// sessions are the union of the rows' sets (a single row's stored counts are used as
    /// they are).
    pub(super) fn merged_point(&self, keys: &[RollupKey], t_us: i64) -> Result<Point, StatsError> {
        /// A row found for a key: stored (with its counts) or copied.
        enum Found<'a> {
            Stored(&'a RollupKey, [i64; 3]),
            Copied(CopiedRow),
        }
        let mut present: Vec<Found> = Vec::new();
        for key in keys.iter().filter(|k| self.copy_of(k).is_none()) {
            present.extend(self.stored_counts(key)?.map(|v| Found::Stored(key, v)));
        }
        if let Some((replica, _)) = &self.copies {
            let of_copies = keys.iter().filter(|k| self.copy_of(k).is_some());
            replica.rows(of_copies, |row| present.extend(row.map(Found::Copied)));
        }
        let mut point = Point {
            t_us,
            events: 0,
            unique_users: 0,
            unique_sessions: 0,
        };
        match present.as_slice() {
            [] => {}
            [Found::Stored(_, v)] => {
                point.events = v[0];
                point.unique_users = v[1];
                point.unique_sessions = v[2];
            }
            [Found::Copied(r)] => {
                point.events = r.events;
                point.unique_users = r.sets.0.count() as i64;
                point.unique_sessions = r.sets.1.count() as i64;
            }
            many => {
                // The versions first: rows written after them make the next read merge again.
                let mut ids = Vec::with_capacity(many.len());
                let mut versions = Vec::with_capacity(many.len());
                for f in many {
                    let (id, version) = match f {
                        Found::Stored(key, _) => {
                            let id = self.id_of(key);
                            (
                                id,
                                self.store.latest_version(key.entity(), &id)?.unwrap_or(0),
                            )
                        }
                        Found::Copied(r) => (r.id, r.version),
                    };
                    ids.push(id);
                    versions.push(version);
                }
                let (previous, hot) = {
                    let mut cache = self.merged.0.lock();
                    match cache.get(&ids) {
                        Some(m) if m.versions == versions => {
                            return Ok(Point { t_us, ..m.point });
                        }
                        Some(m) if m.unions.is_some() => (cache.remove(&ids), true),
                        Some(_) => (None, true),
                        None => (None, false),
                    }
                };
                // Counts, sets and generations read after the versions: never older.
                let mut read = Vec::with_capacity(many.len());
                for f in many {
                    read.push(match f {
                        Found::Stored(key, _) => {
                            let events = self.stored_counts(key)?.map_or(0, |v| v[0]);
                            match self.stored_states(key)? {
                                Some((sets, generation)) => {
                                    (events, Some(sets), generation.map(|g| g as u64))
                                }
                                None => (events, None, None),
                            }
                        }
                        Found::Copied(r) => (r.events, Some(r.sets.clone()), Some(r.generation)),
                    });
                }
                point.events = read.iter().map(|r| r.0).sum();
                let generations: Vec<Option<u64>> = read.iter().map(|r| r.2).collect();
                let unions = match previous {
                    Some(Merged {
                        versions: was,
                        generations: same,
                        unions: Some(mut unions),
                        ..
                    }) if same == generations && generations.iter().all(Option::is_some) => {
                        // No row's sets were replaced since (only grown): adding the changed
                        // rows' sets again makes the union of all of them.
                        for (r, (v, w)) in read.iter().zip(versions.iter().zip(&was)) {
                            if let (Some(sets), true) = (&r.1, v != w) {
                                unions.0.add(&sets.0);
                                unions.1.add(&sets.1);
                            }
                        }
                        unions
                    }
                    _ => {
                        let mut unions = Box::new((UniqUnion::new(), UniqUnion::new()));
                        for sets in read.iter().filter_map(|r| r.1.as_ref()) {
                            unions.0.add(&sets.0);
                            unions.1.add(&sets.1);
                        }
                        unions
                    }
                };
                point.unique_users = unions.0.count().0 as i64;
                point.unique_sessions = unions.1.count().0 as i64;
                // A bucket merged again because its rows changed (today's) keeps its unions,
                // so the next change adds only the changed rows' sets; not past ~2 MB.
                let union_bytes = unions.0.memory_bytes() + unions.1.memory_bytes();
                let keep = hot && union_bytes <= MERGED_CACHE_BYTES / 8;
                let weight = 64 + ids.len() * 32 + if keep { union_bytes } else { 0 };
                let merged = Merged {
                    versions,
                    generations,
                    point,
                    unions: keep.then_some(unions),
                };
                self.merged.0.lock().insert(ids, merged, weight);
            }
        }
        Ok(point)
    }

    pub(super) fn bucket_key(
        org: [u8; 16],
        t_us: i64,
        g: Granularity,
        event_type: &str,
    ) -> RollupKey {
        let (date, hour) = utc_day_hour(t_us);
        match g {
            Granularity::Hour => RollupKey::Hourly {
                org,
                date,
                hour: hour as u8,
                event_type: event_type.to_string(),
                source: None,
            },
            Granularity::Day => RollupKey::Daily {
                org,
                date,
                event_type: event_type.to_string(),
                source: None,
            },
        }
    }

    /// A rollup row's distinct users and sessions, decoded once per row version (a day's
    /// exact set or sketch is tens of KB: decoding the week's on every request took ~10 ms).
    pub(super) fn states(&self, key: &RollupKey) -> Result<Option<Arc<UniqStates>>, StatsError> {
        if let Some(replica) = self.copy_of(key) {
            return Ok(replica.row(key).map(|r| r.sets));
        }
        Ok(self.stored_states(key)?.map(|(states, _)| states))
    }

    /// A stored rollup row's states and the generation of its parts (see
    /// [`StatsReader::states`]).
    fn stored_states(&self, key: &RollupKey) -> Result<Option<StatesOfGeneration>, StatsError> {
        let id = self.id_of(key);
        // The rollup worker may write the row meanwhile (it replaces the row version it
        // names, and a new generation of parts drops the old one's): read again until the
        // row and its parts are of one moment.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(version) = self.store.latest_version(key.entity(), &id)? else {
                return Ok(None);
            };
            if let Some(found) = self.states.get(&id, version) {
                return Ok(Some(found));
            }
            let fields = [
                "state_generation",
                "state_parts",
                "users_state",
                "sessions_state",
            ];
            let Some(values) =
                self.store
                    .get_version_fields(key.entity(), &id, version, &fields)?
            else {
                if attempt < 100 {
                    continue;
                }
                return Ok(None);
            };
            let mut row = Row::new();
            for (name, value) in fields.iter().zip(values) {
                row.set(name, value);
            }
            let parts = parts::parts_of(key, &row)?;
            let states = match parts::read_sets(&self.store, key, &row, parts)? {
                Some(states) => states,
                None if attempt < 100 => {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    continue;
                }
                None => {
                    let p = parts.expect("only parts can be missing");
                    return Err(parts::missing_part(key, p));
                }
            };
            if self.store.latest_version(key.entity(), &id)? != Some(version) && attempt < 100 {
                continue;
            }
            let states = Arc::new(states);
            let generation = parts.map(|p| p.generation);
            self.states.keep(id, version, generation, states.clone());
            return Ok(Some((states, generation)));
        }
    }

    /// The number of `g` buckets in [from, to) (from rounded down), refused over
    /// [`MAX_POINTS`].
    pub(super) fn check_points(
        from_us: i64,
        to_us: i64,
        g: Granularity,
    ) -> Result<usize, StatsError> {
        let step = g.step_us();
        let start = floor_to(from_us, step);
        let n = ((to_us - start).max(0) as u128).div_ceil(step as u128) as usize;
        if n > MAX_POINTS {
            return Err(StatsError::Invalid(format!(
                "the range holds {n} {} buckets; at most {MAX_POINTS}",
                g.as_str()
            )));
        }
        Ok(n)
    }

    /// One point per bucket starting in [from, to) (from rounded down to the bucket),
    /// zeros included; `event_type` None = every type.
    pub fn timeseries(
        &self,
        org: [u8; 16],
        from_us: i64,
        to_us: i64,
        g: Granularity,
        event_type: Option<&str>,
    ) -> Result<Vec<Point>, StatsError> {
        let step = g.step_us();
        let start = floor_to(from_us, step);
        let n = Self::check_points(from_us, to_us, g)?;
        let et = event_type.unwrap_or(ALL_TYPES);
        let sources = self.sources();
        let mut out = Vec::with_capacity(n);
        let mut t = start;
        while t < to_us {
            let keys = sources.keys(Self::bucket_key(org, t, g, et));
            out.push(self.merged_point(&keys, t)?);
            t += step;
        }
        Ok(out)
    }

    /// The `limit` most frequent event names of an org on a UTC date (count desc, name asc);
    /// over several sources, each name's full counts add before the top is taken.
    pub fn top_events(
        &self,
        org: [u8; 16],
        date: NaiveDate,
        limit: usize,
    ) -> Result<Vec<TopEvent>, StatsError> {
        self.top_events_over(org, date, limit, &self.sources())
    }

    pub(super) fn top_events_over(
        &self,
        org: [u8; 16],
        date: NaiveDate,
        limit: usize,
        sources: &Sources,
    ) -> Result<Vec<TopEvent>, StatsError> {
        let rows = self.store.query(
            &Query::new(NAMES)
                .eq("org_id", Value::Uuid(org))
                .eq("date", Value::String(date.format("%Y-%m-%d").to_string())),
        )?;
        let mut counts: std::collections::HashMap<String, i64> = Default::default();
        for r in &rows {
            let Some(key) = RollupKey::from_row(NAMES, r) else {
                continue;
            };
            if let (true, Some(Value::String(name))) =
                (sources.holds(key.source()), r.get("event_name"))
            {
                if self.copied(key.source()).is_none() {
                    *counts.entry(name.to_string()).or_insert(0) += int(r, "event_count");
                }
            }
        }
        if let (Some((replica, _)), Sources::Partitions(list)) = (&self.copies, sources) {
            let read: Vec<&Source> = list
                .iter()
                .filter(|s| self.copied(Some(s)).is_some())
                .collect();
            replica.add_names(org, date, &read, &mut counts);
        }
        let mut out: Vec<TopEvent> = counts
            .into_iter()
            .map(|(event_name, count)| TopEvent { event_name, count })
            .collect();
        sort_top(&mut out);
        out.truncate(limit);
        Ok(out)
    }

    /// Distinct users and sessions over [from, to), every event type: the UNION of the
    /// buckets' sets or sketches. Whole UTC days come from DailyStats, the rest from hours;
    /// `from` is rounded down and `to` up to whole hours.
    pub fn unique(&self, org: [u8; 16], from_us: i64, to_us: i64) -> Result<Unique, StatsError> {
        let (users, sessions) =
            self.unique_unions(org, from_us, to_us, ALL_TYPES, &self.sources())?;
        let (u, ue) = users.count();
        let (s, se) = sessions.count();
        Ok(Unique {
            users: u,
            sessions: s,
            exact: ue && se,
        })
    }

    /// The unions of [`StatsReader::unique`] over `sources`.
    pub(super) fn unique_unions(
        &self,
        org: [u8; 16],
        from_us: i64,
        to_us: i64,
        event_type: &str,
        sources: &Sources,
    ) -> Result<(UniqUnion, UniqUnion), StatsError> {
        let mut users = UniqUnion::new();
        let mut sessions = UniqUnion::new();
        let end = floor_to(to_us + HOUR_US - 1, HOUR_US);
        let mut t = floor_to(from_us, HOUR_US);
        if (end - t) / DAY_US > 3660 {
            return Err(StatsError::Invalid(format!(
                "unique users over {} days: at most 3660",
                (end - t) / DAY_US
            )));
        }
        while t < end {
            let whole_day = t.rem_euclid(DAY_US) == 0 && t + DAY_US <= end;
            let g = if whole_day {
                Granularity::Day
            } else {
                Granularity::Hour
            };
            for key in sources.keys(Self::bucket_key(org, t, g, event_type)) {
                if let Some(states) = self.states(&key)? {
                    users.add(&states.0);
                    sessions.add(&states.1);
                }
            }
            t += g.step_us();
        }
        Ok((users, sessions))
    }

    /// Real-time windows (as last persisted) and today's totals (UTC day of `now_us`).
    pub fn counters(
        &self,
        org: [u8; 16],
        windows_s: &[u64],
        now_us: i64,
    ) -> Result<Counters, StatsError> {
        let rows = self
            .store
            .query(&Query::new("RealtimeCounter").eq("org_id", Value::Uuid(org)))?;
        let refs: Vec<&Row> = rows.iter().collect();
        let (windows, updated) = windows_of(&refs, windows_s.iter().map(|&w| w as i64));
        let day = Self::bucket_key(org, now_us, Granularity::Day, ALL_TYPES);
        let today = self.merged_point(&self.sources().keys(day), now_us)?;
        Ok(Counters {
            windows,
            events_today: today.events,
            unique_users_today: today.unique_users,
            updated_at_us: updated,
        })
    }

    /// Every org's real-time windows as last persisted (all lengths), and when they were
    /// updated: what an instance sends the peers that copy its state.
    pub fn all_windows(&self) -> Result<Vec<OrgWindows>, StatsError> {
        let rows = self.store.scan_all("RealtimeCounter")?;
        let mut by_org: std::collections::BTreeMap<[u8; 16], Vec<&Row>> = Default::default();
        for r in &rows {
            if let Some(Value::Uuid(org)) = r.get("org_id") {
                by_org.entry(*org).or_default().push(r);
            }
        }
        Ok(by_org
            .into_iter()
            .map(|(org, rows)| {
                let mut lengths: Vec<i64> = rows.iter().map(|r| int(r, "window_seconds")).collect();
                lengths.sort_unstable();
                lengths.dedup();
                let (windows, updated_at_us) = windows_of(&rows, lengths.into_iter());
                OrgWindows {
                    org: uuid::Uuid::from_bytes(org),
                    windows,
                    updated_at_us,
                }
            })
            .collect())
    }

    /// The newest `limit` events of an org (by event time, newest first), of the sources
    /// it answers for.
    pub fn recent_events(&self, org: [u8; 16], limit: usize) -> Result<Vec<Row>, StatsError> {
        if let Sources::Partitions(list) = self.sources() {
            return self.recent_events_of(org, limit, &list);
        }
        Ok(self.store.query(
            &Query::new("Event")
                .eq("org_id", Value::Uuid(org))
                .order_by("timestamp", Order::Desc)
                .limit(limit),
        )?)
    }

    /// Events of an org with event time in [from, to), counted through the
    /// `[org_id, timestamp]` index (any range, not bound to buckets).
    pub fn count_raw(&self, org: [u8; 16], from_us: i64, to_us: i64) -> Result<u64, StatsError> {
        Ok(self
            .store
            .count(&Query::new("Event").eq("org_id", Value::Uuid(org)).range(
                "timestamp",
                Bound::Included(Value::Timestamp(from_us)),
                Bound::Excluded(Value::Timestamp(to_us)),
            ))?)
    }

    /// Whether any rollup mentions the org (an org with no events is unknown).
    pub fn org_known(&self, org: [u8; 16]) -> Result<bool, StatsError> {
        Ok(!self
            .store
            .query(&Query::new(DAILY).eq("org_id", Value::Uuid(org)).limit(1))?
            .is_empty())
    }
}

/// Top events in their order: count descending, then name ascending.
pub(super) fn sort_top(out: &mut [TopEvent]) {
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.event_name.cmp(&b.event_name))
    });
}
