//! Replicated rollups (docs/SCALE-OUT.md, "Replicated rollups"): every instance of a
//! scaled-out group keeps, in memory, a copy of the rollup rows of the partitions the other
//! instances own, so that a question about the whole group is answered without asking
//! anyone at question time.
//!
//! The owner's rollup worker produces the copy: when a peer subscribes (over the peer
//! stream, src/gateway/relay.rs) it sends, between two of its writes, the stored rows of
//! every partition it serves (a snapshot: [`ReplicaMsg::SnapshotStart`], rows,
//! [`ReplicaMsg::SnapshotEnd`]), then after each write it makes durable the rows that write
//! changed: the event count as it is now and the values its sets gained since the last
//! write (or the whole sets when they were rewritten). Set unions are idempotent and counts
//! are absolute, so a change applied over a snapshot that already holds it changes nothing.
//!
//! A partition is answered from here only while its copy is complete ([`ReplicaMsg::
//! SnapshotEnd`] received), comes from the instance the members topic names as its owner,
//! and that instance's stream is open; otherwise the asker falls back to a signed request.

use super::bucket::{RollupKey, RollupState, Source};
use super::partial::UniqState;
use super::query::OrgWindows;
use super::realtime::WindowValues;
use super::sketch::Uniq;
use chrono::NaiveDate;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// A rollup row's key as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireKey {
    /// `hour`, `day` or `name`.
    pub of: String,
    pub org: Uuid,
    pub date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<u8>,
    /// The event type (hour and day rows) or the event name (name rows).
    pub what: String,
    pub topic: String,
    pub partition: i32,
}

impl WireKey {
    /// None for a key without a source (rollups kept for the whole store: nothing to copy).
    pub fn of(key: &RollupKey) -> Option<WireKey> {
        let s = key.source()?;
        let (of, hour, what) = match key {
            RollupKey::Hourly {
                hour, event_type, ..
            } => ("hour", Some(*hour), event_type),
            RollupKey::Daily { event_type, .. } => ("day", None, event_type),
            RollupKey::Name { event_name, .. } => ("name", None, event_name),
        };
        Some(WireKey {
            of: of.to_string(),
            org: Uuid::from_bytes(key.org()),
            date: key.date(),
            hour,
            what: what.clone(),
            topic: s.topic.to_string(),
            partition: s.partition,
        })
    }

    pub fn key(&self) -> Result<RollupKey, String> {
        let org = *self.org.as_bytes();
        let source = Some(Source::new(&self.topic, self.partition));
        Ok(match (self.of.as_str(), self.hour) {
            ("hour", Some(hour)) if hour < 24 => RollupKey::Hourly {
                org,
                date: self.date,
                hour,
                event_type: self.what.clone(),
                source,
            },
            ("day", None) => RollupKey::Daily {
                org,
                date: self.date,
                event_type: self.what.clone(),
                source,
            },
            ("name", None) => RollupKey::Name {
                org,
                date: self.date,
                event_name: self.what.clone(),
                source,
            },
            (of, hour) => return Err(format!("a rollup key of {of:?} with hour {hour:?}")),
        })
    }
}

/// One rollup row as it is now (a snapshot) or as one write changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowChange {
    pub key: WireKey,
    /// The row's event count now; 0: the row is gone.
    pub events: i64,
    /// Whole sets (snapshot rows and rewritten sets) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<UniqState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<UniqState>,
    /// ... or the value hashes the sets gained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users_added: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions_added: Vec<u64>,
}

impl RowChange {
    /// The whole row.
    pub fn whole(key: &RollupKey, state: &RollupState) -> Option<RowChange> {
        let names = matches!(key, RollupKey::Name { .. });
        Some(RowChange {
            key: WireKey::of(key)?,
            events: state.events,
            users: (!names).then(|| UniqState(state.users.clone())),
            sessions: (!names).then(|| UniqState(state.sessions.clone())),
            users_added: Vec::new(),
            sessions_added: Vec::new(),
        })
    }

    /// What one write changed: the count and the values added since the last write, or
    /// the whole sets when they are rewritten.
    pub fn changed(
        key: &RollupKey,
        state: &RollupState,
        pending: &super::parts::Pending,
    ) -> Option<RowChange> {
        if pending.rewrite || state.events == 0 {
            let mut c = RowChange::whole(key, state)?;
            if state.events == 0 {
                (c.users, c.sessions) = (None, None);
            }
            return Some(c);
        }
        Some(RowChange {
            key: WireKey::of(key)?,
            events: state.events,
            users: None,
            sessions: None,
            users_added: pending.users.clone(),
            sessions_added: pending.sessions.clone(),
        })
    }
}

/// What an owner's rollup worker sends its subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplicaMsg {
    /// A partition's whole state follows: what is held of it is dropped.
    SnapshotStart { topic: String, partition: i32 },
    /// Rows of a snapshot, or the rows one write changed (of any partition).
    Rows { rows: Vec<RowChange> },
    /// The partition's snapshot is complete: it may be answered from the copy.
    SnapshotEnd { topic: String, partition: i32 },
    /// The sender no longer serves the partition.
    Release { topic: String, partition: i32 },
}

/// A subscriber's request to the rollup worker: the snapshot of `partitions`, then every
/// change, on `to`.
pub struct SnapshotRequest {
    pub partitions: Vec<Source>,
    pub to: mpsc::UnboundedSender<Arc<ReplicaMsg>>,
}

/// The gateway's handle on the rollup worker's replication.
#[derive(Clone)]
pub struct ReplicaHub(mpsc::UnboundedSender<SnapshotRequest>);

impl ReplicaHub {
    /// Asks for `partitions`' snapshot (and, from then on, every change) on `to`. False when
    /// the rollup worker is gone.
    pub fn subscribe(
        &self,
        partitions: Vec<Source>,
        to: mpsc::UnboundedSender<Arc<ReplicaMsg>>,
    ) -> bool {
        self.0.send(SnapshotRequest { partitions, to }).is_ok()
    }
}

/// The hub and the receiver the rollup worker reads requests from.
pub fn hub() -> (ReplicaHub, mpsc::UnboundedReceiver<SnapshotRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ReplicaHub(tx), rx)
}

/// The rollup worker's side: the requests and who receives changes.
pub struct ReplicaFeed {
    pub requests: mpsc::UnboundedReceiver<SnapshotRequest>,
    pub subscribers: Vec<mpsc::UnboundedSender<Arc<ReplicaMsg>>>,
}

impl ReplicaFeed {
    pub fn new(requests: mpsc::UnboundedReceiver<SnapshotRequest>) -> ReplicaFeed {
        ReplicaFeed {
            requests,
            subscribers: Vec::new(),
        }
    }

    /// Sends the rows a durable write changed to every subscriber (nothing when none).
    pub fn publish_rows(&mut self, rows: Vec<RowChange>) {
        if !rows.is_empty() {
            self.publish(ReplicaMsg::Rows { rows });
        }
    }

    /// Sends `msg` to every subscriber, dropping the ones that are gone.
    pub fn publish(&mut self, msg: ReplicaMsg) {
        let msg = Arc::new(msg);
        self.subscribers.retain(|s| s.send(msg.clone()).is_ok());
    }

    /// Adds `to` to the subscribers (once).
    pub fn add(&mut self, to: mpsc::UnboundedSender<Arc<ReplicaMsg>>) {
        if !self.subscribers.iter().any(|s| s.same_channel(&to)) {
            self.subscribers.push(to);
        }
    }
}

/// Most rows in one [`ReplicaMsg::Rows`] of a snapshot.
pub const SNAPSHOT_CHUNK: usize = 500;

/// One copied row: its count, its sets and a version (to cache merges by, as stored rows'
/// versions are; copied rows' versions have the top bit set, so they never equal a stored
/// row's).
#[derive(Debug, Clone)]
pub struct CopiedRow {
    /// The stored row's id (what merges are cached by).
    pub id: [u8; 16],
    pub events: i64,
    pub version: u64,
    pub sets: Arc<(Uniq, Uniq)>,
    /// Changes when the sets are replaced whole (which may remove values); a row whose
    /// sets only grew since a merge keeps it, and the merge only adds them again.
    pub generation: u64,
}

/// One partition's copy.
#[derive(Default)]
struct PartCopy {
    /// The instance it comes from.
    instance: String,
    /// Its instance let the partition go, or its stream ended: the copy holds the
    /// partition's history up to then (answers may use it, marked stale, until the new
    /// owner's copy is complete).
    left: bool,
    rows: FxHashMap<RollupKey, CopiedRow>,
    /// Name counts by (org, date).
    names: HashMap<([u8; 16], NaiveDate), HashMap<String, i64>>,
}

/// An instance's real-time windows per org, as it last sent them.
struct Windows {
    at: Instant,
    by_org: HashMap<[u8; 16], (Vec<WindowValues>, Option<i64>)>,
}

#[derive(Default)]
struct Inner {
    /// Complete copies.
    parts: FxHashMap<Source, PartCopy>,
    /// Snapshots being received (they replace `parts`' copy when complete).
    incoming: FxHashMap<Source, PartCopy>,
    windows: HashMap<String, Windows>,
    /// Instances whose stream is open, with the number of that stream (a stream that ends
    /// after a newer one opened changes nothing).
    open: HashMap<String, u64>,
    streams: u64,
    next_version: u64,
}

/// Windows older than this are not used (the sender sends them every second).
pub const WINDOWS_FRESH_FOR: Duration = Duration::from_secs(5);

/// The copies of other instances' rollups (cheap to clone, shared).
#[derive(Clone, Default)]
pub struct Replica(Arc<RwLock<Inner>>);

impl Replica {
    /// `instance`'s stream is open: what it sends may be used. Returns the stream's number,
    /// for [`Replica::closed`].
    pub fn opened(&self, instance: &str) -> u64 {
        let mut g = self.0.write();
        g.streams += 1;
        let n = g.streams;
        g.open.insert(instance.to_string(), n);
        n
    }

    /// `instance`'s stream number `stream` ended: its copies are kept as they are, marked
    /// left (stale), its snapshots under way and windows dropped. Nothing when a newer
    /// stream of the instance is open.
    pub fn closed(&self, instance: &str, stream: u64) {
        let mut g = self.0.write();
        if g.open.get(instance) != Some(&stream) {
            return;
        }
        g.open.remove(instance);
        g.incoming.retain(|_, p| p.instance != instance);
        for p in g.parts.values_mut().filter(|p| p.instance == instance) {
            p.left = true;
        }
        g.windows.remove(instance);
    }

    /// Applies one message of `instance`'s stream; the error says what was unreadable.
    pub fn apply(&self, instance: &str, msg: &ReplicaMsg) -> Result<(), String> {
        let mut g = self.0.write();
        let inner = &mut *g;
        match msg {
            ReplicaMsg::SnapshotStart { topic, partition } => {
                inner.incoming.insert(
                    Source::new(topic, *partition),
                    PartCopy {
                        instance: instance.to_string(),
                        ..PartCopy::default()
                    },
                );
            }
            ReplicaMsg::SnapshotEnd { topic, partition } => {
                let s = Source::new(topic, *partition);
                if inner
                    .incoming
                    .get(&s)
                    .is_some_and(|p| p.instance == instance)
                {
                    let copy = inner.incoming.remove(&s).expect("checked");
                    inner.parts.insert(s, copy);
                }
            }
            ReplicaMsg::Release { topic, partition } => {
                let s = Source::new(topic, *partition);
                inner
                    .incoming
                    .retain(|k, p| !(*k == s && p.instance == instance));
                if let Some(p) = inner.parts.get_mut(&s).filter(|p| p.instance == instance) {
                    p.left = true;
                }
            }
            ReplicaMsg::Rows { rows } => {
                for change in rows {
                    let key = change.key.key()?;
                    let source = key.source().expect("wire keys have a source");
                    let part = match inner.incoming.get_mut(source) {
                        Some(p) if p.instance == instance => p,
                        _ => match inner.parts.get_mut(source) {
                            Some(p) if p.instance == instance && !p.left => p,
                            // Another instance's copy (the partition moved), or none asked.
                            _ => continue,
                        },
                    };
                    inner.next_version += 1;
                    apply_row(part, &key, change, inner.next_version | 1 << 63);
                }
            }
        }
        Ok(())
    }

    /// Replaces `instance`'s real-time windows with the ones it just sent (every org it
    /// has seen; none is news too: its windows are known to be empty).
    pub fn set_windows(&self, instance: &str, orgs: Vec<OrgWindows>) {
        let by_org = orgs
            .into_iter()
            .map(|w| (*w.org.as_bytes(), (w.windows, w.updated_at_us)))
            .collect();
        self.0.write().windows.insert(
            instance.to_string(),
            Windows {
                at: Instant::now(),
                by_org,
            },
        );
    }

    /// `instance` sent its windows within [`WINDOWS_FRESH_FOR`].
    pub fn windows_fresh(&self, instance: &str) -> bool {
        let g = self.0.read();
        g.open.contains_key(instance)
            && g.windows
                .get(instance)
                .is_some_and(|w| w.at.elapsed() <= WINDOWS_FRESH_FOR)
    }

    /// `instance`'s windows of `org` (none: it has not seen the org) and their time.
    pub fn windows(&self, instance: &str, org: [u8; 16]) -> (Vec<WindowValues>, Option<i64>) {
        let g = self.0.read();
        g.windows
            .get(instance)
            .and_then(|w| w.by_org.get(&org).cloned())
            .unwrap_or_default()
    }

    /// Whether `source` may be answered from the copy, given that `owner` owns it now.
    pub fn serves(&self, source: &Source, owner: &str) -> bool {
        let g = self.0.read();
        g.open.contains_key(owner)
            && g.parts
                .get(source)
                .is_some_and(|p| !p.left && p.instance == owner)
    }

    /// The instance a left copy of `source` came from: it holds the partition's history up
    /// to when that instance let it go (None: no such copy).
    pub fn stale(&self, source: &Source) -> Option<String> {
        let g = self.0.read();
        g.parts
            .get(source)
            .filter(|p| p.left || !g.open.contains_key(&p.instance))
            .map(|p| p.instance.clone())
    }

    /// Drops the copies of partitions this instance serves itself now.
    pub fn forget(&self, served_here: &std::collections::BTreeSet<Source>) {
        let mut g = self.0.write();
        g.parts.retain(|s, _| !served_here.contains(s));
    }

    /// The number of complete copies of partitions their instance still serves.
    pub fn complete_partitions(&self) -> usize {
        self.0.read().parts.values().filter(|p| !p.left).count()
    }

    /// A copied row of `key` (None: no such row).
    pub fn row(&self, key: &RollupKey) -> Option<CopiedRow> {
        let g = self.0.read();
        g.parts.get(key.source()?)?.rows.get(key).cloned()
    }

    /// The copied rows of `keys` (in their order), read at one moment.
    pub fn rows<'k>(
        &self,
        keys: impl Iterator<Item = &'k RollupKey>,
        mut found: impl FnMut(Option<CopiedRow>),
    ) {
        let g = self.0.read();
        for key in keys {
            let row = key
                .source()
                .and_then(|s| g.parts.get(s))
                .and_then(|p| p.rows.get(key).cloned());
            found(row);
        }
    }

    /// Adds the name counts of `org` on `date` of `sources` to `into`.
    pub fn add_names(
        &self,
        org: [u8; 16],
        date: NaiveDate,
        sources: &[&Source],
        into: &mut HashMap<String, i64>,
    ) {
        let g = self.0.read();
        for s in sources {
            if let Some(names) = g.parts.get(*s).and_then(|p| p.names.get(&(org, date))) {
                for (name, n) in names {
                    *into.entry(name.clone()).or_insert(0) += n;
                }
            }
        }
    }

    /// Whether any copied row is of `org`.
    pub fn knows_org(&self, org: [u8; 16]) -> bool {
        let g = self.0.read();
        g.parts
            .values()
            .any(|p| p.names.keys().any(|(o, _)| *o == org))
    }
}

fn apply_row(part: &mut PartCopy, key: &RollupKey, c: &RowChange, version: u64) {
    if let RollupKey::Name {
        org,
        date,
        event_name,
        ..
    } = key
    {
        let names = part.names.entry((*org, *date)).or_default();
        if c.events == 0 {
            names.remove(event_name);
            if names.is_empty() {
                part.names.remove(&(*org, *date));
            }
        } else {
            names.insert(event_name.clone(), c.events);
        }
        return;
    }
    if c.events == 0 {
        part.rows.remove(key);
        return;
    }
    let row = part.rows.entry(key.clone()).or_insert_with(|| CopiedRow {
        id: key.row_id(),
        events: 0,
        version,
        sets: Arc::default(),
        generation: version,
    });
    row.events = c.events;
    row.version = version;
    if c.users.is_some() || c.sessions.is_some() {
        row.generation = version;
    }
    let sets = Arc::make_mut(&mut row.sets);
    if let Some(u) = &c.users {
        sets.0 = u.0.clone();
    }
    if let Some(s) = &c.sessions {
        sets.1 = s.0.clone();
    }
    // The owner switches a set to a sketch (and sends it whole): never the copy.
    for &h in &c.users_added {
        sets.0.add(h, u64::MAX);
    }
    for &h in &c.sessions_added {
        sets.1.add(h, u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::parts::Pending;

    fn key(hour: u8, partition: i32) -> RollupKey {
        RollupKey::Hourly {
            org: [7; 16],
            date: NaiveDate::from_ymd_opt(2026, 12, 5).unwrap(),
            hour,
            event_type: String::new(),
            source: Some(Source::new("events", partition)),
        }
    }

    fn state(events: i64, users: &[u64]) -> RollupState {
        let mut s = RollupState {
            events,
            ..Default::default()
        };
        for &u in users {
            s.users.add(u, 100);
        }
        s
    }

    #[test]
    fn keys_travel_and_come_back() {
        let k = key(3, 2);
        let w = WireKey::of(&k).unwrap();
        let text = serde_json::to_string(&w).unwrap();
        let back: WireKey = serde_json::from_str(&text).unwrap();
        assert_eq!(back.key().unwrap(), k);
        let no_source = RollupKey::Daily {
            org: [1; 16],
            date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            event_type: String::new(),
            source: None,
        };
        assert!(WireKey::of(&no_source).is_none());
        let mut bad = w.clone();
        bad.hour = Some(24);
        assert!(bad.key().is_err());
    }

    #[test]
    fn a_copy_is_answered_only_complete_from_its_owner_with_the_stream_open() {
        let r = Replica::default();
        let s = Source::new("events", 2);
        r.opened("a");
        r.apply(
            "a",
            &ReplicaMsg::SnapshotStart {
                topic: "events".into(),
                partition: 2,
            },
        )
        .unwrap();
        assert!(!r.serves(&s, "a"), "incomplete");
        assert!(r.stale(&s).is_none());
        r.apply(
            "a",
            &ReplicaMsg::SnapshotEnd {
                topic: "events".into(),
                partition: 2,
            },
        )
        .unwrap();
        assert!(r.serves(&s, "a"));
        assert!(!r.serves(&s, "b"), "another owner");
        let newer = r.opened("a");
        assert!(r.serves(&s, "a"), "a newer stream of the same instance");
        r.closed("a", newer - 1);
        assert!(r.serves(&s, "a"), "an older stream's end changes nothing");
        r.closed("a", newer);
        assert!(!r.serves(&s, "a"), "stream closed");
        assert_eq!(r.stale(&s).as_deref(), Some("a"), "kept, stale");
        // b's snapshot replaces a's copy only when complete.
        r.opened("b");
        let start = ReplicaMsg::SnapshotStart {
            topic: "events".into(),
            partition: 2,
        };
        r.apply("b", &start).unwrap();
        assert_eq!(r.stale(&s).as_deref(), Some("a"));
        let end = ReplicaMsg::SnapshotEnd {
            topic: "events".into(),
            partition: 2,
        };
        r.apply("b", &end).unwrap();
        assert!(r.serves(&s, "b") && r.stale(&s).is_none());
        let release = ReplicaMsg::Release {
            topic: "events".into(),
            partition: 2,
        };
        r.apply("b", &release).unwrap();
        assert!(!r.serves(&s, "b"));
        assert_eq!(r.stale(&s).as_deref(), Some("b"));
    }

    #[test]
    fn changes_over_a_snapshot_that_holds_them_change_nothing() {
        let r = Replica::default();
        r.opened("a");
        let k = key(1, 0);
        let start = ReplicaMsg::SnapshotStart {
            topic: "events".into(),
            partition: 0,
        };
        r.apply("a", &start).unwrap();
        let snap = state(3, &[1, 2]);
        r.apply(
            "a",
            &ReplicaMsg::Rows {
                rows: vec![RowChange::whole(&k, &snap).unwrap()],
            },
        )
        .unwrap();
        let end = ReplicaMsg::SnapshotEnd {
            topic: "events".into(),
            partition: 0,
        };
        r.apply("a", &end).unwrap();
        // A change already in the snapshot, then a new one.
        let mut pending = Pending::default();
        pending.users.push(2);
        let same = RowChange::changed(&k, &snap, &pending).unwrap();
        let mut pending = Pending::default();
        pending.users.push(9);
        let grown = RowChange::changed(&k, &state(4, &[1, 2, 9]), &pending).unwrap();
        r.apply(
            "a",
            &ReplicaMsg::Rows {
                rows: vec![same, grown],
            },
        )
        .unwrap();
        let row = r.row(&k).unwrap();
        assert_eq!((row.events, row.sets.0.count()), (4, 3));
        // Grown sets keep the generation (a merge may add them again); sets sent whole
        // (which may have lost values) change it.
        let first = row.generation;
        assert_ne!(row.version, first);
        let rewrite = RowChange::changed(&k, &state(2, &[9]), &Pending::whole()).unwrap();
        r.apply(
            "a",
            &ReplicaMsg::Rows {
                rows: vec![rewrite],
            },
        )
        .unwrap();
        let row = r.row(&k).unwrap();
        assert_eq!((row.events, row.sets.0.count()), (2, 1));
        assert_ne!(row.generation, first);
        // Another instance's rows of the partition are not applied.
        let other = RowChange::whole(&k, &state(100, &[5])).unwrap();
        r.apply("b", &ReplicaMsg::Rows { rows: vec![other] })
            .unwrap();
        assert_eq!(r.row(&k).unwrap().events, 2);
        // A row that counts nothing any more is gone.
        let gone = RowChange::changed(&k, &RollupState::default(), &Pending::default()).unwrap();
        r.apply("a", &ReplicaMsg::Rows { rows: vec![gone] })
            .unwrap();
        assert!(r.row(&k).is_none());
    }
}
