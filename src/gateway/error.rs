//! The one error type of the gateway and its JSON body (docs/API.md, "Errors"):
//! `{"error":{"code":..,"message":..,"parameter":..,"value":..}}`. A 5xx body says
//! `internal` and nothing else; the detail goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An answer other than 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The query parameter or body field at fault (400s only).
    pub parameter: Option<String>,
    /// Its value as given (400s and 410s only).
    pub value: Option<String>,
    /// The oldest event time still kept (410 `beyond_retention` only; RFC 3339).
    pub retained_from: Option<String>,
}

impl ApiError {
    /// 400 `bad_parameter`: `parameter` has the unusable `value`; `why` completes
    /// "parameter 'p': 'v' ..." (e.g. "is not a YYYY-MM-DD date").
    pub fn bad_parameter(parameter: &str, value: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_parameter",
            message: format!("parameter '{parameter}': '{value}' {why}"),
            parameter: Some(parameter.to_string()),
            value: Some(value.to_string()),
            retained_from: None,
        }
    }

    /// 400 `bad_parameter` for a required parameter that is absent.
    pub fn missing_parameter(parameter: &str) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_parameter",
            message: format!("parameter '{parameter}' is required"),
            parameter: Some(parameter.to_string()),
            value: Some(String::new()),
            retained_from: None,
        }
    }

    /// 400 `range_too_large`.
    pub fn range_too_large(parameter: &str, value: &str, message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "range_too_large",
            message,
            parameter: Some(parameter.to_string()),
            value: Some(value.to_string()),
            retained_from: None,
        }
    }

    /// 410 `beyond_retention`: raw events of the range `parameter` starts were dropped by
    /// `store.retention.events_days`; the answer would be partial, so there is none.
    pub fn beyond_retention(parameter: &str, value: &str, retained_from: String) -> ApiError {
        ApiError {
            status: StatusCode::GONE,
            code: "beyond_retention",
            message: format!(
                "parameter '{parameter}': '{value}' is before {retained_from}, the oldest event time \
                 the store still keeps raw events from (store.retention.events_days): ask from \
                 {retained_from} on, or read the rollups (timeseries, top-events, unique-users)"
            ),
            parameter: Some(parameter.to_string()),
            value: Some(value.to_string()),
            retained_from: Some(retained_from),
        }
    }

    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::plain(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            message.to_string(),
        )
    }

    pub fn forbidden(message: String) -> ApiError {
        ApiError::plain(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: String) -> ApiError {
        ApiError::plain(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 `payload_too_large`: the request body is over the gateway's limit.
    pub fn payload_too_large(message: String) -> ApiError {
        ApiError::plain(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 415 `unsupported_media_type`: a body that is not declared JSON where JSON is expected.
    pub fn unsupported_media_type(message: String) -> ApiError {
        ApiError::plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 501 `not_implemented`: a feature this configuration does not have.
    pub fn not_implemented(message: String) -> ApiError {
        ApiError::plain(StatusCode::NOT_IMPLEMENTED, "not_implemented", message)
    }

    /// 409 `conflict`: the request is valid but the state refuses it (a limit reached).
    pub fn conflict(message: String) -> ApiError {
        ApiError::plain(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not answer that method".to_string(),
        )
    }

    /// 500 `internal`: logs `detail` (with `%error`) and answers without it.
    pub fn internal(what: &str, detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "gateway: {what} failed");
        ApiError::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error".to_string(),
        )
    }

    fn plain(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            code,
            message,
            parameter: None,
            value: None,
            retained_from: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(p) = self.parameter {
            error["parameter"] = json!(p);
        }
        if let Some(v) = self.value {
            error["value"] = json!(v);
        }
        if let Some(t) = self.retained_from {
            error["retained_from"] = json!(t);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<crate::stats::StatsError> for ApiError {
    fn from(e: crate::stats::StatsError) -> ApiError {
        ApiError::internal("a stats query", e)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::internal("a store read or write", e)
    }
}
