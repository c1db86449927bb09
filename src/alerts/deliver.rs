//! Delivery of alert messages: the AlertDelivery rows the evaluator wrote are sent, to the
//! org's WebSocket clients or as a signed webhook POST, retried with a doubling backoff, and
//! their outcome written back (docs/ALERTS.md, "Messages"). Pending rows are picked up
//! again after a restart, so a message is delivered at least once, always with the same
//! body and idempotency key.

use super::rule::{Format, Rule};
use super::{AlertMessage, Hub};
use crate::config::Config;
use crate::metrics::{DeliveryLabel, Metrics};
use crate::stats::StatsError;
use crate::store::{Query, Row, Store, Value, WriteBatch};
use axum::body::Body;
use serde_json::{json, Value as Json};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The header carrying a delivery's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "x-streamtally-idempotency-key";

pub struct Deliverer {
    store: Store,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    hub: Hub,
    written: mpsc::UnboundedReceiver<[u8; 16]>,
}

/// What one attempt came to.
struct Attempt {
    id: [u8; 16],
    channel: &'static str,
    result: Result<Option<u16>, (Option<u16>, String)>,
}

impl Deliverer {
    pub fn new(
        store: Store,
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        hub: Hub,
        written: mpsc::UnboundedReceiver<[u8; 16]>,
    ) -> Deliverer {
        Deliverer {
            store,
            cfg,
            metrics,
            hub,
            written,
        }
    }

    /// Sends what is pending (also what a previous run left), then what the evaluator
    /// writes, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StatsError> {
        let mut due: BinaryHeap<Reverse<(i64, [u8; 16])>> = BinaryHeap::new();
        for r in self
            .store
            .query(&Query::new("AlertDelivery").eq("outcome", Value::String("pending".into())))?
        {
            if let Some(id) = r.id() {
                let at = match r.get("next_attempt_at") {
                    Some(Value::Timestamp(t)) => *t,
                    _ => 0,
                };
                due.push(Reverse((at, id)));
            }
        }
        if !due.is_empty() {
            tracing::info!(
                deliveries = due.len(),
                "alerts: sending the deliveries a previous run left pending"
            );
        }
        let mut running: JoinSet<Attempt> = JoinSet::new();
        let mut in_flight: HashSet<[u8; 16]> = HashSet::new();
        loop {
            let now = chrono::Utc::now().timestamp_micros();
            while let Some(Reverse((at, id))) = due.peek().copied() {
                if at > now {
                    break;
                }
                due.pop();
                if in_flight.insert(id) {
                    if let Some(job) = self.start(id)? {
                        running.spawn(job);
                    } else {
                        in_flight.remove(&id);
                    }
                }
            }
            let wait = due
                .peek()
                .map(|Reverse((at, _))| std::time::Duration::from_micros((at - now).max(0) as u64));
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                id = self.written.recv() => match id {
                    Some(id) => due.push(Reverse((0, id))),
                    None => return Ok(()),
                },
                Some(done) = running.join_next(), if !running.is_empty() => {
                    let Ok(attempt) = done else { continue };
                    in_flight.remove(&attempt.id);
                    if let Some(retry_at) = self.record(attempt).await? {
                        due.push(Reverse(retry_at));
                    }
                }
                _ = sleep_for(wait) => {}
            }
        }
    }

    /// The attempt of delivery `id`, if it is still pending.
    fn start(
        &self,
        id: [u8; 16],
    ) -> Result<Option<impl std::future::Future<Output = Attempt>>, StatsError> {
        let Some(row) = self.store.get("AlertDelivery", &id)? else {
            return Ok(None);
        };
        if text(&row, "outcome") != "pending" {
            return Ok(None);
        }
        let contact = text(&row, "contact");
        let payload = text(&row, "payload");
        let org = match row.get("org_id") {
            Some(Value::Uuid(o)) => *o,
            _ => return Ok(None),
        };
        let key = text(&row, "idempotency_key");
        let webhook = match contact.strip_prefix("webhook ") {
            None => None,
            Some(url) => Some(self.webhook_of(&row, url)?),
        };
        let hub = self.hub.clone();
        let timeout = self.cfg.alerts.webhook_timeout();
        Ok(Some(async move {
            match webhook {
                None => {
                    let _ = hub.messages.send(Arc::new(AlertMessage {
                        org,
                        text: Arc::from(payload.as_str()),
                    }));
                    Attempt {
                        id,
                        channel: "websocket",
                        result: Ok(None),
                    }
                }
                Some(Err(why)) => Attempt {
                    id,
                    channel: "webhook",
                    result: Err((None, why)),
                },
                Some(Ok((url, secret, format, rule))) => {
                    let body = match format {
                        Format::Json => payload,
                        Format::Slack => slack_body(&payload, &rule),
                    };
                    let result = post(&url, &secret, &key, body.into_bytes(), timeout).await;
                    Attempt {
                        id,
                        channel: "webhook",
                        result: result.map(Some),
                    }
                }
            }
        }))
    }

    /// (url, secret, format, rule) of the rule's webhook `url`, or why it has none.
    #[allow(clippy::type_complexity)]
    fn webhook_of(
        &self,
        row: &Row,
        url: &str,
    ) -> Result<Result<(String, String, Format, Rule), String>, StatsError> {
        let Some(Value::Uuid(rule_id)) = row.get("rule_id") else {
            return Ok(Err("the delivery names no rule".into()));
        };
        let Some(rule_row) = self.store.get("AlertRule", rule_id)? else {
            return Ok(Err("the rule was deleted".into()));
        };
        let Ok(rule) = serde_json::from_str::<Rule>(&text(&rule_row, "spec")) else {
            return Ok(Err("the rule is unreadable".into()));
        };
        Ok(match rule.webhooks.iter().find(|w| w.url == url) {
            Some(w) => Ok((w.url.clone(), w.secret.clone(), w.format, rule.clone())),
            None => Err("the rule no longer has this webhook".into()),
        })
    }

    /// Writes an attempt's outcome; returns when to try again, if it is to be retried.
    async fn record(&self, a: Attempt) -> Result<Option<(i64, [u8; 16])>, StatsError> {
        let Some(mut row) = self.store.get("AlertDelivery", &a.id)? else {
            return Ok(None);
        };
        let now = chrono::Utc::now().timestamp_micros();
        let attempts = match row.get("attempts") {
            Some(Value::Int32(n)) => *n + 1,
            _ => 1,
        };
        row.set("attempts", Value::Int32(attempts));
        let (outcome, retry) = match &a.result {
            Ok(status) => {
                row.set("delivered_at", Value::Timestamp(now));
                row.set("next_attempt_at", Value::Null);
                row.set(
                    "last_http_status",
                    status.map_or(Value::Null, |s| Value::Int32(i32::from(s))),
                );
                ("delivered", None)
            }
            Err((status, why)) => {
                row.set("last_error", Value::String(why.clone()));
                row.set(
                    "last_http_status",
                    status.map_or(Value::Null, |s| Value::Int32(i32::from(s))),
                );
                if attempts as u32 >= self.cfg.alerts.webhook_max_attempts {
                    row.set("next_attempt_at", Value::Null);
                    ("failed", None)
                } else {
                    let at = now + self.cfg.alerts.backoff(attempts as u32).as_micros() as i64;
                    row.set("next_attempt_at", Value::Timestamp(at));
                    ("retried", Some((at, a.id)))
                }
            }
        };
        let stored = if outcome == "retried" {
            "pending"
        } else {
            outcome
        };
        row.set("outcome", Value::String(stored.into()));
        if let Err((_, why)) = &a.result {
            tracing::warn!(delivery = %uuid::Uuid::from_bytes(a.id), attempts, error = %why, outcome,
                "alerts: a webhook delivery failed");
        }
        let mut batch = WriteBatch::new();
        batch.update("AlertDelivery", a.id, row);
        match self.store.write(batch).await {
            Ok(_) => {}
            // The rule (and its deliveries) were deleted meanwhile.
            Err(crate::store::StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.metrics
            .alert_deliveries
            .get_or_create(&DeliveryLabel {
                channel: a.channel.into(),
                outcome: outcome.into(),
            })
            .inc();
        Ok(retry)
    }
}

async fn sleep_for(d: Option<std::time::Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn text(row: &Row, f: &str) -> String {
    match row.get(f) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// A Slack incoming-webhook body: `text` ("[FIRING] Checkout spike: events (event_name
/// checkout) over 5m = 812, above 100"), with the whole message alongside.
fn slack_body(payload: &str, rule: &Rule) -> String {
    let m: Json = serde_json::from_str(payload).unwrap_or(Json::Null);
    let text = format!(
        "[{}] {}: {} = {}, {}",
        m["status"].as_str().unwrap_or_default().to_uppercase(),
        rule.name,
        rule.describe_measure(),
        m["value"],
        rule.condition.describe(),
    );
    json!({"text": text, "streamtally": m}).to_string()
}

/// The TLS settings of webhook connections: the system's root certificates.
fn tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("TLS versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// POSTs `body` to `url`, signed; Ok(status) for a 2xx, else the status (if any) and why.
pub async fn post(
    url: &str,
    secret: &str,
    key: &str,
    body: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<u16, (Option<u16>, String)> {
    match tokio::time::timeout(timeout, post_once(url, secret, key, body)).await {
        Ok(r) => r,
        Err(_) => Err((None, format!("no answer within {} ms", timeout.as_millis()))),
    }
}

async fn post_once(
    url: &str,
    secret: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<u16, (Option<u16>, String)> {
    let err = |e: String| (None, e);
    let uri: hyper::Uri = url.parse().map_err(|e| err(format!("bad URL: {e}")))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| err(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let now = chrono::Utc::now().timestamp_millis();
    let request = hyper::Request::post(path)
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("streamtally/", env!("CARGO_PKG_VERSION")),
        )
        .header(IDEMPOTENCY_HEADER, key)
        .header(
            crate::sign::HEADER,
            crate::sign::header_value(secret, now, &body),
        )
        .body(Body::from(body))
        .map_err(|e| err(format!("request: {e}")))?;
    let status = if https {
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|e| err(format!("TLS name {host}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls())
            .connect(name, tcp)
            .await
            .map_err(|e| err(format!("TLS with {host}: {e}")))?;
        send(hyper_util::rt::TokioIo::new(stream), request).await?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request).await?
    };
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err((Some(status), format!("HTTP {status}")))
    }
}

async fn send<T>(io: T, request: hyper::Request<Body>) -> Result<u16, (Option<u16>, String)>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| (None, format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| (None, format!("HTTP: {e}")))?;
    let status = response.status().as_u16();
    // Read (and drop) the answer's body, so the receiver is not cut off mid-write.
    let _ = axum::body::to_bytes(Body::new(response.into_body()), 1 << 20).await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    /// Needs a network path to deb.debian.org (run by hand: `cargo test --lib
    /// https_webhooks -- --ignored`): a TLS handshake against the system's roots.
    #[test]
    #[ignore]
    fn https_webhooks_verify_the_server_with_the_system_roots() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let got = rt.block_on(super::post(
            "https://deb.debian.org/debian/",
            "0123456789abcdef",
            "k:1",
            b"{}".to_vec(),
            std::time::Duration::from_secs(10),
        ));
        eprintln!("https webhook: {got:?}");
        // Any HTTP answer proves the handshake; a TLS or connection error does not.
        match got {
            Ok(status) => assert!(status > 0),
            Err((Some(status), _)) => assert!(status >= 300, "{status}"),
            Err((None, e)) => panic!("{e}"),
        }
    }
}
