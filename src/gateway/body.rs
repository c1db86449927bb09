//! Request bodies: the JSON body extractor of the routes that take one (dashboards), so
//! that a body too large (413) or not declared JSON (415) gets the JSON error body of
//! docs/API.md like every other refusal, rather than axum's plain-text rejection.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::header;

/// Largest request body, in bytes (axum's default, set by [`super::router`]; a dashboard of
/// 50 widgets is a few KiB).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// A request body meant to be JSON, as bytes (the handler parses and validates it, naming
/// the field at fault). `Content-Type` must be `application/json` or `application/*+json`
/// (parameters such as `charset` allowed), or absent: anything else is a 415. A body over
/// [`MAX_BODY_BYTES`] is a 413.
#[derive(Debug, Clone)]
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let shown = String::from_utf8_lossy(ct.as_bytes()).into_owned();
            if !is_json(&shown) {
                return Err(ApiError::unsupported_media_type(format!(
                    "Content-Type '{shown}' is not JSON: send the body as application/json"
                )));
            }
        }
        Bytes::from_request(req, state)
            .await
            .map(JsonBytes)
            .map_err(|e| match e {
                BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                    ApiError::payload_too_large(format!(
                        "the request body is larger than {MAX_BODY_BYTES} bytes"
                    ))
                }
                other => {
                    ApiError::bad_parameter("body", "", format!("could not be read ({other})"))
                }
            })
    }
}

/// `application/json` or `application/<anything>+json`, with or without parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// A body as a JSON object: a 400 naming `body` when it is not JSON (its first 200 bytes
/// shown) or not an object. The caller checks the fields.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_parameter(
            "body",
            &String::from_utf8_lossy(&body[..body.len().min(200)]),
            format!("is not JSON ({e})"),
        )
    })?;
    match v {
        serde_json::Value::Object(m) => Ok(m),
        other => Err(super::dashboards::bad(
            "body",
            &other,
            "is not a JSON object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
