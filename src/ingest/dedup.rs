//! Event ids and what the store made of them: ids from payloads are unique per org
//! ([`EVENT_ID_SCOPE`]); with `kafka.dead_letter.id_conflicts` a changed re-send is rejected
//! before it is written ([`IdClaims`]); a durable batch is counted as new rows and duplicates
//! ([`count_durable`]).

use super::decode::{DecodedEvent, RejectReason};
use crate::metrics::{DuplicateLabel, Metrics, TopicLabel};
use crate::store::{CommitInfo, Duplicate, IdScope, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a conflicting event id is logged (each is counted).
const CONFLICT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Event ids from payloads are unique per org: the same id in another org is another event,
/// and the same (org, id) with other content is a conflict (the first write wins).
pub static EVENT_ID_SCOPE: std::sync::LazyLock<Arc<IdScope>> = std::sync::LazyLock::new(|| {
    Arc::new(IdScope {
        scope_field: "org_id".into(),
        original_id_field: "event_id".into(),
        content_fields: [
            "event_type",
            "event_name",
            "user_id",
            "session_id",
            "properties",
            "timestamp",
        ]
        .map(String::from)
        .to_vec(),
    })
});

/// What makes two events with the same (org, id) the same event (see `EVENT_ID_SCOPE`).
#[derive(Debug, PartialEq)]
struct EventContent {
    event_type: String,
    event_name: String,
    user_id: Option<String>,
    session_id: Option<String>,
    properties: Option<serde_json::Value>,
    timestamp_us: i64,
}

impl EventContent {
    fn of(ev: &DecodedEvent) -> EventContent {
        EventContent {
            event_type: ev.event_type.clone(),
            event_name: ev.event_name.clone(),
            user_id: ev.user_id.clone(),
            session_id: ev.session_id.clone(),
            properties: ev
                .properties
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
            timestamp_us: ev.timestamp.timestamp_micros(),
        }
    }
}

/// The content of each payload-id event read but not yet durable, by (org, id), so that a
/// conflict is caught before either is stored; and when a conflict was last logged.
#[derive(Default)]
pub struct IdClaims {
    claims: HashMap<(uuid::Uuid, uuid::Uuid), EventContent>,
    conflict_logged: (Option<Instant>, u64),
}

impl IdClaims {
    /// With `kafka.dead_letter.id_conflicts` (`enabled`), an event whose (org, id) is stored,
    /// or read and on its way to the store, with other content is rejected (reason
    /// `id_conflict`) before it is written; a re-send of the same content goes on (the store
    /// counts it as `same`).
    pub fn check(
        &mut self,
        store: &Store,
        enabled: bool,
        ev: DecodedEvent,
    ) -> Result<DecodedEvent, RejectReason> {
        if !ev.id_from_payload || !enabled {
            return Ok(ev);
        }
        let content = EventContent::of(&ev);
        let key = (ev.org_id, ev.id);
        let conflict = match self.claims.get(&key) {
            Some(claimed) => *claimed != content,
            None => match store.scoped_duplicate("Event", &ev.to_row(), &EVENT_ID_SCOPE) {
                Ok(found) => found == Some(Duplicate::Conflict),
                Err(e) => {
                    // The store decides at write time anyway (counted, not dead-lettered).
                    tracing::warn!(error = %e, org = %ev.org_id, id = %ev.id,
                        "cannot look the event id up before writing; a conflict is only counted");
                    false
                }
            },
        };
        if conflict {
            return Err(RejectReason::IdConflict {
                org: ev.org_id.to_string(),
                id: ev.id.to_string(),
            });
        }
        self.claims.entry(key).or_insert(content);
        Ok(ev)
    }

    /// `events` are stored now: later events are checked against the store.
    fn release(&mut self, events: &[DecodedEvent]) {
        if self.claims.is_empty() {
            return;
        }
        for ev in events.iter().filter(|ev| ev.id_from_payload) {
            self.claims.remove(&(ev.org_id, ev.id));
        }
    }

    /// Logs an event whose (org, id) was stored with other content, at most every
    /// [`CONFLICT_LOG_EVERY`] (the counter has them all).
    fn log_conflict(&mut self, ev: &DecodedEvent) {
        let (at, suppressed) = &mut self.conflict_logged;
        if at.is_some_and(|t| t.elapsed() < CONFLICT_LOG_EVERY) {
            *suppressed += 1;
            return;
        }
        tracing::warn!(org = %ev.org_id, id = %ev.id, topic = %ev.topic, partition = ev.partition,
            offset = ev.offset, suppressed_since_last = *suppressed,
            "event id already stored for this org with other content; kept the first (counted as kind=\"conflict\")");
        *at = Some(Instant::now());
        *suppressed = 0;
    }
}

/// Counts a durable batch (new rows as stored, the rest as duplicates of the same content
/// or conflicting content) and releases its claims.
pub fn count_durable(
    metrics: &Metrics,
    claims: &mut IdClaims,
    events: &[DecodedEvent],
    info: &CommitInfo,
) {
    let mut stored_per_topic: HashMap<&str, u64> = HashMap::new();
    for ev in events {
        *stored_per_topic.entry(ev.topic.as_str()).or_default() += 1;
    }
    let mut duplicates: HashMap<(&str, &'static str), u64> = HashMap::new();
    for &(n, kind) in &info.duplicates {
        let Some(ev) = events.get(n) else { continue };
        if let Some(c) = stored_per_topic.get_mut(ev.topic.as_str()) {
            *c = c.saturating_sub(1);
        }
        let kind = match kind {
            Duplicate::Same => "same",
            Duplicate::Conflict => {
                claims.log_conflict(ev);
                "conflict"
            }
        };
        *duplicates.entry((ev.topic.as_str(), kind)).or_default() += 1;
    }
    // Plain inserts (ids derived from the Kafka position) skipped as stored: re-reads.
    let unlisted = events
        .len()
        .saturating_sub(info.inserted + info.duplicates.len()) as u64;
    if unlisted > 0 {
        if let Some(ev) = events.first() {
            if let Some(c) = stored_per_topic.get_mut(ev.topic.as_str()) {
                *c = c.saturating_sub(unlisted);
            }
            *duplicates.entry((ev.topic.as_str(), "same")).or_default() += unlisted;
        }
    }
    for (topic, n) in stored_per_topic {
        metrics
            .events_stored
            .get_or_create(&TopicLabel {
                topic: topic.to_string(),
            })
            .inc_by(n);
    }
    for ((topic, kind), n) in duplicates {
        metrics
            .events_duplicate
            .get_or_create(&DuplicateLabel {
                topic: topic.to_string(),
                kind: kind.to_string(),
            })
            .inc_by(n);
    }
    claims.release(events);
}
