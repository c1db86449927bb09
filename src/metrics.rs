//! The Prometheus registry: every counter, gauge and histogram streamtally keeps, registered
//! once and shared by ingest, stats and the gateway (which serves `/metrics`). Names are
//! prefixed `streamtally_`; counters get the `_total` suffix from the exposition format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabel {
    pub topic: String,
    pub reason: String,
}

/// Labels of `streamtally_events_duplicate_total`: `kind` is `same` (the id was stored with
/// the same content: a producer retry or a re-read) or `conflict` (the id was stored with other
/// content; the first write wins).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DuplicateLabel {
    pub topic: String,
    pub kind: String,
}

/// A partition held at a record whose dead letter is not delivered yet (see
/// `ingest::deadletter`), as `/readyz` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedPartition {
    pub topic: String,
    pub partition: i32,
    /// The record waiting for its dead letter.
    pub offset: i64,
    pub reason_code: &'static str,
    /// What refused the last attempt (or that none was acknowledged yet).
    pub refusal: String,
    /// Since when (ms since epoch) the partition waits.
    pub since_ms: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Labels of `streamtally_http_request_seconds`: the route template (`/api/v1/orgs/{org}/..`),
/// never the raw path, the method and the status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    pub route: String,
    pub method: String,
    pub status: String,
}

/// Label of `streamtally_gateway_connections_timed_out_total`: `header` (no whole request
/// head in `gateway.header_read_timeout_ms`) or `idle` (`gateway.idle_timeout_ms` between
/// requests).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Labels of `streamtally_readiness_check_failing`: a `/readyz` check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    pub check: String,
}

/// Labels of `streamtally_alert_rules`: a rule state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Labels of `streamtally_alert_transitions_total`: the state entered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToLabel {
    pub to: String,
}

/// Labels of `streamtally_alert_deliveries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    /// `webhook` or `websocket`.
    pub channel: String,
    /// `delivered`, `retried`, `failed` or `muted`.
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub events_consumed: Family<TopicLabel, Counter>,
    pub events_stored: Family<TopicLabel, Counter>,
    pub events_duplicate: Family<DuplicateLabel, Counter>,
    /// Top-level payload fields the decoder does not read (README "Coercions").
    pub events_fields_dropped: Family<TopicLabel, Counter>,
    pub events_dead_lettered: Family<DeadLetterLabel, Counter>,
    pub events_skipped: Family<DeadLetterLabel, Counter>,
    pub batch_size: Histogram,
    pub flush_seconds: Histogram,
    pub partition_lag: Family<PartitionLabel, Gauge>,
    /// Offsets a restoring partition still reads before it holds its whole history
    /// (scale-out; docs/SCALE-OUT.md); no series once it has.
    pub partition_restore_lag: Family<PartitionLabel, Gauge>,
    pub assigned_partitions: Gauge,
    /// Other instances' partitions whose rollups this instance holds complete copies of
    /// (scale-out; answered without asking their owner).
    pub copied_partitions: Gauge,
    /// Partial answers asked of other instances (scale-out: partitions not copied, recent
    /// events, org lookups).
    pub peer_requests: Counter,
    pub paused_partitions: Gauge,
    pub backpressure_pauses: Counter,
    pub rebalances: Family<KindLabel, Counter>,
    pub store_write_errors: Counter,
    pub kafka_commit_repairs: Counter,
    pub dead_letter_errors: Counter,
    pub dead_letter_blocked_partitions: Gauge,
    /// The partitions waiting for a dead letter, for `/readyz`.
    blocked: parking_lot::Mutex<Vec<BlockedPartition>>,
    /// Partitions restoring their history, with their restore lag.
    restoring: parking_lot::Mutex<Vec<((String, i32), i64)>>,
    pub event_freshness_ms: Gauge,
    /// Newest stored event time (ms since epoch); freshness is now minus this.
    pub newest_event_ms: AtomicI64,
    /// Wall-clock ms of the last successful store flush (0 = none yet).
    pub last_flush_ok_ms: AtomicI64,
    /// Sum of partition lags, for readiness.
    pub total_lag: AtomicU64,
    pub stats_changes_applied: Family<KindLabel, Counter>,
    pub stats_flush_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    pub stats_lag_changes: Family<KindLabel, Gauge>,
    pub stats_recomputes: Counter,
    /// The rollup worker's bucket cache: bytes held (estimate) and buckets read into it.
    pub stats_cache_bytes: Gauge,
    pub stats_cache_loads: Counter,
    pub stats_write_errors: Family<KindLabel, Counter>,
    pub http_request_seconds: Family<HttpLabel, Histogram, fn() -> Histogram>,
    pub ws_clients: Gauge,
    pub ws_messages_sent: Counter,
    pub ws_messages_dropped: Counter,
    pub gateway_connections: Gauge,
    pub gateway_connections_refused: Counter,
    pub gateway_connections_timed_out: Family<ReasonLabel, Counter>,
    pub ready: Gauge,
    pub readiness_check_failing: Family<CheckLabel, Gauge>,
    pub alert_rules: Family<StateLabel, Gauge>,
    pub alert_evaluations: Counter,
    pub alert_evaluation_seconds: Histogram,
    pub alert_transitions: Family<ToLabel, Counter>,
    pub alert_deliveries: Family<DeliveryLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            events_consumed: Family::default(),
            events_stored: Family::default(),
            events_duplicate: Family::default(),
            events_fields_dropped: Family::default(),
            events_dead_lettered: Family::default(),
            events_skipped: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            flush_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            partition_lag: Family::default(),
            partition_restore_lag: Family::default(),
            assigned_partitions: Gauge::default(),
            copied_partitions: Gauge::default(),
            peer_requests: Counter::default(),
            paused_partitions: Gauge::default(),
            backpressure_pauses: Counter::default(),
            rebalances: Family::default(),
            store_write_errors: Counter::default(),
            kafka_commit_repairs: Counter::default(),
            dead_letter_errors: Counter::default(),
            dead_letter_blocked_partitions: Gauge::default(),
            blocked: parking_lot::Mutex::new(Vec::new()),
            restoring: parking_lot::Mutex::new(Vec::new()),
            event_freshness_ms: Gauge::default(),
            newest_event_ms: AtomicI64::new(0),
            last_flush_ok_ms: AtomicI64::new(0),
            total_lag: AtomicU64::new(0),
            stats_changes_applied: Family::default(),
            stats_flush_seconds: Family::new_with_constructor(latency_histogram),
            stats_lag_changes: Family::default(),
            stats_recomputes: Counter::default(),
            stats_cache_bytes: Gauge::default(),
            stats_cache_loads: Counter::default(),
            stats_write_errors: Family::default(),
            http_request_seconds: Family::new_with_constructor(latency_histogram),
            ws_clients: Gauge::default(),
            ws_messages_sent: Counter::default(),
            ws_messages_dropped: Counter::default(),
            gateway_connections: Gauge::default(),
            gateway_connections_refused: Counter::default(),
            gateway_connections_timed_out: Family::default(),
            ready: Gauge::default(),
            readiness_check_failing: Family::default(),
            alert_rules: Family::default(),
            alert_evaluations: Counter::default(),
            alert_evaluation_seconds: latency_histogram(),
            alert_transitions: Family::default(),
            alert_deliveries: Family::default(),
            registry: Registry::default(),
        };
        // Registered in this order, which is the order of the families in `/metrics`.
        let mut registry = Registry::with_prefix("streamtally");
        m.register_event_counts(&mut registry);
        m.register_ingest(&mut registry);
        m.register_stats(&mut registry);
        m.register_gateway(&mut registry);
        m.register_alerts(&mut registry);
        // Alert delivery and transition series exist at 0 from the start (see init_topic).
        for channel in ["webhook", "websocket"] {
            for outcome in ["delivered", "retried", "failed", "muted"] {
                let _ = m.alert_deliveries.get_or_create(&DeliveryLabel {
                    channel: channel.into(),
                    outcome: outcome.into(),
                });
            }
        }
        for to in ["pending", "firing", "resolved", "inactive"] {
            let _ = m
                .alert_transitions
                .get_or_create(&ToLabel { to: to.into() });
        }
        Metrics { registry, ..m }
    }

    /// Per-topic event counters: read, stored, duplicate, dropped fields, dead-lettered, skipped.
    fn register_event_counts(&self, r: &mut Registry) {
        r.register(
            "events_consumed",
            "Kafka messages read, by topic",
            self.events_consumed.clone(),
        );
        r.register(
            "events_stored",
            "Events durably stored (new rows), by topic",
            self.events_stored.clone(),
        );
        r.register(
            "events_duplicate",
            "Events not stored because their (org, id) was already stored, by topic and kind: same content (replays, producer retries) or conflict (other content; the first write wins)",
            self.events_duplicate.clone(),
        );
        r.register(
            "events_fields_dropped",
            "Top-level payload fields not stored because the payload's shape does not read them, by topic",
            self.events_fields_dropped.clone(),
        );
        r.register(
            "events_dead_lettered",
            "Messages sent to the dead-letter topic, by source topic and reason",
            self.events_dead_lettered.clone(),
        );
        r.register(
            "events_skipped",
            "Invalid messages skipped under dead_letter.policy = skip, by topic and reason",
            self.events_skipped.clone(),
        );
    }

    /// The consumer and its flushes: batches, lag, partitions, errors, dead-letter waits, freshness.
    fn register_ingest(&self, r: &mut Registry) {
        r.register(
            "batch_size_events",
            "Messages per store flush",
            self.batch_size.clone(),
        );
        r.register(
            "flush_seconds",
            "Store flush latency (durable write)",
            self.flush_seconds.clone(),
        );
        r.register(
            "partition_lag_events",
            "High watermark minus stored position, per partition",
            self.partition_lag.clone(),
        );
        r.register(
            "partition_restore_lag_events",
            "Offsets a partition restoring its history (scale-out) still reads, per partition",
            self.partition_restore_lag.clone(),
        );
        r.register(
            "copied_partitions",
            "Other instances' partitions answered from complete copies of their rollups (scale-out)",
            self.copied_partitions.clone(),
        );
        r.register(
            "peer_requests",
            "Partial answers asked of other instances of the group (scale-out)",
            self.peer_requests.clone(),
        );
        r.register(
            "assigned_partitions",
            "Partitions assigned to this instance",
            self.assigned_partitions.clone(),
        );
        r.register(
            "paused_partitions",
            "Partitions paused by backpressure",
            self.paused_partitions.clone(),
        );
        r.register(
            "rebalances",
            "Consumer-group rebalances, by kind (assign, revoke, error)",
            self.rebalances.clone(),
        );
        r.register(
            "store_write_errors",
            "Failed store writes (retried)",
            self.store_write_errors.clone(),
        );
        r.register(
            "kafka_commit_repairs",
            "Offset commits sent again because Kafka's committed offset was found behind the stored position",
            self.kafka_commit_repairs.clone(),
        );
        r.register(
            "dead_letter_errors",
            "Failed dead-letter produces (retried)",
            self.dead_letter_errors.clone(),
        );
        r.register(
            "dead_letter_blocked_partitions",
            "Partitions paused at a record whose dead letter is not delivered yet (/readyz names them)",
            self.dead_letter_blocked_partitions.clone(),
        );
        r.register(
            "event_freshness_ms",
            "Now minus the newest stored event time, in milliseconds",
            self.event_freshness_ms.clone(),
        );
    }

    /// The stats workers.
    fn register_stats(&self, r: &mut Registry) {
        r.register(
            "stats_changes_applied",
            "Change-feed entries applied by the stats workers, by worker (rollups, realtime)",
            self.stats_changes_applied.clone(),
        );
        r.register(
            "stats_flush_seconds",
            "Stats worker write latency (rows and cursor in one durable write), by worker",
            self.stats_flush_seconds.clone(),
        );
        r.register(
            "stats_lag_changes",
            "Change-feed entries not yet applied by a stats worker (feed head minus its position)",
            self.stats_lag_changes.clone(),
        );
        r.register(
            "stats_recomputes",
            "Rollup groups (org, day) recomputed from raw events after a removal hit a sketch or a set read back from the store",
            self.stats_recomputes.clone(),
        );
        r.register(
            "stats_cache_bytes",
            "Bytes of bucket state the rollup worker holds in memory (an estimate; bounded by its cache budget)",
            self.stats_cache_bytes.clone(),
        );
        r.register(
            "stats_cache_loads",
            "Rollup buckets the rollup worker read from the store into its cache (first touch, or again after eviction)",
            self.stats_cache_loads.clone(),
        );
        r.register(
            "stats_write_errors",
            "Failed stats worker writes (retried from the durable cursor), by worker",
            self.stats_write_errors.clone(),
        );
    }

    /// Creates the series of `topic` that alerts compare over time (`increase`, `rate`) at
    /// 0, so that the first event counted is an increase and dashboards show 0, not
    /// nothing: read, stored, duplicates, dropped fields, events lost to retention.
    pub fn init_topic(&self, topic: &str) {
        let t = TopicLabel {
            topic: topic.to_string(),
        };
        let _ = self.events_consumed.get_or_create(&t);
        let _ = self.events_stored.get_or_create(&t);
        let _ = self.events_fields_dropped.get_or_create(&t);
        for kind in ["same", "conflict"] {
            let _ = self.events_duplicate.get_or_create(&DuplicateLabel {
                topic: topic.to_string(),
                kind: kind.to_string(),
            });
        }
        let _ = self.events_skipped.get_or_create(&DeadLetterLabel {
            topic: topic.to_string(),
            reason: "retention".to_string(),
        });
    }

    /// Alerting (docs/ALERTS.md): no org ids, only counts.
    fn register_alerts(&self, r: &mut Registry) {
        r.register(
            "ready",
            "1 when /readyz would answer 200, else 0 (computed at each scrape)",
            self.ready.clone(),
        );
        r.register(
            "readiness_check_failing",
            "1 for each /readyz check that fails at the scrape, else 0, by check",
            self.readiness_check_failing.clone(),
        );
        r.register(
            "alert_rules",
            "Alert rules by state (inactive, pending, firing, resolved, disabled)",
            self.alert_rules.clone(),
        );
        r.register(
            "alert_evaluations",
            "Passes of the alert worker over every rule",
            self.alert_evaluations.clone(),
        );
        r.register(
            "alert_evaluation_seconds",
            "Time one pass over every alert rule took",
            self.alert_evaluation_seconds.clone(),
        );
        r.register(
            "alert_transitions",
            "Alert rule state changes, by the state entered",
            self.alert_transitions.clone(),
        );
        r.register(
            "alert_deliveries",
            "Alert message attempts by channel (webhook, websocket) and outcome (delivered, retried, failed, muted)",
            self.alert_deliveries.clone(),
        );
    }

    /// The gateway: HTTP requests, WebSocket clients, connections.
    fn register_gateway(&self, r: &mut Registry) {
        r.register(
            "http_request_seconds",
            "Gateway request latency (to the response head), by route template, method and status",
            self.http_request_seconds.clone(),
        );
        r.register(
            "ws_clients",
            "WebSocket clients connected to /ws/dashboard",
            self.ws_clients.clone(),
        );
        r.register(
            "ws_messages_sent",
            "WebSocket messages written to clients",
            self.ws_messages_sent.clone(),
        );
        r.register(
            "ws_messages_dropped",
            "WebSocket updates skipped for a slow client, and event batches a lagging client missed",
            self.ws_messages_dropped.clone(),
        );
        r.register(
            "gateway_connections",
            "Open gateway connections (HTTP and upgraded WebSocket, also those closing)",
            self.gateway_connections.clone(),
        );
        r.register(
            "gateway_connections_refused",
            "Connections closed at once because gateway.max_connections were open",
            self.gateway_connections_refused.clone(),
        );
        r.register(
            "gateway_connections_timed_out",
            "Connections closed by the gateway's timeouts, by reason (header, idle)",
            self.gateway_connections_timed_out.clone(),
        );
    }

    /// Replaces the list of partitions waiting for a dead letter.
    pub fn set_blocked_partitions(&self, list: Vec<BlockedPartition>) {
        self.dead_letter_blocked_partitions.set(list.len() as i64);
        *self.blocked.lock() = list;
    }

    /// Replaces the partitions restoring their history and their restore lag.
    pub fn set_restoring(&self, list: Vec<((String, i32), i64)>) {
        let mut restoring = self.restoring.lock();
        if restoring.is_empty() && list.is_empty() {
            return;
        }
        let label = |(topic, p): &(String, i32)| PartitionLabel {
            topic: topic.clone(),
            partition: p.to_string(),
        };
        for (tp, _) in restoring.iter() {
            if !list.iter().any(|(t, _)| t == tp) {
                self.partition_restore_lag.remove(&label(tp));
            }
        }
        for (tp, lag) in &list {
            self.partition_restore_lag
                .get_or_create(&label(tp))
                .set(*lag);
        }
        *restoring = list;
    }

    /// The partitions restoring their history and their restore lag.
    pub fn restoring(&self) -> Vec<((String, i32), i64)> {
        self.restoring.lock().clone()
    }

    /// The partitions waiting for a dead letter.
    pub fn blocked_partitions(&self) -> Vec<BlockedPartition> {
        self.blocked.lock().clone()
    }

    /// Notes that events up to `event_ms` are stored and a flush just succeeded.
    pub fn flushed(&self, newest_event_ms: i64) {
        self.newest_event_ms
            .fetch_max(newest_event_ms, Ordering::Relaxed);
        self.last_flush_ok_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Now minus the newest stored event time (None before the first event).
    pub fn freshness_ms(&self) -> Option<i64> {
        let newest = self.newest_event_ms.load(Ordering::Relaxed);
        (newest > 0).then(|| (chrono::Utc::now().timestamp_millis() - newest).max(0))
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        if let Some(f) = self.freshness_ms() {
            self.event_freshness_ms.set(f);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("encoding metrics failed");
        }
        out
    }
}
