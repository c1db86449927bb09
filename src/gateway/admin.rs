//! Admin calls on the running connector (admin token only; anyone with `auth.enabled =
//! false`): deleting a person's events and an online backup of the store.

use super::auth::Principal;
use super::body::JsonBytes;
use super::error::ApiError;
use super::params::Params;
use super::{blocking, GatewayState, OrgAccess};
use crate::store::StoreError;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value as Json_};

/// 403 unless the request carries the admin token.
fn admin_only(principal: Principal, what: &str) -> Result<(), ApiError> {
    match principal {
        Principal::Admin | Principal::Anonymous => Ok(()),
        Principal::Org(_) => Err(ApiError::forbidden(format!(
            "{what} needs the admin token (auth.admin_token_sha256), not an org token"
        ))),
    }
}

fn time_json(us: Option<i64>) -> Json_ {
    us.and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
        .unwrap_or(Json_::Null)
}

/// `DELETE /api/v1/orgs/{org}/users/{user_id}/events[?dry_run=true]`: every stored event of
/// that user in that org, in one atomic write (see `store::blocks::erase`).
pub async fn delete_user_events(
    State(st): State<GatewayState>,
    access: OrgAccess,
    Path((_, user)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Json_>, ApiError> {
    admin_only(access.principal, "deleting a person's events")?;
    let dry_run = match params.get("dry_run") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(v) => {
            return Err(ApiError::bad_parameter(
                "dry_run",
                v,
                "is not 'true' or 'false'",
            ))
        }
    };
    if user.is_empty() {
        return Err(ApiError::bad_parameter("user_id", "", "is empty"));
    }
    let store = st.store.clone();
    let org = access.org_bytes();
    let who = user.clone();
    let erased = blocking(move || store.delete_user_events(org, &who, dry_run)).await??;
    tracing::info!(org = %access.org, events = erased.events, blocks = erased.blocks, dry_run,
        "gateway: a person's events deleted");
    Ok(Json(json!({
        "org_id": access.org.to_string(),
        "user_id": user,
        "dry_run": dry_run,
        "events": erased.events,
        "blocks": erased.blocks,
        "oldest": time_json(erased.oldest),
        "newest": time_json(erased.newest),
    })))
}

/// `GET /api/v1/cluster`: the group's instances and which one owns each partition
/// (`[scale_out]`; see `crate::cluster`). `{"enabled":false}` when scale-out is off.
pub async fn cluster(
    State(st): State<GatewayState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Json_>, ApiError> {
    admin_only(st.auth.principal(&headers)?, "the cluster's membership")?;
    let Some(cluster) = &st.cluster else {
        return Ok(Json(json!({ "enabled": false })));
    };
    let mut answer = serde_json::to_value(cluster.snapshot())
        .map_err(|e| ApiError::internal("the cluster's membership", e))?;
    answer["enabled"] = json!(true);
    Ok(Json(answer))
}

/// A failed backup as an answer: the store refusing `dir` (not empty, inside the store), or
/// `dir` not usable as a directory (a file, under a file, not writable), is a 400 naming it;
/// anything else (a copy or an fsync failing halfway) is a 500.
fn backup_error(dir: &str, path: &std::path::Path, e: StoreError) -> ApiError {
    match e {
        StoreError::Io {
            op: "write a backup",
            source,
            ..
        } => ApiError::bad_parameter("dir", dir, source),
        StoreError::Io {
            op: op @ ("list the backup directory" | "create the backup directory"),
            path: at,
            source,
        } if at == path => {
            ApiError::bad_parameter("dir", dir, format!("cannot be used: {op}: {source}"))
        }
        e => e.into(),
    }
}

/// `POST /api/v1/admin/backup` body `{"dir": "/absolute/path"}`: a consistent copy of the
/// running store in `dir` (new or empty, on the connector's machine; see `store::backup`).
pub async fn backup(
    State(st): State<GatewayState>,
    headers: axum::http::HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Json<Json_>, ApiError> {
    admin_only(st.auth.principal(&headers)?, "a backup")?;
    let text = String::from_utf8_lossy(&body);
    let parsed: Json_ = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_parameter("body", &text, format!("is not JSON ({e})")))?;
    let dir = match parsed.get("dir") {
        None | Some(Json_::Null) => return Err(ApiError::missing_parameter("dir")),
        Some(Json_::String(dir)) => dir.as_str(),
        Some(other) => {
            return Err(ApiError::bad_parameter(
                "dir",
                &other.to_string(),
                "is not a string",
            ))
        }
    };
    let path = std::path::PathBuf::from(dir);
    if !path.is_absolute() {
        return Err(ApiError::bad_parameter(
            "dir",
            dir,
            "is not an absolute path (the connector's working directory is not yours)",
        ));
    }
    let store = st.store.clone();
    let target = path.clone();
    let report = blocking(move || store.backup(&target))
        .await?
        .map_err(|e| backup_error(dir, &path, e))?;
    Ok(Json(json!({
        "dir": report.dir.display().to_string(),
        "commit": report.commit,
        "blocks": report.blocks,
        "block_bytes": report.block_bytes,
        "linked": report.linked,
        "database_keys": report.database_keys,
        "database_bytes": report.database_bytes,
        "wal_bytes": report.wal_bytes,
        "feed_bytes": report.feed_bytes,
        "paused_ms": report.paused.as_millis() as u64,
        "elapsed_ms": report.elapsed.as_millis() as u64,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn io(op: &'static str, path: &str, kind: std::io::ErrorKind) -> StoreError {
        StoreError::Io {
            op,
            path: path.into(),
            source: std::io::Error::new(kind, "os says no"),
        }
    }

    #[test]
    fn an_unusable_backup_dir_is_a_400_naming_it() {
        let dir = "/srv/a-file";
        for op in [
            "write a backup",
            "list the backup directory",
            "create the backup directory",
        ] {
            let e = backup_error(dir, Path::new(dir), io(op, dir, std::io::ErrorKind::Other));
            assert_eq!(e.status, 400, "{op}: {e}");
            assert_eq!(
                (e.parameter.as_deref(), e.value.as_deref()),
                (Some("dir"), Some(dir)),
                "{op}"
            );
            assert!(e.message.contains("os says no"), "{e}");
        }
        // A failure past the directory itself (copying, fsync) is the server's.
        let e = backup_error(
            dir,
            Path::new(dir),
            io(
                "copy a segment",
                "/srv/a-file/wal/1",
                std::io::ErrorKind::Other,
            ),
        );
        assert_eq!(e.status, 500);
    }
}
