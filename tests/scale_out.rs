//! Several connectors in one consumer group (`[scale_out]`, docs/SCALE-OUT.md): membership.
//! Three `streamtally run` processes against Tansu (out of process; the mock cluster cannot
//! create the members topic through the admin API) agree on the owner of every partition;
//! a SIGKILLed one is noticed and its partitions go to the survivors; restarted, it takes
//! partitions again; one stopped cleanly says it is leaving.

mod common;

use common::broker::{random_name, TestBroker};
use common::http;
use common::run::{self, sigkill, sigterm};
use serde_json::Value;
use std::collections::BTreeMap;
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
        std::fs::read_to_string(log).unwrap_or_default()
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
    let mut instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|id| Instance {
            id,
            port: free_port(),
            dir: dir.path().join(format!("store-{id}")),
            child: None,
        })
        .collect();
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
