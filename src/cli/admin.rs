//! `streamtally store backup DIR` and `streamtally events delete --org ORG --user USER`:
//! on a stopped store directly, or, when a connector holds the store, through that
//! connector's admin API (`gateway.listen`, with the admin token from `--token` or
//! `STREAMTALLY_ADMIN_TOKEN`).

use crate::config::Config;
use crate::schema::Schema;
use crate::store::{Store, StoreOptions};
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// The environment variable the admin token may come from.
pub const TOKEN_ENV: &str = "STREAMTALLY_ADMIN_TOKEN";

/// The store opened exclusively, or None when a running connector holds it.
fn open_or_running(cfg: &Config, schema: &Schema) -> anyhow::Result<Option<Store>> {
    match Store::open(StoreOptions::from_config(&cfg.store), schema) {
        Ok(store) => Ok(Some(store)),
        Err(e) if e.to_string().contains("could not acquire lock") => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("opening the store at {}", cfg.store.path.display()))
        }
    }
}

/// A request to the running connector's gateway; (status, body).
fn call(
    cfg: &Config,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut addr = cfg.gateway.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let token = token
        .map(str::to_string)
        .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()));
    if cfg.auth.enabled && token.is_none() {
        bail!(
            "a connector is running on the store at {} (it holds the store's lock): this goes \
             through its API at {addr}, which needs the admin token: pass --token or set {TOKEN_ENV}",
            cfg.store.path.display()
        );
    }
    let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .with_context(|| {
            format!(
                "a connector holds the store at {} but its gateway at {addr} (gateway.listen) \
                 does not answer",
                cfg.store.path.display()
            )
        })?;
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = &token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr} answered something other than HTTP"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{addr} answered without a status"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    Ok((status, json))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// The API's error message, or the whole body.
fn api_error(status: u16, body: &serde_json::Value) -> anyhow::Error {
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    anyhow::anyhow!("the running connector answered {status}: {message}")
}

/// `streamtally store backup DIR`.
pub fn backup(
    cfg: &Config,
    schema: &Schema,
    dir: &Path,
    token: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    match open_or_running(cfg, schema)? {
        Some(store) => {
            let done = store.backup(&dir);
            store.close()?;
            let r = done?;
            writeln!(
                out,
                "backup of the stopped store {} written to {}: commit {}, {} block files ({} bytes, {} linked), \
                 database {} keys ({} bytes), change feed {} bytes, write-ahead log {} bytes, {} ms",
                cfg.store.path.display(),
                r.dir.display(),
                r.commit,
                r.blocks,
                r.block_bytes,
                r.linked,
                r.database_keys,
                r.database_bytes,
                r.feed_bytes,
                r.wal_bytes,
                r.elapsed.as_millis()
            )?;
        }
        None => {
            let body = serde_json::json!({ "dir": dir.display().to_string() }).to_string();
            let (status, r) = call(cfg, token, "POST", "/api/v1/admin/backup", Some(&body))?;
            if status != 200 {
                return Err(api_error(status, &r));
            }
            writeln!(
                out,
                "backup of the running connector's store written to {}: commit {}, {} block files ({} bytes, {} linked), \
                 database {} keys ({} bytes), change feed {} bytes, write-ahead log {} bytes; writes paused {} ms, {} ms in all",
                r["dir"].as_str().unwrap_or_default(),
                r["commit"],
                r["blocks"],
                r["block_bytes"],
                r["linked"],
                r["database_keys"],
                r["database_bytes"],
                r["feed_bytes"],
                r["wal_bytes"],
                r["paused_ms"],
                r["elapsed_ms"]
            )?;
        }
    }
    writeln!(
        out,
        "restore: stop the connector, point store.path at a copy of that directory (or move it in place), start it"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `streamtally events delete --org ORG --user USER [--dry-run]`.
pub fn delete_user_events(
    cfg: &Config,
    schema: &Schema,
    org: &str,
    user: &str,
    dry_run: bool,
    token: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let org_id =
        uuid::Uuid::parse_str(org).map_err(|_| anyhow::anyhow!("--org: '{org}' is not a UUID"))?;
    if user.is_empty() {
        bail!("--user: the user id is empty");
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    match open_or_running(cfg, schema)? {
        Some(store) => {
            let done = store.delete_user_events(*org_id.as_bytes(), user, dry_run);
            let caught_up = match &done {
                // The rollups take the removals now, while the store is open.
                Ok(e) if !dry_run && e.events > 0 => catch_up_rollups(&store, cfg),
                _ => Ok(None),
            };
            store.close()?;
            let e = done?;
            writeln!(
                out,
                "{verb} {} event(s) of user {user:?} in org {org_id} ({} block(s); event times {} .. {})",
                e.events,
                e.blocks,
                show(e.oldest),
                show(e.newest)
            )?;
            match caught_up? {
                Some(n) => writeln!(
                    out,
                    "rollups: applied {n} change(s) (the removals included)"
                )?,
                None if !dry_run => writeln!(
                    out,
                    "rollups: not running here (stats disabled or not yet started); the stats \
                     workers apply the removals when the connector starts"
                )?,
                None => {}
            }
        }
        None => {
            let path = format!(
                "/api/v1/orgs/{org_id}/users/{}/events{}",
                percent_encode(user),
                if dry_run { "?dry_run=true" } else { "" }
            );
            let (status, r) = call(cfg, token, "DELETE", &path, None)?;
            if status != 200 {
                return Err(api_error(status, &r));
            }
            writeln!(
                out,
                "{verb} {} event(s) of user {user:?} in org {org_id} through the running connector ({} block(s); event times {} .. {}); its stats workers take them out of the rollups",
                r["events"],
                r["blocks"],
                r["oldest"].as_str().unwrap_or("-"),
                r["newest"].as_str().unwrap_or("-")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(us: Option<i64>) -> String {
    us.and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// Applies the pending change feed to the rollups, if the rollup worker has a cursor.
fn catch_up_rollups(store: &Store, cfg: &Config) -> anyhow::Result<Option<u64>> {
    if store.cursor(crate::stats::ROLLUP_CURSOR)?.is_none() {
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut worker =
        crate::stats::rollup::RollupWorker::new(store.clone(), crate::app::rollup_options(cfg))?;
    Ok(Some(rt.block_on(worker.catch_up())?))
}

/// A path segment: everything but unreserved characters percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
