//! The API contract in machine-readable form: the OpenAPI 3.1 document docs/openapi.yaml,
//! embedded at compile time and served as JSON at `GET /api/v1/openapi.json` (no auth;
//! cacheable: it changes only with the binary). `bash .ci/check-openapi.sh` validates it and
//! runs a property-based tester that reads it against a live gateway.

use super::error::ApiError;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// The document as written (YAML).
pub const SOURCE: &str = include_str!("../../docs/openapi.yaml");

/// How long clients and proxies may keep the document.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The document as JSON text, converted from [`SOURCE`] on first use; the error says why
/// it does not convert (a unit test makes sure it does).
pub fn json() -> Result<&'static str, &'static str> {
    static JSON: OnceLock<Result<String, String>> = OnceLock::new();
    JSON.get_or_init(|| {
        let doc: serde_json::Value =
            serde_norway::from_str(SOURCE).map_err(|e| format!("docs/openapi.yaml: {e}"))?;
        serde_json::to_string(&doc).map_err(|e| format!("docs/openapi.yaml as JSON: {e}"))
    })
    .as_ref()
    .map(String::as_str)
    .map_err(String::as_str)
}

/// `GET /api/v1/openapi.json`
pub async fn document() -> Response {
    match json() {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, CACHE_CONTROL),
            ],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal("the OpenAPI document", e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn doc() -> Value {
        serde_json::from_str(json().expect("docs/openapi.yaml converts to JSON")).unwrap()
    }

    /// The value of a path expression of `routes()`: a literal, a `format!` under
    /// `{org}` (`/api/v1/orgs/{org}`), or one of the constants it uses.
    fn path_of(expr: &str) -> String {
        let expr = expr.trim().trim_start_matches('&');
        if let Some(f) = expr.strip_prefix("format!(\"") {
            let f = f.split("\")").next().unwrap();
            return f
                .replace("{org}", "/api/v1/orgs/{org}")
                .replace("{{", "{")
                .replace("}}", "}");
        }
        if let Some(lit) = expr.strip_prefix('"') {
            return lit.trim_end_matches('"').to_string();
        }
        match expr {
            "group::PARTIALS_PATH" => super::super::group::PARTIALS_PATH.to_string(),
            "relay::STREAM_PATH" => super::super::relay::STREAM_PATH.to_string(),
            "openapi::PATH" => PATH.to_string(),
            "cfg.metrics.path" => crate::config::Config::default().metrics.path,
            other => panic!("routes(): a path expression this test cannot read: {other}"),
        }
    }

    /// Every (path, method) that `routes()` in src/gateway/mod.rs registers, read from its
    /// source, so that a route added there without a path in docs/openapi.yaml fails.
    fn registered() -> BTreeSet<(String, String)> {
        let src = include_str!("mod.rs");
        let body = src
            .split("pub fn routes(")
            .nth(1)
            .and_then(|s| s.split("\n}\n").next())
            .expect("routes() in src/gateway/mod.rs");
        let mut out = BTreeSet::new();
        for call in body.split(".route(").skip(1) {
            let (path_expr, handlers) = match call.find("\")") {
                Some(end) if call.trim_start().starts_with("&format!") => call.split_at(end + 2),
                _ => call.split_once(',').expect("a .route(path, handler) call"),
            };
            let path = path_of(path_expr.trim_end_matches(','));
            let mut methods = 0;
            for m in ["get", "post", "put", "delete"] {
                let needle = format!("{m}(");
                let mut at = 0;
                while let Some(i) = handlers[at..].find(&needle) {
                    let start = at + i;
                    let before = handlers[..start].chars().next_back();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        out.insert((path.clone(), m.to_string()));
                        methods += 1;
                    }
                    at = start + needle.len();
                }
            }
            assert!(methods > 0, "no method read for the route {path}");
        }
        out
    }

    #[test]
    fn the_document_is_openapi_3_1_and_converts_to_json() {
        let d = doc();
        let version = d["openapi"].as_str().unwrap();
        assert!(version.starts_with("3.1."), "{version}");
        assert!(d["info"]["title"].is_string());
        assert!(d["paths"].as_object().is_some_and(|p| !p.is_empty()));
        assert!(d["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
    }

    #[test]
    fn every_public_route_is_in_the_document_and_nothing_else() {
        let routes = registered();
        assert!(routes.len() >= 20, "{routes:?}");
        let public: BTreeSet<(String, String)> = routes
            .into_iter()
            .filter(|(p, _)| !p.starts_with("/internal/") && !p.starts_with("/ws/"))
            .collect();
        let d = doc();
        let documented: BTreeSet<(String, String)> = d["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                    .map(move |m| (path.clone(), m.clone()))
            })
            .collect();
        let undocumented: Vec<_> = public.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&public).collect();
        assert!(
            undocumented.is_empty(),
            "routes without an operation in docs/openapi.yaml: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "operations in docs/openapi.yaml that routes() does not serve: {unserved:?}"
        );
        assert!(public.contains(&(PATH.to_string(), "get".to_string())));
    }

    #[tokio::test]
    async fn the_document_is_served_as_cacheable_json() {
        let r = document().await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[header::CACHE_CONTROL], CACHE_CONTROL);
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        let served: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(served, doc());
    }
}
