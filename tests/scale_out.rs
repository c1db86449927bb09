//! Several connectors in one consumer group (`[scale_out]`, docs/SCALE-OUT.md): membership,
//! and every partition's history held by its owner. Three `streamtally run` processes
//! against Tansu (out of process; the mock cluster cannot create the members topic through
//! the admin API) agree on the owner of every partition; a SIGKILLed one is noticed and its
//! partitions go to the survivors; restarted, it takes partitions again; one stopped cleanly
//! says it is leaving. Through a kill and a restart mid-stream, each instance answers
//! exactly the events of the partitions it owns, history included (restored from its own
//! stored position or the start of the log), and together they answer every event once.

mod common;

use common::broker::{random_name, TestBroker};
use common::http;
use common::run::{self, sigkill, sigterm};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 12;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Instance {
    id: &'static str,
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

/// Instances a, b and c (not started), each with a free port and a store under `dir`.
fn three_instances(dir: &Path) -> Vec<Instance> {
    ["a", "b", "c"]
        .iter()
        .map(|id| Instance {
            id,
            port: free_port(),
            dir: dir.join(format!("store-{id}")),
            child: None,
        })
        .collect()
}

fn start(broker: &str, topic: &str, group: &str, i: &mut Instance, log: &Path) {
    let listen = format!("127.0.0.1:{}", i.port);
    let url = format!("http://127.0.0.1:{}", i.port);
    let env = [
        ("STREAMTALLY__SCALE_OUT__ENABLED", "true"),
        ("STREAMTALLY__SCALE_OUT__INSTANCE_ID", i.id),
        ("STREAMTALLY__SCALE_OUT__ANNOUNCE_INTERVAL_MS", "500"),
        ("STREAMTALLY__GATEWAY__LISTEN", listen.as_str()),
        ("STREAMTALLY__GATEWAY__ADVERTISED_URL", url.as_str()),
        ("STREAMTALLY__AUTH__ENABLED", "false"),
    ];
    i.child = Some(run::spawn_run(broker, topic, group, &i.dir, log, &env));
}

/// The instances' shared log, for a failure's message.
fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// `GET /api/v1/cluster` of the instance on `port`.
fn cluster(port: u16) -> Option<Value> {
    let r = http::get(&format!("127.0.0.1:{port}"), "/api/v1/cluster", None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).ok()
}

/// partition -> owner, when the answer is complete (every partition has one live owner).
fn owners(v: &Value) -> Option<BTreeMap<i64, String>> {
    if v["complete"] != true {
        return None;
    }
    let map: BTreeMap<i64, String> = v["partitions"]
        .as_array()?
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["owner"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Some(map)
}

/// Waits until every instance on `ports` answers the same complete ownership, with exactly
/// the instances `ids` live, each owning at least one partition; returns it.
fn wait_agreed(
    ports: &[u16],
    ids: &[&str],
    timeout: Duration,
    log: &Path,
) -> BTreeMap<i64, String> {
    let t = Instant::now();
    let mut last = Vec::new();
    while t.elapsed() < timeout {
        let answers: Vec<Option<Value>> = ports.iter().map(|p| cluster(*p)).collect();
        let maps: Vec<Option<BTreeMap<i64, String>>> = answers
            .iter()
            .map(|a| a.as_ref().and_then(owners))
            .collect();
        let agreed = maps.iter().all(|m| m.is_some() && *m == maps[0]);
        if agreed {
            let map = maps[0].clone().unwrap();
            let live: Vec<String> = answers[0].as_ref().unwrap()["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["instance"].as_str().unwrap().to_string())
                .collect();
            let mut live_sorted = live.clone();
            live_sorted.sort();
            let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            want.sort();
            let every_one_owns = want.iter().all(|id| map.values().any(|o| o == id));
            if map.len() == PARTITIONS as usize && live_sorted == want && every_one_owns {
                return map;
            }
        }
        last = answers;
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "instances {ids:?} did not agree on the owners of {PARTITIONS} partitions within {timeout:?}; last answers: {last:#?}\nlog:\n{}",
        read_log(log)
    );
}

#[test]
fn three_instances_agree_on_partition_owners_through_a_kill_a_restart_and_a_clean_stop() {
    let broker = TestBroker::tansu().expect(
        "Tansu is needed (bash .ci/install-tansu.sh): the mock cluster cannot create the \
         members topic",
    );
    let topic = random_name("scale-out");
    broker.create_topic(&topic, PARTITIONS);
    let group = random_name("scale-out-group");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("streamtally.log");
    let mut instances = three_instances(dir.path());
    for i in &mut instances {
        start(&broker.bootstrap, &topic, &group, i, &log);
    }
    let ports: Vec<u16> = instances.iter().map(|i| i.port).collect();
    let all = wait_agreed(&ports, &["a", "b", "c"], Duration::from_secs(60), &log);
    let answer = cluster(ports[0]).unwrap();
    assert_eq!(answer["enabled"], true);
    assert_eq!(answer["instance"], "a");
    assert_eq!(answer["members_topic"], format!("{group}.members"));
    for p in answer["partitions"].as_array().unwrap() {
        let owner = p["owner"].as_str().unwrap();
        let port = instances.iter().find(|i| i.id == owner).unwrap().port;
        assert_eq!(p["url"], format!("http://127.0.0.1:{port}"));
        assert_eq!(p["state"], "owned");
    }
    assert!(all.values().all(|o| ["a", "b", "c"].contains(&o.as_str())));

    // SIGKILL c: no leaving announcement; the survivors notice it gone and the group gives
    // its partitions to them (the session timeout is 6 s).
    sigkill(instances[2].child.as_mut().unwrap());
    let survivors = wait_agreed(&ports[..2], &["a", "b"], Duration::from_secs(40), &log);
    assert!(survivors.values().all(|o| o == "a" || o == "b"));

    // Restarted (same id, same store), c takes partitions again.
    start(&broker.bootstrap, &topic, &group, &mut instances[2], &log);
    wait_agreed(&ports, &["a", "b", "c"], Duration::from_secs(60), &log);

    // A clean stop announces that b leaves: a and c agree without it.
    let status = sigterm(instances[1].child.as_mut().unwrap());
    assert!(status.success(), "b did not stop cleanly: {status:?}");
    let ports_ac = [ports[0], ports[2]];
    wait_agreed(&ports_ac, &["a", "c"], Duration::from_secs(40), &log);

    for i in &mut instances {
        if let Some(child) = i.child.as_mut() {
            if child.try_wait().unwrap().is_none() {
                sigterm(child);
            }
        }
    }
}

/// Brokers down at start: the connector starts anyway (as ingest does), answers that it
/// knows no owner yet, and keeps trying to create the members topic.
#[test]
fn an_instance_started_without_a_reachable_broker_runs_and_says_the_group_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("streamtally.log");
    let dead = format!("127.0.0.1:{}", free_port());
    let mut i = Instance {
        id: "lonely",
        port: free_port(),
        dir: dir.path().join("store"),
        child: None,
    };
    start(&dead, "events", "g", &mut i, &log);
    let t = Instant::now();
    let answer = loop {
        if let Some(v) = cluster(i.port) {
            break v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no gateway: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(answer["enabled"], true);
    assert_eq!(answer["complete"], false);
    assert_eq!(answer["instances"], serde_json::json!([]));
    let child = i.child.as_mut().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it exited: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let status = sigterm(child);
    assert!(status.success(), "{status:?}");
}

#[test]
fn scale_out_settings_are_checked_naming_the_key_and_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run::streamtally(
        &[
            "check-config",
            "--set",
            "gateway.advertised_url=ftp://x",
            "--set",
            "scale_out.announce_interval_ms=5",
            "--set",
            "scale_out.enabled=true",
            "--set",
            "kafka.group_id=has space",
            "--set",
            "scale_out.instance_id=a b",
        ],
        dir.path(),
    );
    assert_ne!(code, 0);
    for needle in [
        "gateway.advertised_url \"ftp://x\": must start with http:// or https://",
        "scale_out.announce_interval_ms 5: must be within 100..=60000",
        "scale_out.members_topic (empty: \"<kafka.group_id>.members\" = \"has space.members\")",
        "scale_out.instance_id \"a b\"",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let (code, out, err) = run::streamtally(&["check-config"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[scale_out]"), "{out}");
}

/// What the test produced: per event, its org, user and partition.
struct Produced {
    cfg: streamtally::synth::SynthConfig,
    events: Vec<(usize, String, i32)>,
}

impl Produced {
    fn new(total: u64) -> Produced {
        let mut cfg = streamtally::synth::SynthConfig::new(total);
        cfg.orgs = 3;
        cfg.users = 400;
        cfg.span_days = 2;
        Produced {
            cfg,
            events: Vec::new(),
        }
    }

    /// Produces events `range` (event `i` to partition `i % PARTITIONS`).
    fn produce(&mut self, broker: &str, topic: &str, range: std::ops::Range<u64>) {
        let records = common::broker::synth_records(&self.cfg, range.clone(), PARTITIONS);
        common::broker::produce(broker, topic, &records);
        for i in range {
            let e = streamtally::synth::SynthEvent::generate(&self.cfg, i);
            self.events
                .push((e.org, e.user_id, (i % PARTITIONS as u64) as i32));
        }
    }

    /// Per org: the events of `partitions` and their distinct users.
    fn expected(&self, partitions: &BTreeSet<i32>) -> Vec<(i64, u64)> {
        (0..self.cfg.orgs)
            .map(|org| {
                let mine: Vec<&(usize, String, i32)> = self
                    .events
                    .iter()
                    .filter(|(o, _, p)| *o == org && partitions.contains(p))
                    .collect();
                let users: BTreeSet<&str> = mine.iter().map(|(_, u, _)| u.as_str()).collect();
                (mine.len() as i64, users.len() as u64)
            })
            .collect()
    }

    fn org(&self, n: usize) -> String {
        uuid::Uuid::from_bytes(self.cfg.org_id(n)).to_string()
    }
}

/// Per org: the events (day series summed) and unique users the instance on `port` answers
/// over the produced span.
fn answers(port: u16, produced: &Produced) -> Option<Vec<(i64, u64)>> {
    let to = produced.cfg.end + chrono::Duration::hours(1);
    let from = produced.cfg.end - chrono::Duration::days(3);
    let range = format!(
        "from={}&to={}",
        from.timestamp_millis(),
        to.timestamp_millis()
    );
    let addr = format!("127.0.0.1:{port}");
    let mut out = Vec::new();
    for org in 0..produced.cfg.orgs {
        let o = produced.org(org);
        let series = http::get(
            &addr,
            &format!("/api/v1/orgs/{o}/timeseries?{range}&granularity=day"),
            None,
        )?;
        let uniq = http::get(
            &addr,
            &format!("/api/v1/orgs/{o}/unique-users?{range}"),
            None,
        )?;
        if series.status != 200 || uniq.status != 200 {
            // An org this instance has no event of yet is unknown to it (404).
            if series.status == 404 {
                out.push((0, 0));
                continue;
            }
            return None;
        }
        let series: Value = serde_json::from_str(&series.body).ok()?;
        let uniq: Value = serde_json::from_str(&uniq.body).ok()?;
        let events: i64 = series["points"]
            .as_array()?
            .iter()
            .map(|p| p["events"].as_i64().unwrap_or(0))
            .sum();
        out.push((events, uniq["unique_users"].as_u64()?));
    }
    Some(out)
}

/// Waits until the instances `live` agree on the owners and each answers exactly the
/// events and users of the partitions it owns, which together are every event produced.
fn wait_exact(
    instances: &[Instance],
    live: &[&str],
    produced: &Produced,
    timeout: Duration,
    log: &Path,
) -> Duration {
    let t = Instant::now();
    let ports: Vec<u16> = instances
        .iter()
        .filter(|i| live.contains(&i.id))
        .map(|i| i.port)
        .collect();
    let mut last = String::new();
    while t.elapsed() < timeout {
        let owners = wait_agreed(&ports, live, timeout.saturating_sub(t.elapsed()), log);
        let mut exact = true;
        let mut total = vec![0i64; produced.cfg.orgs];
        last.clear();
        for i in instances.iter().filter(|i| live.contains(&i.id)) {
            let held: BTreeSet<i32> = owners
                .iter()
                .filter(|(_, o)| o.as_str() == i.id)
                .map(|(p, _)| *p as i32)
                .collect();
            let want = produced.expected(&held);
            let have = answers(i.port, produced);
            if let Some(have) = &have {
                for (t, (n, _)) in total.iter_mut().zip(have) {
                    *t += n;
                }
            }
            exact &= have.as_ref() == Some(&want);
            last += &format!(
                "{} holds {held:?}: answers {have:?}, expected {want:?}\n",
                i.id
            );
        }
        if exact {
            let all = produced.expected(&(0..PARTITIONS).collect());
            assert_eq!(
                total,
                all.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                "the owners' events add up to every event once"
            );
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "instances {live:?} did not answer exactly for their partitions within {timeout:?}:\n{last}\nlog:\n{}",
        read_log(log)
    );
}

#[test]
fn each_owner_answers_its_partitions_whole_history_through_a_kill_and_a_restart() {
    let broker = TestBroker::tansu().expect("Tansu is needed (bash .ci/install-tansu.sh)");
    let topic = random_name("history");
    broker.create_topic(&topic, PARTITIONS);
    let group = random_name("history-group");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("streamtally.log");
    let mut produced = Produced::new(30_000);
    // History before any instance runs: read from the start of the log by its owners.
    produced.produce(&broker.bootstrap, &topic, 0..9_000);
    let mut instances = three_instances(dir.path());
    // a starts alone and reads part of every partition before b and c join and take theirs.
    start(&broker.bootstrap, &topic, &group, &mut instances[0], &log);
    wait_exact(&instances, &["a"], &produced, Duration::from_secs(60), &log);
    produced.produce(&broker.bootstrap, &topic, 9_000..15_000);
    for i in &mut instances[1..] {
        start(&broker.bootstrap, &topic, &group, i, &log);
    }
    wait_exact(
        &instances,
        &["a", "b", "c"],
        &produced,
        Duration::from_secs(60),
        &log,
    );

    // SIGKILL c mid-stream: its partitions go to a and b, which restore what c stored.
    produced.produce(&broker.bootstrap, &topic, 15_000..20_000);
    sigkill(instances[2].child.as_mut().unwrap());
    produced.produce(&broker.bootstrap, &topic, 20_000..25_000);
    // Within the session timeout (6 s) plus the restore: at most 30 s (issue 22).
    let took = wait_exact(
        &instances[..2],
        &["a", "b"],
        &produced,
        Duration::from_secs(30),
        &log,
    );
    eprintln!("after the kill, the survivors answered exactly in {took:?}");

    // Restarted, c takes partitions back and restores them from its own stored positions.
    start(&broker.bootstrap, &topic, &group, &mut instances[2], &log);
    produced.produce(&broker.bootstrap, &topic, 25_000..30_000);
    wait_exact(
        &instances,
        &["a", "b", "c"],
        &produced,
        Duration::from_secs(60),
        &log,
    );

    // Done restoring: ready, and no partition announced as restoring.
    for i in &instances {
        let r = http::get(&format!("127.0.0.1:{}", i.port), "/readyz", None).unwrap();
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let restoring = body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "restoring")
            .unwrap()
            .clone();
        assert_eq!(restoring["ok"], true, "{}: {body}", i.id);
    }
    let view = cluster(instances[0].port).unwrap();
    assert!(
        view["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("restore_lag").is_none()),
        "{view}"
    );
    for i in &mut instances {
        if let Some(child) = i.child.as_mut() {
            if child.try_wait().unwrap().is_none() {
                sigterm(child);
            }
        }
    }
}
