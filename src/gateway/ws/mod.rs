//! `/ws/dashboard`: live push to browsers and users' own WebSocket clients.
//!
//! A connection is authenticated at the upgrade (the `Authorization` header, or `?token=`
//! for browsers) and bound to one org. The server sends `hello`, then every
//! `push_interval_ms` in which something changed an `update` (new events of the org, capped;
//! counters; lag; and, after a `subscribe`, the changed points of the subscribed view).
//! Idle connections only get pings. Commands: `subscribe` (answered with a `snapshot`) and
//! `ping`; anything else gets an `error` and the connection stays open. Oversized messages
//! close with 1009, command floods with 1008, shutdown with 1001.
//!
//! Each client has a bounded send queue drained by its own writer task: when it is full
//! the update is skipped (counted as dropped), and after three skips in a row the client is
//! disconnected. Nothing here ever waits on a client, so a slow one cannot slow ingestion or
//! other clients; new events come from a broadcast channel, drained at each push, where a
//! lagging receiver just loses the oldest batches (also counted).
//!
//! Here: the upgrade ([`dashboard`]) and where sessions run ([`Sessions`]); one client's
//! session in `session`; the subscribed view and the reads the sessions share in `view`.
//! Messages are the types of [`super::wire`].

mod session;
mod view;

pub use view::PushCache;

use super::error::ApiError;
use super::GatewayState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, serde::Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    org: Option<String>,
}

/// `GET /ws/dashboard[?token=..][&org=..]`: 403 for a foreign `Origin`
/// ([`super::check_origin`]), 401/403/404 for the token and org, before the upgrade.
pub async fn dashboard(
    State(st): State<GatewayState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    super::check_origin(&st.cfg.gateway.cors_allowed_origins, &headers)?;
    let principal = if headers.contains_key(axum::http::header::AUTHORIZATION) {
        st.auth.principal(&headers)?
    } else {
        st.auth.principal_of_token(q.token.as_deref())?
    };
    let org = match (q.org.as_deref(), principal) {
        (Some(raw), _) => Uuid::parse_str(raw)
            .map_err(|_| ApiError::bad_parameter("org", raw, "is not a UUID"))?,
        (None, super::auth::Principal::Org(own)) => own,
        (None, _) => return Err(ApiError::missing_parameter("org")),
    };
    principal.may_read(org)?;
    if !st.org_known(org).await? {
        return Err(ApiError::not_found(format!("no org {org}")));
    }
    let limit = usize::try_from(st.cfg.gateway.ws_max_message_bytes).unwrap_or(usize::MAX);
    Ok(ws
        // tungstenite stops at the first frame header or fragment that takes a message over
        // the limit (so no more of it is buffered) with a capacity error, which the session
        // answers with a 1009 Close; the gateway's lingering close discards the rest the
        // client still sends, so that the Close frame reaches it.
        .max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite zero-fills its whole read buffer before every read attempt, and a
        // session's socket is polled on every wake (each batch of live events): with the
        // 128 KiB default, 1,000 sessions spent a third of their CPU in memset. Clients
        // send small commands; larger messages still arrive (the buffer grows for them).
        .read_buffer_size(4096)
        .on_upgrade(move |socket| {
            let sessions = st.sessions.clone();
            sessions.run(session::run(st, org, socket))
        }))
}

/// Where upgraded WebSocket sessions run, and the tracker that lets shutdown wait for their
/// close handshakes. `streamtally run` gives the sessions a runtime of their own, apart from
/// the one that accepts connections and answers REST requests, so a request never queues
/// behind a push tick of 1,000 sessions (the sockets stay registered with the accepting
/// runtime's reactor, which keeps running). By default (router tests) sessions run where
/// they were upgraded.
#[derive(Clone, Default)]
pub struct Sessions {
    runtime: Option<tokio::runtime::Handle>,
    tasks: tokio_util::task::TaskTracker,
}

impl Sessions {
    pub fn on(runtime: tokio::runtime::Handle) -> Self {
        Sessions {
            runtime: Some(runtime),
            tasks: Default::default(),
        }
    }

    async fn run(self, session: impl std::future::Future<Output = ()> + Send + 'static) {
        let session = self.tasks.track_future(session);
        match self.runtime {
            Some(rt) => {
                let _ = rt.spawn(session).await;
            }
            None => session.await,
        }
    }

    /// After the shutdown token is cancelled: waits up to `within` for the sessions to
    /// finish their close handshakes.
    pub async fn closed(&self, within: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok()
    }
}
