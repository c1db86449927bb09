//! The README cannot drift from the binary: every streamtally command it shows (lines of
//! `sh` code blocks, and inline code without placeholders) must parse: the subcommand, every
//! flag and every flag value. Each is run with `--help` appended, which clap answers (exit 0)
//! only when everything before it parsed; an unknown flag or a bad value exits 2. What the
//! commands then do is covered by the tests named next to them in the README.

mod common;

use common::run::command;
use std::path::Path;

const README: &str = include_str!("../README.md");

/// Splits a shell command line into words (double and single quotes; no expansion).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// The arguments after the program name, if `text` is a streamtally command.
fn streamtally_args(text: &str) -> Option<Vec<String>> {
    let text = text.split(" #").next()?.trim().trim_end_matches('&').trim();
    let rest = text
        .strip_prefix("cargo run --release -- ")
        .or_else(|| text.strip_prefix("streamtally "))?;
    Some(words(rest))
}

/// Every streamtally command in the README, with the line it is on.
fn commands() -> Vec<(usize, String, Vec<String>)> {
    let mut found = Vec::new();
    let mut block: Option<&str> = None;
    for (i, line) in README.lines().enumerate() {
        if let Some(lang) = line.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(lang.trim()),
            };
            continue;
        }
        match block {
            Some("sh") => {
                if let Some(args) = streamtally_args(line) {
                    found.push((i + 1, line.trim().to_string(), args));
                }
            }
            Some(_) => {}
            None => {
                // Inline code: `streamtally ...` without synopsis placeholders.
                for (k, span) in line.split('`').enumerate() {
                    if k % 2 == 1 && !span.contains(['<', '[', '|', '.']) {
                        if let Some(args) = streamtally_args(span) {
                            found.push((i + 1, span.to_string(), args));
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn the_quick_start_has_the_two_commands() {
    for needle in ["cargo run --release -- demo", "bash .ci/run"] {
        assert!(README.contains(needle), "the README lost `{needle}`");
    }
}

#[test]
fn every_streamtally_command_in_the_readme_parses() {
    let found = commands();
    assert!(
        found.len() >= 10,
        "only {} commands found: {found:?}",
        found.len()
    );
    let mut failed = Vec::new();
    for (line, text, args) in &found {
        let out = command(Path::new(env!("CARGO_MANIFEST_DIR")), args)
            .arg("--help")
            .output()
            .expect("run streamtally");
        if !out.status.success() {
            failed.push(format!(
                "README.md:{line}: `{text}`: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    println!("{} README commands parse", found.len() - failed.len());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_wrong_flag_is_caught() {
    // The check itself can fail: a flag the binary does not have.
    let out = command(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        words("produce --topic events --no-such-flag 1"),
    )
    .arg("--help")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        words(r#"token new --org X --name "team dashboard""#),
        ["token", "new", "--org", "X", "--name", "team dashboard"]
    );
}
