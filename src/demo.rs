//! `streamtally demo`: the whole product in one process, fed by itself.
//!
//! An embedded Kafka-protocol broker (librdkafka's mock cluster, listening on a real
//! 127.0.0.1 port so outside clients can produce too; or `--brokers`), a synthetic event
//! generator ([`crate::synth`]: several orgs, users with sessions, a skewed mix of event
//! names, a daily rhythm), and everything `streamtally run` starts ([`crate::app::serve`]):
//! ingest, the stats workers and the gateway with the dashboard. The generator produces
//! through the broker, so demo events take the same path as real ones: first an optional
//! backfill of the last days (flow-controlled against the store's stored positions, so the
//! mock cluster's retention never drops a record the consumer has not read), then live
//! events at a fixed rate until shutdown.
//!
//! Start-up prints, one fact per line (`key: value`, stable for scripts and tests): the
//! dashboard URL, `org <uuid> token <token>` per demo org with a ready URL, the broker
//! address, a produce example, and the data directory. A signal stops the generator first,
//! then everything else as `run` does; the temporary store is removed unless `--keep`.

use crate::app::{self, StopHook};
use crate::config::{AuthToken, Config};
use crate::gateway::auth::token_sha256_hex;
use crate::schema::Schema;
use crate::store::{Store, StoreOptions, WriteBatch};
use crate::synth::{daily_rhythm, mix, rhythm_week_mean, SynthConfig, SynthEvent};
use anyhow::Context;
use chrono::{DateTime, Datelike, DurationRound, Timelike, Utc};
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::Message;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The topic the demo produces to and consumes.
pub const TOPIC: &str = "events";
/// Partitions of [`TOPIC`] when the demo creates it.
pub const PARTITIONS: i32 = 6;
/// The consumer group: not the connector's default, so a demo pointed at a real broker
/// never takes partitions from a running connector.
pub const GROUP_ID: &str = "streamtally-demo";
/// Records produced but not yet stored, at most, while backfilling: about 10 MB, well under
/// the mock cluster's retention (5 MB per partition, 6 partitions).
const BACKFILL_WINDOW: u64 = 20_000;
/// How long an outside broker may take to answer the first metadata request.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// What `streamtally demo` was asked for (the flags).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Live events per second, over all orgs.
    pub rate_per_s: u64,
    /// Demo orgs (the generator's orgs `0..orgs`, [`SynthConfig::org_id`]).
    pub orgs: usize,
    /// Days of history produced before going live (0: none).
    pub backfill_days: u32,
    /// Backfilled events per day, on average over a week (the daily rhythm shapes them).
    pub backfill_events_per_day: u64,
    /// An outside broker instead of the embedded one.
    pub brokers: Option<String>,
    /// The store directory; `None`: a temporary directory.
    pub data: Option<PathBuf>,
    /// Keep the temporary store directory on exit.
    pub keep: bool,
    /// The gateway address; `None`: `gateway.listen` from the configuration.
    pub listen: Option<SocketAddr>,
    /// Seed of the generator's choices; `None`: random.
    pub seed: Option<u64>,
    /// How the user runs this binary, for the printed produce example.
    pub program: String,
}

/// A new API token as `streamtally token new` makes it: 32 random bytes, base64url.
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        bytes,
    ))
}

/// Runs the demo until a signal (or a fatal error); the start-up lines go to `out`.
pub fn run(
    mut cfg: Config,
    schema: Schema,
    opts: &DemoOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let seed = match opts.seed {
        Some(s) => s,
        None => u64::from_le_bytes(random_bytes()?),
    };
    // The embedded cluster lives until everything that talks to it has stopped.
    let (cluster, bootstrap) = match &opts.brokers {
        None => {
            let cluster = MockCluster::new(1).context("starting the embedded broker")?;
            cluster
                .create_topic(TOPIC, PARTITIONS, 1)
                .with_context(|| format!("embedded broker: creating topic '{TOPIC}'"))?;
            let dlq = format!("{TOPIC}{}", cfg.kafka.dead_letter.topic_suffix);
            cluster
                .create_topic(&dlq, 1, 1)
                .with_context(|| format!("embedded broker: creating topic '{dlq}'"))?;
            let bootstrap = cluster.bootstrap_servers();
            (Some(cluster), bootstrap)
        }
        Some(brokers) => {
            ensure_topic(brokers, &cfg.kafka.client)?;
            (None, brokers.clone())
        }
    };

    let data = DataDir::new(opts)?;
    let orgs: Vec<(Uuid, String)> = (0..opts.orgs)
        .map(|n| Ok((demo_org(n), random_token()?)))
        .collect::<anyhow::Result<_>>()?;
    cfg.kafka.brokers = bootstrap.clone();
    cfg.kafka.topics = vec![TOPIC.to_string()];
    cfg.kafka.topic_regex = None;
    cfg.kafka.group_id = GROUP_ID.to_string();
    cfg.store.path = data.path.clone();
    if let Some(listen) = opts.listen {
        cfg.gateway.listen = listen;
    }
    cfg.auth
        .tokens
        .extend(orgs.iter().enumerate().map(|(n, (org, token))| AuthToken {
            org_id: *org,
            token_sha256: token_sha256_hex(token),
            name: Some(format!("demo org {n}")),
        }));
    cfg.validate().context("the demo's configuration")?;

    let store = Store::open(StoreOptions::from_config(&cfg.store), &schema)
        .with_context(|| format!("opening the store at {}", data.path.display()))?;
    if cluster.is_some() {
        if let Err(e) = restart_positions(&store) {
            let _ = store.close();
            return Err(e);
        }
    }

    let generator = Generator {
        bootstrap: bootstrap.clone(),
        client: cfg.kafka.client.clone(),
        synth: SynthConfig {
            orgs: opts.orgs,
            users: 500 * opts.orgs,
            seed,
            ..SynthConfig::new(1)
        },
        rate_per_s: opts.rate_per_s,
        backfill_days: opts.backfill_days,
        backfill_events_per_day: opts.backfill_events_per_day,
    };
    let result = app::serve(cfg, store, |started| {
        print_banner(out, started.gateway_addr, &orgs, &bootstrap, opts, &data)
            .context("writing the start-up lines")?;
        let stop = started.shutdown.child_token();
        let thread = {
            let (stop, shutdown, store) = (
                stop.clone(),
                started.shutdown.clone(),
                started.store.clone(),
            );
            std::thread::Builder::new()
                .name("demo-generator".into())
                .spawn(move || {
                    let result = generator.run(&store, &stop);
                    if result.is_err() {
                        shutdown.cancel();
                    }
                    result
                })
                .context("starting the generator thread")?
        };
        let hook: StopHook = Box::new(move || {
            stop.cancel();
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the demo generator thread panicked"))?
                .context("demo generator")
        });
        Ok(Some(hook))
    });
    drop(cluster);
    let kept = data.finish();
    let _ = writeln!(out, "{kept}");
    let _ = out.flush();
    result
}

/// Demo org `n`: the generator's org ids, so `streamtally produce --orgs N` feeds them too.
pub fn demo_org(n: usize) -> Uuid {
    Uuid::from_bytes(SynthConfig::new(1).org_id(n))
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes)
}

fn print_banner(
    out: &mut dyn Write,
    addr: SocketAddr,
    orgs: &[(Uuid, String)],
    bootstrap: &str,
    opts: &DemoOptions,
    data: &DataDir,
) -> std::io::Result<()> {
    writeln!(out, "dashboard: http://{addr}/")?;
    for (org, token) in orgs {
        writeln!(out, "org {org} token {token}")?;
        writeln!(out, "  open: http://{addr}/?org={org}&token={token}")?;
    }
    let embedded = if opts.brokers.is_none() {
        " (embedded)"
    } else {
        ""
    };
    writeln!(out, "broker: {bootstrap}{embedded}")?;
    writeln!(
        out,
        "topic: {TOPIC}, consumer group {GROUP_ID}, {} live events/s over {} org(s), {} day(s) of backfill",
        opts.rate_per_s, opts.orgs, opts.backfill_days
    )?;
    writeln!(
        out,
        "produce: {} produce --brokers {bootstrap} --topic {TOPIC} --orgs {} --events 1000",
        opts.program, opts.orgs
    )?;
    let first = orgs.first().map(|(o, _)| o.to_string()).unwrap_or_default();
    writeln!(
        out,
        "kcat: echo '{{\"org_id\":\"{first}\",\"event_type\":\"track\",\"event_name\":\"hello\",\"user_id\":\"u_1\"}}' | kcat -P -b {bootstrap} -t {TOPIC}"
    )?;
    writeln!(out, "data: {}", data.describe())?;
    writeln!(out, "Ctrl-C stops the demo.")?;
    out.flush()
}

/// The store directory, removed on exit when it is a temporary one and `--keep` is off.
struct DataDir {
    path: PathBuf,
    temporary: bool,
    remove: bool,
}

impl DataDir {
    fn new(opts: &DemoOptions) -> anyhow::Result<DataDir> {
        if let Some(path) = &opts.data {
            return Ok(DataDir {
                path: path.clone(),
                temporary: false,
                remove: false,
            });
        }
        let name = format!(
            "streamtally-demo-{}-{:08x}",
            std::process::id(),
            u32::from_le_bytes(random_bytes()?)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating the demo store directory {}", path.display()))?;
        Ok(DataDir {
            path,
            temporary: true,
            remove: !opts.keep,
        })
    }

    fn describe(&self) -> String {
        match (self.temporary, self.remove) {
            (true, true) => format!("{} (temporary: removed on exit)", self.path.display()),
            (true, false) => format!("{} (temporary, kept on exit: --keep)", self.path.display()),
            (false, _) => format!("{} (kept)", self.path.display()),
        }
    }

    /// Removes the directory if it should go; says what happened.
    fn finish(mut self) -> String {
        let path = self.path.display().to_string();
        if !self.remove {
            return format!("data: kept at {path}");
        }
        self.remove = false;
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => format!("data: removed {path}"),
            Err(e) => format!("data: could not remove {path}: {e}"),
        }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The embedded broker starts empty, so a kept store's positions in [`TOPIC`] would point
/// past its end: start them again at 0 (event ids are random per run, nothing is lost).
fn restart_positions(store: &Store) -> anyhow::Result<()> {
    let mut batch = WriteBatch::new();
    for (topic, partition, _) in store.offsets()? {
        if topic == TOPIC {
            batch.set_offset(&topic, partition, 0);
        }
    }
    if !batch.is_empty() {
        store
            .write_blocking(batch)
            .context("resetting the stored positions for the embedded broker")?;
        tracing::info!(
            topic = TOPIC,
            "stored positions reset to 0 for the new embedded broker"
        );
    }
    Ok(())
}

fn client_config(brokers: &str, client: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false");
    for (k, v) in client {
        config.set(k, v);
    }
    config
}

/// An outside broker: it must answer within [`BROKER_TIMEOUT`]; [`TOPIC`] is created with
/// [`PARTITIONS`] partitions if it does not exist (an existing one is used as it is).
fn ensure_topic(brokers: &str, client: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let config = client_config(brokers, client);
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .with_context(|| format!("a Kafka client for --brokers '{brokers}'"))?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(TOPIC), BROKER_TIMEOUT)
        .map_err(|e| {
            anyhow::anyhow!(
                "--brokers '{brokers}': no answer within {} s ({e}); is a Kafka-protocol broker listening there?",
                BROKER_TIMEOUT.as_secs()
            )
        })?;
    let exists = metadata
        .topics()
        .first()
        .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty());
    if exists {
        return Ok(());
    }
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(-1));
    let admin_opts = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&topic], &admin_opts))
        .with_context(|| format!("--brokers '{brokers}': creating topic '{TOPIC}'"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                anyhow::bail!("--brokers '{brokers}': creating topic '{TOPIC}': {code}")
            }
        }
    }
    tracing::info!(
        topic = TOPIC,
        partitions = PARTITIONS,
        brokers,
        "created topic"
    );
    Ok(())
}

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
struct Generator {
    bootstrap: String,
    client: BTreeMap<String, String>,
    synth: SynthConfig,
    rate_per_s: u64,
    backfill_days: u32,
    backfill_events_per_day: u64,
}

impl Generator {
    fn run(self, store: &Store, stop: &CancellationToken) -> anyhow::Result<()> {
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
