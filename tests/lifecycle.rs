//! A store that lives for months (issue 19): retention of raw events apart from the
//! rollups, deleting a person's events, online backup.
//!
//! Broker: Tansu, out of process (`.ci/install-tansu.sh`), started by each test; the
//! connector runs in this process with its store opened from `[store]` as `streamtally run`
//! opens it, and the gateway on a real socket.

mod common;

use common::broker::{produce, random_name, synth_records, TestBroker};
use common::Connector;
use std::collections::BTreeMap;
use std::time::Duration;
use streamtally::stats::bucket::ALL_TYPES;
use streamtally::stats::rebuild::{self, Scope};
use streamtally::store::blocks::retention::cutoff;
use streamtally::store::{Query, Store, Value};
use streamtally::synth::{SynthConfig, SynthEvent};

const DAY_US: i64 = 86_400_000_000;

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Stored DailyStats event counts of all event types, per (org, date).
fn daily_counts(store: &Store) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for row in store.scan_all("DailyStats").unwrap() {
        if common::str_of(&row, "event_type") != ALL_TYPES {
            continue;
        }
        let org = match row.get("org_id") {
            Some(Value::Uuid(u)) => uuid::Uuid::from_bytes(*u).to_string(),
            other => panic!("org_id {other:?}"),
        };
        let n = match row.get("event_count") {
            Some(Value::Int64(n)) => *n,
            other => panic!("event_count {other:?}"),
        };
        out.insert((org, common::str_of(&row, "date")), n);
    }
    out
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Events over 60 days, raw retention 7 days: the blocks of older days go (their files
/// too), the rollups of every day stay as ingested, an export of an older range answers 410
/// naming the oldest kept time, one of the kept range every kept event, and `stats verify`
/// (rollups against raw events) is clean over the days still kept.
#[test]
fn retention_drops_old_event_blocks_keeps_rollups_and_refuses_old_raw_reads() {
    let Some(broker) = TestBroker::tansu() else {
        return;
    };
    let topic = random_name("lifecycle-retention");
    broker.create_topic(&topic, 3);
    let total = 6_000;
    let synth = SynthConfig {
        orgs: 3,
        users: 400,
        span_days: 60,
        ..SynthConfig::new(total)
    };
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&synth, 0..total, 3),
    );
    let events: Vec<SynthEvent> = (0..total)
        .map(|i| SynthEvent::generate(&synth, i))
        .collect();

    let started_us = now_us();
    let connector = Connector::start_as_configured(
        &broker.bootstrap,
        &[&topic],
        &random_name("lifecycle"),
        |cfg| {
            cfg.store.retention.events_days = 7;
            cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
            cfg.auth.enabled = false;
            cfg.batching.max_batch_delay_ms = 20;
        },
    );
    let services = connector.services();
    let addr = services.gateway_addr.to_string();
    let store = connector.store.clone();
    connector.wait_for("every event stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) == total as i64
    });
    wait("the rollups to catch up", Duration::from_secs(60), || {
        store.cursor(streamtally::stats::ROLLUP_CURSOR).unwrap() == Some(store.feed_head())
    });

    // The cutoff of the day the test ran in (it may have crossed midnight UTC).
    let cutoffs = [cutoff(started_us, 7), cutoff(now_us(), 7)];
    let kept = |before: i64| {
        events
            .iter()
            .filter(|e| e.timestamp.timestamp_micros() >= before)
            .count() as u64
    };
    wait(
        "retention to drop the old blocks",
        Duration::from_secs(60),
        || {
            store
                .retained_from("Event")
                .is_some_and(|t| cutoffs.contains(&t))
                && store.count(&Query::new("Event")).unwrap()
                    == kept(store.retained_from("Event").unwrap())
        },
    );
    let before = store.retained_from("Event").unwrap();
    let expected_kept = kept(before);
    assert!(
        expected_kept > 0 && expected_kept < total / 4,
        "7 of 60 days kept: {expected_kept}"
    );
    for day in store.block_days("Event").unwrap() {
        assert!(
            day.min_time.is_some_and(|t| t >= before),
            "a block of day {:?} is older than the cutoff {}",
            day.day,
            rfc3339(before)
        );
    }

    // Rollups keep every day, dropped or not, exactly as ingested.
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in &events {
        let org = uuid::Uuid::from_bytes(e.org_id).to_string();
        let date = e.timestamp.date_naive().format("%Y-%m-%d").to_string();
        *want.entry((org, date)).or_default() += 1;
    }
    assert_eq!(daily_counts(&store), want);

    // Stats verify over what retention kept: clean (the dropped days are not compared).
    let bar = indicatif::ProgressBar::hidden();
    let fresh = rebuild::recompute(&store, &Scope::default(), 10_000, &bar).unwrap();
    let stored = rebuild::stored(&store, &Scope::default()).unwrap();
    assert!(!fresh.is_empty());
    assert_eq!(rebuild::diff(&stored, &fresh), Vec::<String>::new());

    // Raw reads over the dropped range: 410 with the oldest kept time; over the kept
    // range: every kept event of the org.
    let org = uuid::Uuid::from_bytes(synth.org_id(0)).to_string();
    let old_from = rfc3339(before - 10 * DAY_US);
    let to = rfc3339(now_us() + 60_000_000);
    let path = format!("/api/v1/orgs/{org}/export?from={old_from}&to={to}");
    let (status, body) = common::http::status_body(&addr, &path, None).expect("gateway answers");
    assert_eq!(status, 410, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "beyond_retention", "{body}");
    assert_eq!(json["error"]["retained_from"], rfc3339(before), "{body}");
    assert_eq!(json["error"]["parameter"], "from", "{body}");
    let path = format!("/api/v1/orgs/{org}/export?from={}&to={to}", rfc3339(before));
    let (status, body) = common::http::status_body(&addr, &path, None).expect("gateway answers");
    assert_eq!(status, 200, "{body}");
    let org_kept = events
        .iter()
        .filter(|e| e.org == 0 && e.timestamp.timestamp_micros() >= before)
        .count();
    assert_eq!(body.lines().count(), org_kept);

    // Disk given back: once the retired files' grace is over, the block files on disk are
    // exactly the catalog's.
    let blocks_dir = connector.dir.path().join("blocks");
    let on_disk = || -> (u64, u64) {
        let mut n = (0, 0);
        for f in std::fs::read_dir(&blocks_dir).unwrap() {
            let f = f.unwrap();
            // A file swept between the listing and this look is gone: not counted.
            let Ok(meta) = f.metadata() else { continue };
            if f.file_name().to_string_lossy().ends_with(".blk") {
                n.0 += 1;
                n.1 += meta.len();
            }
        }
        n
    };
    wait(
        "the dropped blocks' files to go",
        Duration::from_secs(90),
        || {
            let (blocks, _, bytes) = store.block_totals("Event").unwrap();
            on_disk() == (blocks, bytes)
        },
    );
    let (_, rows, bytes) = store.block_totals("Event").unwrap();
    assert_eq!(rows, expected_kept);
    assert!(
        bytes < expected_kept * 1_000,
        "{bytes} bytes of blocks for {expected_kept} events"
    );

    // The cutoff survives a restart.
    drop(store);
    connector.shutdown.cancel();
    services.join().unwrap();
    let mut connector = connector;
    connector.restart();
    assert_eq!(connector.store.retained_from("Event"), Some(before));
    // `store info` says so (read from the catalog, on the stopped store).
    connector.stop().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let held = std::mem::replace(&mut connector.store, common::open(scratch.path()));
    held.close().unwrap();
    drop(held);
    let data = connector.dir.path().to_str().unwrap().to_string();
    let (code, out, err) =
        common::run::streamtally(&["--data", &data, "store", "info"], connector.dir.path());
    assert_eq!(code, 0, "{out}{err}");
    let line = format!(
        "Event retention (store.retention.events_days): rows before {}",
        {
            chrono::DateTime::from_timestamp_micros(before)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        }
    );
    assert!(out.contains(&line), "{out}");
}

const ADMIN: &str = "lifecycle-admin-token";
const ORG_TOKEN: &str = "lifecycle-org-token";

/// Auth with an admin token and an org token for org 0 of `synth`.
fn with_tokens(cfg: &mut streamtally::config::Config, synth: &SynthConfig) {
    use streamtally::gateway::auth::token_sha256_hex;
    cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
    cfg.auth.admin_token_sha256 = Some(token_sha256_hex(ADMIN));
    cfg.auth.tokens = vec![streamtally::config::AuthToken {
        org_id: uuid::Uuid::from_bytes(synth.org_id(0)),
        token_sha256: token_sha256_hex(ORG_TOKEN),
        name: None,
    }];
    cfg.batching.max_batch_delay_ms = 20;
}

/// The stored events of `org` as (id, user), through the export of the last `days` days.
fn exported(addr: &str, org: &str, days: i64) -> Vec<(String, String)> {
    let path = format!(
        "/api/v1/orgs/{org}/export?from={}&to={}",
        rfc3339(now_us() - days * DAY_US),
        rfc3339(now_us() + 60_000_000)
    );
    let (status, body) = common::http::status_body(addr, &path, Some(ADMIN)).expect("export");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["user_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Rollups equal to a recomputation from the raw events (what `stats verify` checks).
fn assert_rollups_match_events(store: &Store) {
    let bar = indicatif::ProgressBar::hidden();
    let fresh = rebuild::recompute(store, &Scope::default(), 10_000, &bar).unwrap();
    let stored = rebuild::stored(store, &Scope::default()).unwrap();
    assert_eq!(rebuild::diff(&stored, &fresh), Vec::<String>::new());
}

/// Deleting a person's events while ingest runs: the API (admin token only) and the CLI
/// through the running connector delete exactly that user's events of that org, the export
/// and recent events no longer show them, other users' events stay, and once the stats
/// workers caught up every rollup equals a recomputation from the remaining events.
#[test]
fn deleting_a_user_while_ingest_runs_removes_their_events_and_corrects_every_rollup() {
    let Some(broker) = TestBroker::tansu() else {
        return;
    };
    let topic = random_name("lifecycle-delete");
    broker.create_topic(&topic, 3);
    let total = 4_000;
    let synth = SynthConfig {
        orgs: 2,
        users: 40,
        span_days: 3,
        ..SynthConfig::new(total * 2)
    };
    let events: Vec<SynthEvent> = (0..total * 2)
        .map(|i| SynthEvent::generate(&synth, i))
        .collect();
    let org = uuid::Uuid::from_bytes(synth.org_id(0)).to_string();
    let in_org0 = |e: &SynthEvent| e.org == 0;
    // The person: the first org-0 user; a second one is deleted through the CLI.
    let user = events.iter().find(|e| in_org0(e)).unwrap().user_id.clone();
    let other = events
        .iter()
        .find(|e| in_org0(e) && e.user_id != user)
        .unwrap()
        .user_id
        .clone();
    produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&synth, 0..total, 3),
    );

    let mut cfg_seen = None;
    let connector = Connector::start_as_configured(
        &broker.bootstrap,
        &[&topic],
        &random_name("lifecycle"),
        |cfg| {
            with_tokens(cfg, &synth);
            cfg_seen = Some(cfg.clone());
        },
    );
    let services = connector.services();
    let addr = services.gateway_addr.to_string();
    let store = connector.store.clone();
    connector.wait_for("the first events stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) == total as i64
    });
    let theirs = events[..total as usize]
        .iter()
        .filter(|e| in_org0(e) && e.user_id == user)
        .count() as u64;
    assert!(theirs > 10, "{theirs}");

    // More events arrive meanwhile (none of the person's: the count below is exact).
    let later: Vec<u64> = (total..total * 2)
        .filter(|&i| events[i as usize].user_id != user)
        .collect();
    let producer = {
        let (bootstrap, topic, synth) = (broker.bootstrap.clone(), topic.clone(), synth.clone());
        let later = later.clone();
        std::thread::spawn(move || {
            for chunk in later.chunks(200) {
                let records: Vec<_> = chunk
                    .iter()
                    .flat_map(|&i| synth_records(&synth, i..i + 1, 3))
                    .collect();
                produce(&bootstrap, &topic, &records);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let path = format!("/api/v1/orgs/{org}/users/{user}/events");
    // An org token may not; the admin token may, first as a dry run.
    let r = common::http::request(&addr, "DELETE", &path, Some(ORG_TOKEN), None).unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    let dry = format!("{path}?dry_run=true");
    let r = common::http::request(&addr, "DELETE", &dry, Some(ADMIN), None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json["events"], theirs, "{}", r.body);
    assert_eq!(json["dry_run"], true);
    let r = common::http::request(&addr, "DELETE", &path, Some(ADMIN), None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json["events"], theirs, "{}", r.body);
    assert!(json["blocks"].as_u64().unwrap() >= 1, "{}", r.body);
    // Again: nothing left to delete.
    let r = common::http::request(&addr, "DELETE", &path, Some(ADMIN), None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"events\":0"), "{}", r.body);

    // The CLI, through the running connector (the store is locked by it).
    let cfg = cfg_seen.unwrap();
    let data = cfg.store.path.to_str().unwrap().to_string();
    let listen = format!("gateway.listen={addr}");
    let (code, out, err) = common::run::streamtally(
        &[
            "--data", &data, "--set", &listen, "events", "delete", "--org", &org, "--user", &other,
            "--token", ADMIN,
        ],
        connector.dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("through the running connector"), "{out}");
    let (code, out, err) = common::run::streamtally(
        &[
            "--data", &data, "--set", &listen, "events", "delete", "--org", &org, "--user", "x",
        ],
        connector.dir.path(),
    );
    assert_eq!(code, 2, "without a token: {out}{err}");
    assert!(err.contains("STREAMTALLY_ADMIN_TOKEN"), "{err}");

    producer.join().unwrap();
    let expected_total = (total as usize + later.len()) as i64;
    connector.wait_for("every later event stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) == expected_total
    });
    wait("the rollups to catch up", Duration::from_secs(60), || {
        store.cursor(streamtally::stats::ROLLUP_CURSOR).unwrap() == Some(store.feed_head())
    });

    // The person's events are gone and everyone else's stay (the CLI's user's later events
    // may have arrived after it ran: stored as usual, not counted here).
    let left = exported(&addr, &org, 4);
    assert!(
        left.iter().all(|(_, u)| *u != user),
        "the person's events are gone"
    );
    let others_expected = events[..total as usize]
        .iter()
        .chain(later.iter().map(|&i| &events[i as usize]))
        .filter(|e| in_org0(e) && e.user_id != user && e.user_id != other)
        .count();
    assert_eq!(
        left.iter().filter(|(_, u)| *u != other).count(),
        others_expected
    );
    let (status, body) = common::http::status_body(
        &addr,
        &format!("/api/v1/orgs/{org}/events/recent?limit=1000"),
        Some(ADMIN),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(!body.contains(&format!("\"user_id\":\"{user}\"")), "{body}");
    assert_rollups_match_events(&store);
    assert_eq!(store.verify().unwrap(), Vec::<String>::new());
}

/// Events of `user` in the store (all orgs of these tests' synthetic streams).
fn count_user(store: &Store, org: [u8; 16], user: &str) -> usize {
    store
        .find_block_rows("Event", org, "user_id", &Value::String(user.to_string()))
        .unwrap()
        .len()
}

/// `streamtally events delete` on a stopped store, SIGKILLed at random moments (after one
/// uninterrupted run that times it): every round leaves the person's events all there or
/// all gone, the store verifies clean, and once the rollups caught up they equal a
/// recomputation.
#[test]
fn a_sigkill_during_a_delete_leaves_the_old_or_the_new_state() {
    use rand::{Rng, SeedableRng};
    use streamtally::stats::rollup::{RollupOptions, RollupWorker};
    let dir = tempfile::tempdir().unwrap();
    let synth = SynthConfig {
        orgs: 1,
        users: 12,
        span_days: 2,
        ..SynthConfig::new(6_000)
    };
    let org = synth.org_id(0);
    let events: Vec<SynthEvent> = (0..6_000)
        .map(|i| SynthEvent::generate(&synth, i))
        .collect();
    let rt = common::rt();
    {
        let store = common::open(dir.path());
        let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
        for chunk in events.chunks(500) {
            let mut b = streamtally::store::WriteBatch::new();
            for e in chunk {
                b.insert("Event", e.to_row());
            }
            store.write_blocking(b).unwrap();
        }
        rt.block_on(worker.catch_up()).unwrap();
        store.close().unwrap();
    }
    let mut users: Vec<String> = events.iter().map(|e| e.user_id.clone()).collect();
    users.sort();
    users.dedup();
    assert!(users.len() >= 11, "{users:?}");
    let owned = |u: &str| events.iter().filter(|e| e.user_id == u).count();
    let data = dir.path().to_str().unwrap().to_string();
    let org_text = uuid::Uuid::from_bytes(org).to_string();
    let delete = |user: &str| {
        common::run::command(
            dir.path(),
            [
                "--data", &data, "events", "delete", "--org", &org_text, "--user", user,
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
    };
    // Round 0 runs to its end: how long a delete takes, from the start of the process.
    let started = std::time::Instant::now();
    let status = delete(&users[0]).wait().unwrap();
    assert!(status.success());
    let whole = started.elapsed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let (mut old, mut new) = (0, 1);
    for user in &users[1..11] {
        let mut child = delete(user);
        std::thread::sleep(whole.mul_f64(rng.gen_range(0.05..1.0)));
        common::run::sigkill(&mut child);
        let store = common::open(dir.path());
        let left = count_user(&store, org, user);
        assert!(
            left == 0 || left == owned(user),
            "user {user}: {left} of {} events left after a SIGKILL",
            owned(user)
        );
        if left == 0 {
            new += 1;
        } else {
            old += 1;
        }
        assert_eq!(store.verify().unwrap(), Vec::<String>::new());
        let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
        rt.block_on(worker.catch_up()).unwrap();
        assert_rollups_match_events(&store);
        store.close().unwrap();
    }
    eprintln!("after a SIGKILL: {old} round(s) in the old state, {new} in the new one");
    let store = common::open(dir.path());
    assert_eq!(count_user(&store, org, &users[0]), 0);
    assert_eq!(count_user(&store, org, &users[11]), owned(&users[11]));
}

/// An online backup while events arrive, through the admin API and the CLI: each copy
/// opens, verifies clean and holds rows that match its stored positions; a connector
/// started on one (the original stopped) resumes from those positions, and in the end every
/// produced event is stored exactly once.
#[test]
fn a_backup_during_ingest_restores_with_every_event_stored_exactly_once() {
    let Some(broker) = TestBroker::tansu() else {
        return;
    };
    let topic = random_name("lifecycle-backup");
    broker.create_topic(&topic, 3);
    let total = 8_000u64;
    let synth = SynthConfig {
        orgs: 2,
        users: 200,
        span_days: 2,
        ..SynthConfig::new(total)
    };
    let group = random_name("lifecycle");
    let mut cfg_seen = None;
    let connector = Connector::start_as_configured(&broker.bootstrap, &[&topic], &group, |cfg| {
        with_tokens(cfg, &synth);
        cfg_seen = Some(cfg.clone());
    });
    let services = connector.services();
    let addr = services.gateway_addr.to_string();
    let producer = {
        let (bootstrap, topic, synth) = (broker.bootstrap.clone(), topic.clone(), synth.clone());
        std::thread::spawn(move || {
            for from in (0..total).step_by(250) {
                produce(
                    &bootstrap,
                    &topic,
                    &synth_records(&synth, from..from + 250, 3),
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    connector.wait_for("some events stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) >= 1_500
    });
    let api_copy = tempfile::tempdir().unwrap();
    let body = serde_json::json!({ "dir": api_copy.path() }).to_string();
    let backup_as = |token: &str| {
        common::http::request(
            &addr,
            "POST",
            "/api/v1/admin/backup",
            Some(token),
            Some(&body),
        )
        .unwrap()
    };
    let r = backup_as(ORG_TOKEN);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = backup_as(ADMIN);
    assert_eq!(r.status, 200, "{}", r.body);
    // The same directory again: it is not empty now.
    let r = backup_as(ADMIN);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("not empty"), "{}", r.body);

    connector.wait_for("more events stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 3) >= 4_000
    });
    let cli_copy = tempfile::tempdir().unwrap();
    let cfg = cfg_seen.unwrap();
    let data = cfg.store.path.to_str().unwrap().to_string();
    let listen = format!("gateway.listen={addr}");
    let (code, out, err) = common::run::streamtally(
        &[
            "--data",
            &data,
            "--set",
            &listen,
            "store",
            "backup",
            cli_copy.path().to_str().unwrap(),
            "--token",
            ADMIN,
        ],
        connector.dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("backup of the running connector's store"),
        "{out}"
    );

    // Each copy: verifies clean, and its rows are exactly the events below its positions.
    for copy in [api_copy.path(), cli_copy.path()] {
        let store = common::open(copy);
        assert_eq!(store.verify().unwrap(), Vec::<String>::new());
        let positions: i64 = (0..3)
            .map(|p| store.offset(&topic, p).unwrap().unwrap_or(0))
            .sum();
        assert!(positions > 0);
        assert_eq!(store.count(&Query::new("Event")).unwrap(), positions as u64);
        store.close().unwrap();
    }

    // Restore the API's copy: the original stops, a connector starts on the copy.
    producer.join().unwrap();
    connector.shutdown.cancel();
    services.join().unwrap();
    let mut connector = connector;
    connector.stop().unwrap();
    drop(connector);
    let restored =
        Connector::start_as_configured_in(api_copy, &broker.bootstrap, &[&topic], &group, |cfg| {
            with_tokens(cfg, &synth)
        });
    restored.wait_for("every event stored", Duration::from_secs(90), |c| {
        c.stored(&topic, 3) == total as i64
    });
    let store = restored.store.clone();
    assert_eq!(store.count(&Query::new("Event")).unwrap(), total);
    let mut ids = std::collections::HashSet::new();
    store
        .for_each_row("Event", |row| {
            assert!(ids.insert(row.id().unwrap()), "an event stored twice");
        })
        .unwrap();
    assert_eq!(ids.len() as u64, total);
    assert_eq!(store.verify().unwrap(), Vec::<String>::new());
}
