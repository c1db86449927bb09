//! Answers for the whole scaled-out group (docs/SCALE-OUT.md, "Queries"): the instance a
//! question reaches answers the partitions it holds itself, asks the owner of every other
//! partition for a partial state over exactly those partitions (`POST /internal/v1/partials`,
//! signed with `scale_out.cluster_secret`, never an org token), and merges: counts add,
//! distinct users and sessions are unions of sets or sketches, event names add full counts,
//! recent events merge by time. Every answer says what it covers ([`Coverage`]).
//!
//! Which instance answers a partition: this instance for the partitions ingest holds now
//! (and has restored); for the others, the owner the members topic names. A partition held
//! here is never asked of a peer, and a peer answers only partitions it holds when asked,
//! so no partition is counted twice even while ownership changes; one that no instance
//! answers is listed as missing, with the reason.

use super::error::ApiError;
use super::events::EventJson;
use super::{blocking, read, GatewayState, INLINE_READ_BUCKETS};
use crate::cluster::{Cluster, Ownership, TopicPartition};
use crate::stats::bucket::Source;
use crate::stats::explore::{Cursor, ExploreAsk, ExploreSpec};
use crate::stats::partial::{self, BucketState, UniqueState};
use crate::stats::query::{Counters, Granularity, Point, Sources, StatsReader, TopEvent, Unique};
use crate::stats::realtime::WindowValues;
use crate::stats::replica::Replica;
use crate::stats::trends::{
    merge_trend_states, rollups_answer, Trend, TrendAsk, TrendSpec, TrendState,
};
use crate::stats::StatsError;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// The internal route peers ask.
pub const PARTIALS_PATH: &str = "/internal/v1/partials";
/// The largest partial answer read from a peer.
const MAX_PARTIAL_BYTES: usize = 256 << 20;

/// What an answer covers: `complete` when every partition of the subscription was
/// included, else the partitions left out and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Missing>,
    /// Partitions answered from a copy of their rollups as their last owner left them
    /// (while the partition moves or its new owner restores it): counted up to then.
    #[serde(
        default,
        rename = "stale_partitions",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub stale: Vec<Missing>,
}

impl Coverage {
    fn new(mut missing: Vec<Missing>, mut stale: Vec<Missing>) -> Coverage {
        for list in [&mut missing, &mut stale] {
            list.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        }
        Coverage {
            complete: missing.is_empty() && stale.is_empty(),
            missing,
            stale,
        }
    }
}

/// A partition an answer left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    pub topic: String,
    pub partition: i32,
    /// `no_owner`, `moving` (claimed by two instances, or its owner has just let it go),
    /// `restoring` (its owner is reading its history; `restore_lag` says how much is left)
    /// or `unreachable` (its owner did not answer; `url` and `error` say where and why).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_lag: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Missing {
    fn new(tp: &TopicPartition, reason: &str) -> Missing {
        Missing {
            topic: tp.0.clone(),
            partition: tp.1,
            reason: reason.to_string(),
            owner: None,
            url: None,
            restore_lag: None,
            error: None,
        }
    }
}

/// A question, as one instance asks another.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ask {
    Timeseries {
        org: Uuid,
        from_us: i64,
        to_us: i64,
        granularity: String,
        event_type: Option<String>,
    },
    TopEvents {
        org: Uuid,
        date: NaiveDate,
    },
    Unique {
        org: Uuid,
        from_us: i64,
        to_us: i64,
    },
    Counters {
        org: Uuid,
        windows_s: Vec<u64>,
        now_us: i64,
    },
    Recent {
        org: Uuid,
        limit: usize,
    },
    OrgKnown {
        org: Uuid,
    },
    /// A trend over the partitions' events (every series: the asker takes the top N).
    Trend {
        org: Uuid,
        question: TrendAsk,
        /// Distinct values counted exactly up to this many per set (the asker's).
        threshold: u64,
    },
    /// A page of the explorer over the partitions' events.
    Explore {
        org: Uuid,
        question: ExploreAsk,
    },
}

/// One instance's partial state for an [`Ask`] (the same kind).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Part {
    Timeseries {
        buckets: Vec<BucketState>,
    },
    TopEvents {
        names: Vec<TopEvent>,
    },
    Unique(UniqueState),
    Counters {
        /// The instance's real-time windows (it keeps them over every event it stored).
        windows: Vec<WindowValues>,
        today: Vec<BucketState>,
        updated_at_us: Option<i64>,
    },
    Recent {
        events: Vec<RecentEvent>,
    },
    OrgKnown {
        known: bool,
    },
    Trend(TrendState),
    Explore {
        /// The page, newest first, as the explorer orders events.
        events: Vec<RecentEvent>,
        /// The instance has more events past the page.
        more: bool,
    },
}

/// One recent event as it travels: its time and place, to merge and deduplicate by, and
/// the API's Event object as JSON text. (Text, not a raw JSON value: a [`Part`] is an
/// internally tagged enum, which serde reads through a buffer that cannot hold raw values;
/// recent events from peers were refused this way until 2026-12-05.)
#[derive(Debug, Serialize, Deserialize)]
pub struct RecentEvent {
    pub t_us: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub event: String,
}

impl RecentEvent {
    /// The Event object, as the API writes it.
    fn into_raw(self) -> Box<RawValue> {
        RawValue::from_string(self.event).unwrap_or_else(|_| RawValue::NULL.to_owned())
    }
}

/// `POST /internal/v1/partials`'s body.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartialsRequest {
    pub ask: Ask,
    pub partitions: Vec<TopicPartition>,
}

/// Its answer: the partitions answered for, the ones refused (not held, or restoring) and
/// the partial state over the answered ones.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartialsResponse {
    pub instance: String,
    pub served: Vec<TopicPartition>,
    pub refused: Vec<Missing>,
    pub part: Option<Part>,
}

/// Who answers which partition, for one question.
struct Plan {
    /// Partitions held here and restored.
    local: Vec<TopicPartition>,
    /// Peer URL -> (instance, the partitions asked of it).
    peers: BTreeMap<String, (String, Vec<TopicPartition>)>,
    /// Other instances' partitions answered from this instance's copies of their rollups.
    copied: Vec<TopicPartition>,
    /// Instances whose real-time windows are read from the copies.
    windows_from: Vec<String>,
    missing: Vec<Missing>,
    /// Missing partitions read from copies their last owner left (`owner`: that
    /// instance; `reason`: why the partition is not answered by an owner).
    stale: Vec<Missing>,
}

/// What a question may read from the copies of other instances' rollups
/// (src/stats/replica.rs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copies {
    /// Nothing (recent events, and trends and explorer pages read from events: events are
    /// not copied).
    No,
    /// Rollup rows.
    Rows,
    /// Rollup rows and real-time windows (counters): an instance's partitions are read
    /// from the copies only together with its windows.
    RowsAndWindows,
}

impl Plan {
    /// Moves the partitions whose copies are complete and from their owner out of `peers`,
    /// and the missing partitions of which a copy their last owner left is held into
    /// `stale` (read from that copy).
    fn use_copies(&mut self, replica: &Replica, copies: Copies) {
        if copies == Copies::No {
            return;
        }
        let missing = std::mem::take(&mut self.missing);
        for m in missing {
            let tp = (m.topic.clone(), m.partition);
            match replica.stale(&Source::new(&m.topic, m.partition)) {
                Some(left_by) => {
                    self.copied.push(tp);
                    self.stale.push(Missing {
                        owner: Some(left_by),
                        ..m
                    });
                }
                None => self.missing.push(m),
            }
        }
        let copied =
            |owner: &str, tp: &TopicPartition| replica.serves(&Source::new(&tp.0, tp.1), owner);
        let peers = std::mem::take(&mut self.peers);
        for (url, (owner, list)) in peers {
            if copies == Copies::RowsAndWindows {
                if replica.windows_fresh(&owner) && list.iter().all(|tp| copied(&owner, tp)) {
                    self.copied.extend(list);
                    self.windows_from.push(owner);
                } else {
                    self.peers.insert(url, (owner, list));
                }
                continue;
            }
            let (here, asked): (Vec<_>, Vec<_>) =
                list.into_iter().partition(|tp| copied(&owner, tp));
            self.copied.extend(here);
            if !asked.is_empty() {
                self.peers.insert(url, (owner, asked));
            }
        }
    }

    /// A reader over the partitions answered here: held, and copied.
    fn reader(&self, st: &GatewayState) -> StatsReader {
        let all: Vec<TopicPartition> = self.local.iter().chain(&self.copied).cloned().collect();
        let src = sources(&all);
        let copied: HashSet<Source> = self
            .copied
            .iter()
            .map(|(t, p)| Source::new(t, *p))
            .collect();
        st.stats
            .with_sources(Arc::new(move || src.clone()))
            .with_copies(st.replica.clone(), copied)
    }
}

fn sources(list: &[TopicPartition]) -> Sources {
    Sources::Partitions(list.iter().map(|(t, p)| Source::new(t, *p)).collect())
}

fn plan(cluster: &Cluster) -> Plan {
    let (local, restoring) = cluster.local_state();
    let snapshot = cluster.snapshot();
    let mut plan = Plan {
        local: Vec::new(),
        peers: BTreeMap::new(),
        copied: Vec::new(),
        windows_from: Vec::new(),
        missing: Vec::new(),
        stale: Vec::new(),
    };
    let mut seen: HashSet<TopicPartition> = HashSet::new();
    for tp in &local {
        seen.insert(tp.clone());
        match restoring.get(tp) {
            Some(lag) => plan.missing.push(Missing {
                owner: Some(cluster.instance().to_string()),
                restore_lag: Some(*lag),
                ..Missing::new(tp, "restoring")
            }),
            None => plan.local.push(tp.clone()),
        }
    }
    for p in snapshot.partitions {
        let tp = (p.topic.clone(), p.partition);
        if seen.contains(&tp) {
            continue;
        }
        let owner = p.owner.clone();
        match (&p.state, owner, p.url.clone()) {
            (Ownership::Owned, Some(owner), _) if owner == cluster.instance() => {
                // Announced as ours, but ingest let it go since.
                plan.missing.push(Missing::new(&tp, "moving"));
            }
            (Ownership::Owned, Some(owner), Some(url)) => match p.restore_lag {
                Some(lag) => plan.missing.push(Missing {
                    owner: Some(owner),
                    url: Some(url),
                    restore_lag: Some(lag),
                    ..Missing::new(&tp, "restoring")
                }),
                None => plan
                    .peers
                    .entry(url)
                    .or_insert_with(|| (owner, Vec::new()))
                    .1
                    .push(tp),
            },
            (Ownership::Moving, _, _) => plan.missing.push(Missing::new(&tp, "moving")),
            _ => plan.missing.push(Missing::new(&tp, "no_owner")),
        }
    }
    plan
}

/// Computes this instance's partial state for `ask` over `partitions` with `stats` (which
/// reads copied partitions from the copies; blocking reads); counters add the real-time
/// windows of `windows_from` as copied.
fn local_part(
    stats: &StatsReader,
    ask: &Ask,
    partitions: &[TopicPartition],
    (replica, windows_from): (&Replica, &[String]),
) -> Result<Part, ApiError> {
    let src = sources(partitions);
    Ok(match ask {
        Ask::Timeseries {
            org,
            from_us,
            to_us,
            granularity,
            event_type,
        } => Part::Timeseries {
            buckets: stats.timeseries_state(
                *org.as_bytes(),
                (*from_us, *to_us),
                granularity_of(granularity)?,
                event_type.as_deref(),
                &src,
            )?,
        },
        Ask::TopEvents { org, date } => Part::TopEvents {
            names: stats.name_counts(*org.as_bytes(), *date, &src)?,
        },
        Ask::Unique {
            org,
            from_us,
            to_us,
        } => Part::Unique(stats.unique_state(*org.as_bytes(), (*from_us, *to_us), &src)?),
        Ask::Counters {
            org,
            windows_s,
            now_us,
        } => {
            let mut c = stats.counters(*org.as_bytes(), windows_s, *now_us)?;
            add_copied_windows(&mut c, replica, windows_from, *org.as_bytes());
            let day = crate::stats::query::DAY_US;
            let start = now_us.div_euclid(day) * day;
            Part::Counters {
                windows: c.windows,
                today: stats.timeseries_state(
                    *org.as_bytes(),
                    (start, start + day),
                    Granularity::Day,
                    None,
                    &src,
                )?,
                updated_at_us: c.updated_at_us,
            }
        }
        Ask::Recent { org, limit } => {
            let list: Vec<Source> = partitions.iter().map(|(t, p)| Source::new(t, *p)).collect();
            let rows = stats.recent_events_of(*org.as_bytes(), *limit, &list)?;
            Part::Recent {
                events: rows.iter().map(recent_event).collect(),
            }
        }
        Ask::OrgKnown { org } => Part::OrgKnown {
            known: stats.org_known(*org.as_bytes())?,
        },
        Ask::Trend {
            org,
            question,
            threshold,
        } => {
            let spec = question
                .spec(*org.as_bytes())
                .map_err(|e| ApiError::bad_parameter("question", "(a trend part)", e))?;
            let reader = stats.with_sources(Arc::new(move || src.clone()));
            Part::Trend(reader.trend_state(&spec, *threshold)?)
        }
        Ask::Explore { org, question } => {
            let spec = question
                .spec(*org.as_bytes())
                .map_err(|e| ApiError::bad_parameter("question", "(an explorer part)", e))?;
            let reader = stats.with_sources(Arc::new(move || src.clone()));
            let page = reader.explore(&spec)?;
            Part::Explore {
                events: page.rows.iter().map(recent_event).collect(),
                more: page.next.is_some(),
            }
        }
    })
}

/// Stored events as the API's Event objects.
fn raw_events(rows: &[crate::store::Row]) -> Vec<Box<RawValue>> {
    rows.iter()
        .map(|r| EventJson::from_row(r).to_raw())
        .collect()
}

/// A stored event as it travels: its place in time and in Kafka, and its Event object.
fn recent_event(r: &crate::store::Row) -> RecentEvent {
    let ev = EventJson::from_row(r);
    RecentEvent {
        t_us: int(r, "timestamp"),
        topic: ev.topic.unwrap_or_default().to_string(),
        partition: ev.partition.unwrap_or(-1) as i32,
        offset: ev.offset.unwrap_or(-1),
        event: ev.to_raw().get().to_string(),
    }
}

/// Adds the copied real-time windows of `instances` (for `org`) to `c`.
fn add_copied_windows(c: &mut Counters, replica: &Replica, instances: &[String], org: [u8; 16]) {
    for instance in instances {
        let (w, at) = replica.windows(instance, org);
        add_windows(&mut c.windows, &w);
        c.updated_at_us = c.updated_at_us.max(at);
    }
}

/// Adds `more` to the windows of the same length in `into`.
fn add_windows(into: &mut [WindowValues], more: &[WindowValues]) {
    for w in more {
        if let Some(m) = into
            .iter_mut()
            .find(|m| m.window_seconds == w.window_seconds)
        {
            m.events += w.events;
            m.active_users += w.active_users;
            m.prev_events += w.prev_events;
            m.prev_active_users += w.prev_active_users;
        }
    }
}

fn int(row: &crate::store::Row, name: &str) -> i64 {
    match row.get(name) {
        Some(crate::store::Value::Timestamp(n)) | Some(crate::store::Value::Int64(n)) => *n,
        _ => 0,
    }
}

fn granularity_of(s: &str) -> Result<Granularity, ApiError> {
    Granularity::parse(s)
        .ok_or_else(|| ApiError::bad_parameter("granularity", s, "is not 'hour' or 'day'"))
}

/// Keeps connections to peers open between questions (HTTP/1.1, one request at a time on
/// each).
#[derive(Clone, Default)]
pub struct Peers(Arc<Mutex<HashMap<String, Vec<PeerConn>>>>);

type PeerConn = hyper::client::conn::http1::SendRequest<Body>;

impl Peers {
    async fn connection(&self, url: &str) -> Result<PeerConn, String> {
        loop {
            let idle = self.0.lock().get_mut(url).and_then(|v| v.pop());
            match idle {
                Some(mut c) if !c.is_closed() => {
                    if c.ready().await.is_ok() {
                        return Ok(c);
                    }
                }
                Some(_) => continue,
                None => break,
            }
        }
        let authority = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .trim_end_matches('/');
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP handshake with {authority}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    fn put_back(&self, url: &str, c: PeerConn) {
        let mut pool = self.0.lock();
        let idle = pool.entry(url.to_string()).or_default();
        if idle.len() < 16 {
            idle.push(c);
        }
    }

    /// Asks `url` for a partial state; the error says what went wrong.
    async fn ask(
        &self,
        st: &GatewayState,
        url: &str,
        request: &PartialsRequest,
    ) -> Result<PartialsResponse, String> {
        let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let now = chrono::Utc::now().timestamp_millis();
        let sig = crate::sign::header_value(&st.cfg.scale_out.cluster_secret, now, &body);
        let authority = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .trim_end_matches('/');
        let req = Request::post(PARTIALS_PATH)
            .header("host", authority)
            .header("content-type", "application/json")
            .header(crate::sign::HEADER, sig)
            .body(Body::from(body))
            .map_err(|e| e.to_string())?;
        let mut conn = self.connection(url).await?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| format!("request to {url}: {e}"))?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), MAX_PARTIAL_BYTES)
            .await
            .map_err(|e| format!("reading {url}'s answer: {e}"))?;
        self.put_back(url, conn);
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
            return Err(format!("{url} answered {status}: {text}"));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{url}'s answer: {e}"))
    }
}

/// The parts of every instance that answered, and what they cover.
struct Gathered {
    parts: Vec<Part>,
    coverage: Coverage,
}

/// Asks every owner (this instance included) for its partial state of `ask`.
async fn gather(
    st: &GatewayState,
    cluster: &Cluster,
    ask: Ask,
    plan: Plan,
) -> Result<Gathered, ApiError> {
    let reader = plan.reader(st);
    let mut missing = plan.missing;
    let stale = plan.stale;
    let timeout = st.cfg.scale_out.peer_timeout();
    let asks = plan.peers.into_iter().map(|(url, (owner, partitions))| {
        let request = PartialsRequest {
            ask: ask.clone(),
            partitions,
        };
        let st = st.clone();
        async move {
            st.metrics.peer_requests.inc();
            let r = tokio::time::timeout(timeout, st.peers.ask(&st, &url, &request)).await;
            let r = r.unwrap_or_else(|_| {
                Err(format!(
                    "{url} did not answer within scale_out.peer_timeout_ms ({} ms)",
                    timeout.as_millis()
                ))
            });
            (url, owner, request.partitions, r)
        }
    });
    let local = if plan.local.is_empty() && plan.copied.is_empty() {
        None
    } else {
        let ask2 = ask.clone();
        let list: Vec<TopicPartition> = plan.local.iter().chain(&plan.copied).cloned().collect();
        let (replica, windows_from) = (st.replica.clone(), plan.windows_from.clone());
        Some(tokio::task::spawn_blocking(move || {
            local_part(&reader, &ask2, &list, (&replica, &windows_from))
        }))
    };
    let answers = futures::future::join_all(asks).await;
    let mut parts = Vec::new();
    if let Some(task) = local {
        let part = task
            .await
            .map_err(|e| ApiError::internal("a partial read", e))??;
        parts.push(part);
    }
    for (url, owner, partitions, r) in answers {
        match r {
            Ok(resp) => {
                missing.extend(resp.refused);
                if let Some(part) = resp.part {
                    if std::mem::discriminant(&part) != std::mem::discriminant(&kind_of(&ask)) {
                        return Err(ApiError::internal(
                            "a peer's partial answer",
                            format!("{url} answered another kind of question"),
                        ));
                    }
                    parts.push(part);
                }
            }
            Err(e) => {
                tracing::warn!(peer = %url, error = %e, "gateway: a peer's partial answer failed");
                for tp in &partitions {
                    missing.push(Missing {
                        owner: Some(owner.clone()),
                        url: Some(url.clone()),
                        error: Some(e.clone()),
                        ..Missing::new(tp, "unreachable")
                    });
                }
            }
        }
    }
    let _ = cluster;
    Ok(Gathered {
        parts,
        coverage: Coverage::new(missing, stale),
    })
}

/// An empty part of the kind `ask` expects (to compare kinds).
fn kind_of(ask: &Ask) -> Part {
    match ask {
        Ask::Timeseries { .. } => Part::Timeseries { buckets: vec![] },
        Ask::TopEvents { .. } => Part::TopEvents { names: vec![] },
        Ask::Unique { .. } => Part::Unique(UniqueState::default()),
        Ask::Counters { .. } => Part::Counters {
            windows: vec![],
            today: vec![],
            updated_at_us: None,
        },
        Ask::Recent { .. } => Part::Recent { events: vec![] },
        Ask::OrgKnown { .. } => Part::OrgKnown { known: false },
        Ask::Trend { .. } => Part::Trend(TrendState::default()),
        Ask::Explore { .. } => Part::Explore {
            events: vec![],
            more: false,
        },
    }
}

/// How a question is answered: by this instance alone (not scaled out, or no peer holds a
/// partition of the question), or by gathering.
enum Route {
    /// This instance's reader (over the partitions it holds and the ones it has copies of,
    /// in a group), the instances whose real-time windows are read from the copies, and
    /// what the answer covers (nothing to say when not scaled out).
    Local(StatsReader, Vec<String>, Option<Coverage>),
    Group(Arc<Cluster>, Plan),
}

fn route(st: &GatewayState, copies: Copies) -> Route {
    let Some(cluster) = &st.cluster else {
        return Route::Local(st.stats.clone(), Vec::new(), None);
    };
    let mut plan = plan(cluster);
    plan.use_copies(&st.replica, copies);
    if plan.peers.is_empty() {
        let reader = plan.reader(st);
        let coverage = Coverage::new(plan.missing, plan.stale);
        Route::Local(reader, plan.windows_from, Some(coverage))
    } else {
        Route::Group(cluster.clone(), plan)
    }
}

/// A trend for the group. From the rollups when they hold the answer and every partition
/// is held here or copied (docs/SCALE-OUT.md); otherwise each owner counts its partitions'
/// events and the parts merge exactly: counts add, distinct values are unions of the parts'
/// sets, and the top N of a breakdown is taken over the merged series. A trend the rollups
/// answer is answered from them here too when no peer is asked.
pub async fn trend(
    st: &GatewayState,
    org: Uuid,
    spec: TrendSpec,
) -> Result<(Trend, Option<Coverage>), ApiError> {
    let threshold = st.cfg.stats.unique_exact_threshold;
    let fail = |spec: &TrendSpec, e: StatsError| super::trends::trend_error(spec, e);
    // The rollups (and their copies) when they hold the answer and no peer need be asked;
    // else the events, where they are.
    let by_rollups = rollups_answer(&spec)
        .then(|| route(st, Copies::Rows))
        .filter(|r| matches!(r, Route::Local(..)));
    match by_rollups.unwrap_or_else(|| route(st, Copies::No)) {
        Route::Local(reader, _, cov) => {
            let s = spec.clone();
            let t = blocking(move || reader.trend(&s, threshold)).await?;
            Ok((t.map_err(|e| fail(&spec, e))?, cov))
        }
        Route::Group(cluster, plan) => {
            let ask = Ask::Trend {
                org,
                question: TrendAsk::of(&spec),
                threshold,
            };
            let got = gather(st, &cluster, ask, plan).await?;
            let parts: Vec<TrendState> = got
                .parts
                .into_iter()
                .filter_map(|p| match p {
                    Part::Trend(t) => Some(t),
                    _ => None,
                })
                .collect();
            let s = spec.clone();
            let t = blocking(move || merge_trend_states(&s, parts, threshold)).await?;
            Ok((t.map_err(|e| fail(&spec, e))?, Some(got.coverage)))
        }
    }
}

/// One page of the explorer for the group: each owner's page over its partitions, merged
/// in the explorer's order (newest first; time, then topic, partition and offset); the next
/// page starts after the last event kept, which is a place every instance can page from.
pub async fn explore(
    st: &GatewayState,
    spec: ExploreSpec,
) -> Result<(Vec<Box<RawValue>>, Option<Cursor>, Option<Coverage>), ApiError> {
    match route(st, Copies::No) {
        Route::Local(reader, _, cov) => {
            let page = blocking(move || reader.explore(&spec)).await??;
            Ok((raw_events(&page.rows), page.next, cov))
        }
        Route::Group(cluster, plan) => {
            let org = Uuid::from_bytes(spec.org);
            let ask = Ask::Explore {
                org,
                question: ExploreAsk::of(&spec),
            };
            let got = gather(st, &cluster, ask, plan).await?;
            let mut more = false;
            let mut all: Vec<(Cursor, RecentEvent)> = Vec::new();
            for p in got.parts {
                if let Part::Explore { events, more: m } = p {
                    more |= m;
                    all.extend(events.into_iter().map(|e| {
                        let place = Cursor {
                            t_us: e.t_us,
                            topic: e.topic.clone(),
                            partition: e.partition,
                            offset: e.offset,
                        };
                        (place, e)
                    }));
                }
            }
            all.sort_by(|a, b| b.0.cmp(&a.0));
            all.dedup_by(|a, b| a.0 == b.0);
            let cut = all.len() > spec.limit;
            all.truncate(spec.limit);
            let next = if cut || more {
                all.last().map(|(c, _)| c.clone())
            } else {
                None
            };
            Ok((
                all.into_iter().map(|(_, e)| e.into_raw()).collect(),
                next,
                Some(got.coverage),
            ))
        }
    }
}

/// A time series for the group.
pub async fn timeseries(
    st: &GatewayState,
    org: Uuid,
    (from, to): (i64, i64),
    g: Granularity,
    event_type: Option<String>,
    points: i64,
) -> Result<(Vec<Point>, Option<Coverage>), ApiError> {
    let small = points <= INLINE_READ_BUCKETS;
    let o = *org.as_bytes();
    match route(st, Copies::Rows) {
        Route::Local(stats, _, cov) => {
            let p = read(small, move || {
                stats.timeseries(o, from, to, g, event_type.as_deref())
            })
            .await??;
            Ok((p, cov))
        }
        Route::Group(cluster, plan) => {
            let ask = Ask::Timeseries {
                org,
                from_us: from,
                to_us: to,
                granularity: g.as_str().to_string(),
                event_type,
            };
            let got = gather(st, &cluster, ask, plan).await?;
            let buckets = got
                .parts
                .into_iter()
                .filter_map(|p| match p {
                    Part::Timeseries { buckets } => Some(buckets),
                    _ => None,
                })
                .collect();
            Ok((
                partial::merge_timeseries(buckets, (from, to), g),
                Some(got.coverage),
            ))
        }
    }
}

/// One day's top events for the group.
pub async fn top_events(
    st: &GatewayState,
    org: Uuid,
    date: NaiveDate,
    limit: usize,
) -> Result<(Vec<TopEvent>, Option<Coverage>), ApiError> {
    let o = *org.as_bytes();
    match route(st, Copies::Rows) {
        Route::Local(stats, _, cov) => Ok((
            read(true, move || stats.top_events(o, date, limit)).await??,
            cov,
        )),
        Route::Group(cluster, plan) => {
            let got = gather(st, &cluster, Ask::TopEvents { org, date }, plan).await?;
            let names = got
                .parts
                .into_iter()
                .filter_map(|p| match p {
                    Part::TopEvents { names } => Some(names),
                    _ => None,
                })
                .collect();
            Ok((partial::merge_top(names, limit), Some(got.coverage)))
        }
    }
}

/// Distinct users and sessions of the group over a range.
pub async fn unique(
    st: &GatewayState,
    org: Uuid,
    (from, to): (i64, i64),
) -> Result<(Unique, Option<Coverage>), ApiError> {
    let o = *org.as_bytes();
    // A whole day is one row, so hours are the most rows a range of this length reads.
    let small = (to - from) / crate::stats::query::HOUR_US <= INLINE_READ_BUCKETS;
    match route(st, Copies::Rows) {
        Route::Local(stats, _, cov) => {
            Ok((read(small, move || stats.unique(o, from, to)).await??, cov))
        }
        Route::Group(cluster, plan) => {
            let ask = Ask::Unique {
                org,
                from_us: from,
                to_us: to,
            };
            let got = gather(st, &cluster, ask, plan).await?;
            let states: Vec<UniqueState> = got
                .parts
                .into_iter()
                .filter_map(|p| match p {
                    Part::Unique(u) => Some(u),
                    _ => None,
                })
                .collect();
            Ok((partial::merge_unique(&states), Some(got.coverage)))
        }
    }
}

/// The real-time counters and today's totals of the group. Today's totals are exact
/// (unions of the partitions' sets); the windows add each instance's (each keeps them over
/// the events it stored: active users seen by two instances count twice, and for a window's
/// length after a partition moves its events may count on both).
pub async fn counters(
    st: &GatewayState,
    org: Uuid,
) -> Result<(Counters, Option<Coverage>), ApiError> {
    let o = *org.as_bytes();
    let windows = st.cfg.stats.realtime_windows_s.clone();
    let now = chrono::Utc::now().timestamp_micros();
    match route(st, Copies::RowsAndWindows) {
        Route::Local(stats, windows_from, cov) => {
            let mut c = read(true, move || stats.counters(o, &windows, now)).await??;
            add_copied_windows(&mut c, &st.replica, &windows_from, o);
            Ok((c, cov))
        }
        Route::Group(cluster, plan) => {
            let ask = Ask::Counters {
                org,
                windows_s: windows.clone(),
                now_us: now,
            };
            let got = gather(st, &cluster, ask, plan).await?;
            let mut merged: Vec<WindowValues> = windows
                .iter()
                .map(|&w| WindowValues {
                    window_seconds: w as i64,
                    ..Default::default()
                })
                .collect();
            let mut today = Vec::new();
            let mut updated: Option<i64> = None;
            for p in got.parts {
                if let Part::Counters {
                    windows,
                    today: t,
                    updated_at_us,
                } = p
                {
                    add_windows(&mut merged, &windows);
                    today.push(t);
                    updated = updated.max(updated_at_us);
                }
            }
            let day = crate::stats::query::DAY_US;
            let start = now.div_euclid(day) * day;
            let point = partial::merge_timeseries(today, (start, start + day), Granularity::Day)
                .into_iter()
                .next();
            Ok((
                Counters {
                    windows: merged,
                    events_today: point.map_or(0, |p| p.events),
                    unique_users_today: point.map_or(0, |p| p.unique_users),
                    updated_at_us: updated,
                },
                Some(got.coverage),
            ))
        }
    }
}

/// The newest events of the group, as the API's Event objects (newest first).
pub async fn recent_events(
    st: &GatewayState,
    org: Uuid,
    limit: usize,
) -> Result<(Vec<Box<RawValue>>, Option<Coverage>), ApiError> {
    let o = *org.as_bytes();
    match route(st, Copies::No) {
        Route::Local(stats, _, cov) => Ok((
            raw_events(&blocking(move || stats.recent_events(o, limit)).await??),
            cov,
        )),
        Route::Group(cluster, plan) => {
            let got = gather(st, &cluster, Ask::Recent { org, limit }, plan).await?;
            let mut all: Vec<RecentEvent> = got
                .parts
                .into_iter()
                .filter_map(|p| match p {
                    Part::Recent { events } => Some(events),
                    _ => None,
                })
                .flatten()
                .collect();
            all.sort_by_key(|e| std::cmp::Reverse(e.t_us));
            let mut seen = HashSet::new();
            all.retain(|e| seen.insert((e.topic.clone(), e.partition, e.offset)));
            all.truncate(limit);
            Ok((
                all.into_iter().map(RecentEvent::into_raw).collect(),
                Some(got.coverage),
            ))
        }
    }
}

/// Whether any instance of the group has seen the org.
pub async fn org_known(st: &GatewayState, org: Uuid) -> Result<bool, ApiError> {
    let stats = st.stats.clone();
    let o = *org.as_bytes();
    if read(true, move || stats.org_known(o)).await?? || st.replica.knows_org(o) {
        return Ok(true);
    }
    let Route::Group(cluster, plan) = route(st, Copies::No) else {
        return Ok(false);
    };
    let got = gather(st, &cluster, Ask::OrgKnown { org }, plan).await?;
    Ok(got
        .parts
        .iter()
        .any(|p| matches!(p, Part::OrgKnown { known: true })))
}

/// `POST /internal/v1/partials`: another instance of the group asks for this instance's
/// partial state over some partitions. Signed with `scale_out.cluster_secret` (401
/// otherwise); partitions this instance does not hold now, or is restoring, are refused
/// (and listed), the others answered.
pub async fn partials(State(st): State<GatewayState>, headers: HeaderMap, body: Bytes) -> Response {
    match answer_partials(&st, &headers, &body).await {
        Ok(resp) => axum::Json(resp).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The group's membership, if the request is signed with `scale_out.cluster_secret` (401
/// otherwise; 404 when this instance is not scaled out).
pub(super) fn from_peer(
    st: &GatewayState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Arc<Cluster>, ApiError> {
    let Some(cluster) = st.cluster.clone() else {
        return Err(ApiError::not_found(
            "this instance is not part of a scaled-out group (scale_out.enabled)".to_string(),
        ));
    };
    let sig = headers
        .get(crate::sign::HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("a peer request needs its signature header"))?;
    let now = chrono::Utc::now().timestamp_millis();
    crate::sign::verify(&st.cfg.scale_out.cluster_secret, now, sig, body)
        .map_err(|e| ApiError::unauthorized(&e))?;
    Ok(cluster)
}

async fn answer_partials(
    st: &GatewayState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<PartialsResponse, ApiError> {
    let cluster = from_peer(st, headers, body)?;
    let request: PartialsRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_parameter("body", "(partials request)", e))?;
    let (local, restoring) = cluster.local_state();
    let mut served = Vec::new();
    let mut refused = Vec::new();
    for tp in request.partitions {
        if let Some(lag) = restoring.get(&tp) {
            refused.push(Missing {
                owner: Some(cluster.instance().to_string()),
                restore_lag: Some(*lag),
                ..Missing::new(&tp, "restoring")
            });
        } else if local.contains(&tp) {
            served.push(tp);
        } else {
            refused.push(Missing::new(&tp, "moving"));
        }
    }
    let part = if served.is_empty() {
        None
    } else {
        let (stats, replica) = (st.stats.clone(), st.replica.clone());
        let list = served.clone();
        let ask = request.ask;
        Some(blocking(move || local_part(&stats, &ask, &list, (&replica, &[]))).await??)
    };
    Ok(PartialsResponse {
        instance: cluster.instance().to_string(),
        served,
        refused,
        part,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_survives_its_trip_between_instances() {
        // Parts travel as an internally tagged enum (serde buffers it): each kind must
        // read back as it was written, events with their JSON intact.
        let event = |n: i64| RecentEvent {
            t_us: n,
            topic: "events".into(),
            partition: 3,
            offset: n,
            event: format!(r#"{{"id":"e{n}","properties":{{"note":"a \"quoted\" line\nbreak"}}}}"#),
        };
        let parts = vec![
            Part::Recent {
                events: vec![event(1), event(2)],
            },
            Part::Explore {
                events: vec![event(3)],
                more: true,
            },
            Part::Trend(TrendState {
                labels: vec![None, Some("signup".into())],
                counts: vec![vec![1, 2], vec![3, 4]],
                scanned: 10,
                ..TrendState::default()
            }),
        ];
        for part in parts {
            let response = PartialsResponse {
                instance: "a".into(),
                served: vec![("events".into(), 3)],
                refused: vec![],
                part: Some(part),
            };
            let text = serde_json::to_string(&response).unwrap();
            let back: PartialsResponse = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
            if let Some(Part::Recent { events } | Part::Explore { events, .. }) = back.part {
                for e in events {
                    let raw = e.into_raw();
                    let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
                    assert_eq!(v["properties"]["note"], "a \"quoted\" line\nbreak");
                }
            }
        }
    }
}
