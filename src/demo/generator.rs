//! The demo's event generator: synthetic events ([`crate::synth`]) produced to the demo
//! topic, first a backfill of the last days in the daily rhythm, then live events at a fixed
//! rate, until stopped. The backfill is flow-controlled: at most [`BACKFILL_WINDOW`] records
//! are produced but not yet stored (the store's positions say what is stored), so the mock
//! cluster's retention never drops a record the consumer has not read.

use super::{client_config, TOPIC};
use crate::store::Store;
use crate::synth::{daily_rhythm, mix, rhythm_week_mean, SynthConfig, SynthEvent};
use anyhow::Context;
use chrono::{DateTime, Datelike, DurationRound, Timelike, Utc};
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Records produced but not yet stored, at most, while backfilling: about 10 MB, well under
/// the mock cluster's retention (5 MB per partition, 6 partitions).
const BACKFILL_WINDOW: u64 = 20_000;

/// Counts acknowledgements and remembers, per partition, the offset after the last one.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    next_offsets: Mutex<BTreeMap<i32, i64>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                let mut next = self.next_offsets.lock();
                let entry = next.entry(m.partition()).or_insert(0);
                *entry = (*entry).max(m.offset() + 1);
            }
            Err((e, _)) => {
                let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if failed.is_power_of_two() {
                    tracing::warn!(error = %e, failed, "demo events not delivered");
                }
            }
        }
    }
}

/// Produces the backfill, then live events, until `stop`.
pub(super) struct Generator {
    pub bootstrap: String,
    /// `[kafka.client]`, passed through.
    pub client: BTreeMap<String, String>,
    pub synth: SynthConfig,
    pub rate_per_s: u64,
    pub backfill_days: u32,
    pub backfill_events_per_day: u64,
}

impl Generator {
    pub fn run(self, store: &Store, stop: &CancellationToken) -> anyhow::Result<()> {
        let mut config = client_config(&self.bootstrap, &self.client);
        config
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000");
        let producer: BaseProducer<Deliveries> = config
            .create_with_context(Deliveries::default())
            .with_context(|| format!("a producer for '{}'", self.bootstrap))?;
        let mut next_index = 0u64;
        if self.backfill_days > 0 {
            self.backfill(&producer, store, stop, &mut next_index)?;
        }
        self.live(&producer, stop, &mut next_index);
        let _ = producer.flush(Duration::from_secs(5));
        tracing::info!(
            delivered = producer.context().delivered.load(Ordering::Relaxed),
            failed = producer.context().failed.load(Ordering::Relaxed),
            "demo generator stopped"
        );
        Ok(())
    }

    /// Hands event `i` at `timestamp` to the producer (waiting while its queue is full).
    fn send(&self, producer: &BaseProducer<Deliveries>, i: u64, timestamp: DateTime<Utc>) {
        let ev = SynthEvent::generate_at(&self.synth, i, timestamp);
        let properties: serde_json::Value =
            serde_json::from_str(&ev.properties).unwrap_or(serde_json::Value::Null);
        // A random id per event: a kept store never mistakes a new run's events for old ones.
        let payload = serde_json::json!({
            "id": Uuid::new_v4(),
            "org_id": Uuid::from_bytes(ev.org_id),
            "event_type": ev.event_type,
            "event_name": ev.event_name,
            "user_id": ev.user_id,
            "session_id": ev.session_id,
            "timestamp": ev.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "properties": properties,
        })
        .to_string();
        let mut record = BaseRecord::to(TOPIC)
            .key(ev.user_id.as_str())
            .payload(payload.as_str());
        loop {
            match producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    producer.context().failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "demo event not sent");
                    return;
                }
            }
        }
    }

    /// Records not yet stored: in the producer's queue, or acknowledged beyond the store's
    /// position of their partition.
    fn outstanding(&self, producer: &BaseProducer<Deliveries>, store: &Store) -> u64 {
        let queued = producer.in_flight_count().max(0) as u64;
        let next = producer.context().next_offsets.lock().clone();
        let unstored: i64 = next
            .iter()
            .map(|(p, next)| {
                let stored = store.offset(TOPIC, *p).ok().flatten().unwrap_or(0);
                (next - stored).max(0)
            })
            .sum();
        queued + unstored as u64
    }

    fn backfill(
        &self,
        producer: &BaseProducer<Deliveries>,
        store: &Store,
        stop: &CancellationToken,
        next_index: &mut u64,
    ) -> anyhow::Result<()> {
        let plan = backfill_plan(Utc::now(), self.backfill_days, self.backfill_events_per_day);
        let total: u64 = plan.iter().map(|h| h.events).sum();
        tracing::info!(
            events = total,
            days = self.backfill_days,
            "backfill: producing the last days' events before going live"
        );
        let mut progress = Progress::new(total);
        for hour in &plan {
            for k in 0..hour.events {
                let i = *next_index;
                *next_index += 1;
                let within =
                    mix(self.synth.seed ^ i.rotate_left(17) ^ k) % hour.span_us.max(1) as u64;
                let at = hour.start + chrono::Duration::microseconds(within as i64);
                self.send(producer, i, at);
                progress.handed += 1;
                producer.poll(Duration::ZERO);
                if progress.handed.is_multiple_of(1000)
                    && !self.wait_stored(producer, store, stop, &mut progress, BACKFILL_WINDOW)
                {
                    progress.bar.abandon();
                    return Ok(());
                }
            }
        }
        // Wait until the backfill is stored, so "live" means the history is in place.
        if self.wait_stored(producer, store, stop, &mut progress, 0) {
            tracing::info!(
                events = progress.handed,
                seconds = progress.started.elapsed().as_secs_f64(),
                "backfill stored; going live"
            );
        }
        progress.bar.finish_and_clear();
        Ok(())
    }

    /// Polls the producer until fewer than `limit` records (or none, for 0) are outstanding;
    /// false when `stop` came first. After 300 s without progress it gives up waiting (with a
    /// warning) rather than hang the demo.
    fn wait_stored(
        &self,
        producer: &BaseProducer<Deliveries>,
        store: &Store,
        stop: &CancellationToken,
        progress: &mut Progress,
        limit: u64,
    ) -> bool {
        let mut best = u64::MAX;
        let mut since = Instant::now();
        loop {
            let outstanding = self.outstanding(producer, store);
            progress.update(outstanding);
            if outstanding < best {
                (best, since) = (outstanding, Instant::now());
            }
            if stop.is_cancelled() {
                return false;
            }
            if outstanding == 0 || outstanding < limit {
                return true;
            }
            if since.elapsed() > Duration::from_secs(300) {
                tracing::warn!(
                    outstanding,
                    "backfill: no progress for 300 s; not waiting any more"
                );
                return true;
            }
            producer.poll(Duration::from_millis(50));
        }
    }

    fn live(
        &self,
        producer: &BaseProducer<Deliveries>,
        stop: &CancellationToken,
        next_index: &mut u64,
    ) {
        let rate = self.rate_per_s.max(1);
        tracing::info!(rate_per_s = rate, orgs = self.synth.orgs, "live events");
        let started = Instant::now();
        let mut sent = 0u64;
        let mut last_log = Instant::now();
        while !stop.is_cancelled() {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                producer.poll(Duration::from_millis(5));
                continue;
            }
            // More than a second behind (a slow broker): catch up one second, not in a burst.
            sent = sent.max(due.saturating_sub(rate));
            let until = due.min(sent + 1000);
            while sent < until {
                let i = *next_index;
                *next_index += 1;
                self.send(producer, i, Utc::now());
                sent += 1;
            }
            producer.poll(Duration::ZERO);
            if last_log.elapsed() >= Duration::from_secs(60) {
                last_log = Instant::now();
                tracing::info!(
                    sent,
                    delivered = producer.context().delivered.load(Ordering::Relaxed),
                    "live events"
                );
            }
        }
    }
}

/// The backfill's progress bar (drawn only on a terminal) and a log line every 5 s.
struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    last_log: Instant,
    /// Records handed to the producer so far.
    handed: u64,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "backfill [{wide_bar}] {human_pos}/{human_len} events stored, ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress {
            bar,
            started: Instant::now(),
            last_log: Instant::now(),
            handed: 0,
            total,
        }
    }

    fn update(&mut self, outstanding: u64) {
        let stored = self.handed.saturating_sub(outstanding);
        self.bar.set_position(stored);
        if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            tracing::info!(stored, total = self.total, "backfill progress");
        }
    }
}

/// One hour of backfill: `events` events between `start` and `start + span_us`.
#[derive(Debug, Clone, PartialEq)]
struct BackfillHour {
    start: DateTime<Utc>,
    span_us: i64,
    events: u64,
}

/// The hours from `days` days before `now` (rounded down to the hour) up to `now`, each with
/// its share of `per_day * days` events by the daily rhythm (the current hour only up to now).
fn backfill_plan(now: DateTime<Utc>, days: u32, per_day: u64) -> Vec<BackfillHour> {
    let hour = chrono::Duration::hours(1);
    if days == 0 {
        return Vec::new();
    }
    let Ok(mut start) = (now - chrono::Duration::days(days as i64)).duration_trunc(hour) else {
        return Vec::new();
    };
    let per_hour = per_day as f64 / 24.0 / rhythm_week_mean();
    let mut plan = Vec::new();
    while start < now {
        let end = (start + hour).min(now);
        let span_us = (end - start).num_microseconds().unwrap_or(0);
        let share = span_us as f64 / 3_600_000_000.0;
        let weight = daily_rhythm(start.hour(), start.weekday());
        plan.push(BackfillHour {
            start,
            span_us,
            events: (per_hour * weight * share).round() as u64,
        });
        start += hour;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_follows_the_rhythm_and_the_volume() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T10:30:00Z")
            .unwrap()
            .to_utc();
        let plan = backfill_plan(now, 7, 20_000);
        assert_eq!(plan.len(), 7 * 24 + 1);
        assert_eq!(
            plan[0].start,
            DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
                .unwrap()
                .to_utc()
        );
        let last = plan.last().unwrap();
        assert_eq!(last.span_us, 1_800_000_000);
        let total: u64 = plan.iter().map(|h| h.events).sum();
        assert!(
            (total as f64 - 140_000.0).abs() < 140_000.0 * 0.05,
            "{total}"
        );
        // Friday 2026-11-20: 14:00 is busier than 03:00; Saturday is quieter than Friday.
        let at = |s: &str| {
            plan.iter()
                .find(|h| h.start.to_rfc3339() == s)
                .unwrap()
                .events
        };
        assert!(at("2026-11-20T14:00:00+00:00") > 4 * at("2026-11-21T03:00:00+00:00"));
        assert!(at("2026-11-21T14:00:00+00:00") < at("2026-11-20T14:00:00+00:00"));
        assert!(backfill_plan(now, 0, 20_000).is_empty());
    }
}
