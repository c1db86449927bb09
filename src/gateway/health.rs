//! Unauthenticated operations routes: `/healthz` (the process answers), `/readyz` (the
//! connector keeps up, per `[metrics.readiness]`) and the Prometheus exposition.

use super::GatewayState;
use crate::config::ReadinessConfig;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::atomic::Ordering;

/// `GET /healthz`: 200 `ok` while the process serves requests.
pub async fn healthz() -> &'static str {
    "ok"
}

/// One readiness condition and whether it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The readiness conditions at `now_ms`:
/// - `partitions_assigned`: the consumer holds at least one partition;
/// - `lag`: summed consumer lag <= `max_lag_events`;
/// - `flush`: while events wait (lag > 0), the last successful flush is at most
///   `max_flush_age_ms` old;
/// - `freshness`: while events wait, the newest stored event time is at most
///   `max_freshness_ms` old. With nothing waiting, old data is as fresh as the topic is,
///   so an idle topic does not make the connector unready;
/// - `dead_letters`: no partition is paused at a record whose dead letter the broker has not
///   acknowledged (the detail names each such partition, its offset and what refused it);
/// - `store`: the store accepts writes (`store_fatal`: why it refuses every write until it
///   is reopened, from [`crate::store::Store::fatal_failure`]);
/// - `restoring`: no partition is restoring its history (scale-out: an instance given a
///   partition reads what other instances stored of it first; the detail names each one
///   and the offsets it still reads).
pub fn readiness(
    m: &Metrics,
    r: &ReadinessConfig,
    now_ms: i64,
    store_fatal: Option<&str>,
) -> Vec<Check> {
    let assigned = m.assigned_partitions.get();
    let lag = m.total_lag.load(Ordering::Relaxed);
    let last_flush = m.last_flush_ok_ms.load(Ordering::Relaxed);
    let newest = m.newest_event_ms.load(Ordering::Relaxed);
    let waiting = Waiting { lag, now_ms };
    vec![
        Check {
            name: "partitions_assigned",
            ok: assigned > 0,
            detail: format!("{assigned} partition(s) assigned"),
        },
        Check {
            name: "lag",
            ok: lag <= r.max_lag_events,
            detail: format!("{lag} events behind (max {})", r.max_lag_events),
        },
        waiting.flush(last_flush, r.max_flush_age_ms),
        waiting.freshness(newest, r.max_freshness_ms),
        dead_letters(m, now_ms),
        store(store_fatal),
        restoring(m),
    ]
}

/// `restoring`: no partition is restoring its history.
fn restoring(m: &Metrics) -> Check {
    let list = m.restoring();
    let total: i64 = list.iter().map(|(_, lag)| lag).sum();
    let detail = if list.is_empty() {
        "no partition is restoring its history".to_string()
    } else {
        let each = list
            .iter()
            .map(|((topic, p), lag)| format!("{topic}[{p}] {lag} offsets behind"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "restoring {} partition(s), {total} offsets to read: {each}",
            list.len()
        )
    };
    Check {
        name: "restoring",
        ok: list.is_empty(),
        detail,
    }
}

/// The consumer lag at `now_ms`: `flush` and `freshness` only bind while events wait.
struct Waiting {
    lag: u64,
    now_ms: i64,
}

impl Waiting {
    /// `flush`: the last successful flush (`last_flush`) is at most `max_ms` old.
    fn flush(&self, last_flush: i64, max_ms: u64) -> Check {
        self.check("flush", last_flush, max_ms, "no flush yet", |age| {
            format!("last flush {age} ms ago")
        })
    }

    /// `freshness`: the newest stored event time (`newest`) is at most `max_ms` old.
    fn freshness(&self, newest: i64, max_ms: u64) -> Check {
        self.check("freshness", newest, max_ms, "none stored yet", |age| {
            format!("newest stored event is {age} ms old")
        })
    }

    /// Condition `name`: while events wait, the time `at_ms` is at most `max_ms` old
    /// (`at_ms` 0: not yet, which the detail says as `never`; `aged` words an age).
    fn check(
        &self,
        name: &'static str,
        at_ms: i64,
        max_ms: u64,
        never: &str,
        aged: impl Fn(i64) -> String,
    ) -> Check {
        let lag = self.lag;
        let (ok, detail) = if lag == 0 {
            (true, "no events waiting".to_string())
        } else if at_ms == 0 {
            (false, format!("{lag} events waiting and {never}"))
        } else {
            let age = (self.now_ms - at_ms).max(0);
            (
                age as u64 <= max_ms,
                format!("{} with {lag} events waiting (max {max_ms} ms)", aged(age)),
            )
        };
        Check { name, ok, detail }
    }
}

/// `dead_letters`: no partition waits at a record whose dead letter is unacknowledged.
fn dead_letters(m: &Metrics, now_ms: i64) -> Check {
    let blocked = m.blocked_partitions();
    let detail = if blocked.is_empty() {
        "no partition waits for a dead letter".to_string()
    } else {
        blocked
            .iter()
            .map(|b| {
                format!(
                    "{}[{}] waits at offset {} for its dead letter ({}) since {} ms: {}",
                    b.topic,
                    b.partition,
                    b.offset,
                    b.reason_code,
                    (now_ms - b.since_ms).max(0),
                    b.refusal
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    Check {
        name: "dead_letters",
        ok: blocked.is_empty(),
        detail,
    }
}

/// `store`: the store accepts writes (`store_fatal`: why it does not).
fn store(store_fatal: Option<&str>) -> Check {
    Check {
        name: "store",
        ok: store_fatal.is_none(),
        detail: match store_fatal {
            None => "accepts writes".to_string(),
            Some(why) => format!("refuses writes until reopened: {why}"),
        },
    }
}

/// `GET /readyz`: 200 when every condition holds, else 503; the body lists them all and
/// `failing` names the ones that do not hold.
/// The checks of `/readyz` now, also kept in `streamtally_ready` and
/// `streamtally_readiness_check_failing{check}`.
fn checks_now(st: &GatewayState) -> Vec<Check> {
    let now = chrono::Utc::now().timestamp_millis();
    let store_fatal = st.store.fatal_failure();
    let checks = readiness(
        &st.metrics,
        &st.cfg.metrics.readiness,
        now,
        store_fatal.as_deref(),
    );
    for c in &checks {
        st.metrics
            .readiness_check_failing
            .get_or_create(&crate::metrics::CheckLabel {
                check: c.name.to_string(),
            })
            .set(i64::from(!c.ok));
    }
    st.metrics.ready.set(i64::from(checks.iter().all(|c| c.ok)));
    checks
}

pub async fn readyz(State(st): State<GatewayState>) -> Response {
    let checks = checks_now(&st);
    let ready = checks.iter().all(|c| c.ok);
    let body = json!({
        "ready": ready,
        "failing": checks.iter().filter(|c| !c.ok).map(|c| c.name).collect::<Vec<_>>(),
        "checks": checks.iter().map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
            .collect::<Vec<_>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics` (or `metrics.path`): the Prometheus text exposition.
pub async fn metrics(State(st): State<GatewayState>) -> Response {
    checks_now(&st);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_each_failing_condition() {
        let m = Metrics::new();
        let r = ReadinessConfig::default();
        let failing = |m: &Metrics, now: i64| -> Vec<&'static str> {
            readiness(m, &r, now, None)
                .into_iter()
                .filter(|c| !c.ok)
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(failing(&m, 1_000_000), vec!["partitions_assigned"]);
        m.assigned_partitions.set(3);
        assert!(failing(&m, 1_000_000).is_empty());
        m.total_lag.store(10, Ordering::Relaxed);
        assert_eq!(failing(&m, 1_000_000), vec!["flush", "freshness"]);
        m.last_flush_ok_ms.store(990_000, Ordering::Relaxed);
        m.newest_event_ms.store(995_000, Ordering::Relaxed);
        assert!(failing(&m, 1_000_000).is_empty());
        m.total_lag.store(200_000, Ordering::Relaxed);
        assert_eq!(failing(&m, 2_000_000), vec!["lag", "flush", "freshness"]);
        m.total_lag.store(0, Ordering::Relaxed);
        let store = readiness(&m, &r, 1_000_000, Some("fsync failed"));
        let store: Vec<_> = store.iter().filter(|c| !c.ok).collect();
        assert_eq!(store.len(), 1, "{store:?}");
        assert_eq!(store[0].name, "store");
        assert!(store[0].detail.contains("fsync failed"), "{store:?}");
        // A partition restoring its history (scale-out): not ready, with its lag.
        m.set_restoring(vec![(("events".into(), 4), 1200)]);
        let restoring = readiness(&m, &r, 1_000_000, None);
        let restoring: Vec<_> = restoring.iter().filter(|c| !c.ok).collect();
        assert_eq!(restoring.len(), 1, "{restoring:?}");
        assert_eq!(restoring[0].name, "restoring");
        assert!(
            restoring[0]
                .detail
                .contains("events[4] 1200 offsets behind"),
            "{restoring:?}"
        );
        assert!(m.encode().contains(
            "streamtally_partition_restore_lag_events{topic=\"events\",partition=\"4\"} 1200"
        ));
        m.set_restoring(Vec::new());
        assert!(failing(&m, 1_000_000).is_empty());
        assert!(!m.encode().contains("partition=\"4\"} 1200"));
    }
}
