//! The layered loader: built-in defaults < the config file < environment variables
//! `STREAMTALLY__SECTION__KEY` < command-line flags (dotted keys).
//!
//! Why the loader is not "merge everything, then deserialize": once layers are merged,
//! serde can no longer say which layer brought a bad key. So every layer is first cut into
//! leaves (a key path and a TOML value), and each leaf is deserialized on its own on top of
//! the defaults. A leaf that fails is reported with its key, its value and its layer; only
//! then are the leaves merged and deserialized once. Arrays are leaves (a higher layer
//! replaces the whole list); `[kafka.client]` and `[kafka.default_org_ids]` are open maps
//! whose entries are leaves (layers add to them key by key).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use super::{
    is_secret_client_key, Config, ConfigError, Origin, DEFAULT_CONFIG_FILE, ENV_PREFIX, MASK,
};

/// Open maps: tables whose keys are data (librdkafka property names, topic names), not
/// settings. Their entries are merged key by key, and an environment variable or flag
/// names one entry with everything after the map's path.
const OPEN_MAPS: &[&[&str]] = &[&["kafka", "client"], &["kafka", "default_org_ids"]];

/// Where [`Config::load`] reads from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The `--config` file; `None` reads `./connector.toml` if it exists.
    pub file: Option<PathBuf>,
    /// Environment variables; `main` passes `std::env::vars()`, tests their own. Only those
    /// starting with [`ENV_PREFIX`] are read.
    pub env: Vec<(String, String)>,
    /// Command-line flags as dotted keys and raw values, e.g. `("kafka.brokers", "h:9092")`.
    pub overrides: Vec<(String, String)>,
}

impl ConfigSource {
    /// A source reading `file` (or `./connector.toml`) and this process's environment.
    pub fn with_process_env(file: Option<PathBuf>) -> ConfigSource {
        ConfigSource {
            file,
            env: std::env::vars().collect(),
            overrides: Vec::new(),
        }
    }
}

/// One setting from one layer: a key path and the values to try, in order (an environment
/// value may be a TOML literal, a comma-separated list, or a plain string).
struct Leaf {
    path: Vec<String>,
    candidates: Vec<Value>,
    origin: Origin,
}

impl Config {
    /// Loads defaults < file < environment < overrides, then [`validate`](Config::validate)s.
    pub fn load(src: &ConfigSource) -> Result<Config, ConfigError> {
        let defaults = defaults_table()?;
        let mut errors = Vec::new();
        let mut leaves = Vec::new();

        if let Some((path, table)) = read_file(src.file.as_deref())? {
            let origin = Origin::File(path);
            file_leaves(
                &table,
                Some(&defaults),
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
                Ok(path) => leaves.push(raw_leaf(&defaults, path, raw, origin)),
                Err(e) => errors.push(e),
            }
        }

        for (key, raw) in &src.overrides {
            let segments = key.split('.').map(str::to_string).collect();
            match key_path(segments, &Origin::Flag, key) {
                Ok(path) => leaves.push(raw_leaf(&defaults, path, raw, Origin::Flag)),
                Err(e) => errors.push(e),
            }
        }

        let mut merged = defaults.clone();
        for leaf in leaves {
            match resolve(&defaults, leaf) {
                Ok((path, value)) => set_path(&mut merged, &path, value),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError::from_errors(errors));
        }

        // Every leaf deserialized on its own, so this only fails on a bug here.
        let config = Config::deserialize(Value::Table(merged))
            .map_err(|e| ConfigError::Internal(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }
}

pub(super) fn defaults_table() -> Result<Table, ConfigError> {
    match Value::try_from(Config::default()) {
        Ok(Value::Table(t)) => Ok(t),
        Ok(other) => Err(ConfigError::Internal(format!(
            "defaults serialize to a {}, not a table",
            other.type_str()
        ))),
        Err(e) => Err(ConfigError::Internal(e.to_string())),
    }
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
                    out.push(Leaf {
                        path,
                        candidates: vec![v],
                        origin: origin.clone(),
                    });
                }
            }
            (Value::Table(t), Some(Value::Table(d))) => {
                file_leaves(t, Some(d), prefix, origin, out)
            }
            _ => out.push(Leaf {
                path: prefix.clone(),
                candidates: vec![value.clone()],
                origin: origin.clone(),
            }),
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
    Leaf {
        path,
        candidates,
        origin,
    }
}

fn parse_toml_value(raw: &str) -> Option<Value> {
    let mut table = toml::from_str::<Table>(&format!("v = {raw}")).ok()?;
    if table.len() == 1 {
        table.remove("v")
    } else {
        None
    }
}

fn get_path<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for key in parents {
        t = t.get(key)?.as_table()?;
    }
    t.get(last)
}

fn set_path(table: &mut Table, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for key in parents {
        let entry = t
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        let Value::Table(inner) = entry else {
            return;
        };
        t = inner;
    }
    t.insert(last.clone(), value);
}

/// Deserializes the defaults with one leaf set; the error message if that fails.
fn probe(defaults: &Table, path: &[String], value: &Value) -> Result<(), String> {
    let mut t = defaults.clone();
    set_path(&mut t, path, value.clone());
    Config::deserialize(Value::Table(t))
        .map(|_| ())
        .map_err(|e| e.message().trim().to_string())
}

/// The first candidate value of a leaf that deserializes, or an error naming the key, the
/// value and the layer.
fn resolve(defaults: &Table, leaf: Leaf) -> Result<(Vec<String>, Value), ConfigError> {
    let mut first_error = None;
    for value in &leaf.candidates {
        match probe(defaults, &leaf.path, value) {
            Ok(()) => return Ok((leaf.path, value.clone())),
            Err(msg) => {
                first_error.get_or_insert((value, msg));
            }
        }
    }
    let Some((value, msg)) = first_error else {
        return Err(ConfigError::Internal(format!(
            "no value to try for {}",
            display_key(&leaf.path)
        )));
    };
    let (key, shown, msg) = narrow(defaults, &leaf.path, value, msg);
    let origin = Box::new(leaf.origin);
    Err(match msg.strip_prefix("unknown field `") {
        Some(rest) => ConfigError::UnknownKey {
            key,
            value: shown,
            origin,
            reason: rest
                .split_once("`, ")
                .map_or_else(|| msg.clone(), |(_, expected)| expected.to_string()),
        },
        None => ConfigError::InvalidValue {
            key,
            value: shown,
            origin,
            reason: msg,
        },
    })
}

/// For a failing list (e.g. `[[auth.tokens]]`), finds the element and, inside a table
/// element, the key that fails, so the error says `auth.tokens[1].org_id`, not the list.
fn narrow(
    defaults: &Table,
    path: &[String],
    value: &Value,
    msg: String,
) -> (String, String, String) {
    let whole = || (display_key(path), display_value(path, value), msg.clone());
    // Only settings that are lists; a list given where a string belongs is wrong as a whole.
    let (Value::Array(items), Some(Value::Array(_))) = (value, get_path(defaults, path)) else {
        return whole();
    };
    for (i, item) in items.iter().enumerate() {
        let Err(item_msg) = probe(defaults, path, &Value::Array(vec![item.clone()])) else {
            continue;
        };
        let at = format!("{}[{i}]", display_key(path));
        let Value::Table(t) = item else {
            return (at, item.to_string(), item_msg);
        };
        let culprit = t.keys().find(|k| {
            let mut without = t.clone();
            without.remove(*k);
            probe(defaults, path, &Value::Array(vec![Value::Table(without)])).as_ref()
                != Err(&item_msg)
        });
        return match culprit {
            Some(k) => (
                format!("{at}.{}", display_segment(k)),
                t[k].to_string(),
                item_msg,
            ),
            None => (at, item.to_string(), item_msg),
        };
    }
    whole()
}

fn display_segment(segment: &str) -> String {
    let bare = !segment.is_empty()
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        segment.to_string()
    } else {
        format!("{segment:?}")
    }
}

fn display_key(path: &[String]) -> String {
    path.iter()
        .map(|s| display_segment(s))
        .collect::<Vec<_>>()
        .join(".")
}

/// A value as TOML for an error message, with secret `[kafka.client]` values masked.
fn display_value(path: &[String], value: &Value) -> String {
    let is_client = |p: &[String]| p.len() == 2 && p[0] == "kafka" && p[1] == "client";
    if path.len() == 3 && is_client(&path[..2]) && is_secret_client_key(&path[2]) {
        return format!("{MASK:?}");
    }
    if let (true, Value::Table(t)) = (is_client(path), value) {
        let mut masked = t.clone();
        for (k, v) in masked.iter_mut() {
            if is_secret_client_key(k) {
                *v = Value::String(MASK.to_string());
            }
        }
        return Value::Table(masked).to_string();
    }
    value.to_string()
}
