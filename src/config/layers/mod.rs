//! The layered loader: built-in defaults < the config file < environment variables
//! `STREAMTALLY__SECTION__KEY` < command-line flags (dotted keys).
//!
//! Every layer is cut into leaves (a key path, the values to try, the layer); the leaves
//! are merged onto the defaults as TOML values and deserialized once, with the path where
//! serde fails tracked (`serde_path_to_error`). The leaf owning that path is the bad
//! setting: it moves on to its next value to try (an environment value may be a TOML
//! literal, a list or a plain string) or, with none left, is reported with its key, its
//! value and its layer and taken out, and the rest is deserialized again, so every bad
//! setting is reported, not only the first. A value that a higher layer overrides is still
//! checked, in a merge of its own ([`rounds`]). Arrays are leaves (a higher layer replaces
//! the whole list); `[kafka.client]` and `[kafka.default_org_ids]` are open maps whose
//! entries are leaves (layers add to them key by key).

mod leaves;

use std::path::PathBuf;

use serde::Deserialize;
use toml::{Table, Value};

use super::{is_secret_client_key, Config, ConfigError, Origin, MASK};

/// Where [`Config::load`] reads from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The `--config` file; `None` reads `./connector.toml` if it exists.
    pub file: Option<PathBuf>,
    /// Environment variables; `main` passes `std::env::vars()`, tests their own. Only those
    /// starting with [`ENV_PREFIX`](super::ENV_PREFIX) are read.
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
    /// The layer it came from.
    origin: Origin,
    /// Its place in layer order, which errors are reported in.
    seq: usize,
    /// The candidate in use.
    chosen: usize,
    /// Why the first candidate failed, once it has.
    first_error: Option<String>,
}

impl Leaf {
    fn new(path: Vec<String>, candidates: Vec<Value>, origin: Origin) -> Leaf {
        Leaf {
            path,
            candidates,
            origin,
            seq: 0,
            chosen: 0,
            first_error: None,
        }
    }
}

impl Config {
    /// Loads defaults < file < environment < overrides, then [`validate`](Config::validate)s.
    pub fn load(src: &ConfigSource) -> Result<Config, ConfigError> {
        let defaults = defaults_table()?;
        let (leaves, mut errors) = leaves::cut(src, &defaults)?;
        let mut found = Vec::new();
        let mut config = None;
        for round in rounds(leaves) {
            let loaded = settle(&defaults, round, &mut found)?;
            config.get_or_insert(loaded);
        }
        found.sort_by_key(|(seq, _)| *seq);
        errors.extend(found.into_iter().map(|(_, e)| e));
        if !errors.is_empty() {
            return Err(ConfigError::from_errors(errors));
        }
        let config = match config {
            Some(c) => c,
            None => deserialize(defaults).map_err(|(_, msg)| ConfigError::Internal(msg))?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Splits the leaves into sets that merge without one overriding another: the first holds
/// what the config is made of (of the leaves setting one key, the last), each next one what
/// the one before overrode. A bad value is an error even where a higher layer overrides
/// it, so the later sets are deserialized too (there are none without overrides).
fn rounds(leaves: Vec<Leaf>) -> Vec<Vec<Leaf>> {
    let overlap = |a: &[String], b: &[String]| a.iter().zip(b).all(|(x, y)| x == y);
    let mut rounds: Vec<Vec<Leaf>> = Vec::new();
    for leaf in leaves.into_iter().rev() {
        let free = rounds
            .iter()
            .position(|r| !r.iter().any(|o| overlap(&o.path, &leaf.path)));
        match free {
            Some(i) => rounds[i].push(leaf),
            None => rounds.push(vec![leaf]),
        }
    }
    for round in &mut rounds {
        round.reverse();
    }
    rounds
}

/// Merges `leaves` onto the defaults and deserializes the result. The leaf that owns the
/// key a failure is at moves on to its next candidate or, with none left, goes to
/// `errors` (with its place in layer order) and out of the merge; then the merge is
/// deserialized again. The config loaded from the leaves that are left.
fn settle(
    defaults: &Table,
    mut leaves: Vec<Leaf>,
    errors: &mut Vec<(usize, ConfigError)>,
) -> Result<Config, ConfigError> {
    loop {
        let mut merged = defaults.clone();
        for leaf in &leaves {
            set_path(
                &mut merged,
                &leaf.path,
                leaf.candidates[leaf.chosen].clone(),
            );
        }
        let (at, msg) = match deserialize(merged) {
            Ok(config) => return Ok(config),
            Err(failure) => failure,
        };
        let Some(i) = leaves.iter().position(|l| at.starts_with(&l.path)) else {
            // Only the leaves differ from the defaults, so this is a bug here.
            return Err(ConfigError::Internal(format!(
                "{}: {msg}",
                display_key(&at)
            )));
        };
        let leaf = &mut leaves[i];
        leaf.first_error.get_or_insert(msg);
        leaf.chosen += 1;
        if leaf.chosen == leaf.candidates.len() {
            let leaf = leaves.remove(i);
            errors.push((leaf.seq, leaf_error(defaults, leaf)));
        }
    }
}

/// Deserializes a merged table; on failure, the keys down to where it failed (up to the
/// first list index) and serde's message.
fn deserialize(table: Table) -> Result<Config, (Vec<String>, String)> {
    serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let at = e
            .path()
            .iter()
            .map_while(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        (at, e.into_inner().message().trim().to_string())
    })
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

/// Deserializes the defaults with one leaf set; the error message if that fails (to find
/// the element of a failing list that fails).
fn probe(defaults: &Table, path: &[String], value: &Value) -> Result<(), String> {
    let mut t = defaults.clone();
    set_path(&mut t, path, value.clone());
    Config::deserialize(Value::Table(t))
        .map(|_| ())
        .map_err(|e| e.message().trim().to_string())
}

/// The error for a leaf none of whose candidates deserialized: its key, its first
/// candidate value and its layer, and why that value failed.
fn leaf_error(defaults: &Table, leaf: Leaf) -> ConfigError {
    let msg = leaf.first_error.unwrap_or_default();
    let Some(value) = leaf.candidates.first() else {
        return ConfigError::Internal(format!("no value to try for {}", display_key(&leaf.path)));
    };
    let (key, shown, msg) = narrow(defaults, &leaf.path, value, msg);
    let origin = Box::new(leaf.origin);
    match msg.strip_prefix("unknown field `") {
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
    }
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
