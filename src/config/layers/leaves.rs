//! Cutting the layers into leaves: the config file's table, environment variables and
//! command-line flags each become key paths with the values to try and their layer.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{get_path, ConfigSource, Leaf};
use crate::config::{ConfigError, Origin, DEFAULT_CONFIG_FILE, ENV_PREFIX};

/// Open maps: tables whose keys are data (librdkafka property names, topic names), not
/// settings. Their entries are merged key by key, and an environment variable or flag
/// names one entry with everything after the map's path.
const OPEN_MAPS: &[&[&str]] = &[&["kafka", "client"], &["kafka", "default_org_ids"]];

/// The leaves of every layer in layer order, and the environment variables and flags that
/// do not name a key.
pub(super) fn cut(
    src: &ConfigSource,
    defaults: &Table,
) -> Result<(Vec<Leaf>, Vec<ConfigError>), ConfigError> {
    let mut errors = Vec::new();
    let mut leaves = Vec::new();
    if let Some((path, table)) = read_file(src.file.as_deref())? {
        let origin = Origin::File(path);
        file_leaves(
            &table,
            Some(defaults),
            &mut Vec::new(),
            &origin,
            &mut leaves,
        );
    }

    // Sorted, so that two spellings of one key resolve the same way on every run.
    let mut env: Vec<&(String, String)> = src
        .env
        .iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    env.sort();
    for (name, raw) in env {
        let origin = Origin::Env(name.clone());
        let segments = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        match key_path(segments, &origin, name) {
            Ok(path) => leaves.push(raw_leaf(defaults, path, raw, origin)),
            Err(e) => errors.push(e),
        }
    }

    for (key, raw) in &src.overrides {
        let segments = key.split('.').map(str::to_string).collect();
        match key_path(segments, &Origin::Flag, key) {
            Ok(path) => leaves.push(raw_leaf(defaults, path, raw, Origin::Flag)),
            Err(e) => errors.push(e),
        }
    }
    for (seq, leaf) in leaves.iter_mut().enumerate() {
        leaf.seq = seq;
    }
    Ok((leaves, errors))
}

fn read_file(explicit: Option<&Path>) -> Result<Option<(PathBuf, Table)>, ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG_FILE);
            if !p.exists() {
                return Ok(None);
            }
            p
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::FileNotFound { path })
        }
        Err(error) => return Err(ConfigError::ReadFile { path, error }),
    };
    match toml::from_str::<Table>(&text) {
        Ok(table) => Ok(Some((path, table))),
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit_once('\n')
                .map_or(before, |(_, l)| l)
                .chars()
                .count()
                + 1;
            Err(ConfigError::Syntax {
                path,
                line,
                column,
                message: e.message().trim().replace('\n', "; "),
            })
        }
    }
}

fn open_map_at(path: &[String]) -> Option<&'static [&'static str]> {
    OPEN_MAPS
        .iter()
        .copied()
        .find(|m| m.len() == path.len() && m.iter().zip(path).all(|(a, b)| *a == b.as_str()))
}

fn in_open_map(path: &[String]) -> bool {
    path.len() > 1 && open_map_at(&path[..path.len() - 1]).is_some()
}

/// Cuts a file's table into leaves: descends into tables the defaults also have, takes
/// anything else (scalars, arrays, unknown tables) whole.
fn file_leaves(
    table: &Table,
    defaults: Option<&Table>,
    prefix: &mut Vec<String>,
    origin: &Origin,
    out: &mut Vec<Leaf>,
) {
    for (key, value) in table {
        prefix.push(key.clone());
        let default = defaults.and_then(|d| d.get(key));
        match (value, default) {
            (Value::Table(t), Some(Value::Table(_))) if open_map_at(prefix).is_some() => {
                // Unquoted dotted keys (`security.protocol = ..`) arrive as nested tables.
                let is_client = prefix.last().is_some_and(|k| k == "client");
                let mut entries = Vec::new();
                flatten_dotted(t, "", &mut entries);
                for (entry, v) in entries {
                    let v = match v {
                        // librdkafka takes every property as a string.
                        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) if is_client => {
                            Value::String(v.to_string())
                        }
                        other => other,
                    };
                    let mut path = prefix.clone();
                    path.push(entry);
                    out.push(Leaf::new(path, vec![v], origin.clone()));
                }
            }
            (Value::Table(t), Some(Value::Table(d))) => {
                file_leaves(t, Some(d), prefix, origin, out)
            }
            _ => out.push(Leaf::new(
                prefix.clone(),
                vec![value.clone()],
                origin.clone(),
            )),
        }
        prefix.pop();
    }
}

fn flatten_dotted(table: &Table, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (key, value) in table {
        let full = format!("{prefix}{key}");
        match value {
            Value::Table(t) => flatten_dotted(t, &format!("{full}."), out),
            other => out.push((full, other.clone())),
        }
    }
}

/// Turns the segments of an environment variable or flag into a key path; inside an open
/// map, everything after the map's path is one key (joined with '.').
fn key_path(
    segments: Vec<String>,
    origin: &Origin,
    shown: &str,
) -> Result<Vec<String>, ConfigError> {
    let malformed = |reason: &str| ConfigError::MalformedKey {
        key: shown.to_string(),
        origin: Box::new(origin.clone()),
        reason: reason.to_string(),
    };
    for len in 1..segments.len() {
        if open_map_at(&segments[..len]).is_some() {
            let entry = segments[len..].join(".");
            if entry.is_empty() || entry.split('.').any(str::is_empty) {
                return Err(malformed("empty segment in the property or topic name"));
            }
            let mut path = segments[..len].to_vec();
            path.push(entry);
            return Ok(path);
        }
    }
    if segments.iter().any(String::is_empty) {
        return Err(malformed(
            "empty key segment (sections and keys are separated by '__' in environment \
             variables, '.' in flags)",
        ));
    }
    Ok(segments)
}

/// A leaf from an environment variable or flag. Open-map entries are taken verbatim (a
/// password is never reinterpreted); other values are tried as a TOML literal, then as a
/// comma-separated list where the setting is a list, then as a plain string.
fn raw_leaf(defaults: &Table, path: Vec<String>, raw: &str, origin: Origin) -> Leaf {
    let mut candidates = Vec::new();
    if !in_open_map(&path) {
        let parsed = parse_toml_value(raw);
        let default_is_array = matches!(get_path(defaults, &path), Some(Value::Array(_)));
        if let Some(v) = &parsed {
            candidates.push(v.clone());
        }
        if default_is_array && !matches!(parsed, Some(Value::Array(_))) {
            let items = if raw.trim().is_empty() {
                Vec::new()
            } else {
                raw.split(',')
                    .map(str::trim)
                    .map(|item| {
                        parse_toml_value(item).unwrap_or_else(|| Value::String(item.to_string()))
                    })
                    .collect()
            };
            candidates.push(Value::Array(items));
        }
    }
    candidates.push(Value::String(raw.to_string()));
    Leaf::new(path, candidates, origin)
}

fn parse_toml_value(raw: &str) -> Option<Value> {
    let mut table = toml::from_str::<Table>(&format!("v = {raw}")).ok()?;
    if table.len() == 1 {
        table.remove("v")
    } else {
        None
    }
}
