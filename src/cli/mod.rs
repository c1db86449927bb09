//! The bodies of the `streamtally` subcommands that are not a long-running service, one file
//! per command group: [`check`] (check-config, check-schema), [`produce`], [`store`] (verify,
//! info, migrate), [`stats`] (rebuild, verify), [`dlq`] (list, replay) and [`token`] (new). `main` parses the command
//! line and calls them; `run` and `demo` go straight to [`crate::app`] and [`crate::demo`].
//!
//! Each command writes its report to the `out` it is given (stdout in `main`) and returns the
//! process's exit code: success, or 1 when a check found problems. An `Err` is bad input, a
//! bad configuration or a failure on the way; `main` prints it and exits 2.

pub mod admin;
pub mod check;
pub mod dlq;
pub mod produce;
pub mod stats;
pub mod store;
pub mod token;

use crate::config::Config;
use crate::schema::{Schema, SCHEMA_FILE};
use crate::store::{Store, StoreOptions};
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// The schema compiled into the binary, used when no schema.ormdb is next to it.
const BUILTIN_SCHEMA: &str = include_str!("../../schema.ormdb");

/// The schema of `--schema FILE`, else ./schema.ormdb if it exists, else the built-in copy.
pub fn load_schema(file: Option<&Path>) -> anyhow::Result<Schema> {
    match file {
        Some(p) => Ok(Schema::load(p)?),
        None if Path::new(SCHEMA_FILE).exists() => Ok(Schema::load(Path::new(SCHEMA_FILE))?),
        None => Ok(Schema::parse(BUILTIN_SCHEMA)?),
    }
}

/// Opens the store of `store.path` (exclusively: the connector must be stopped).
fn open_store(cfg: &Config, schema: &Schema) -> anyhow::Result<Store> {
    Store::open(StoreOptions::from_config(&cfg.store), schema)
        .with_context(|| format!("opening the store at {}", cfg.store.path.display()))
}

/// Exit code 1 when a check found problems, else success.
fn problems_found(found: bool) -> ExitCode {
    if found {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
