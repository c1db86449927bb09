//! What can be wrong with a configuration, and the layer a bad setting came from.

use std::fmt;
use std::path::PathBuf;

/// The layer a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A config file.
    File(PathBuf),
    /// An environment variable (its full name).
    Env(String),
    /// A command-line flag, given to [`ConfigSource::overrides`] as a dotted key.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag => f.write_str("command-line flag"),
        }
    }
}

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly given config file does not exist.
    #[error("config file {} not found", path.display())]
    FileNotFound { path: PathBuf },
    /// The config file exists but cannot be read.
    #[error("cannot read config file {}: {error}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{}:{line}:{column}: TOML syntax error: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key that is not a setting.
    #[error("unknown key {key} = {value} (from {origin}); {reason}")]
    UnknownKey {
        key: String,
        value: String,
        origin: Box<Origin>,
        reason: String,
    },
    /// A setting whose value has the wrong type or form.
    #[error("invalid value for {key} = {value} (from {origin}): {reason}")]
    InvalidValue {
        key: String,
        value: String,
        origin: Box<Origin>,
        reason: String,
    },
    /// An environment variable or flag name that is not a well-formed key.
    #[error("malformed key '{key}' (from {origin}): {reason}")]
    MalformedKey {
        key: String,
        origin: Box<Origin>,
        reason: String,
    },
    /// Settings that are each well-formed but break a rule (alone or together).
    #[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
    Validation { problems: Vec<String> },
    /// Several of the above, in layer order.
    #[error("{} configuration errors:\n  - {}", .0.len(), join_errors(.0))]
    Many(Vec<ConfigError>),
    /// A bug in this module (the defaults themselves do not load).
    #[error("internal configuration error: {0}")]
    Internal(String),
}

fn join_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string().replace('\n', "\n    "))
        .collect::<Vec<_>>()
        .join("\n  - ")
}

impl ConfigError {
    pub(super) fn from_errors(mut errors: Vec<ConfigError>) -> ConfigError {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ConfigError::Many(errors)
        }
    }
}
