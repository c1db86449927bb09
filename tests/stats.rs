//! Stats workers against the real store: rollups equal a brute-force count and a
//! from-scratch recomputation after late, duplicate, updated and deleted events; sketch
//! buckets survive deletes while writes continue; the query API; real-time counters against
//! a brute-force count at every second; restart from the cursor; the `stats` CLI.

mod common;

use chrono::{DateTime, Timelike, Utc};
use common::rt;
use common::run::streamtally;
use indicatif::ProgressBar;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use streamtally::stats::bucket::{Source, ALL_TYPES};
use streamtally::stats::parts;
use streamtally::stats::query::{Granularity, Sources, StatsReader};
use streamtally::stats::realtime::{
    ManualClock, RealtimeCounters, RealtimeOptions, RealtimeWorker,
};
use streamtally::stats::rebuild::{self, Scope};
use streamtally::stats::rollup::{RollupOptions, RollupWorker};
use streamtally::stats::sketch::hash_value;
use streamtally::store::{Row, Store, Value, WriteBatch};

fn org_id(n: u8) -> [u8; 16] {
    *uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &[b'o', n]).as_bytes()
}

/// A raw event as the test knows it (its own brute-force model of the store).
#[derive(Clone, Debug)]
struct Ev {
    id: [u8; 16],
    org: [u8; 16],
    ts: DateTime<Utc>,
    event_type: String,
    event_name: String,
    user: Option<String>,
    session: Option<String>,
}

impl Ev {
    fn row(&self) -> Row {
        let mut r = Row::new()
            .with("id", Value::Uuid(self.id))
            .with("org_id", Value::Uuid(self.org))
            .with("event_type", Value::String(self.event_type.clone()))
            .with("event_name", Value::String(self.event_name.clone()))
            .with("timestamp", Value::Timestamp(self.ts.timestamp_micros()))
            .with(
                "date",
                Value::String(self.ts.format("%Y-%m-%d").to_string()),
            )
            .with("hour", Value::Int32(self.ts.hour() as i32));
        if let Some(u) = &self.user {
            r.set("user_id", Value::String(u.clone()));
        }
        if let Some(s) = &self.session {
            r.set("session_id", Value::String(s.clone()));
        }
        r
    }
}

fn random_event(rng: &mut StdRng, orgs: u8, users: u32, base: DateTime<Utc>, span_s: i64) -> Ev {
    let user = rng.gen_range(0..users);
    Ev {
        id: *uuid::Uuid::from_u128(rng.gen()).as_bytes(),
        org: org_id(rng.gen_range(0..orgs)),
        ts: base + chrono::Duration::seconds(rng.gen_range(0..span_s)),
        event_type: ["track", "page", "screen"][rng.gen_range(0..3)].to_string(),
        event_name: format!("name_{}", rng.gen_range(0..8)),
        user: (rng.gen_range(0..10) > 0).then(|| format!("user_{user}")),
        session: (rng.gen_range(0..10) > 1).then(|| format!("s_{user}_{}", rng.gen_range(0..3))),
    }
}

/// (entity, org, date, hour or -1, type-or-name)
type Key = (String, [u8; 16], String, i32, String);
/// Brute force: key -> (events, users, sessions).
type Expected = BTreeMap<Key, (i64, HashSet<String>, HashSet<String>)>;

fn brute_force<'a>(events: impl IntoIterator<Item = &'a Ev>) -> Expected {
    let mut out: Expected = BTreeMap::new();
    for e in events {
        let date = e.ts.format("%Y-%m-%d").to_string();
        let hour = e.ts.hour() as i32;
        let keys = [
            ("HourlyStats", hour, e.event_type.clone()),
            ("HourlyStats", hour, ALL_TYPES.to_string()),
            ("DailyStats", -1, e.event_type.clone()),
            ("DailyStats", -1, ALL_TYPES.to_string()),
            ("EventNameDaily", -1, e.event_name.clone()),
        ];
        for (entity, h, k) in keys {
            let slot = out
                .entry((entity.to_string(), e.org, date.clone(), h, k))
                .or_default();
            slot.0 += 1;
            if entity != "EventNameDaily" {
                slot.1.extend(e.user.clone());
                slot.2.extend(e.session.clone());
            }
        }
    }
    out
}

fn int(r: &Row, f: &str) -> i64 {
    match r.get(f) {
        Some(Value::Int64(n)) => *n,
        Some(Value::Int32(n)) => *n as i64,
        other => panic!("{f} is {other:?}"),
    }
}

fn s(r: &Row, f: &str) -> String {
    common::str_of(r, f)
}

/// Stored rollup rows in the brute-force shape (events, unique users, unique sessions).
fn stored_counts(store: &Store) -> BTreeMap<Key, (i64, i64, i64)> {
    let mut out = BTreeMap::new();
    for entity in ["HourlyStats", "DailyStats", "EventNameDaily"] {
        for r in store.scan_all(entity).unwrap() {
            let org = match r.get("org_id") {
                Some(Value::Uuid(u)) => *u,
                other => panic!("org_id {other:?}"),
            };
            let (hour, key, uniq) = match entity {
                "HourlyStats" => (int(&r, "hour") as i32, s(&r, "event_type"), true),
                "DailyStats" => (-1, s(&r, "event_type"), true),
                _ => (-1, s(&r, "event_name"), false),
            };
            let (u, se) = if uniq {
                (int(&r, "unique_users"), int(&r, "unique_sessions"))
            } else {
                (0, 0)
            };
            out.insert(
                (entity.to_string(), org, s(&r, "date"), hour, key),
                (int(&r, "event_count"), u, se),
            );
        }
    }
    out
}

fn assert_matches_brute_force(store: &Store, model: &HashMap<[u8; 16], Ev>) {
    let want: BTreeMap<_, _> = brute_force(model.values())
        .into_iter()
        .map(|(k, (n, u, s))| (k, (n, u.len() as i64, s.len() as i64)))
        .collect();
    let have = stored_counts(store);
    assert_eq!(have.len(), want.len(), "number of rollup rows");
    for (k, v) in &want {
        assert_eq!(have.get(k), Some(v), "rollup {k:?}");
    }
}

fn assert_equals_recomputation(store: &Store, threshold: u64) {
    let bar = ProgressBar::hidden();
    let expected = rebuild::recompute(store, &Scope::default(), threshold, &bar).unwrap();
    let stored = rebuild::stored(store, &Scope::default()).unwrap();
    let diffs = rebuild::diff(&stored, &expected);
    assert!(
        diffs.is_empty(),
        "{} differences, first: {:?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
}

fn write(store: &Store, f: impl FnOnce(&mut WriteBatch)) {
    let mut b = WriteBatch::new();
    f(&mut b);
    store.write_blocking(b).unwrap();
}

/// One write: inserts `new`, moves the first `n` of `ids` to a random user of `users` and
/// deletes the next `n`; the model follows.
fn churn(
    store: &Store,
    model: &mut HashMap<[u8; 16], Ev>,
    rng: &mut StdRng,
    new: Vec<Ev>,
    ids: &[[u8; 16]],
    n: usize,
    users: std::ops::Range<u32>,
) {
    write(store, |b| {
        for e in &new {
            b.insert("Event", e.row());
        }
        for id in ids.iter().take(n) {
            let mut e = model[id].clone();
            e.user = Some(format!("user_{}", rng.gen_range(users.clone())));
            b.update("Event", *id, e.row());
            model.insert(*id, e);
        }
        for id in ids.iter().skip(n).take(n) {
            b.delete("Event", *id);
            model.remove(id);
        }
    });
    model.extend(new.into_iter().map(|e| (e.id, e)));
}

#[test]
fn rollups_match_brute_force_after_late_duplicate_updated_and_deleted_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    let rt = rt();
    let mut rng = StdRng::seed_from_u64(7);
    let base: DateTime<Utc> = "2024-02-28T20:00:00Z".parse().unwrap(); // spans the leap day
    let mut model: HashMap<[u8; 16], Ev> = HashMap::new();
    let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();

    // In-order events over two and a half days, in batches like ingest writes them.
    for _ in 0..6 {
        let evs: Vec<Ev> = (0..200)
            .map(|_| random_event(&mut rng, 3, 60, base, 2 * 86_400))
            .collect();
        write(&store, |b| {
            for e in &evs {
                b.insert("Event", e.row());
            }
        });
        model.extend(evs.into_iter().map(|e| (e.id, e)));
    }
    rt.block_on(worker.catch_up()).unwrap();
    assert_matches_brute_force(&store, &model);

    // Late events (days before), and duplicate deliveries of ids already stored.
    let late: Vec<Ev> = (0..150)
        .map(|_| random_event(&mut rng, 3, 60, base - chrono::Duration::days(3), 86_400))
        .collect();
    let dups: Vec<Ev> = model.values().take(100).cloned().collect();
    write(&store, |b| {
        for e in late.iter().chain(dups.iter()) {
            b.insert("Event", e.row());
        }
    });
    model.extend(late.into_iter().map(|e| (e.id, e)));
    rt.block_on(worker.catch_up()).unwrap();
    assert_matches_brute_force(&store, &model);

    // Updates (type, user, and time moved to another day) and deletes.
    let ids: Vec<[u8; 16]> = {
        let mut v: Vec<_> = model.keys().copied().collect();
        v.sort();
        v
    };
    write(&store, |b| {
        for (i, id) in ids.iter().take(120).enumerate() {
            let mut e = model[id].clone();
            match i % 3 {
                0 => e.event_type = "identify".into(),
                1 => e.user = Some(format!("user_moved_{i}")),
                _ => e.ts += chrono::Duration::hours(30),
            }
            b.update("Event", *id, e.row());
            model.insert(*id, e);
        }
        for id in ids.iter().skip(120).take(80) {
            b.delete("Event", *id);
            model.remove(id);
        }
    });
    rt.block_on(worker.catch_up()).unwrap();
    assert_matches_brute_force(&store, &model);
    assert_equals_recomputation(&store, 10_000);

    // A new worker resumes from the durable cursor and applies nothing twice.
    drop(worker);
    let more: Vec<Ev> = (0..100)
        .map(|_| random_event(&mut rng, 3, 60, base, 86_400))
        .collect();
    write(&store, |b| {
        for e in &more {
            b.insert("Event", e.row());
        }
    });
    model.extend(more.into_iter().map(|e| (e.id, e)));
    let mut again = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
    rt.block_on(again.catch_up()).unwrap();
    assert_matches_brute_force(&store, &model);
    assert_eq!(store.verify().unwrap(), Vec::<String>::new());
}

#[test]
fn the_rollup_cache_stays_within_its_byte_budget_and_reloads_what_it_dropped() {
    // Sixty days of events fill ~1,800 buckets; a 96 KB budget holds a few dozen. Late
    // events, updates and deletes then land in buckets the worker dropped: it reloads them
    // from the store, so the rollups still equal a brute-force count.
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    let rt = rt();
    let mut rng = StdRng::seed_from_u64(23);
    let base: DateTime<Utc> = "2026-09-01T00:00:00Z".parse().unwrap();
    let mut model: HashMap<[u8; 16], Ev> = HashMap::new();
    for _ in 0..10 {
        let evs: Vec<Ev> = (0..300)
            .map(|_| random_event(&mut rng, 2, 200, base, 60 * 86_400))
            .collect();
        write(&store, |b| {
            for e in &evs {
                b.insert("Event", e.row());
            }
        });
        model.extend(evs.into_iter().map(|e| (e.id, e)));
    }
    let budget = 96 << 10;
    let opts = RollupOptions {
        cache_bytes: budget,
        max_batch_changes: 500,
        ..RollupOptions::default()
    };
    let mut worker = RollupWorker::new(store.clone(), opts).unwrap();
    rt.block_on(worker.catch_up()).unwrap();
    assert!(
        worker.cached_bytes() <= budget,
        "{} bytes cached, budget {budget}",
        worker.cached_bytes()
    );
    assert_matches_brute_force(&store, &model);

    let ids: Vec<[u8; 16]> = {
        let mut v: Vec<_> = model.keys().copied().collect();
        v.sort();
        v
    };
    let late: Vec<Ev> = (0..400)
        .map(|_| random_event(&mut rng, 2, 200, base, 60 * 86_400))
        .collect();
    churn(&store, &mut model, &mut rng, late, &ids, 100, 200..260);
    rt.block_on(worker.catch_up()).unwrap();
    assert!(worker.cached_bytes() <= budget);
    assert_matches_brute_force(&store, &model);
    assert_equals_recomputation(&store, 10_000);

    // Without the budget the worker would hold every bucket: the bound above is not idle.
    let mut all = 0;
    for entity in streamtally::stats::bucket::ROLLUP_ENTITIES {
        for (key, row) in
            streamtally::stats::rollup::stored_rows(&store, entity, None, None).unwrap()
        {
            let (state, _) = streamtally::stats::parts::read_state(&store, &key, &row).unwrap();
            all += state.memory_bytes();
        }
    }
    assert!(all > 4 * budget, "all buckets take {all} bytes");
}

#[test]
fn sketch_buckets_survive_deletes_while_writes_continue() {
    // A threshold of 40 distinct values puts busy buckets in sketch mode; deleting events
    // from them makes the worker recompute the day from raw events, as of the feed position
    // it is applying, while a writer keeps inserting, updating and deleting.
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    let opts = RollupOptions {
        exact_threshold: 40,
        max_batch_changes: 300,
        ..RollupOptions::default()
    };
    let metrics = Arc::new(streamtally::metrics::Metrics::new());
    let worker = RollupWorker::new(store.clone(), opts.clone())
        .unwrap()
        .with_metrics(metrics.clone());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    let handle = std::thread::spawn(move || rt().block_on(worker.run(token)));

    let mut rng = StdRng::seed_from_u64(11);
    let base: DateTime<Utc> = "2026-11-26T00:00:00Z".parse().unwrap();
    let mut model: HashMap<[u8; 16], Ev> = HashMap::new();
    let mut order: Vec<[u8; 16]> = Vec::new();
    for round in 0..40 {
        let evs: Vec<Ev> = (0..100)
            .map(|_| random_event(&mut rng, 2, 400, base, 2 * 86_400))
            .collect();
        write(&store, |b| {
            for e in &evs {
                b.insert("Event", e.row());
            }
            if round > 2 {
                for _ in 0..8 {
                    let id = order.swap_remove(rng.gen_range(0..order.len()));
                    b.delete("Event", id);
                    model.remove(&id);
                }
                let id = order[rng.gen_range(0..order.len())];
                let mut e = model[&id].clone();
                e.user = Some(format!("updated_{round}"));
                b.update("Event", id, e.row());
                model.insert(id, e);
            }
        });
        order.extend(evs.iter().map(|e| e.id));
        model.extend(evs.into_iter().map(|e| (e.id, e)));
        std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(0..30)));
    }
    shutdown.cancel();
    handle.join().unwrap().unwrap();
    let mut tail = RollupWorker::new(store.clone(), opts).unwrap();
    rt().block_on(tail.catch_up()).unwrap();

    assert_equals_recomputation(&store, 40);
    // Counts are exact; sketched uniques are within 3% of the brute-force distinct count.
    let want = brute_force(model.values());
    let have = stored_counts(&store);
    let mut sketched = 0;
    for (k, (n, users, sessions)) in &want {
        let (hn, hu, hs) = have[k];
        assert_eq!(hn, *n, "{k:?}");
        for (h, w) in [(hu, users.len() as i64), (hs, sessions.len() as i64)] {
            if w > 40 {
                sketched += 1;
                assert!((h - w).abs() as f64 <= 0.03 * w as f64, "{k:?}: {h} vs {w}");
            } else {
                assert_eq!(h, w, "{k:?}");
            }
        }
    }
    assert!(
        sketched > 10,
        "the test must exercise sketches ({sketched})"
    );
    assert!(
        metrics.stats_recomputes.get() > 0,
        "deletes from sketched buckets must have forced recomputations"
    );
}

#[test]
fn queries_answer_from_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    let mut rng = StdRng::seed_from_u64(3);
    let base: DateTime<Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
    let evs: Vec<Ev> = (0..2000)
        .map(|_| random_event(&mut rng, 2, 150, base, 3 * 86_400))
        .collect();
    write(&store, |b| {
        for e in &evs {
            b.insert("Event", e.row());
        }
    });
    let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
    rt().block_on(worker.catch_up()).unwrap();
    let reader = StatsReader::new(store.clone());
    let org = org_id(1);
    let mine: Vec<&Ev> = evs.iter().filter(|e| e.org == org).collect();
    let us = |t: DateTime<Utc>| t.timestamp_micros();

    // Hourly series over day 2, all types and one type.
    let day2 = base + chrono::Duration::days(1);
    let series = reader
        .timeseries(
            org,
            us(day2),
            us(day2 + chrono::Duration::days(1)),
            Granularity::Hour,
            None,
        )
        .unwrap();
    assert_eq!(series.len(), 24);
    for p in &series {
        let inb: Vec<&&Ev> = mine
            .iter()
            .filter(|e| us(e.ts) >= p.t_us && us(e.ts) < p.t_us + 3_600_000_000)
            .collect();
        assert_eq!(p.events, inb.len() as i64);
        let users: HashSet<_> = inb.iter().filter_map(|e| e.user.clone()).collect();
        assert_eq!(p.unique_users, users.len() as i64);
    }
    let pages = reader
        .timeseries(
            org,
            us(base),
            us(base + chrono::Duration::days(3)),
            Granularity::Day,
            Some("page"),
        )
        .unwrap();
    assert_eq!(pages.len(), 3);
    for p in &pages {
        let n = mine
            .iter()
            .filter(|e| {
                e.event_type == "page" && us(e.ts) >= p.t_us && us(e.ts) < p.t_us + 86_400_000_000
            })
            .count();
        assert_eq!(p.events, n as i64);
    }

    // Top events of day 1.
    let top = reader.top_events(org, base.date_naive(), 3).unwrap();
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for e in mine
        .iter()
        .filter(|e| e.ts.date_naive() == base.date_naive())
    {
        *counts.entry(e.event_name.as_str()).or_default() += 1;
    }
    let mut want: Vec<(&str, i64)> = counts.into_iter().collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let got: Vec<(&str, i64)> = top
        .iter()
        .map(|t| (t.event_name.as_str(), t.count))
        .collect();
    assert_eq!(got, want[..3].to_vec());

    // Unique users over a range that starts mid-day: a union, not a sum.
    let from = base + chrono::Duration::hours(13);
    let to = base + chrono::Duration::days(3);
    let u = reader.unique(org, us(from), us(to)).unwrap();
    let want_users: HashSet<_> = mine
        .iter()
        .filter(|e| e.ts >= from && e.ts < to)
        .filter_map(|e| e.user.clone())
        .collect();
    assert_eq!(u.users, want_users.len() as u64);
    assert!(u.exact);
    let per_day_sum: i64 = reader
        .timeseries(org, us(base), us(to), Granularity::Day, None)
        .unwrap()
        .iter()
        .map(|p| p.unique_users)
        .sum();
    assert!(
        per_day_sum > u.users as i64,
        "the sum of days over-counts: {per_day_sum} vs {}",
        u.users
    );

    // Raw range through the index, and the newest events.
    let (a, b) = (
        base + chrono::Duration::minutes(517),
        base + chrono::Duration::minutes(2911),
    );
    let raw = reader.count_raw(org, us(a), us(b)).unwrap();
    assert_eq!(
        raw,
        mine.iter().filter(|e| e.ts >= a && e.ts < b).count() as u64
    );
    let recent = reader.recent_events(org, 5).unwrap();
    let mut newest: Vec<i64> = mine.iter().map(|e| us(e.ts)).collect();
    newest.sort_unstable_by(|a, b| b.cmp(a));
    let got: Vec<i64> = recent.iter().map(int_ts).collect();
    assert_eq!(got, newest[..5].to_vec());

    // An org with no events: zeros, and unknown.
    let nobody = org_id(99);
    assert!(!reader.org_known(nobody).unwrap());
    assert!(reader.org_known(org).unwrap());
    assert_eq!(reader.unique(nobody, us(base), us(to)).unwrap().users, 0);
}

fn int_ts(r: &Row) -> i64 {
    match r.get("timestamp") {
        Some(Value::Timestamp(t)) => *t,
        other => panic!("timestamp {other:?}"),
    }
}

/// Brute force over (second, user) events: events and distinct users in (lo, hi].
fn window(events: &[(i64, [u8; 16], u64, i64)], org: [u8; 16], lo: i64, hi: i64) -> (i64, i64) {
    let mut n = 0;
    let mut users: HashMap<u64, i64> = HashMap::new();
    for &(sec, o, u, d) in events {
        if o == org && sec > lo && sec <= hi {
            n += d;
            *users.entry(u).or_default() += d;
        }
    }
    (n, users.values().filter(|&&c| c > 0).count() as i64)
}

#[test]
fn realtime_counters_match_brute_force_at_every_second() {
    let mut rng = StdRng::seed_from_u64(5);
    let start = 1_790_000_000i64;
    let windows = [60u64, 300];
    let mut c = RealtimeCounters::new(&windows, start);
    let orgs = [org_id(1), org_id(2)];
    // (second, org, user, +1/-1) of everything applied so far.
    let mut applied: Vec<(i64, [u8; 16], u64, i64)> = Vec::new();
    for now in start..start + 900 {
        c.advance(now);
        for _ in 0..rng.gen_range(0..12) {
            // Mostly current, some late (up to 7 min), a few a little in the future.
            let sec = match rng.gen_range(0..10) {
                0..=6 => now - rng.gen_range(0..3),
                7 | 8 => now - rng.gen_range(0..420),
                _ => now + rng.gen_range(1..20),
            };
            let org = orgs[rng.gen_range(0..2)];
            let user = hash_value(&format!("u{}", rng.gen_range(0..40)));
            c.apply(
                org,
                sec * 1_000_000 + rng.gen_range(0..1_000_000),
                Some(user),
                1,
            );
            if sec > now - 600 {
                applied.push((sec, org, user, 1));
            }
        }
        // Now and then an event is deleted again.
        if now % 7 == 0 && !applied.is_empty() {
            let i = rng.gen_range(0..applied.len());
            let (sec, org, user, d) = applied[i];
            if d == 1 && sec > now - 600 {
                c.apply(org, sec * 1_000_000, Some(user), -1);
                applied[i].3 = 0; // deleted: never picked again
            }
        }
        for org in orgs {
            let got = c.org(&org);
            for (i, &w) in windows.iter().enumerate() {
                let w = w as i64;
                let (e, u) = window(&applied, org, now - w, now);
                let (pe, pu) = window(&applied, org, now - 2 * w, now - w);
                assert_eq!(
                    (
                        got[i].events,
                        got[i].active_users,
                        got[i].prev_events,
                        got[i].prev_active_users
                    ),
                    (e, u, pe, pu),
                    "second {} window {w}",
                    now - start
                );
            }
        }
    }
    // The clock going back (seconds still held), then a jump past every window.
    c.advance(start + 850);
    let (e, u) = window(&applied, orgs[0], start + 850 - 300, start + 850);
    assert_eq!(
        (c.org(&orgs[0])[1].events, c.org(&orgs[0])[1].active_users),
        (e, u)
    );
    c.advance(start + 5000);
    assert_eq!(c.org(&orgs[0])[1].events, 0);
    assert_eq!(c.org(&orgs[0])[1].active_users, 0);
}

#[test]
fn realtime_worker_persists_counters_and_rebuilds_them_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    let now: DateTime<Utc> = "2026-11-27T10:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(now.timestamp_millis()));
    let mut rng = StdRng::seed_from_u64(9);
    let evs: Vec<Ev> = (0..400)
        .map(|_| random_event(&mut rng, 2, 50, now - chrono::Duration::seconds(700), 700))
        .collect();
    write(&store, |b| {
        for e in &evs {
            b.insert("Event", e.row());
        }
    });
    let opts = RealtimeOptions {
        windows_s: vec![300, 60],
        persist_interval: std::time::Duration::from_millis(50),
    };
    let rt = rt();
    let mut w = RealtimeWorker::new(store.clone(), opts.clone(), clock.clone()).unwrap();
    rt.block_on(w.replay()).unwrap();
    let reader = StatsReader::new(store.clone());
    let expect = |org: [u8; 16], at: DateTime<Utc>, len: i64| {
        let hi = at.timestamp();
        let pick = |lo: i64, hi: i64| {
            let inw: Vec<&Ev> = evs
                .iter()
                .filter(|e| e.org == org && e.ts.timestamp() > lo && e.ts.timestamp() <= hi)
                .collect();
            let users: HashSet<_> = inw.iter().filter_map(|e| e.user.clone()).collect();
            (inw.len() as i64, users.len() as i64)
        };
        let (e, u) = pick(hi - len, hi);
        let (pe, pu) = pick(hi - 2 * len, hi - len);
        (e, u, pe, pu)
    };
    for org in [org_id(0), org_id(1)] {
        let c = reader
            .counters(org, &[300, 60], now.timestamp_micros())
            .unwrap();
        for (i, len) in [300, 60].into_iter().enumerate() {
            let v = c.windows[i];
            assert_eq!(
                (v.events, v.active_users, v.prev_events, v.prev_active_users),
                expect(org, now, len)
            );
        }
        assert!(c.windows[0].events > 0);
    }
    drop(w);

    // A restart replays the feed from the cursor: the same values.
    let mut again = RealtimeWorker::new(store.clone(), opts.clone(), clock.clone()).unwrap();
    rt.block_on(again.replay()).unwrap();
    for org in [org_id(0), org_id(1)] {
        let v = again.values(&org);
        assert_eq!(
            (
                v[0].events,
                v[0].active_users,
                v[0].prev_events,
                v[0].prev_active_users
            ),
            expect(org, now, 300)
        );
    }
    // Five minutes later with no new events: the window is empty, the previous one holds them.
    let later = now + chrono::Duration::seconds(300);
    clock.set_ms(later.timestamp_millis());
    rt.block_on(again.persist()).unwrap();
    let c = reader
        .counters(org_id(0), &[300], later.timestamp_micros())
        .unwrap();
    assert_eq!(c.windows[0].events, 0);
    assert_eq!(c.windows[0].prev_events, expect(org_id(0), now, 300).0);
}

/// `streamtally ARGS` in the package directory (its connector.toml and schema.ormdb).
fn cli(args: &[&str]) -> (i32, String, String) {
    streamtally(args, std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn stats_cli_verifies_reports_differences_and_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut rng = StdRng::seed_from_u64(21);
    let base: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    let org = org_id(1);
    {
        let store = common::open(dir.path());
        let evs: Vec<Ev> = (0..600)
            .map(|_| random_event(&mut rng, 2, 80, base, 2 * 86_400))
            .collect();
        write(&store, |b| {
            for e in &evs {
                b.insert("Event", e.row());
            }
        });
        store.close().unwrap();
    }
    // verify applies the pending feed first, then finds nothing wrong.
    let (code, out, err) = cli(&["--data", data, "stats", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied 600 pending change(s)"), "{out}");
    assert!(out.contains(", 0 difference(s)"), "{out}");

    // Tamper with a rollup row: verify names it and exits 1.
    {
        let store = common::open(dir.path());
        let row = store
            .query(
                &streamtally::store::Query::new("DailyStats")
                    .eq("org_id", Value::Uuid(org))
                    .eq("event_type", Value::String(String::new())),
            )
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        let mut bad = Row::new();
        for (k, v) in &row.fields {
            if k == "event_count" {
                bad.set(k, Value::Int64(int(&row, "event_count") + 5));
            } else if k != "updated_at" {
                bad.set(k, v.clone());
            }
        }
        write(&store, |b| {
            b.upsert("DailyStats", bad);
        });
        store.close().unwrap();
    }
    let (code, out, _) = cli(&["--data", data, "stats", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DailyStats org=") && out.contains("event count differs"),
        "{out}"
    );
    assert!(out.contains(", 1 difference(s)"), "{out}");

    // Rebuild one org and the range holding the bad row; verify is clean again.
    let org_s = uuid::Uuid::from_bytes(org).to_string();
    let (code, out, err) = cli(&[
        "--data",
        data,
        "stats",
        "rebuild",
        "--org",
        &org_s,
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(1 differed from before)"), "{out}");
    let (code, out, _) = cli(&["--data", data, "stats", "verify"]);
    assert_eq!(code, 0, "{out}");

    // Bad arguments name the flag and the value.
    let (code, _, err) = cli(&["--data", data, "stats", "verify", "--org", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("--org 'nope'"), "{err}");
    let (code, _, err) = cli(&[
        "--data",
        data,
        "stats",
        "rebuild",
        "--from",
        "2026-11-05",
        "--to",
        "2026-11-01",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--from 2026-11-05 is after --to 2026-11-01"),
        "{err}"
    );
    let (code, _, err) = cli(&["--data", data, "stats", "verify", "--from", "11/05/2026"]);
    assert_eq!(code, 2);
    assert!(err.contains("--from '11/05/2026'"), "{err}");
}

/// (generation, parts) each stored HourlyStats / DailyStats row names, by row id.
fn parts_by_row(store: &Store) -> HashMap<[u8; 16], (i64, i32)> {
    let mut out = HashMap::new();
    for entity in ["HourlyStats", "DailyStats"] {
        for r in store.scan_all(entity).unwrap() {
            if let (Some(Value::Int64(g)), Some(Value::Int32(n))) =
                (r.get("state_generation"), r.get("state_parts"))
            {
                out.insert(r.id().unwrap(), (*g, *n));
            }
        }
    }
    out
}

/// Every RollupStatePart row belongs to a generation a row names, and every part a row
/// names exists: nothing orphaned, nothing missing.
fn assert_parts_are_exactly_the_named_ones(store: &Store) {
    let named = parts_by_row(store);
    let want: HashSet<[u8; 16]> = named
        .iter()
        .flat_map(|(row, &(g, n))| (0..n).map(move |p| parts::part_id(row, g, p)))
        .collect();
    let have: HashSet<[u8; 16]> = store
        .scan_all(parts::PARTS)
        .unwrap()
        .iter()
        .map(|r| r.id().unwrap())
        .collect();
    assert_eq!(have.len(), want.len(), "stored parts against named parts");
    assert_eq!(have, want);
}

#[test]
fn unique_sets_are_written_as_deltas_and_rewritten_whole_every_few_writes() {
    // One org and one hour of one day, written in many small batches: a write whose events
    // carry only users and sessions already counted adds no part; one with new users adds
    // one part holding just them; after the bucket's limit of parts (9 to 16) the sets are
    // rewritten whole in a new generation and the old parts go.
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    let rt = rt();
    let base: DateTime<Utc> = "2025-03-10T09:00:00Z".parse().unwrap();
    let mut model: HashMap<[u8; 16], Ev> = HashMap::new();
    let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
    let mut n = 0u128;
    let mut event = |user: u32| {
        n += 1;
        Ev {
            id: *uuid::Uuid::from_u128(n).as_bytes(),
            org: org_id(1),
            ts: base + chrono::Duration::seconds((n % 3000) as i64),
            event_type: "track".into(),
            event_name: "click".into(),
            user: Some(format!("user_{user}")),
            session: Some(format!("s_{user}")),
        }
    };
    let mut step = |evs: Vec<Ev>, model: &mut HashMap<[u8; 16], Ev>| {
        write(&store, |b| {
            for e in &evs {
                b.insert("Event", e.row());
            }
        });
        model.extend(evs.into_iter().map(|e| (e.id, e)));
        rt.block_on(worker.catch_up()).unwrap();
        assert_matches_brute_force(&store, model);
        parts_by_row(&store)
    };
    let daily = streamtally::stats::bucket::RollupKey::Daily {
        org: org_id(1),
        date: base.date_naive(),
        event_type: ALL_TYPES.into(),
        source: None,
    }
    .row_id();

    let first = step((0..50).map(&mut event).collect(), &mut model);
    assert_eq!(
        first[&daily],
        (0, 1),
        "a new bucket: generation 0, its sets whole"
    );
    // Users seen already: the rows change (event counts), their sets do not.
    let same = step((0..50).rev().map(&mut event).collect(), &mut model);
    assert_eq!(same, first, "no part for sets that did not change");
    // Five new users: one part with exactly them.
    let grew = step((50..55).map(&mut event).collect(), &mut model);
    assert_eq!(grew[&daily], (0, 2));
    let part = store
        .get(parts::PARTS, &parts::part_id(&daily, 0, 1))
        .unwrap()
        .expect("part 1 is stored");
    match part.get("users_state") {
        Some(Value::String(s)) => {
            let mut delta = streamtally::stats::sketch::Uniq::default();
            delta.merge_stored(s).unwrap();
            assert_eq!(delta.count(), 5, "the part holds the new users only");
        }
        other => panic!("users_state of the part is {other:?}"),
    }
    assert_parts_are_exactly_the_named_ones(&store);
    // New users in every write: parts 2.. up to the bucket's limit, then a new generation.
    let limit = parts::max_parts(&daily);
    assert!((9..=parts::MAX_PARTS).contains(&limit));
    let mut user = 55;
    let mut seen = vec![grew[&daily]];
    for _ in 0..limit + 2 {
        let evs = (user..user + 3).map(&mut event).collect();
        user += 3;
        let now = step(evs, &mut model)[&daily];
        seen.push(now);
        if now == (0, limit) {
            // At the limit, a write that adds no value stores nothing either.
            let again = step((0..5).map(&mut event).collect(), &mut model);
            assert_eq!(again[&daily], (0, limit));
        }
        assert_parts_are_exactly_the_named_ones(&store);
    }
    assert!(seen.iter().all(|&(_, n)| n <= limit), "{seen:?}");
    assert!(seen.contains(&(0, limit)), "{seen:?}");
    assert_eq!(seen.last(), Some(&(1, 4)), "{seen:?}");
    assert!(store
        .get(parts::PARTS, &parts::part_id(&daily, 0, 0))
        .unwrap()
        .is_none());
    assert_equals_recomputation(&store, 10_000);

    // A removal cannot be a delta: the sets are written whole again, as computed.
    let gone = *model.keys().next().unwrap();
    write(&store, |b| {
        b.delete("Event", gone);
    });
    model.remove(&gone);
    rt.block_on(worker.catch_up()).unwrap();
    assert_eq!(parts_by_row(&store)[&daily], (2, 1));
    assert_matches_brute_force(&store, &model);
    assert_equals_recomputation(&store, 10_000);
    assert_parts_are_exactly_the_named_ones(&store);
}

/// The legacy inline form of an exact set: `x1:` + base64 of (hash u64 BE, LEB128 count).
fn legacy_counted(values: &[String]) -> String {
    use base64::Engine;
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for v in values {
        *counts.entry(hash_value(v)).or_default() += 1;
    }
    let mut bytes = Vec::new();
    for (h, mut n) in counts {
        bytes.extend_from_slice(&h.to_be_bytes());
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                bytes.push(b);
                break;
            }
            bytes.push(b | 0x80);
        }
    }
    format!(
        "x1:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    )
}

#[test]
fn rollup_rows_with_inline_sets_from_older_releases_are_read_and_move_to_parts() {
    // Rows as releases before parts wrote them: the sets inline, with per-value counts.
    // A worker reads them, applies inserts, updates and deletes (exactly, thanks to the
    // counts), and its writes move them to parts; queries read both forms.
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    let rt = rt();
    let mut rng = StdRng::seed_from_u64(11);
    let base: DateTime<Utc> = "2025-06-01T00:00:00Z".parse().unwrap();
    let mut model: HashMap<[u8; 16], Ev> = HashMap::new();
    let evs: Vec<Ev> = (0..600)
        .map(|_| random_event(&mut rng, 2, 80, base, 2 * 86_400))
        .collect();
    write(&store, |b| {
        for e in &evs {
            b.insert("Event", e.row());
        }
    });
    model.extend(evs.into_iter().map(|e| (e.id, e)));
    let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
    rt.block_on(worker.catch_up()).unwrap();
    drop(worker);

    // Rewrite every HourlyStats / DailyStats row in the old form, and drop its parts.
    let mut legacy = WriteBatch::new();
    let per_key = |entity: &str, r: &Row| -> (Vec<String>, Vec<String>) {
        let org = match r.get("org_id") {
            Some(Value::Uuid(u)) => *u,
            _ => unreachable!(),
        };
        let (date, ty) = (s(r, "date"), s(r, "event_type"));
        let hour = (entity == "HourlyStats").then(|| int(r, "hour") as u32);
        let mut users = Vec::new();
        let mut sessions = Vec::new();
        for e in model.values() {
            if e.org == org
                && e.ts.format("%Y-%m-%d").to_string() == date
                && hour.is_none_or(|h| e.ts.hour() == h)
                && (ty.is_empty() || e.event_type == ty)
            {
                users.extend(e.user.clone());
                sessions.extend(e.session.clone());
            }
        }
        (users, sessions)
    };
    for entity in ["HourlyStats", "DailyStats"] {
        for r in store.scan_all(entity).unwrap() {
            let (g, n) = (int(&r, "state_generation"), int(&r, "state_parts") as i32);
            for p in 0..n {
                legacy.delete(parts::PARTS, parts::part_id(&r.id().unwrap(), g, p));
            }
            let (users, sessions) = per_key(entity, &r);
            let mut old = r.clone();
            old.set("state_generation", Value::Null);
            old.set("state_parts", Value::Null);
            old.set("users_state", Value::String(legacy_counted(&users)));
            old.set("sessions_state", Value::String(legacy_counted(&sessions)));
            legacy.upsert(entity, old);
        }
    }
    store.write_blocking(legacy).unwrap();
    assert_eq!(store.count_rows(parts::PARTS).unwrap(), 0);
    assert_matches_brute_force(&store, &model);
    assert_equals_recomputation(&store, 10_000);
    let reader = StatsReader::new(store.clone());
    let week = |reader: &StatsReader| {
        reader
            .unique(
                org_id(0),
                base.timestamp_micros(),
                (base + chrono::Duration::days(2)).timestamp_micros(),
            )
            .unwrap()
    };
    let before = week(&reader);
    let truth: HashSet<&String> = model
        .values()
        .filter(|e| e.org == org_id(0))
        .filter_map(|e| e.user.as_ref())
        .collect();
    assert_eq!(before.users, truth.len() as u64);

    // Updates and deletes recompute each (org, day) they remove events from once, however
    // many they remove there; the rows written move to parts.
    let metrics = Arc::new(streamtally::metrics::Metrics::new());
    let mut worker = RollupWorker::new(store.clone(), RollupOptions::default())
        .unwrap()
        .with_metrics(metrics.clone());
    let ids: Vec<[u8; 16]> = {
        let mut v: Vec<_> = model.keys().copied().collect();
        v.sort();
        v
    };
    let more: Vec<Ev> = (0..200)
        .map(|_| random_event(&mut rng, 2, 120, base, 86_400))
        .collect();
    let groups: HashSet<([u8; 16], String)> = ids[..80]
        .iter()
        .map(|id| &model[id])
        .filter(|e| e.user.is_some() || e.session.is_some())
        .map(|e| (e.org, e.ts.format("%Y-%m-%d").to_string()))
        .collect();
    churn(&store, &mut model, &mut rng, more, &ids, 40, 0..120);
    rt.block_on(worker.catch_up()).unwrap();
    assert_eq!(
        metrics.stats_recomputes.get(),
        groups.len() as u64,
        "one recomputation per (org, day) that lost events"
    );
    assert_matches_brute_force(&store, &model);
    assert_equals_recomputation(&store, 10_000);
    let moved = parts_by_row(&store).len();
    assert!(moved > 0);
    for entity in ["HourlyStats", "DailyStats"] {
        for r in store.scan_all(entity).unwrap() {
            if matches!(r.get("state_parts"), Some(Value::Int32(_))) {
                assert_eq!(
                    r.get("users_state"),
                    Some(&Value::Null),
                    "moved rows drop the inline set"
                );
            }
        }
    }
    assert_parts_are_exactly_the_named_ones(&store);
    let truth: HashSet<&String> = model
        .values()
        .filter(|e| e.org == org_id(0))
        .filter_map(|e| e.user.as_ref())
        .collect();
    assert_eq!(week(&reader).users, truth.len() as u64);
}

/// A connector started with `stats.enabled = false` removes the stats workers' cursors, so
/// the change feed is truncated without them; starting the workers again without a rebuild
/// is refused, naming the rebuild.
#[test]
fn with_stats_disabled_the_workers_cursors_no_longer_keep_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    // A connector with stats on registered the rollup worker's cursor at the feed's start.
    drop(RollupWorker::new(store.clone(), RollupOptions::default()).unwrap());
    let mut b = WriteBatch::new();
    for i in 0..300 {
        b.insert("Event", common::event(i));
    }
    store.write_blocking(b).unwrap();
    store.checkpoint().unwrap();
    assert_eq!(store.feed_floor(), 1, "the rollup cursor keeps the feed");

    let mut cfg = streamtally::config::Config::default();
    cfg.store.path = dir.path().to_path_buf();
    cfg.stats.enabled = false;
    cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let services = streamtally::app::Services::start(
        cfg,
        store.clone(),
        Arc::new(streamtally::metrics::Metrics::new()),
        shutdown.clone(),
    )
    .unwrap();
    assert_eq!(
        store.cursor(streamtally::stats::ROLLUP_CURSOR).unwrap(),
        None
    );
    store.checkpoint().unwrap();
    assert_eq!(store.feed_floor(), store.feed_head());
    shutdown.cancel();
    services.join().unwrap();

    let err = RollupWorker::new(store.clone(), RollupOptions::default())
        .err()
        .expect("the rollup worker cannot start on a truncated feed");
    assert!(err.to_string().contains("stats rebuild"), "{err}");
    store.close().unwrap();
    drop(store);

    // The rebuild it names works on that feed, for every org and day only; then the
    // rollups equal a recomputation and the worker starts again.
    let data = dir.path().to_str().unwrap();
    let org = match common::org(0) {
        Value::Uuid(u) => uuid::Uuid::from_bytes(u).to_string(),
        other => panic!("{other:?}"),
    };
    let (code, out, err) = cli(&["--data", data, "stats", "rebuild", "--org", &org]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no --org, --from or --to"), "{err}");
    let (code, out, err) = cli(&["--data", data, "stats", "rebuild"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("rebuilding every rollup from the stored events"),
        "{out}"
    );
    let (code, out, err) = cli(&["--data", data, "stats", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(", 0 difference(s)"), "{out}");
    let store = common::open(dir.path());
    let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
    assert_eq!(rt().block_on(worker.catch_up()).unwrap(), 0);
    assert_equals_recomputation(&store, 10_000);
}

/// The source partition the per-partition tests give an event: one of 2 topics x 4
/// partitions, from its id.
fn source_of(e: &Ev) -> (String, i32) {
    (format!("topic_{}", e.id[1] % 2), (e.id[0] % 4) as i32)
}

/// `e`'s row with its source partition set.
fn sourced_row(e: &Ev) -> Row {
    let (topic, partition) = source_of(e);
    e.row()
        .with("topic", Value::String(topic))
        .with("partition", Value::Int32(partition))
}

fn all_sources() -> Vec<Source> {
    (0..2)
        .flat_map(|t| (0..4).map(move |p| Source::new(&format!("topic_{t}"), p)))
        .collect()
}

fn reading(reader: &StatsReader, sources: Vec<Source>) -> StatsReader {
    reader.with_sources(Arc::new(move || Sources::Partitions(sources.clone())))
}

/// Every answer of `a` equals `b`'s for `org` over the days from `base`.
fn assert_same_answers(a: &StatsReader, b: &StatsReader, org: [u8; 16], base: DateTime<Utc>) {
    let us = |t: DateTime<Utc>| t.timestamp_micros();
    let end = base + chrono::Duration::days(3);
    for g in [Granularity::Hour, Granularity::Day] {
        for et in [None, Some("page")] {
            assert_eq!(
                a.timeseries(org, us(base), us(end), g, et).unwrap(),
                b.timeseries(org, us(base), us(end), g, et).unwrap(),
                "{g:?} {et:?}"
            );
        }
    }
    for day in 0..3 {
        let date = (base + chrono::Duration::days(day)).date_naive();
        assert_eq!(
            a.top_events(org, date, 5).unwrap(),
            b.top_events(org, date, 5).unwrap()
        );
    }
    for (from_h, to_h) in [(0, 72), (13, 61), (5, 6), (30, 48)] {
        let (from, to) = (
            us(base + chrono::Duration::hours(from_h)),
            us(base + chrono::Duration::hours(to_h)),
        );
        assert_eq!(
            a.unique(org, from, to).unwrap(),
            b.unique(org, from, to).unwrap()
        );
    }
    let now = us(base + chrono::Duration::hours(40));
    assert_eq!(
        a.counters(org, &[300], now).unwrap(),
        b.counters(org, &[300], now).unwrap()
    );
}

/// Writes the same change to every store and to the model: `new` events inserted, the
/// events `moved.0` given user `moved.1`, the events `deleted` deleted.
fn change(
    stores: &[&Store],
    model: &mut HashMap<[u8; 16], Ev>,
    new: Vec<Ev>,
    moved: (&[[u8; 16]], &str),
    deleted: &[[u8; 16]],
) {
    let (moved, user) = moved;
    for store in stores {
        write(store, |b| {
            for e in &new {
                b.insert("Event", sourced_row(e));
            }
            for id in moved {
                let mut e = model[id].clone();
                e.user = Some(user.to_string());
                b.update("Event", *id, sourced_row(&e));
            }
            for id in deleted {
                b.delete("Event", *id);
            }
        });
    }
    for id in moved {
        model.get_mut(id).unwrap().user = Some(user.to_string());
    }
    for id in deleted {
        model.remove(id);
    }
    model.extend(new.into_iter().map(|e| (e.id, e)));
}

#[test]
fn rollups_kept_per_partition_merge_to_the_whole_store_answers() {
    let rt = rt();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (per, whole) = (common::open(da.path()), common::open(db.path()));
    let bar = ProgressBar::hidden();
    // A new store takes the per-partition keying at once (nothing to recompute).
    rt.block_on(rebuild::switch_layout(&per, true, 10_000, &bar))
        .unwrap();
    assert!(rebuild::stored_per_partition(&per).unwrap());
    let mut rng = StdRng::seed_from_u64(22);
    let base: DateTime<Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
    let mut model: HashMap<[u8; 16], Ev> = HashMap::new();
    let opts = |per_partition| RollupOptions {
        per_partition,
        ..RollupOptions::default()
    };
    let mut wa = RollupWorker::new(per.clone(), opts(true)).unwrap();
    let mut wb = RollupWorker::new(whole.clone(), opts(false)).unwrap();
    for round in 0..4 {
        let new: Vec<Ev> = (0..800)
            .map(|_| random_event(&mut rng, 3, 300, base, 3 * 86_400))
            .collect();
        // Later rounds move some users and delete some events (a removal from an exact
        // set recomputes the (org, day) from the raw events, per partition too).
        let ids: Vec<[u8; 16]> = model.keys().take(60).copied().collect();
        let (moved, deleted) = if round > 0 {
            (&ids[..30], &ids[30..])
        } else {
            (&[][..], &[][..])
        };
        let user = format!("user_{}", 1000 + round);
        change(&[&per, &whole], &mut model, new, (moved, &user), deleted);
        rt.block_on(wa.catch_up()).unwrap();
        rt.block_on(wb.catch_up()).unwrap();
    }

    // Rows per partition: each holds only its partition's events, and the set equals a
    // recomputation from the raw events.
    let stored = rebuild::stored(&per, &Scope::default()).unwrap();
    assert!(stored.keys().all(|k| k.source().is_some()));
    let pp = Scope {
        per_partition: true,
        ..Scope::default()
    };
    let expected = rebuild::recompute(&per, &pp, 10_000, &bar).unwrap();
    assert_eq!(rebuild::diff(&stored, &expected), Vec::<String>::new());

    // Merged over every partition: the same answers as one row for the whole store.
    let (ra, rb) = (
        StatsReader::new(per.clone()),
        StatsReader::new(whole.clone()),
    );
    let all = reading(&ra, all_sources());
    for org in 0..3 {
        assert_same_answers(&all, &rb, org_id(org), base);
    }
    // More events in the buckets already merged (and cached): the answers follow. A bucket
    // merged again keeps its unions and then adds only the changed rows' sets, unless a
    // row's sets were replaced (a deletion or a moved user recomputes them): rounds of
    // inserts only, then with removals, then inserts again.
    for round in 0..4 {
        let more: Vec<Ev> = (0..500)
            .map(|_| random_event(&mut rng, 3, 300, base, 3 * 86_400))
            .collect();
        let ids: Vec<[u8; 16]> = match round {
            2 => model.keys().skip(100).take(40).copied().collect(),
            _ => Vec::new(),
        };
        let (moved, deleted) = ids.split_at(ids.len() / 2);
        let user = format!("user_{}", 2000 + round);
        change(&[&per, &whole], &mut model, more, (moved, &user), deleted);
        rt.block_on(wa.catch_up()).unwrap();
        rt.block_on(wb.catch_up()).unwrap();
        for org in 0..3 {
            assert_same_answers(&all, &rb, org_id(org), base);
        }
    }
    let stored = rebuild::stored(&per, &Scope::default()).unwrap();
    let expected = rebuild::recompute(&per, &pp, 10_000, &bar).unwrap();
    assert_eq!(rebuild::diff(&stored, &expected), Vec::<String>::new());
    // The whole-store rows are not read as partitions, nor partition rows as the whole.
    assert_eq!(
        ra.unique(
            org_id(0),
            base.timestamp_micros(),
            (base + chrono::Duration::days(3)).timestamp_micros()
        )
        .unwrap()
        .users,
        0
    );

    // Some partitions: exactly their events.
    let some = vec![Source::new("topic_0", 1), Source::new("topic_1", 3)];
    let subset = reading(&ra, some.clone());
    let org = org_id(2);
    let held = |e: &&Ev| {
        let (t, p) = source_of(e);
        e.org == org && some.contains(&Source::new(&t, p))
    };
    let mine: Vec<&Ev> = model.values().filter(held).collect();
    let (from, to) = (base, base + chrono::Duration::days(3));
    let series = subset
        .timeseries(
            org,
            from.timestamp_micros(),
            to.timestamp_micros(),
            Granularity::Day,
            None,
        )
        .unwrap();
    for p in &series {
        let inb: Vec<&&Ev> = mine
            .iter()
            .filter(|e| {
                e.ts.timestamp_micros() >= p.t_us
                    && e.ts.timestamp_micros() < p.t_us + 86_400_000_000
            })
            .collect();
        assert_eq!(p.events, inb.len() as i64);
        let users: HashSet<_> = inb.iter().filter_map(|e| e.user.clone()).collect();
        assert_eq!(p.unique_users, users.len() as i64);
    }
    let u = subset
        .unique(org, from.timestamp_micros(), to.timestamp_micros())
        .unwrap();
    let users: HashSet<_> = mine.iter().filter_map(|e| e.user.clone()).collect();
    assert_eq!(u.users, users.len() as u64);

    // Switching the whole-store store to per-partition rows recomputes them: the same rows
    // as the store kept per partition from the start; a worker of the old keying is refused.
    let report = rt
        .block_on(rebuild::switch_layout(&whole, true, 10_000, &bar))
        .unwrap()
        .expect("recomputed");
    assert!(report.deleted > 0 && report.written == expected.len());
    assert_eq!(rebuild::stored(&whole, &Scope::default()).unwrap(), stored);
    let err = RollupWorker::new(whole.clone(), RollupOptions::default())
        .err()
        .expect("a worker of the other keying is refused")
        .to_string();
    assert!(err.contains("scale_out.enabled"), "{err}");
    // ... and back.
    rt.block_on(rebuild::switch_layout(&whole, false, 10_000, &bar))
        .unwrap()
        .expect("recomputed");
    assert_same_answers(&all, &StatsReader::new(whole.clone()), org_id(1), base);
    assert!(rt
        .block_on(rebuild::switch_layout(&whole, false, 10_000, &bar))
        .unwrap()
        .is_none());
}

/// schema.ormdb as releases before per-partition rollups declared it (no `topic` and
/// `partition` in the rollups and their keys, nor in Event's `@feed`).
fn schema_before_partitioned_rollups() -> streamtally::schema::Schema {
    let text = include_str!("../schema.ormdb")
        .replace(
            "user_id, session_id, topic, partition])",
            "user_id, session_id])",
        )
        .replace(
            "  event_type: string\n  topic: string?\n  partition: int32?\n",
            "  event_type: string\n",
        )
        .replace(
            "  event_name: string\n  topic: string?\n  partition: int32?\n",
            "  event_name: string\n",
        )
        .replace(", topic, partition])", "])");
    assert!(!text.contains("session_id, topic"));
    streamtally::schema::Schema::parse(&text).expect("the older schema parses")
}

/// DailyStats' event counts by row id.
fn daily_counts_by_id(store: &Store) -> BTreeMap<[u8; 16], i64> {
    store
        .scan_all("DailyStats")
        .unwrap()
        .iter()
        .map(|r| (r.id().unwrap(), int(r, "event_count")))
        .collect()
}

#[test]
fn a_store_from_before_per_partition_rollups_keeps_its_rows_and_feed() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let base: DateTime<Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
    let evs: Vec<Ev> = (0..1500)
        .map(|_| random_event(&mut rng, 2, 200, base, 2 * 86_400))
        .collect();
    let ids_before = {
        let old = common::open_retrying(|| {
            Store::open(
                streamtally::store::StoreOptions::new(dir.path()),
                &schema_before_partitioned_rollups(),
            )
        });
        write(&old, |b| {
            for e in &evs[..1000] {
                b.insert("Event", sourced_row(e));
            }
        });
        let mut worker = RollupWorker::new(old.clone(), RollupOptions::default()).unwrap();
        rt.block_on(worker.catch_up()).unwrap();
        drop(worker);
        // Left in the feed, unapplied, in the older feed format.
        write(&old, |b| {
            for e in &evs[1000..] {
                b.insert("Event", sourced_row(e));
            }
        });
        let ids = daily_counts_by_id(&old);
        old.close().unwrap();
        ids
    };
    let store = common::open(dir.path());
    // The rows kept their ids (the rollup worker below updates them in place)...
    assert_eq!(daily_counts_by_id(&store), ids_before);
    // ... and the older feed entries are read, without a source.
    let feed = store
        .feed_read(streamtally::store::FIRST_SEQ, 100_000)
        .unwrap();
    let last = feed.last().unwrap();
    let fields = last.new_fields.as_ref().unwrap();
    assert_eq!(fields.len(), 8);
    assert_eq!(&fields[6..], &[Value::Null, Value::Null]);
    let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
    rt.block_on(worker.catch_up()).unwrap();
    drop(worker);
    let model: HashMap<[u8; 16], Ev> = evs.iter().map(|e| (e.id, e.clone())).collect();
    assert_matches_brute_force(&store, &model);
    let daily_rows = store.count_rows("DailyStats").unwrap();
    assert_eq!(daily_rows as usize, ids_before.len());
    // Switched to per-partition rows: recomputed from the raw events, which kept theirs.
    let bar = ProgressBar::hidden();
    rt.block_on(rebuild::switch_layout(&store, true, 10_000, &bar))
        .unwrap()
        .expect("recomputed");
    let stored = rebuild::stored(&store, &Scope::default()).unwrap();
    assert!(stored.keys().all(|k| k.source().is_some()));
    let all = reading(&StatsReader::new(store.clone()), all_sources());
    for org in 0..2 {
        let u = all
            .unique(
                org_id(org),
                base.timestamp_micros(),
                (base + chrono::Duration::days(2)).timestamp_micros(),
            )
            .unwrap();
        let users: HashSet<_> = evs
            .iter()
            .filter(|e| e.org == org_id(org))
            .filter_map(|e| e.user.clone())
            .collect();
        assert_eq!(u.users, users.len() as u64);
    }
}

#[test]
fn trend_parts_of_partitions_merge_to_the_trend_of_the_whole_store() {
    // A scaled-out group answers a trend read from events by asking each owner for its part
    // over its partitions (every series, sets for distinct measures) and merging: the merged
    // answer must equal the trend of one store holding every partition, for every measure,
    // breakdown (its top N taken after the merge), condition and zone. The question and the
    // parts go through their wire form (JSON) as between instances.
    use streamtally::stats::trends::{
        merge_trend_states, Breakdown, Condition, Measure, TrendAsk, TrendSpec, TrendState,
    };
    use streamtally::stats::zone::{boundaries, Step, Zone};
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    let rt = rt();
    let mut rng = StdRng::seed_from_u64(31);
    let base: DateTime<Utc> = "2026-10-24T00:00:00Z".parse().unwrap(); // a DST change in Berlin
    let mut model: HashMap<[u8; 16], Ev> = HashMap::new();
    for _ in 0..3 {
        let new: Vec<Ev> = (0..1500)
            .map(|_| random_event(&mut rng, 2, 400, base, 3 * 86_400))
            .collect();
        change(&[&store], &mut model, new, (&[], ""), &[]);
    }
    let mut worker = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
    rt.block_on(worker.catch_up()).unwrap();
    let reader = StatsReader::new(store.clone());
    let sources = all_sources();
    let groups = [&sources[..3], &sources[3..5], &sources[5..]];
    let (from, to) = (
        base.timestamp_micros(),
        (base + chrono::Duration::days(3)).timestamp_micros(),
    );
    let zones = [
        (Zone::UTC, Step::Hour),
        (Zone::parse("+05:30").unwrap(), Step::Day),
        (Zone::parse("Europe/Berlin").unwrap(), Step::Day),
    ];
    let breakdowns = [None, Some(Breakdown::EventName), Some(Breakdown::EventType)];
    let mut checked = 0;
    for measure in [
        Measure::Events,
        Measure::UniqueUsers,
        Measure::UniqueSessions,
    ] {
        for breakdown in &breakdowns {
            for (zone, step) in zones {
                for conditions in [
                    vec![],
                    vec![Condition::parse("event_type != page").unwrap()],
                ] {
                    let spec = TrendSpec {
                        org: org_id(1),
                        events: vec![],
                        event_type: None,
                        conditions,
                        breakdown: breakdown.clone(),
                        breakdown_limit: 3,
                        measure,
                        step,
                        zone,
                        boundaries: boundaries(&zone, step, (from, to), 10_000).unwrap(),
                    };
                    let whole = reader.trend(&spec, 10_000).unwrap();
                    let wire = serde_json::to_string(&TrendAsk::of(&spec)).unwrap();
                    let asked: TrendAsk = serde_json::from_str(&wire).unwrap();
                    let parts: Vec<TrendState> = groups
                        .iter()
                        .map(|g| {
                            let part = reading(&reader, g.to_vec())
                                .trend_state(&asked.spec(org_id(1)).unwrap(), 10_000)
                                .unwrap();
                            let text = serde_json::to_string(&part).unwrap();
                            serde_json::from_str(&text).unwrap()
                        })
                        .collect();
                    let merged = merge_trend_states(&spec, parts, 10_000).unwrap();
                    assert_eq!(
                        merged.series, whole.series,
                        "{measure:?} {breakdown:?} {zone:?} {step:?} {:?} (whole from {})",
                        spec.conditions, whole.source
                    );
                    assert!(merged.series.iter().any(|s| s.total > 0));
                    assert_eq!(merged.exact, whole.exact);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 54);
}
