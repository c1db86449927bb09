//! The gateway's REST API (docs/API.md) against a real store: events written with
//! WriteBatch, rollups produced by `RollupWorker::catch_up`, real-time counters by the
//! `RealtimeWorker` replay; requests sent to the axum Router with `tower::ServiceExt::oneshot`.
//! Every value is checked against a brute-force count over the events the test wrote.

mod common;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use common::http::status_body;
use common::test_org as org;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use streamtally::config::{AuthToken, Config};
use streamtally::gateway::auth::token_sha256_hex;
use streamtally::gateway::{router, GatewayState};
use streamtally::metrics::Metrics;
use streamtally::stats::query::StatsReader;
use streamtally::stats::realtime::{ManualClock, RealtimeOptions, RealtimeWorker};
use streamtally::stats::rollup::{RollupOptions, RollupWorker};
use streamtally::store::{Row, Store, Value, WriteBatch};
use tower::ServiceExt;
use uuid::Uuid;

const TOKEN_A: &str = "token-of-org-a";
const TOKEN_B: &str = "token-of-org-b";
const TOKEN_D: &str = "token-of-org-d";
const ADMIN: &str = "the-admin-token";

/// The test's own record of an event.
#[derive(Clone, Debug)]
struct Ev {
    id: Uuid,
    org: Uuid,
    ts: DateTime<Utc>,
    event_type: String,
    event_name: String,
    user: Option<String>,
    session: Option<String>,
    offset: i64,
}

impl Ev {
    fn row(&self) -> Row {
        let mut r = Row::new()
            .with("id", Value::Uuid(*self.id.as_bytes()))
            .with("org_id", Value::Uuid(*self.org.as_bytes()))
            .with("event_type", Value::String(self.event_type.clone()))
            .with("event_name", Value::String(self.event_name.clone()))
            .with("timestamp", Value::Timestamp(self.ts.timestamp_micros()))
            .with(
                "date",
                Value::String(self.ts.format("%Y-%m-%d").to_string()),
            )
            .with("hour", Value::Int32(self.ts.hour() as i32))
            .with("topic", Value::String("events".into()))
            .with("partition", Value::Int32((self.offset % 3) as i32))
            .with("offset", Value::Int64(self.offset))
            .with(
                "properties",
                Value::String(json!({"n": self.offset, "note": "a,b \"q\""}).to_string()),
            );
        if let Some(u) = &self.user {
            r.set("user_id", Value::String(u.clone()));
        }
        if let Some(s) = &self.session {
            r.set("session_id", Value::String(s.clone()));
        }
        r
    }
}

struct Fixture {
    app: Router,
    store: Store,
    metrics: Arc<Metrics>,
    events: Vec<Ev>,
    /// The real-time worker's clock (whole seconds).
    now: DateTime<Utc>,
    /// First day of the historical events (00:00 UTC); they span 3 days.
    day0: DateTime<Utc>,
    _dir: tempfile::TempDir,
}

fn config() -> Config {
    let mut cfg = Config::default();
    cfg.auth.admin_token_sha256 = Some(token_sha256_hex(ADMIN));
    for (o, t) in [(org(1), TOKEN_A), (org(2), TOKEN_B), (org(4), TOKEN_D)] {
        cfg.auth.tokens.push(AuthToken {
            org_id: o,
            token_sha256: token_sha256_hex(t),
            name: None,
        });
    }
    cfg
}

fn random_events(
    rng: &mut StdRng,
    o: Uuid,
    n: usize,
    start: DateTime<Utc>,
    span_s: i64,
) -> Vec<Ev> {
    (0..n)
        .map(|_| {
            let user = rng.gen_range(0..40);
            Ev {
                id: Uuid::from_u128(rng.gen()),
                org: o,
                ts: start + Duration::seconds(rng.gen_range(0..span_s)),
                event_type: ["track", "page"][rng.gen_range(0..2)].to_string(),
                event_name: format!("name_{}", rng.gen_range(0..6)),
                user: (rng.gen_range(0..10) > 0).then(|| format!("user_{user}")),
                session: (rng.gen_range(0..10) > 1)
                    .then(|| format!("s_{user}_{}", rng.gen_range(0..3))),
                offset: rng.gen_range(0..1_000_000),
            }
        })
        .collect()
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(|_| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut Config)) -> Fixture {
        common::init_logs();
        let dir = tempfile::tempdir().unwrap();
        let store = common::open(dir.path());
        let mut rng = StdRng::seed_from_u64(11);
        let now = Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap();
        let day0 = Utc.with_ymd_and_hms(2026, 11, 10, 0, 0, 0).unwrap();
        let mut events = Vec::new();
        // History: orgs A and B over three days; org C has events but no token.
        for (o, n) in [(org(1), 500), (org(2), 300), (org(3), 50)] {
            events.extend(random_events(&mut rng, o, n, day0, 3 * 86_400));
        }
        // Recent: the last ten minutes of A and B (current and previous 5-minute window).
        for o in [org(1), org(2)] {
            events.extend(random_events(
                &mut rng,
                o,
                80,
                now - Duration::seconds(599),
                600,
            ));
        }
        for chunk in events.chunks(200) {
            let mut b = WriteBatch::new();
            for e in chunk {
                b.insert("Event", e.row());
            }
            store.write_blocking(b).unwrap();
        }
        let mut rollups = RollupWorker::new(store.clone(), RollupOptions::default()).unwrap();
        rollups.catch_up().await.unwrap();
        let clock = Arc::new(ManualClock::new(now.timestamp_millis()));
        let mut realtime =
            RealtimeWorker::new(store.clone(), RealtimeOptions::default(), clock).unwrap();
        realtime.replay().await.unwrap();

        let mut cfg = config();
        tweak(&mut cfg);
        let metrics = Arc::new(Metrics::new());
        let app = router(GatewayState::new(
            store.clone(),
            StatsReader::new(store.clone()),
            cfg,
            metrics.clone(),
        ));
        Fixture {
            app,
            store,
            metrics,
            events,
            now,
            day0,
            _dir: dir,
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Json>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, headers, bytes.to_vec())
    }

    /// GET with a token; the status and the JSON body.
    async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Json) {
        let (s, _, b) = self.send(Method::GET, uri, token, None).await;
        (s, serde_json::from_slice(&b).unwrap_or(Json::Null))
    }

    /// GET that must answer 200.
    async fn ok(&self, uri: &str, token: &str) -> Json {
        let (s, body) = self.get(uri, Some(token)).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {body}");
        body
    }

    fn of(&self, o: Uuid) -> Vec<&Ev> {
        self.events.iter().filter(|e| e.org == o).collect()
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn path(o: Uuid, rest: &str) -> String {
    format!("/api/v1/orgs/{o}/{rest}")
}

/// (events, distinct users, distinct sessions)
fn counts<'a>(evs: impl IntoIterator<Item = &'a &'a Ev>) -> (i64, i64, i64) {
    let mut n = 0;
    let mut users = HashSet::new();
    let mut sessions = HashSet::new();
    for e in evs {
        n += 1;
        users.extend(e.user.clone());
        sessions.extend(e.session.clone());
    }
    (n, users.len() as i64, sessions.len() as i64)
}

#[tokio::test]
async fn timeseries_by_hour_and_day_match_the_events() {
    let f = Fixture::new().await;
    let a = org(1);
    let from = f.day0 + Duration::hours(5);
    let to = f.day0 + Duration::hours(53);
    for (g, step) in [("hour", Duration::hours(1)), ("day", Duration::days(1))] {
        for et in [None, Some("page")] {
            let mut uri = path(
                a,
                &format!(
                    "timeseries?from={}&to={}&granularity={g}",
                    rfc(from),
                    ms(to)
                ),
            );
            if let Some(t) = et {
                uri.push_str(&format!("&event_type={t}"));
            }
            let body = f.ok(&uri, TOKEN_A).await;
            assert_eq!(body["org_id"], json!(a.to_string()));
            assert_eq!(body["from"], json!(rfc(from)));
            assert_eq!(body["to"], json!(rfc(to)));
            assert_eq!(body["granularity"], json!(g));
            assert_eq!(body["event_type"], json!(et));
            let points = body["points"].as_array().unwrap();
            // Buckets start at `from` rounded down to the bucket.
            let first = if g == "day" { f.day0 } else { from };
            let expected_len =
                ((to - first).num_seconds() + step.num_seconds() - 1) / step.num_seconds();
            assert_eq!(points.len() as i64, expected_len, "{g}");
            for (i, p) in points.iter().enumerate() {
                let t0 = first + step * i as i32;
                let evs: Vec<&Ev> = f
                    .of(a)
                    .into_iter()
                    .filter(|e| e.ts >= t0 && e.ts < t0 + step)
                    .filter(|e| et.is_none_or(|t| e.event_type == t))
                    .collect();
                let (n, u, s) = counts(&evs);
                assert_eq!(p["t"], json!(rfc(t0)));
                assert_eq!(
                    (
                        p["events"].as_i64(),
                        p["unique_users"].as_i64(),
                        p["unique_sessions"].as_i64()
                    ),
                    (Some(n), Some(u), Some(s)),
                    "{g} {et:?} bucket {t0}"
                );
            }
            let total: i64 = points.iter().map(|p| p["events"].as_i64().unwrap()).sum();
            assert!(total > 100, "{g}: only {total} events in the range");
        }
    }
    // The admin token reads any org.
    let b = org(2);
    let body = f
        .ok(
            &path(
                b,
                &format!(
                    "timeseries?from={}&to={}&granularity=day",
                    ms(f.day0),
                    ms(f.day0 + Duration::days(3))
                ),
            ),
            ADMIN,
        )
        .await;
    let total: i64 = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["events"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 300);
}

#[tokio::test]
async fn top_events_unique_users_and_counters_match_the_events() {
    let f = Fixture::new().await;
    let a = org(1);
    let day1 = f.day0 + Duration::days(1);
    let date = day1.format("%Y-%m-%d").to_string();
    let body = f
        .ok(
            &path(a, &format!("top-events?date={date}&limit=3")),
            TOKEN_A,
        )
        .await;
    let mut by_name: BTreeMap<String, i64> = BTreeMap::new();
    for e in f
        .of(a)
        .into_iter()
        .filter(|e| e.ts >= day1 && e.ts < day1 + Duration::days(1))
    {
        *by_name.entry(e.event_name.clone()).or_default() += 1;
    }
    let mut want: Vec<(String, i64)> = by_name.into_iter().collect();
    want.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    want.truncate(3);
    assert_eq!(body["date"], json!(date));
    assert_eq!(
        body["events"],
        json!(want
            .iter()
            .map(|(n, c)| json!({"event_name": n, "count": c}))
            .collect::<Vec<_>>())
    );

    // Unique users over two and a half days: a union, not a sum.
    let from = f.day0 + Duration::hours(12);
    let to = f.day0 + Duration::days(3);
    let body = f
        .ok(
            &path(
                a,
                &format!("unique-users?from={}&to={}", rfc(from), rfc(to)),
            ),
            TOKEN_A,
        )
        .await;
    let evs: Vec<&Ev> = f
        .of(a)
        .into_iter()
        .filter(|e| e.ts >= from && e.ts < to)
        .collect();
    let (_, u, s) = counts(&evs);
    assert_eq!(body["unique_users"], json!(u));
    assert_eq!(body["unique_sessions"], json!(s));
    assert_eq!(body["exact"], json!(true));
    assert_eq!(body["from"], json!(rfc(from)));

    // Counters: the 5-minute window at the worker's clock, the one before, and today.
    let body = f.ok(&path(a, "counters"), TOKEN_A).await;
    let now_s = f.now.timestamp();
    let window = |lo: i64, hi: i64| -> (i64, i64) {
        let evs: Vec<&Ev> = f
            .of(a)
            .into_iter()
            .filter(|e| e.ts.timestamp() > lo && e.ts.timestamp() <= hi)
            .collect();
        let (n, u, _) = counts(&evs);
        (n, u)
    };
    let (e5, u5) = window(now_s - 300, now_s);
    let (pe5, pu5) = window(now_s - 600, now_s - 300);
    assert!(e5 > 0 && pe5 > 0);
    assert_eq!(body["events_5m"], json!(e5));
    assert_eq!(body["active_users_5m"], json!(u5));
    assert_eq!(body["prev_events_5m"], json!(pe5));
    assert_eq!(body["prev_active_users_5m"], json!(pu5));
    assert_eq!(
        body["windows"],
        json!([{"window_seconds": 300, "events": e5, "active_users": u5, "prev_events": pe5, "prev_active_users": pu5}])
    );
    let today = Utc::now().date_naive();
    if today == f.now.date_naive() {
        let evs: Vec<&Ev> = f
            .of(a)
            .into_iter()
            .filter(|e| e.ts.date_naive() == today)
            .collect();
        let (n, u, _) = counts(&evs);
        assert_eq!(body["events_today"], json!(n));
        assert_eq!(body["unique_users_today"], json!(u));
    }
    assert!(body["updated_at"].is_string(), "{body}");

    // An org known only by its token: zeros, not 404.
    let body = f.ok(&path(org(4), "counters"), TOKEN_D).await;
    assert_eq!(body["events_5m"], json!(0));
    assert_eq!(body["updated_at"], Json::Null);
}

#[tokio::test]
async fn recent_events_are_the_newest_first_with_every_field() {
    let f = Fixture::new().await;
    let a = org(1);
    let body = f.ok(&path(a, "events/recent?limit=7"), TOKEN_A).await;
    let mut want: Vec<&Ev> = f.of(a);
    want.sort_by_key(|e| std::cmp::Reverse(e.ts));
    let got = body["events"].as_array().unwrap();
    assert_eq!(got.len(), 7);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["timestamp"], json!(rfc(w.ts)));
    }
    let e = f
        .events
        .iter()
        .find(|e| e.id.to_string() == got[0]["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        got[0],
        json!({
            "id": e.id.to_string(), "org_id": a.to_string(), "event_type": e.event_type,
            "event_name": e.event_name, "user_id": e.user, "session_id": e.session,
            "properties": {"n": e.offset, "note": "a,b \"q\""}, "timestamp": rfc(e.ts),
            "topic": "events", "partition": e.offset % 3, "offset": e.offset,
            "ingested_at": got[0]["ingested_at"],
        })
    );
    assert!(got[0]["ingested_at"].as_str().unwrap().ends_with('Z'));
    // Default limit 100.
    let body = f.ok(&path(a, "events/recent"), TOKEN_A).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn bad_parameters_get_400_naming_the_parameter_and_value() {
    let f = Fixture::new().await;
    let a = org(1);
    let cases = [
        (
            "timeseries?from=yesterday&to=1000",
            "bad_parameter",
            "from",
            "yesterday",
        ),
        (
            "timeseries?from=1000&to=2026-13-01T00:00:00Z",
            "bad_parameter",
            "to",
            "2026-13-01T00:00:00Z",
        ),
        ("timeseries?to=1000", "bad_parameter", "from", ""),
        (
            "timeseries?from=5000&to=1000",
            "bad_parameter",
            "to",
            "1000",
        ),
        (
            "timeseries?from=0&to=1000&granularity=week",
            "bad_parameter",
            "granularity",
            "week",
        ),
        (
            "timeseries?from=0&to=34646400001",
            "range_too_large",
            "to",
            "34646400001",
        ),
        (
            "unique-users?from=0&to=34646400001",
            "range_too_large",
            "to",
            "34646400001",
        ),
        (
            "export?from=0&to=34646400001",
            "range_too_large",
            "to",
            "34646400001",
        ),
        (
            "export?from=0&to=1000&format=xml",
            "bad_parameter",
            "format",
            "xml",
        ),
        (
            "top-events?date=2026-11-31",
            "bad_parameter",
            "date",
            "2026-11-31",
        ),
        (
            "top-events?date=27/11/2026",
            "bad_parameter",
            "date",
            "27/11/2026",
        ),
        ("top-events?limit=0", "bad_parameter", "limit", "0"),
        ("events/recent?limit=1001", "bad_parameter", "limit", "1001"),
        ("events/recent?limit=ten", "bad_parameter", "limit", "ten"),
        ("dashboards/not-a-uuid", "bad_parameter", "id", "not-a-uuid"),
    ];
    for (rest, code, param, value) in cases {
        let (s, body) = f.get(&path(a, rest), Some(TOKEN_A)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{rest}: {body}");
        assert_eq!(body["error"]["code"], json!(code), "{rest}: {body}");
        assert_eq!(body["error"]["parameter"], json!(param), "{rest}: {body}");
        assert_eq!(body["error"]["value"], json!(value), "{rest}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(param) && msg.contains(value), "{rest}: {msg}");
    }
    // The exact message of docs/API.md.
    let (_, body) = f
        .get(&path(a, "unique-users?from=yesterday&to=1"), Some(TOKEN_A))
        .await;
    assert_eq!(
        body,
        json!({"error": {"code": "bad_parameter",
            "message": "parameter 'from': 'yesterday' is not an RFC 3339 time or epoch milliseconds",
            "parameter": "from", "value": "yesterday"}})
    );
    // 400 days is allowed (the default max), one millisecond more is not.
    let (s, _) = f
        .get(
            &path(a, "unique-users?from=0&to=34560000000"),
            Some(TOKEN_A),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // An org that is not a UUID.
    let (s, body) = f.get("/api/v1/orgs/acme/counters", Some(ADMIN)).await;
    assert_eq!(
        (s, &body["error"]["parameter"]),
        (StatusCode::BAD_REQUEST, &json!("org"))
    );
}

/// Every REST route, as (method, path after the org, body).
fn every_route() -> Vec<(Method, &'static str, Option<Json>)> {
    let dash = json!({"name": "x", "widgets": []});
    vec![
        (Method::GET, "timeseries?from=0&to=3600000", None),
        (Method::GET, "top-events?date=2026-11-10", None),
        (Method::GET, "unique-users?from=0&to=3600000", None),
        (Method::GET, "counters", None),
        (Method::GET, "events/recent", None),
        (Method::GET, "export?from=0&to=3600000", None),
        (Method::GET, "dashboards", None),
        (Method::POST, "dashboards", Some(dash.clone())),
        (
            Method::GET,
            "dashboards/00000000-0000-4000-8000-000000000000",
            None,
        ),
        (
            Method::PUT,
            "dashboards/00000000-0000-4000-8000-000000000000",
            Some(dash),
        ),
        (
            Method::DELETE,
            "dashboards/00000000-0000-4000-8000-000000000000",
            None,
        ),
    ]
}

#[tokio::test]
async fn tokens_are_checked_on_every_route() {
    let f = Fixture::new().await;
    let (a, b) = (org(1), org(2));
    for (m, rest, body) in every_route() {
        let uri = path(a, rest);
        let expect = |s: StatusCode, code: &str, out: (StatusCode, HeaderMap, Vec<u8>)| {
            let j: Json = serde_json::from_slice(&out.2).unwrap();
            assert_eq!(
                (out.0, j["error"]["code"].as_str()),
                (s, Some(code)),
                "{m} {rest}"
            );
        };
        expect(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            f.send(m.clone(), &uri, None, body.clone()).await,
        );
        expect(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            f.send(m.clone(), &uri, Some("nope"), body.clone()).await,
        );
        // Org B's token on org A's data.
        expect(
            StatusCode::FORBIDDEN,
            "forbidden",
            f.send(m.clone(), &uri, Some(TOKEN_B), body.clone()).await,
        );
        // An org nobody knows: 404 for the admin, 403 for an org token.
        let unknown = path(org(99), rest);
        expect(
            StatusCode::NOT_FOUND,
            "not_found",
            f.send(m.clone(), &unknown, Some(ADMIN), body.clone()).await,
        );
        expect(
            StatusCode::FORBIDDEN,
            "forbidden",
            f.send(m.clone(), &unknown, Some(TOKEN_A), body.clone())
                .await,
        );
        let _ = b;
    }
    // Other spellings of a bad header.
    for h in ["Basic dG9rZW4=", "Bearer", "Bearer  ", TOKEN_A] {
        let req = Request::get(path(a, "counters"))
            .header(header::AUTHORIZATION, h)
            .body(Body::empty())
            .unwrap();
        let resp = f.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{h}");
    }
    // Org C has events but no token: the admin reads it.
    f.ok(&path(org(3), "counters"), ADMIN).await;
}

#[tokio::test]
async fn auth_disabled_lets_anyone_read_known_orgs() {
    let f = Fixture::with(|c| c.auth.enabled = false).await;
    let (s, _) = f.get(&path(org(3), "counters"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = f.get(&path(org(1), "counters"), Some("anything")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = f.get(&path(org(99), "counters"), None).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn an_org_token_never_reads_another_orgs_data() {
    let f = Fixture::new().await;
    let (a, b) = (org(1), org(2));
    let a_ids: HashSet<String> = f.of(a).iter().map(|e| e.id.to_string()).collect();
    let range = format!("from={}&to={}", ms(f.day0), ms(f.now + Duration::hours(1)));

    // Everything A's token reads under A's path is A's.
    let recent = f.ok(&path(a, "events/recent?limit=1000"), TOKEN_A).await;
    let ids: Vec<&str> = recent["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), a_ids.len());
    assert!(ids.iter().all(|i| a_ids.contains(*i)));
    let (s, _, body) = f
        .send(
            Method::GET,
            &path(a, &format!("export?{range}")),
            Some(TOKEN_A),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let lines: Vec<Json> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), a_ids.len());
    assert!(lines.iter().all(|e| e["org_id"] == json!(a.to_string())));
    let ts = f
        .ok(
            &path(a, &format!("timeseries?{range}&granularity=day")),
            TOKEN_A,
        )
        .await;
    let total: i64 = ts["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["events"].as_i64().unwrap())
        .sum();
    assert_eq!(total, a_ids.len() as i64);
    let top = f
        .ok(&path(a, "top-events?date=2026-11-10&limit=100"), TOKEN_A)
        .await;
    let n: i64 = top["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["count"].as_i64().unwrap())
        .sum();
    let want = f
        .of(a)
        .iter()
        .filter(|e| e.ts.date_naive() == f.day0.date_naive())
        .count();
    assert_eq!(n, want as i64);

    // B's dashboard is invisible through A's path, even by id, and A cannot touch it.
    let (s, _, created) = f
        .send(
            Method::POST,
            &path(b, "dashboards"),
            Some(TOKEN_B),
            Some(json!({"name": "B's", "widgets": []})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = serde_json::from_slice::<Json>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = f.ok(&path(a, "dashboards"), TOKEN_A).await;
    assert_eq!(list["dashboards"], json!([]));
    for m in [Method::GET, Method::PUT, Method::DELETE] {
        let body = (m == Method::PUT).then(|| json!({"name": "mine", "widgets": []}));
        let (s, _, _) = f
            .send(
                m.clone(),
                &path(a, &format!("dashboards/{id}")),
                Some(TOKEN_A),
                body.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m}");
        let (s, _, _) = f
            .send(
                m.clone(),
                &path(b, &format!("dashboards/{id}")),
                Some(TOKEN_A),
                body,
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m}");
    }
    let (s, got) = f
        .get(&path(b, &format!("dashboards/{id}")), Some(TOKEN_B))
        .await;
    assert_eq!((s, got["name"].as_str()), (StatusCode::OK, Some("B's")));
}

#[tokio::test]
async fn dashboards_crud_with_widget_validation() {
    let f = Fixture::new().await;
    let a = org(1);
    let widgets = json!([
        {"id": "w1", "kind": "stat", "metric": "events_5m", "x": 0, "y": 0, "w": 3, "h": 2},
        {"id": "w2", "kind": "line", "title": "Events", "x": 3, "y": 0, "w": 9, "h": 5},
        {"id": "w3", "kind": "recent", "x": 0, "y": 5, "w": 12, "h": 4},
    ]);
    let mut ids = Vec::new();
    for name in ["Zeta", "Alpha"] {
        let (s, _, body) = f
            .send(
                Method::POST,
                &path(a, "dashboards"),
                Some(TOKEN_A),
                Some(json!({"name": name, "widgets": widgets})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let d: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(d["name"], json!(name));
        assert_eq!(d["org_id"], json!(a.to_string()));
        assert_eq!(d["widgets"], widgets);
        assert_eq!(d["created_at"], d["updated_at"]);
        ids.push(d["id"].as_str().unwrap().to_string());
    }
    let list = f.ok(&path(a, "dashboards"), TOKEN_A).await;
    let names: Vec<&str> = list["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Alpha", "Zeta"]);

    let one = f
        .ok(&path(a, &format!("dashboards/{}", ids[0])), TOKEN_A)
        .await;
    assert_eq!(one["name"], json!("Zeta"));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (s, _, body) = f
        .send(
            Method::PUT,
            &path(a, &format!("dashboards/{}", ids[0])),
            Some(TOKEN_A),
            Some(json!({"name": "Omega", "widgets": [widgets[1]]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let put: Json = serde_json::from_slice(&body).unwrap();
    assert_eq!(put["created_at"], one["created_at"]);
    assert_ne!(put["updated_at"], one["updated_at"]);
    let again = f
        .ok(&path(a, &format!("dashboards/{}", ids[0])), TOKEN_A)
        .await;
    assert_eq!(again, put);
    assert_eq!(again["widgets"], json!([widgets[1]]));

    let (s, _, body) = f
        .send(
            Method::DELETE,
            &path(a, &format!("dashboards/{}", ids[0])),
            Some(TOKEN_A),
            None,
        )
        .await;
    assert_eq!((s, body.len()), (StatusCode::NO_CONTENT, 0));
    for m in [Method::GET, Method::DELETE] {
        let (s, _, _) = f
            .send(
                m,
                &path(a, &format!("dashboards/{}", ids[0])),
                Some(TOKEN_A),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let (s, _, _) = f
        .send(
            Method::PUT,
            &path(a, &format!("dashboards/{}", ids[0])),
            Some(TOKEN_A),
            Some(json!({"name": "x", "widgets": []})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        f.ok(&path(a, "dashboards"), TOKEN_A).await["dashboards"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Validation: each bad body names the field and its value; nothing is written.
    let w = |patch: Json| {
        let mut base = json!({"id": "w1", "kind": "line", "x": 0, "y": 0, "w": 6, "h": 4});
        for (k, v) in patch.as_object().unwrap() {
            base[k] = v.clone();
        }
        json!({"name": "D", "widgets": [base]})
    };
    let too_many: Vec<Json> = (0..51)
        .map(|i| json!({"id": format!("w{i}"), "kind": "bar", "x": 0, "y": i, "w": 1, "h": 1}))
        .collect();
    let cases = [
        (w(json!({"x": 7})), "widgets[0].w", "6"),
        (w(json!({"w": 0})), "widgets[0].w", "0"),
        (w(json!({"h": -1})), "widgets[0].h", "-1"),
        (w(json!({"x": 1.5})), "widgets[0].x", "1.5"),
        (w(json!({"kind": "pie"})), "widgets[0].kind", "pie"),
        (w(json!({"kind": "stat"})), "widgets[0].metric", "null"),
        (
            w(json!({"kind": "stat", "metric": "revenue"})),
            "widgets[0].metric",
            "revenue",
        ),
        (
            w(json!({"metric": "events_5m"})),
            "widgets[0].metric",
            "events_5m",
        ),
        (w(json!({"id": ""})), "widgets[0].id", ""),
        (w(json!({"title": 5})), "widgets[0].title", "5"),
        (w(json!({"extra": true})), "widgets[0].extra", "true"),
        (
            json!({"name": "D", "widgets": [widgets[0], widgets[0]]}),
            "widgets[1].id",
            "w1",
        ),
        (json!({"name": "", "widgets": []}), "name", ""),
        (
            json!({"name": "n".repeat(101), "widgets": []}),
            "name",
            &"n".repeat(101),
        ),
        (json!({"name": "D"}), "widgets", "null"),
        (
            json!({"name": "D", "widgets": too_many}),
            "widgets",
            "51 widgets",
        ),
        (
            json!({"name": "D", "widgets": [], "owner": "me"}),
            "owner",
            "me",
        ),
        (
            json!(["not", "an", "object"]),
            "body",
            "[\"not\",\"an\",\"object\"]",
        ),
    ];
    for (body, param, value) in cases {
        for (m, uri) in [
            (Method::POST, path(a, "dashboards")),
            (Method::PUT, path(a, &format!("dashboards/{}", ids[1]))),
        ] {
            let (s, _, out) = f
                .send(m.clone(), &uri, Some(TOKEN_A), Some(body.clone()))
                .await;
            let j: Json = serde_json::from_slice(&out).unwrap();
            assert_eq!(s, StatusCode::BAD_REQUEST, "{m} {body}: {j}");
            assert_eq!(j["error"]["parameter"], json!(param), "{body}: {j}");
            assert_eq!(j["error"]["value"], json!(value), "{body}: {j}");
        }
    }
    // Not JSON at all.
    let req = Request::post(path(a, "dashboards"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN_A}"))
        .body(Body::from("{name"))
        .unwrap();
    let resp = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let list = f.ok(&path(a, "dashboards"), TOKEN_A).await;
    assert_eq!(list["dashboards"].as_array().unwrap().len(), 1);
    assert_eq!(list["dashboards"][0]["name"], json!("Alpha"));
    assert_eq!(f.store.scan_all("Dashboard").unwrap().len(), 1);
}

/// A minimal RFC 4180 reader (quoted fields, doubled quotes, CRLF records).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn export_streams_ndjson_and_csv_across_pages() {
    let f = Fixture::new().await;
    // Org A gets 2,500 more events, 1,200 of them at one instant, so pages (1,000 events)
    // start and end inside a run of equal timestamps.
    let a = org(1);
    let t = f.day0 + Duration::hours(30);
    let mut rng = StdRng::seed_from_u64(5);
    let mut extra = random_events(&mut rng, a, 2500, f.day0, 86_400);
    for e in extra.iter_mut().take(1200) {
        e.ts = t;
    }
    for chunk in extra.chunks(500) {
        let mut b = WriteBatch::new();
        for e in chunk {
            b.insert("Event", e.row());
        }
        f.store.write_blocking(b).unwrap();
    }
    let mut all: Vec<Ev> = f.of(a).into_iter().cloned().chain(extra).collect();
    let from = f.day0 + Duration::hours(2);
    let to = f.day0 + Duration::hours(50);
    all.retain(|e| e.ts >= from && e.ts < to);
    all.sort_by_key(|e| e.ts);
    assert!(all.len() > 2000);

    let uri = path(a, &format!("export?from={}&to={}", rfc(from), rfc(to)));
    let (s, h, body) = f.send(Method::GET, &uri, Some(TOKEN_A), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/x-ndjson");
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), all.len());
    let got_ids: HashSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(got_ids.len(), all.len(), "an event was sent twice");
    for id in all.iter().map(|e| e.id.to_string()) {
        assert!(got_ids.contains(id.as_str()), "{id} missing");
    }
    let stamps: Vec<&str> = lines
        .iter()
        .map(|l| l["timestamp"].as_str().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "not in time order");
    assert_eq!(
        stamps.iter().filter(|s| **s == rfc(t)).count(),
        1200 + f.of(a).iter().filter(|e| e.ts == t).count()
    );
    let e = &all[0];
    let first = lines
        .iter()
        .find(|l| l["id"] == json!(e.id.to_string()))
        .unwrap();
    assert_eq!(first["event_name"], json!(e.event_name));
    assert_eq!(first["properties"]["note"], json!("a,b \"q\""));

    let (s, h, body) = f
        .send(
            Method::GET,
            &format!("{uri}&format=csv"),
            Some(TOKEN_A),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(h[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains(".csv"));
    let rows = parse_csv(&String::from_utf8(body).unwrap());
    assert_eq!(
        rows[0],
        [
            "id",
            "org_id",
            "event_type",
            "event_name",
            "user_id",
            "session_id",
            "timestamp",
            "topic",
            "partition",
            "offset",
            "ingested_at",
            "properties"
        ]
    );
    assert_eq!(rows.len(), all.len() + 1);
    let by_id: HashMap<String, &Ev> = all.iter().map(|e| (e.id.to_string(), e)).collect();
    for r in &rows[1..] {
        assert_eq!(r.len(), 12);
        let e = by_id[&r[0]];
        assert_eq!(r[1], a.to_string());
        assert_eq!(r[3], e.event_name);
        assert_eq!(r[4], e.user.clone().unwrap_or_default());
        assert_eq!(r[6], rfc(e.ts));
        assert_eq!(r[9], e.offset.to_string());
        let props: Json = serde_json::from_str(&r[11]).unwrap();
        assert_eq!(props, json!({"n": e.offset, "note": "a,b \"q\""}));
    }

    // An empty range: an empty NDJSON body, a CSV with only its header.
    let empty = path(a, "export?from=1000&to=2000");
    let (s, _, body) = f.send(Method::GET, &empty, Some(TOKEN_A), None).await;
    assert_eq!((s, body.len()), (StatusCode::OK, 0));
    let (_, _, body) = f
        .send(
            Method::GET,
            &format!("{empty}&format=csv"),
            Some(TOKEN_A),
            None,
        )
        .await;
    assert_eq!(parse_csv(&String::from_utf8(body).unwrap()).len(), 1);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let f = Fixture::new().await;
    let (s, _, body) = f.send(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, b"ok".as_slice()));

    let (s, body) = f.get("/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["ready"], json!(false));
    assert_eq!(body["failing"], json!(["partitions_assigned"]));
    f.metrics.assigned_partitions.set(2);
    let (s, body) = f.get("/readyz", None).await;
    assert_eq!((s, &body["failing"]), (StatusCode::OK, &json!([])));
    // Events waiting and no flush for a minute: not ready, and the body says why.
    let now = Utc::now().timestamp_millis();
    f.metrics.total_lag.store(500, Ordering::Relaxed);
    f.metrics
        .last_flush_ok_ms
        .store(now - 60_000, Ordering::Relaxed);
    f.metrics
        .newest_event_ms
        .store(now - 1_000, Ordering::Relaxed);
    let (s, body) = f.get("/readyz", None).await;
    assert_eq!(
        (s, &body["failing"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!(["flush"]))
    );
    f.metrics.last_flush_ok_ms.store(now, Ordering::Relaxed);
    f.metrics.total_lag.store(1_000_000, Ordering::Relaxed);
    let (_, body) = f.get("/readyz", None).await;
    assert_eq!(body["failing"], json!(["lag"]));
    let lag = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lag")
        .unwrap()
        .clone();
    assert!(lag["detail"].as_str().unwrap().contains("1000000"), "{lag}");

    f.ok(&path(org(1), "counters"), TOKEN_A).await;
    f.get(&path(org(1), "counters"), Some(TOKEN_B)).await;
    let (s, h, body) = f.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(body).unwrap();
    for want in [
        "streamtally_http_request_seconds_count{route=\"/api/v1/orgs/{org}/counters\",method=\"GET\",status=\"200\"} 1",
        "streamtally_http_request_seconds_count{route=\"/api/v1/orgs/{org}/counters\",method=\"GET\",status=\"403\"} 1",
        "streamtally_http_request_seconds_count{route=\"/readyz\",method=\"GET\",status=\"503\"} 3",
        "streamtally_assigned_partitions 2",
    ] {
        assert!(text.contains(want), "{want} missing in:\n{text}");
    }
    assert!(!text.contains(TOKEN_A) && !text.contains(&org(1).to_string()));
}

#[tokio::test]
async fn unknown_routes_methods_and_cors() {
    let f =
        Fixture::with(|c| c.gateway.cors_allowed_origins = vec!["https://dash.example.com".into()])
            .await;
    let (s, body) = f.get("/api/v1/nothing", Some(TOKEN_A)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _, body) = f
        .send(
            Method::PATCH,
            &path(org(1), "counters"),
            Some(TOKEN_A),
            None,
        )
        .await;
    let j: Json = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, j["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(path(org(1), "counters"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
            .body(Body::empty())
            .unwrap()
    };
    let resp = f
        .app
        .clone()
        .oneshot(preflight("https://dash.example.com"))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://dash.example.com"
    );
    let resp = f
        .app
        .clone()
        .oneshot(preflight("https://evil.example.com"))
        .await
        .unwrap();
    assert!(resp
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
    let req = Request::get(path(org(1), "counters"))
        .header(header::ORIGIN, "https://dash.example.com")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN_A}"))
        .body(Body::empty())
        .unwrap();
    let resp = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://dash.example.com"
    );

    // Without configured origins no CORS headers are sent.
    let plain = Fixture::new().await;
    let resp = plain
        .app
        .clone()
        .oneshot(preflight("https://dash.example.com"))
        .await
        .unwrap();
    assert!(resp
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
}

#[tokio::test]
async fn serves_on_a_real_socket_and_stops_on_the_shutdown_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Fixture::new().await;
    let listener = streamtally::gateway::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(streamtally::gateway::serve(
        listener,
        f.app.clone(),
        streamtally::gateway::ServeOptions::new(&config().gateway, f.metrics.clone()),
        shutdown.clone(),
    ));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET /api/v1/orgs/{}/counters HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\nConnection: close\r\n\r\n", org(1))
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"events_5m\""), "{out}");

    // A second bind of the same address fails, naming it.
    let e = streamtally::gateway::bind(addr).await.unwrap_err();
    assert!(e.to_string().contains(&addr.to_string()), "{e}");

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_range_within_max_range_days_but_over_the_point_cap_is_too_large() {
    let f = Fixture::with(|c| c.gateway.max_range_days = 1000).await;
    let uri = path(org(1), "timeseries?from=0&to=86400000000&granularity=hour");
    let (s, body) = f.get(&uri, Some(TOKEN_A)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], json!("range_too_large"));
    assert_eq!(body["error"]["value"], json!("86400000000"));
    // By day the same range is fine.
    let uri = path(org(1), "timeseries?from=0&to=86400000000&granularity=day");
    assert_eq!(
        f.ok(&uri, TOKEN_A).await["points"]
            .as_array()
            .unwrap()
            .len(),
        1000
    );
}

/// `streamtally run` as a user starts it: events produced to a real Kafka-protocol broker
/// (Tansu) are served by the gateway on `gateway.listen` with the counts produced, /readyz
/// turns 200, and SIGTERM stops it cleanly.
#[test]
fn streamtally_run_serves_what_it_ingested_over_http() {
    use common::broker::{synth_records, TestBroker};
    let Some(broker) = TestBroker::tansu() else {
        return;
    };
    let topic = broker.new_topic("gateway");
    let mut synth = streamtally::synth::SynthConfig::new(3000);
    synth.orgs = 3;
    synth.users = 300;
    synth.span_days = 2;
    common::broker::produce(
        &broker.bootstrap,
        &topic,
        &synth_records(&synth, 0..3000, 3),
    );

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    let log = dir.path().join("run.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let admin_hash = token_sha256_hex(ADMIN);
    let mut child = common::run::spawn_run(
        &broker.bootstrap,
        &topic,
        &common::broker::random_name("gateway"),
        &store,
        &log,
        &[
            ("STREAMTALLY__GATEWAY__LISTEN", addr.as_str()),
            ("STREAMTALLY__AUTH__ADMIN_TOKEN_SHA256", admin_hash.as_str()),
        ],
    );
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Per org: events and distinct users, from the generator.
    let mut want: HashMap<Uuid, (i64, HashSet<String>)> = HashMap::new();
    for i in 0..3000 {
        let e = streamtally::synth::SynthEvent::generate(&synth, i);
        let slot = want.entry(Uuid::from_bytes(e.org_id)).or_default();
        slot.0 += 1;
        slot.1.insert(e.user_id);
    }
    let from = ms(synth.end - Duration::days(3));
    let to = ms(synth.end + Duration::days(1));
    let started = std::time::Instant::now();
    let total = |o: Uuid| -> Option<i64> {
        let (status, body) = status_body(
            &addr,
            &path(
                o,
                &format!("timeseries?from={from}&to={to}&granularity=day"),
            ),
            Some(ADMIN),
        )?;
        if status != 200 {
            return None;
        }
        let j: Json = serde_json::from_str(&body).ok()?;
        Some(
            j["points"]
                .as_array()?
                .iter()
                .filter_map(|p| p["events"].as_i64())
                .sum(),
        )
    };
    for (o, (n, users)) in &want {
        while total(*o) != Some(*n) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(90),
                "org {o}: timeseries never reached {n} events (last {:?}); log:\n{}",
                total(*o),
                show_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let (status, body) = status_body(
            &addr,
            &path(*o, &format!("unique-users?from={from}&to={to}")),
            Some(ADMIN),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let j: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(j["unique_users"], json!(users.len()), "{o}");
    }
    let (status, _) =
        status_body(&addr, &path(*want.keys().next().unwrap(), "counters"), None).unwrap();
    assert_eq!(status, 401);
    // Ready once partitions are assigned and nothing waits.
    loop {
        let (status, body) = status_body(&addr, "/readyz", None).unwrap();
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "never ready: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (status, metrics) = status_body(&addr, "/metrics", None).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("streamtally_events_stored_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("streamtally_http_request_seconds_bucket"),
        "{metrics}"
    );

    let status = common::run::sigterm(&mut child);
    assert!(status.success(), "exit {status:?}; log:\n{}", show_log());
    assert!(status_body(&addr, "/healthz", None).is_none());
}

#[tokio::test]
async fn metrics_follow_the_metrics_section() {
    let f = Fixture::with(|c| c.metrics.path = "/internal/prom".into()).await;
    let (s, _, body) = f.send(Method::GET, "/internal/prom", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("streamtally_assigned_partitions 0"));
    let (s, _) = f.get("/metrics", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let off = Fixture::with(|c| c.metrics.enabled = false).await;
    let (s, body) = off.get("/metrics", None).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn a_store_failure_is_a_500_without_details() {
    let f = Fixture::new().await;
    f.store.close().unwrap();
    let (s, _, body) = f
        .send(
            Method::POST,
            &path(org(1), "dashboards"),
            Some(TOKEN_A),
            Some(json!({"name": "x", "widgets": []})),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let j: Json = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        j,
        json!({"error": {"code": "internal", "message": "internal error"}})
    );
}
