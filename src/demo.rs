//! `streamtally demo`: the whole product in one process, fed by itself.
//!
//! An embedded Kafka-protocol broker (librdkafka's mock cluster, listening on a real
//! 127.0.0.1 port so outside clients can produce too; or `--brokers`), a synthetic event
//! generator (`generator`, on [`crate::synth`]: several orgs, users with sessions, a skewed
//! mix of event names, a daily rhythm), and everything `streamtally run` starts ([`crate::app::serve`]):
//! ingest, the stats workers and the gateway with the dashboard. The generator produces
//! through the broker, so demo events take the same path as real ones: first an optional
//! backfill of the last days (flow-controlled against the store's stored positions, so the
//! mock cluster's retention never drops a record the consumer has not read), then live
//! events at a fixed rate until shutdown.
//!
//! Start-up prints, one fact per line (stable for scripts and tests): `dashboard: URL`,
//! `org <uuid> token <token>` per demo org with a ready `open: URL`, `broker: HOST:PORT`, a
//! produce example, and `data: DIR`. A signal stops the generator first,
//! then everything else as `run` does; the temporary store is removed unless `--keep`.

mod generator;

use crate::app::{self, StopHook};
use crate::config::{AuthToken, Config};
use crate::gateway::auth::token_sha256_hex;
use crate::schema::Schema;
use crate::store::{Store, StoreOptions, WriteBatch};
use crate::synth::SynthConfig;
use anyhow::Context;
use generator::Generator;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::mocking::MockCluster;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// The topic the demo produces to and consumes.
pub const TOPIC: &str = "events";
/// Partitions of [`TOPIC`] when the demo creates it.
pub const PARTITIONS: i32 = 6;
/// The consumer group: not the connector's default, so a demo pointed at a real broker
/// never takes partitions from a running connector.
pub const GROUP_ID: &str = "streamtally-demo";
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
