//! `streamtally check-config` and `streamtally check-schema`: print what was loaded. A
//! configuration or schema that does not load never gets here: its error is the answer.

use crate::config::Config;
use crate::schema::{Entity, Schema};
use std::io::Write;
use std::process::ExitCode;

/// Prints the effective configuration, secrets masked.
pub fn check_config(cfg: &Config, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    write!(out, "{}", cfg.to_masked_toml())?;
    Ok(ExitCode::SUCCESS)
}

/// Prints each entity: its name, field count and index annotations.
pub fn check_schema(schema: &Schema, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    for e in &schema.entities {
        writeln!(
            out,
            "{}: {} fields {}",
            e.name,
            e.fields.len(),
            annotations(e).join(" ")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `@unique([..])`/`@index([..])` per index, `@postings([..])`, `@latest_only`, `@blocks`.
fn annotations(e: &Entity) -> Vec<String> {
    e.indexes
        .iter()
        .map(|i| {
            format!(
                "{}([{}])",
                if i.unique { "@unique" } else { "@index" },
                i.fields.join(", ")
            )
        })
        .chain(
            e.postings
                .iter()
                .map(|p| format!("@postings([{}])", p.join(", "))),
        )
        .chain(e.latest_only.then(|| "@latest_only".to_string()))
        .chain(e.blocks.then(|| "@blocks".to_string()))
        .collect()
}
