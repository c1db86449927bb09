//! The dashboard: frontend/dist (built from frontend/ and committed; CI checks it is up to
//! date) embedded in the binary, so serving it needs no Node.js and no files next to the
//! binary. Asset names carry no content hash, so every answer says `Cache-Control: no-cache`
//! with an ETag: browsers revalidate and get a 304 while nothing changed. Text assets go
//! gzip-compressed to clients that accept it (compressed once, on first request; the
//! dashboard's script is ~150 KB, ~55 KB gzipped), with `Vary: Accept-Encoding` and an ETag
//! of their own.

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
    let mime = mime_of(&name);
    let gz = accepts_gzip(&headers) && is_text(mime);
    let etag = if gz {
        format!("{}-gz\"", etag.trim_end_matches('"'))
    } else {
        etag
    };
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if is_text(mime) {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
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
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if gz {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if method == Method::HEAD {
        return (StatusCode::OK, h).into_response();
    }
    if gz {
        return (StatusCode::OK, h, gzipped(&name, &file.data)).into_response();
    }
    (StatusCode::OK, h, file.data.into_owned()).into_response()
}

fn mime_of(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Worth compressing: text, not images already compressed.
fn is_text(mime: &str) -> bool {
    mime.starts_with("text/") || mime == "image/svg+xml" || mime == "application/json"
}

/// Whether `Accept-Encoding` takes gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// The gzip form of an embedded file, made once per file.
fn gzipped(name: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    static DONE: std::sync::OnceLock<
        parking_lot::Mutex<std::collections::HashMap<String, std::sync::Arc<Vec<u8>>>>,
    > = std::sync::OnceLock::new();
    let done = DONE.get_or_init(Default::default);
    if let Some(z) = done.lock().get(name) {
        return z.to_vec();
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let z = match enc.write_all(data).and_then(|_| enc.finish()) {
        Ok(z) => z,
        Err(_) => return data.to_vec(),
    };
    done.lock()
        .insert(name.to_string(), std::sync::Arc::new(z.clone()));
    z
}

/// Every embedded file's path (for tests and `--help`-style listings).
pub fn files() -> Vec<String> {
    Dist::iter().map(|p| p.into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[tokio::test]
    async fn text_assets_go_gzipped_to_clients_that_take_gzip() {
        let get = |enc: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(e) = enc {
                h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(e).unwrap());
            }
            fallback(Method::GET, Uri::from_static("/"), h)
        };
        let plain = get(None).await;
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let plain_tag = plain.headers()[header::ETAG].clone();
        let plain = axum::body::to_bytes(plain.into_body(), 1 << 24)
            .await
            .unwrap();
        let z = get(Some("br;q=1, gzip;q=0.8")).await;
        assert_eq!(z.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(z.headers()[header::VARY], "accept-encoding");
        assert_ne!(
            z.headers()[header::ETAG],
            plain_tag,
            "each form has its own ETag"
        );
        let z = axum::body::to_bytes(z.into_body(), 1 << 24).await.unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);
        let refused = get(Some("gzip;q=0, identity")).await;
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());
    }
}
