//! `streamtally token new`: a random gateway token and the `[[auth.tokens]]` entry that
//! admits it (only the token's SHA-256 goes into the configuration).

use std::io::Write;
use std::process::ExitCode;

/// Prints a new token for `org` (a UUID) and its configuration entry, labelled `name`.
pub fn new_token(org: &str, name: Option<&str>, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let org = uuid::Uuid::parse_str(org)
        .map_err(|e| anyhow::anyhow!("--org '{org}': not a UUID ({e})"))?;
    let token = crate::demo::random_token()?;
    let hash = crate::gateway::auth::token_sha256_hex(&token);
    writeln!(out, "token: {token}")?;
    writeln!(out)?;
    writeln!(
        out,
        "# Give the token to its holder (it is shown only now); add this to connector.toml:"
    )?;
    writeln!(out, "[[auth.tokens]]")?;
    writeln!(out, "org_id = \"{org}\"")?;
    writeln!(out, "token_sha256 = \"{hash}\"")?;
    if let Some(n) = name {
        let quoted = toml::Value::String(n.to_string()).to_string();
        writeln!(out, "name = {quoted}")?;
    }
    Ok(ExitCode::SUCCESS)
}
