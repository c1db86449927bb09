//! Membership of a scaled-out group (`[scale_out]`, docs/SCALE-OUT.md): which instance of
//! the consumer group owns each partition, and where its gateway is.
//!
//! Kafka is the only coordinator. Group listing (ListGroups/DescribeGroups) is answered by
//! neither Tansu nor librdkafka's mock cluster, and librdkafka cannot carry member user
//! data, so each instance announces itself on a members topic (one partition): its id, its
//! gateway's URL and the partitions the group gave it, at every rebalance and every
//! `scale_out.announce_interval_ms`, and a last time (`leaving`) when it stops. Every instance
//! reads the topic's tail and keeps each instance's latest announcement. An instance not
//! heard from for three intervals is gone (its announcements are aged by their own clock:
//! the instances' clocks must agree to well within an interval, as NTP keeps them). A
//! partition claimed by two live instances (for a moment during a rebalance) is `moving`.
//!
//! Two threads: `cluster-announce` (a producer) and `cluster-read` (a consumer with a plain
//! assignment, no group).

use crate::config::Config;
use crate::ingest::deadletter::producer_config;
use parking_lot::{Condvar, Mutex, RwLock};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How many records before the members topic's end a reader starts at: enough for every
/// instance's latest announcement (each announces every interval).
const TAIL_RECORDS: i64 = 10_000;

/// A (topic, partition) of the subscription.
pub type TopicPartition = (String, i32);

/// One instance's announcement, as written to the members topic (JSON, keyed by instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub instance: String,
    /// Its gateway, as other instances reach it.
    pub url: String,
    /// When this run of the instance started (ms since the epoch): a restart's
    /// announcements supersede the earlier run's.
    pub started_at_ms: i64,
    /// Rises with every announcement of one run.
    pub seq: u64,
    /// When it was written, by the instance's clock (ms since the epoch).
    pub at_ms: i64,
    /// The partitions the group gave it.
    pub partitions: Vec<ClaimedPartition>,
    /// Its last announcement: it stopped and let its partitions go.
    #[serde(default)]
    pub leaving: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimedPartition {
    pub topic: String,
    pub partition: i32,
    /// While it restores its history: the offsets it still reads (absent once it holds it
    /// whole, and from releases before restores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_lag: Option<i64>,
}

/// An announcement and when it was made, by this process's clock.
struct Heard {
    announcement: Announcement,
    at: Instant,
}

/// The membership of the group as this instance sees it. Shared by ingest (which tells it
/// the partitions it holds), the two threads and the gateway.
pub struct Cluster {
    me: String,
    url: String,
    topic: String,
    interval: Duration,
    started_at_ms: i64,
    /// The partitions this instance holds, and whether that changed since the last
    /// announcement.
    local: Mutex<(BTreeSet<TopicPartition>, bool)>,
    /// Of those, the ones restoring their history, with their restore lag.
    restoring: Mutex<BTreeMap<TopicPartition, i64>>,
    wake: Condvar,
    heard: RwLock<BTreeMap<String, Heard>>,
    /// Partitions of the subscription's topics, from the broker's metadata.
    known: RwLock<BTreeSet<TopicPartition>>,
}

/// Where a partition stands in the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    /// One live instance holds it.
    Owned,
    /// More than one live instance claims it (a rebalance under way).
    Moving,
    /// No live instance claims it.
    NoOwner,
}

/// One partition in [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    pub state: Ownership,
    /// The owner (`Owned` only).
    pub owner: Option<String>,
    pub url: Option<String>,
    /// The owner is restoring the partition's history: the offsets it still reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_lag: Option<i64>,
    /// Every live instance claiming it.
    pub claimants: Vec<String>,
}

/// One live instance in [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub instance: String,
    pub url: String,
    pub partitions: usize,
    /// Milliseconds since its latest announcement.
    pub age_ms: u64,
    pub started_at_ms: i64,
}

/// What `GET /api/v1/cluster` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub instance: String,
    pub members_topic: String,
    pub instances: Vec<InstanceView>,
    pub partitions: Vec<PartitionView>,
    /// Every partition of the subscription has exactly one live owner.
    pub complete: bool,
}

impl Cluster {
    /// The membership for `cfg` (`[scale_out]` enabled), with the gateway bound at
    /// `gateway_addr` (its port makes the default advertised URL).
    pub fn new(cfg: &Config, gateway_addr: std::net::SocketAddr) -> Arc<Cluster> {
        let url = if cfg.gateway.advertised_url.is_empty() {
            format!(
                "http://{}:{}",
                crate::config::host_name(),
                gateway_addr.port()
            )
        } else {
            cfg.gateway.advertised_url.trim_end_matches('/').to_string()
        };
        Arc::new(Cluster {
            me: cfg.scale_out.instance_id(),
            url,
            topic: cfg.scale_out.members_topic(&cfg.kafka.group_id),
            interval: cfg.scale_out.announce_interval(),
            started_at_ms: chrono::Utc::now().timestamp_millis(),
            local: Mutex::new((BTreeSet::new(), true)),
            restoring: Mutex::new(BTreeMap::new()),
            wake: Condvar::new(),
            heard: RwLock::new(BTreeMap::new()),
            known: RwLock::new(BTreeSet::new()),
        })
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.me
    }

    /// Ingest's partitions changed (a rebalance): announced at once.
    pub fn set_local(&self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let mut local = self.local.lock();
        *local = (partitions.into_iter().collect(), true);
        self.wake.notify_all();
    }

    /// Ingest's partitions restoring their history, with their restore lag; a partition
    /// that starts or finishes restoring is announced at once.
    pub fn set_restoring(&self, list: &[(TopicPartition, i64)]) {
        let mut restoring = self.restoring.lock();
        if restoring.is_empty() && list.is_empty() {
            return;
        }
        let changed =
            restoring.len() != list.len() || list.iter().any(|(tp, _)| !restoring.contains_key(tp));
        *restoring = list.iter().cloned().collect();
        drop(restoring);
        if changed {
            self.local.lock().1 = true;
            self.wake.notify_all();
        }
    }

    /// The partitions this instance holds now (as ingest last told it).
    pub fn local_partitions(&self) -> Vec<TopicPartition> {
        self.local.lock().0.iter().cloned().collect()
    }

    /// The partitions ingest holds now, and of those the ones restoring (with their lag).
    pub fn local_state(&self) -> (BTreeSet<TopicPartition>, BTreeMap<TopicPartition, i64>) {
        let local = self.local.lock().0.clone();
        (local, self.restoring.lock().clone())
    }

    /// How long an instance stays alive without a new announcement.
    fn alive_for(&self) -> Duration {
        self.interval * 3
    }

    /// Takes an announcement read from the topic (an instance's older ones are ignored).
    fn hear(&self, a: Announcement) {
        let age = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(a.at_ms);
        let at = Instant::now()
            .checked_sub(Duration::from_millis(age.max(0) as u64))
            .unwrap_or_else(Instant::now);
        let mut heard = self.heard.write();
        let newer = heard.get(&a.instance).is_none_or(|h| {
            (a.started_at_ms, a.seq) > (h.announcement.started_at_ms, h.announcement.seq)
        });
        if newer {
            heard.insert(
                a.instance.clone(),
                Heard {
                    announcement: a,
                    at,
                },
            );
        }
    }

    /// The group as this instance sees it now.
    pub fn snapshot(&self) -> Snapshot {
        let heard = self.heard.read();
        let live: Vec<(&Announcement, Duration)> = heard
            .values()
            .filter(|h| !h.announcement.leaving && h.at.elapsed() < self.alive_for())
            .map(|h| (&h.announcement, h.at.elapsed()))
            .collect();
        let mut claims: BTreeMap<TopicPartition, Vec<&Announcement>> = self
            .known
            .read()
            .iter()
            .map(|tp| (tp.clone(), Vec::new()))
            .collect();
        for (a, _) in &live {
            for p in &a.partitions {
                claims
                    .entry((p.topic.clone(), p.partition))
                    .or_default()
                    .push(a);
            }
        }
        let partitions: Vec<PartitionView> = claims
            .into_iter()
            .map(|((topic, partition), by)| {
                let state = match by.len() {
                    0 => Ownership::NoOwner,
                    1 => Ownership::Owned,
                    _ => Ownership::Moving,
                };
                let owner = (by.len() == 1).then(|| by[0]);
                let restore_lag = owner.and_then(|a| {
                    a.partitions
                        .iter()
                        .find(|p| p.topic == topic && p.partition == partition)
                        .and_then(|p| p.restore_lag)
                });
                PartitionView {
                    state,
                    owner: owner.map(|a| a.instance.clone()),
                    url: owner.map(|a| a.url.clone()),
                    restore_lag,
                    topic,
                    partition,
                    claimants: by.iter().map(|a| a.instance.clone()).collect(),
                }
            })
            .collect();
        Snapshot {
            instance: self.me.clone(),
            members_topic: self.topic.clone(),
            instances: live
                .iter()
                .map(|(a, age)| InstanceView {
                    instance: a.instance.clone(),
                    url: a.url.clone(),
                    partitions: a.partitions.len(),
                    age_ms: age.as_millis() as u64,
                    started_at_ms: a.started_at_ms,
                })
                .collect(),
            complete: !partitions.is_empty()
                && partitions.iter().all(|p| p.state == Ownership::Owned),
            partitions,
        }
    }

    fn announcement(&self, seq: u64, partitions: &BTreeSet<TopicPartition>) -> Announcement {
        let restoring = self.restoring.lock();
        Announcement {
            instance: self.me.clone(),
            url: self.url.clone(),
            started_at_ms: self.started_at_ms,
            seq,
            at_ms: chrono::Utc::now().timestamp_millis(),
            partitions: partitions
                .iter()
                .map(|tp| ClaimedPartition {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    restore_lag: restoring.get(tp).copied(),
                })
                .collect(),
            leaving: false,
        }
    }
}

/// The membership's two threads, named; they stop when `shutdown` is cancelled.
pub type Threads = Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>;

/// Starts announcing (after creating the members topic if it is missing, retrying while
/// the brokers cannot be reached, as ingest does) and reading.
pub fn start(
    cfg: &Config,
    cluster: Arc<Cluster>,
    shutdown: CancellationToken,
) -> anyhow::Result<Threads> {
    use anyhow::Context;
    let producer: BaseProducer = producer_config(cfg).create().with_context(|| {
        format!(
            "creating the members topic's producer for {}",
            cfg.kafka.brokers
        )
    })?;
    let mut cc = rdkafka::ClientConfig::new();
    for (k, v) in cfg.kafka.consumer_properties() {
        cc.set(k, v);
    }
    // A plain assignment: the reader never joins a group.
    cc.set("group.id", format!("{}.members-reader", cfg.kafka.group_id));
    let consumer: BaseConsumer = cc.create().with_context(|| {
        format!(
            "creating the members topic's reader for {}",
            cfg.kafka.brokers
        )
    })?;
    let topics: Vec<String> = match cfg.kafka.subscription() {
        crate::config::Subscription::Topics(t) => t,
        crate::config::Subscription::Regex(_) => Vec::new(),
    };
    let (c1, s1, cfg1) = (cluster.clone(), shutdown.clone(), cfg.clone());
    let announce = std::thread::Builder::new()
        .name("cluster-announce".into())
        .spawn(move || {
            let mut wait = Duration::from_millis(500);
            while let Err(e) = create_members_topic(&cfg1, &c1.topic) {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                    "the members topic is not there yet");
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if s1.is_cancelled() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            announce_loop(&c1, &producer, &s1)
        })?;
    let read = std::thread::Builder::new()
        .name("cluster-read".into())
        .spawn(move || read_loop(&cluster, &consumer, &topics, &shutdown))?;
    Ok(vec![("cluster-announce", announce), ("cluster-read", read)])
}

/// Creates the members topic unless the brokers already have it (made by an operator whose
/// clients may not create topics, or by a broker without the admin API).
fn create_members_topic(cfg: &Config, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    // Asking for the topic's metadata must not create it with the broker's defaults.
    let probe: Result<BaseProducer, _> = producer_config(cfg)
        .set("allow.auto.create.topics", "false")
        .create();
    if let Ok(probe) = probe {
        if let Ok(md) = probe
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        {
            if md
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            {
                return Ok(());
            }
        }
    }
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(5)));
    crate::produce::create_topic_if_missing(&producer_config(cfg), &new, &opts).map_err(|e| {
        anyhow::anyhow!(
            "creating the members topic {topic:?} on {}: {e}",
            cfg.kafka.brokers
        )
    })
}

/// Announces at every change of the local partitions and every interval; a last
/// `leaving` announcement at shutdown.
fn announce_loop(
    cluster: &Cluster,
    producer: &BaseProducer,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut seq = 0u64;
    // The first announcement goes at once: the local partitions start out changed.
    let mut last = Instant::now();
    loop {
        let partitions = {
            let mut local = cluster.local.lock();
            let due = last.elapsed() >= cluster.interval;
            if !local.1 && !due && !shutdown.is_cancelled() {
                let left = cluster.interval.saturating_sub(last.elapsed());
                cluster
                    .wake
                    .wait_for(&mut local, left.min(Duration::from_millis(100)));
                None
            } else {
                local.1 = false;
                Some(local.0.clone())
            }
        };
        producer.poll(Duration::ZERO);
        let Some(partitions) = partitions else {
            continue;
        };
        seq += 1;
        let mut a = cluster.announcement(seq, &partitions);
        if shutdown.is_cancelled() {
            a.partitions.clear();
            a.leaving = true;
        }
        let body = serde_json::to_vec(&a)?;
        let record = BaseRecord::<str, [u8]>::to(&cluster.topic)
            .key(cluster.me.as_str())
            .payload(&body);
        if let Err((e, _)) = producer.send(record) {
            tracing::warn!(error = %e, topic = %cluster.topic, "announcing on the members topic failed (retrying at the next interval)");
        }
        last = Instant::now();
        if a.leaving {
            let _ = producer.flush(Duration::from_secs(2));
            return Ok(());
        }
    }
}

/// Reads the members topic from its tail on, and the subscription's partitions every few
/// seconds.
fn read_loop(
    cluster: &Cluster,
    consumer: &BaseConsumer,
    topics: &[String],
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut assigned = false;
    let mut metadata_read: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        if metadata_read.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            metadata_read = Some(Instant::now());
            read_partitions(cluster, consumer, topics);
        }
        if !assigned {
            match consumer.fetch_watermarks(&cluster.topic, 0, Duration::from_secs(2)) {
                Ok((low, high)) => {
                    let mut tpl = TopicPartitionList::new();
                    let start = (high - TAIL_RECORDS).max(low);
                    tpl.add_partition_offset(&cluster.topic, 0, Offset::Offset(start))?;
                    consumer.assign(&tpl)?;
                    assigned = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, topic = %cluster.topic, "reading the members topic's offsets (retrying)");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => match m.payload().map(serde_json::from_slice::<Announcement>) {
                Some(Ok(a)) => cluster.hear(a),
                Some(Err(e)) => tracing::warn!(error = %e, offset = m.offset(),
                    topic = %cluster.topic, "skipping an announcement that is not one"),
                None => {}
            },
            Some(Err(e)) => {
                tracing::warn!(error = %e, topic = %cluster.topic, "reading the members topic (retrying)");
                std::thread::sleep(Duration::from_millis(200));
            }
            None => {}
        }
    }
    Ok(())
}

fn read_partitions(cluster: &Cluster, consumer: &BaseConsumer, topics: &[String]) {
    let mut known = BTreeSet::new();
    for topic in topics {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
            Ok(md) => {
                for t in md.topics() {
                    for p in t.partitions() {
                        known.insert((t.name().to_string(), p.id()));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, topic, "reading a topic's partitions");
                return;
            }
        }
    }
    *cluster.known.write() = known;
}
