//! The dashboard: frontend/dist (built from frontend/ and committed; CI checks it is up to
//! date) embedded in the binary, so serving it needs no Node.js and no files next to the
//! binary. Asset names carry no content hash, so every answer says `Cache-Control: no-cache`
//! with an ETag: browsers revalidate and get a 304 while nothing changed.

use super::error::ApiError;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "frontend/dist"]
struct Dist;

/// Serves an embedded file for GET/HEAD (`/` is index.html); every other path, and anything
/// under /api/ or /ws/, is a JSON 404.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path.starts_with("/ws/") {
        return ApiError::not_found("no such route".to_string()).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::method_not_allowed().into_response();
    }
    let wanted = match path.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    let Some(file) = Dist::get(wanted) else {
        return ApiError::not_found("no such route".to_string()).into_response();
    };
    let name = wanted.to_string();
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    let mime = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if method == Method::HEAD {
        return (StatusCode::OK, h).into_response();
    }
    (StatusCode::OK, h, file.data.into_owned()).into_response()
}

/// Every embedded file's path (for tests and `--help`-style listings).
pub fn files() -> Vec<String> {
    Dist::iter().map(|p| p.into_owned()).collect()
}
