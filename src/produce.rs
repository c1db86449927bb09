//! `streamtally produce`: feeds a topic, so that a user without kcat can try the connector.
//!
//! Two sources: NDJSON lines from a file or stdin, sent exactly as written (invalid lines
//! included, on purpose: they are how a user exercises the connector's dead-letter path), or
//! the synthetic generator of [`crate::synth`] in the connector's native event format.
//! Synthetic records are keyed by `user_id`, so one user's events stay in order on one
//! partition; NDJSON lines are keyed by their `user_id`/`userId`/`anonymousId` when the line
//! is a JSON object that has one (nothing is validated), else sent without a key.
//!
//! Talks only to Kafka, through one rdkafka `BaseProducer` polled on the calling thread:
//! the delivery callbacks count what was acknowledged and what failed (with the NDJSON line
//! number or synthetic event index), and the final flush waits until every record has been
//! reported either way, so the summary's counts are final.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio_util::sync::CancellationToken;

use crate::synth::{SynthConfig, SynthEvent};

/// librdkafka's `message.timeout.ms` unless `[kafka.client]` overrides it: how long a record
/// may wait for its acknowledgement, and how long the start-up metadata check waits.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;
/// How many failed records the summary keeps (the count is always exact).
pub const MAX_REPORTED_FAILURES: usize = 1000;

/// What to send, where, and how fast.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// librdkafka properties passed through verbatim (the `[kafka.client]` table); applied
    /// after this module's defaults, so they win.
    pub client: BTreeMap<String, String>,
    /// Topic to write to.
    pub topic: String,
    /// Records per second (token bucket); `None` sends as fast as the producer accepts.
    pub rate_per_s: Option<u64>,
    /// Stop after this many records; `None`: the whole input, or synthetic until shutdown.
    pub events: Option<u64>,
    /// Number of orgs in synthetic mode.
    pub orgs: usize,
    /// NDJSON input; `-` is stdin; `None` generates synthetic events.
    pub input: Option<PathBuf>,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Seed of the synthetic generator: the same seed regenerates the same events.
    pub seed: u64,
    /// Create the topic with this many partitions when it does not exist (the broker's
    /// default replication factor). `None`: a missing topic is an error.
    pub partitions: Option<i32>,
}

impl ProduceOptions {
    /// Synthetic, unlimited rate, no progress bar, 20 orgs, seed 42, topic must exist.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        ProduceOptions {
            brokers: brokers.into(),
            client: BTreeMap::new(),
            topic: topic.into(),
            rate_per_s: None,
            events: None,
            orgs: 20,
            input: None,
            progress: false,
            seed: 42,
            partitions: None,
        }
    }
}

/// A record the broker did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    /// NDJSON: the 1-based line number; synthetic: the 0-based event index.
    pub position: u64,
    pub error: String,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct ProduceSummary {
    /// Records the broker acknowledged.
    pub sent: u64,
    /// Records that could not be sent or were not acknowledged in time.
    pub failed: u64,
    pub elapsed: std::time::Duration,
    /// The first [`MAX_REPORTED_FAILURES`] failures, in the order they were reported.
    pub failures: Vec<FailedRecord>,
    /// True when the shutdown token stopped the run before the input ended.
    pub interrupted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot open input file '{path}': {source}")]
    OpenInput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read input '{path}' at line {line}: {source}")]
    ReadInput {
        path: PathBuf,
        line: u64,
        source: std::io::Error,
    },
    #[error("invalid produce option {name} = {value}: {reason}")]
    InvalidOption {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cannot create a Kafka producer for brokers '{brokers}': {source}")]
    Client { brokers: String, source: KafkaError },
    #[error("brokers '{brokers}' unreachable: no metadata within message.timeout.ms = {timeout_ms} ms: {source}")]
    BrokerUnreachable {
        brokers: String,
        timeout_ms: u64,
        source: KafkaError,
    },
    #[error("topic '{topic}' does not exist on brokers '{brokers}' (create it, or pass --partitions to create it)")]
    TopicMissing { topic: String, brokers: String },
    #[error("topic '{topic}' on brokers '{brokers}': metadata error: {error}")]
    TopicMetadata {
        topic: String,
        brokers: String,
        error: RDKafkaErrorCode,
    },
    #[error("cannot create topic '{topic}' with {partitions} partitions on brokers '{brokers}': {reason}")]
    CreateTopic {
        topic: String,
        partitions: i32,
        brokers: String,
        reason: String,
    },
    #[error("topic '{topic}': {pending} records still unacknowledged after waiting {waited_ms} ms at the end ({sent} acknowledged, {failed} failed)")]
    FlushTimeout {
        topic: String,
        pending: i32,
        waited_ms: u64,
        sent: u64,
        failed: u64,
    },
}

/// Sends the records `opts` describes and waits until the broker has acknowledged (or failed)
/// every one. Blocking; run it on a thread that may block. `shutdown` stops sending; what
/// was already handed to the producer is still flushed.
pub fn run(
    opts: &ProduceOptions,
    shutdown: &CancellationToken,
) -> Result<ProduceSummary, ProduceError> {
    validate(opts)?;
    let mut source = Source::open(opts)?;
    let message_timeout_ms = message_timeout_ms(&opts.client);
    let config = client_config(opts);
    let producer: BaseProducer<DeliveryTally> = config
        .create_with_context(DeliveryTally::new(&opts.brokers, source.position_name()))
        .map_err(|source| ProduceError::Client {
            brokers: opts.brokers.clone(),
            source,
        })?;
    ensure_topic(&producer, &config, opts, message_timeout_ms)?;

    let started = Instant::now();
    let bar = progress_bar(opts);
    let mut bucket = opts.rate_per_s.map(|r| TokenBucket::new(r, started));
    let mut handed_over = 0u64;
    let mut interrupted = false;
    let mut read_error = None;
    while opts.events.is_none_or(|n| handed_over < n) {
        if shutdown.is_cancelled() {
            interrupted = true;
            break;
        }
        let record = match source.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if let Some(bucket) = bucket.as_mut() {
            while let Some(wait) = bucket.take(Instant::now()) {
                producer.poll(wait); // serves delivery callbacks while it waits
            }
        }
        send(&producer, &opts.topic, &record);
        handed_over += 1;
        producer.poll(Duration::ZERO);
        if handed_over.is_multiple_of(256) {
            bar.set_position(producer.context().done());
        }
    }

    // Every record is reported (delivered or failed) at most message.timeout.ms after it
    // was handed over; the margin lets that last report arrive, so the counts are final.
    let flush_wait = Duration::from_millis(message_timeout_ms) + Duration::from_secs(5);
    let flushed = producer.flush(flush_wait);
    producer.poll(Duration::ZERO);
    let tally = producer.context();
    let (sent, failed) = (
        tally.sent.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    bar.set_position(sent + failed);
    bar.abandon(); // leaves the last state on screen (finish() would claim 100%)
    if flushed.is_err() {
        return Err(ProduceError::FlushTimeout {
            topic: opts.topic.clone(),
            pending: producer.in_flight_count(),
            waited_ms: flush_wait.as_millis() as u64,
            sent,
            failed,
        });
    }
    if let Some(e) = read_error {
        return Err(e);
    }
    let summary = ProduceSummary {
        sent,
        failed,
        elapsed: started.elapsed(),
        failures: std::mem::take(&mut *tally.failures.lock()),
        interrupted,
    };
    tracing::info!(
        topic = %opts.topic,
        sent,
        failed,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        interrupted,
        "produce finished"
    );
    Ok(summary)
}

/// One synthetic event in the connector's native format, ~440 bytes of JSON:
/// `{"id","org_id","event_type","event_name","user_id","session_id","timestamp","properties"}`
/// with an RFC 3339 UTC timestamp and `properties` as a JSON object.
pub fn synthetic_json(cfg: &SynthConfig, i: u64) -> String {
    event_json(&SynthEvent::generate(cfg, i))
}

fn event_json(ev: &SynthEvent) -> String {
    let text = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        r#"{{"id":"{}","org_id":"{}","event_type":{},"event_name":{},"user_id":{},"session_id":{},"timestamp":"{}","properties":{}}}"#,
        uuid::Uuid::from_bytes(ev.id).hyphenated(),
        uuid::Uuid::from_bytes(ev.org_id).hyphenated(),
        text(ev.event_type),
        text(ev.event_name),
        text(&ev.user_id),
        text(&ev.session_id),
        ev.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
        ev.properties,
    )
}

fn validate(opts: &ProduceOptions) -> Result<(), ProduceError> {
    let invalid = |name, value: String, reason| {
        Err(ProduceError::InvalidOption {
            name,
            value,
            reason,
        })
    };
    if opts.topic.is_empty() {
        return invalid("topic", String::new(), "must not be empty");
    }
    if opts.rate_per_s == Some(0) {
        return invalid("rate", "0".into(), "must be at least 1 record per second");
    }
    if opts.input.is_none() && opts.orgs == 0 {
        return invalid("orgs", "0".into(), "synthetic events need at least 1 org");
    }
    if let Some(p) = opts.partitions.filter(|p| *p < 1) {
        return invalid("partitions", p.to_string(), "must be at least 1");
    }
    Ok(())
}

fn message_timeout_ms(client: &BTreeMap<String, String>) -> u64 {
    // librdkafka treats delivery.timeout.ms as an alias of message.timeout.ms.
    ["message.timeout.ms", "delivery.timeout.ms"]
        .iter()
        .find_map(|k| client.get(*k).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(DEFAULT_MESSAGE_TIMEOUT_MS)
}

fn client_config(opts: &ProduceOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &opts.brokers)
        .set("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS.to_string())
        .set("linger.ms", "5")
        // Retries after a lost acknowledgement must not duplicate or reorder records.
        .set("enable.idempotence", "true")
        .set("compression.type", "none")
        // A metadata request must not create the topic as a side effect: a typo in --topic
        // should be an error, not a new topic with the broker's default partition count.
        .set("allow.auto.create.topics", "false");
    for (key, value) in &opts.client {
        config.set(key, value);
    }
    config
}

/// Checks that the brokers answer and the topic exists; creates it if `--partitions` asks.
fn ensure_topic(
    producer: &BaseProducer<DeliveryTally>,
    config: &ClientConfig,
    opts: &ProduceOptions,
    timeout_ms: u64,
) -> Result<(), ProduceError> {
    let timeout = Duration::from_millis(timeout_ms);
    let unreachable = |source| ProduceError::BrokerUnreachable {
        brokers: opts.brokers.clone(),
        timeout_ms,
        source,
    };
    let metadata = producer
        .client()
        .fetch_metadata(Some(&opts.topic), timeout)
        .map_err(unreachable)?;
    let error = metadata.topics().first().and_then(|t| t.error());
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    match (error.map(RDKafkaErrorCode::from), partitions) {
        (None, n) if n > 0 => {
            tracing::info!(topic = %opts.topic, partitions = n, brokers = %opts.brokers, "producing");
            return Ok(());
        }
        (Some(e), _) if e != RDKafkaErrorCode::UnknownTopicOrPartition => {
            return Err(ProduceError::TopicMetadata {
                topic: opts.topic.clone(),
                brokers: opts.brokers.clone(),
                error: e,
            });
        }
        _ => {}
    }
    let Some(partitions) = opts.partitions else {
        return Err(ProduceError::TopicMissing {
            topic: opts.topic.clone(),
            brokers: opts.brokers.clone(),
        });
    };
    create_topic(config, opts, partitions, timeout)?;
    // The new topic's metadata reaches every broker shortly after the create returns.
    let deadline = Instant::now() + timeout;
    loop {
        let metadata = producer
            .client()
            .fetch_metadata(Some(&opts.topic), timeout)
            .map_err(unreachable)?;
        if metadata
            .topics()
            .first()
            .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty())
        {
            tracing::info!(topic = %opts.topic, partitions, brokers = %opts.brokers, "created topic");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ProduceError::CreateTopic {
                topic: opts.topic.clone(),
                partitions,
                brokers: opts.brokers.clone(),
                reason: format!("created, but not in the metadata after {timeout_ms} ms"),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_topic(
    config: &ClientConfig,
    opts: &ProduceOptions,
    partitions: i32,
    timeout: Duration,
) -> Result<(), ProduceError> {
    let failed = |reason: String| ProduceError::CreateTopic {
        topic: opts.topic.clone(),
        partitions,
        brokers: opts.brokers.clone(),
        reason,
    };
    // -1: the broker's default.replication.factor.
    let topic = NewTopic::new(&opts.topic, partitions, TopicReplication::Fixed(-1));
    let admin_opts = AdminOptions::new().operation_timeout(Some(timeout));
    create_topic_if_missing(config, &topic, &admin_opts).map_err(failed)
}

/// Creates `topic` unless it exists; why not, as text.
pub fn create_topic_if_missing(
    config: &ClientConfig,
    topic: &NewTopic<'_>,
    opts: &AdminOptions,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let results = futures::executor::block_on(admin.create_topics([topic], opts))
        .map_err(|e| e.to_string())?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(code.to_string()),
        }
    }
    Ok(())
}

fn progress_bar(opts: &ProduceOptions) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let (bar, template) = match opts.events {
        Some(n) => (
            ProgressBar::new(n),
            "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} events, {rate}, ETA {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {elapsed_precise} {human_pos} events, {rate}",
        ),
    };
    // indicatif's stderr target draws nothing when stderr is not a terminal.
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        let style = style.with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} events/s", state.per_sec());
            },
        );
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A record read from the input, ready to send.
struct Record {
    /// NDJSON line number or synthetic event index: what a failure report names.
    position: u64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

fn send(producer: &BaseProducer<DeliveryTally>, topic: &str, record: &Record) {
    let mut base = BaseRecord::with_opaque_to(topic, record.position as usize)
        .payload(record.payload.as_slice());
    if let Some(key) = &record.key {
        base = base.key(key.as_slice());
    }
    loop {
        match producer.send(base) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // The local queue is full: wait for acknowledgements to make room.
                base = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => {
                producer
                    .context()
                    .record_failure(record.position, error.to_string());
                return;
            }
        }
    }
}

enum Source {
    Synthetic {
        cfg: SynthConfig,
        next: u64,
        /// No --events: the stream has no end, so each event is stamped with the send time.
        live: bool,
    },
    Lines {
        path: PathBuf,
        reader: Box<dyn BufRead>,
        line: u64,
    },
}

impl Source {
    fn open(opts: &ProduceOptions) -> Result<Source, ProduceError> {
        match &opts.input {
            None => {
                let mut cfg = SynthConfig::new(opts.events.unwrap_or(1).max(1));
                cfg.orgs = opts.orgs;
                cfg.seed = opts.seed;
                cfg.span_days = 1;
                cfg.end = Utc::now();
                Ok(Source::Synthetic {
                    cfg,
                    next: 0,
                    live: opts.events.is_none(),
                })
            }
            Some(path) if path.as_os_str() == "-" => Ok(Source::Lines {
                path: path.clone(),
                reader: Box::new(BufReader::new(std::io::stdin())),
                line: 0,
            }),
            Some(path) => {
                let file = std::fs::File::open(path).map_err(|source| ProduceError::OpenInput {
                    path: path.clone(),
                    source,
                })?;
                Ok(Source::Lines {
                    path: path.clone(),
                    reader: Box::new(BufReader::with_capacity(1 << 20, file)),
                    line: 0,
                })
            }
        }
    }

    fn position_name(&self) -> &'static str {
        match self {
            Source::Synthetic { .. } => "event",
            Source::Lines { .. } => "line",
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>, ProduceError> {
        match self {
            Source::Synthetic { cfg, next, live } => {
                let mut event = SynthEvent::generate(cfg, *next);
                if *live {
                    event.timestamp = Utc::now();
                }
                let record = Record {
                    position: *next,
                    key: Some(event.user_id.clone().into_bytes()),
                    payload: event_json(&event).into_bytes(),
                };
                *next += 1;
                Ok(Some(record))
            }
            Source::Lines { path, reader, line } => loop {
                let mut buf = Vec::new();
                *line += 1;
                // Bytes, not String: non-UTF-8 lines are sent too (the connector
                // dead-letters them).
                let n = reader.read_until(b'\n', &mut buf).map_err(|source| {
                    ProduceError::ReadInput {
                        path: path.clone(),
                        line: *line,
                        source,
                    }
                })?;
                if n == 0 {
                    return Ok(None);
                }
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue; // blank lines are layout, not records
                }
                return Ok(Some(Record {
                    position: *line,
                    key: key_of_line(&buf),
                    payload: buf,
                }));
            },
        }
    }
}

/// The line's user, when it is a JSON object that names one; `None` otherwise (the line is
/// still sent: validating is the connector's job).
fn key_of_line(line: &[u8]) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Probe {
        user_id: Option<String>,
        #[serde(rename = "userId")]
        user_id_camel: Option<String>,
        #[serde(rename = "anonymousId")]
        anonymous_id: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(line).ok()?;
    probe
        .user_id
        .or(probe.user_id_camel)
        .or(probe.anonymous_id)
        .map(String::into_bytes)
}

/// Delivery callbacks land here (on the thread that polls the producer).
struct DeliveryTally {
    brokers: String,
    /// "line" or "event": what a record's position counts, for the log.
    position_name: &'static str,
    sent: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<FailedRecord>>,
}

impl DeliveryTally {
    fn new(brokers: &str, position_name: &'static str) -> Self {
        DeliveryTally {
            brokers: brokers.to_owned(),
            position_name,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
        }
    }

    fn done(&self) -> u64 {
        self.sent.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    fn record_failure(&self, position: u64, error: String) {
        let n = self.failed.fetch_add(1, Ordering::Relaxed);
        if (n as usize) < MAX_REPORTED_FAILURES {
            tracing::warn!(position_kind = self.position_name, position, %error, "record not sent");
            self.failures.lock().push(FailedRecord { position, error });
        }
    }
}

impl ClientContext for DeliveryTally {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Debug | RDKafkaLogLevel::Info | RDKafkaLogLevel::Notice => {
                tracing::debug!(target: "librdkafka", fac, message)
            }
            _ => tracing::warn!(target: "librdkafka", fac, message),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(brokers = %self.brokers, %error, reason, "kafka client error");
    }
}

impl ProducerContext for DeliveryTally {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, position: usize) {
        match result {
            Ok(_) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => self.record_failure(position as u64, error.to_string()),
        }
    }
}

/// Token bucket: `rate` tokens a second, holding at most 50 ms worth (at least one), so a
/// slow moment is not followed by a burst much above the rate.
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Starts with one token: the first second runs at the rate, not at rate + burst.
    fn new(rate_per_s: u64, now: Instant) -> Self {
        let rate = rate_per_s as f64;
        TokenBucket {
            rate,
            capacity: (rate / 20.0).max(1.0),
            tokens: 1.0,
            last: now,
        }
    }

    /// Takes a token and returns `None`, or returns how long to wait before asking again.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_paces_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, start);
        let mut now = start;
        let mut taken = 0;
        // Simulate one second in 1 ms steps: about 100 tokens, never a burst past capacity.
        while now < start + Duration::from_secs(1) {
            while bucket.take(now).is_none() {
                taken += 1;
            }
            now += Duration::from_millis(1);
        }
        assert!(
            (99..=101).contains(&taken),
            "took {taken} tokens in 1 s at 100/s"
        );
        let mut idle = TokenBucket::new(1000, start);
        let later = start + Duration::from_secs(10);
        let burst = std::iter::from_fn(|| idle.take(later).is_none().then_some(())).count();
        assert_eq!(burst, 50, "a bucket idle for 10 s holds 50 ms worth");
        assert!(idle
            .take(later)
            .is_some_and(|w| w <= Duration::from_millis(1)));
    }

    #[test]
    fn synthetic_json_has_the_native_fields() {
        let mut cfg = SynthConfig::new(100);
        cfg.orgs = 3;
        cfg.span_days = 1;
        let text = synthetic_json(&cfg, 7);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        for field in [
            "id",
            "org_id",
            "event_type",
            "event_name",
            "user_id",
            "session_id",
        ] {
            assert!(v[field].is_string(), "{field} in {text}");
        }
        assert!(v["properties"].is_object());
        let ts = v["timestamp"].as_str().expect("timestamp");
        let ts = chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339");
        assert!(ts.to_utc() <= cfg.end && ts.to_utc() >= cfg.end - chrono::Duration::days(1));
        uuid::Uuid::parse_str(v["id"].as_str().expect("id")).expect("uuid");
        assert!((250..600).contains(&text.len()), "{} bytes", text.len());
        assert_eq!(text, synthetic_json(&cfg, 7), "deterministic");
    }

    #[test]
    fn key_of_line_finds_the_user_without_validating() {
        assert_eq!(
            key_of_line(br#"{"user_id":"u1","x":1}"#),
            Some(b"u1".to_vec())
        );
        assert_eq!(key_of_line(br#"{"userId":"u2"}"#), Some(b"u2".to_vec()));
        assert_eq!(
            key_of_line(br#"{"anonymousId":"a3"}"#),
            Some(b"a3".to_vec())
        );
        assert_eq!(key_of_line(b"{not json"), None);
        assert_eq!(key_of_line(br#"{"user_id":5}"#), None);
        assert_eq!(key_of_line(b"\xff\xfe"), None);
    }

    #[test]
    fn message_timeout_follows_the_client_table() {
        let mut client = BTreeMap::new();
        assert_eq!(message_timeout_ms(&client), DEFAULT_MESSAGE_TIMEOUT_MS);
        client.insert("delivery.timeout.ms".into(), "2000".into());
        assert_eq!(message_timeout_ms(&client), 2000);
        client.insert("message.timeout.ms".into(), "1500".into());
        assert_eq!(message_timeout_ms(&client), 1500);
    }
}
