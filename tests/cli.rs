//! The command line as a user runs it: the README's commands, and clear failures.

mod common;

use common::run::streamtally;

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("connector.toml"),
        "[kafka]\nbrokers = \"k1:9092\"\n[kafka.client]\n\"sasl.password\" = \"hunter2\"\n",
    )
    .unwrap();
    let (code, out, err) = streamtally(
        &["check-config", "--set", "batching.max_batch_events=7"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("brokers = \"k1:9092\""), "{out}");
    assert!(out.contains("max_batch_events = 7"), "{out}");
    assert!(!out.contains("hunter2") && out.contains("***"), "{out}");
}

#[test]
fn check_config_names_the_key_value_and_file_of_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[gateway]\nlisten = \"not-an-address\"\n").unwrap();
    let (code, _, err) = streamtally(
        &["--config", file.to_str().unwrap(), "check-config"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("gateway.listen")
            && err.contains("not-an-address")
            && err.contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn check_schema_reports_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = streamtally(&["check-schema"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Event: 17 fields @blocks")
            && out.contains("EventBlock: 14 fields @unique([block_no]) @latest_only"),
        "{out}"
    );
    let bad = dir.path().join("bad.ormdb");
    std::fs::write(&bad, "entity A {\n  id: uuid @id\n  n: integer\n}\n").unwrap();
    let (code, _, err) = streamtally(
        &["--schema", bad.to_str().unwrap(), "check-schema"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.ormdb:3:6") && err.contains("integer"),
        "{err}"
    );
}

#[test]
fn store_verify_and_info_on_a_fresh_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, out, err) = streamtally(
        &["--data", data.to_str().unwrap(), "store", "verify"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 problem(s)"), "{out}");
    let (code, out, err) = streamtally(
        &["--data", data.to_str().unwrap(), "store", "info"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Event: 0 rows"), "{out}");
}

#[test]
fn store_info_shows_disk_by_kind_and_event_blocks_per_org_and_day() {
    use streamtally::store::{Store, StoreOptions, WriteBatch};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 600 events of 3 orgs over 3 days (2026-02-26T12:00 to 2026-03-01T12:00), sealed
    // into blocks by the close.
    let store = Store::open(StoreOptions::new(&data), &common::schema()).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..600 {
        batch.insert("Event", common::event(i * 1000 / 600));
    }
    store.write_blocking(batch).unwrap();
    store.close().unwrap();
    drop(store);

    let (code, out, err) = streamtally(
        &["--data", data.to_str().unwrap(), "store", "info"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Event: 600 rows"), "{out}");
    let bytes_of = |label: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no '{label}' line in {out}"));
        line.trim_start()[label.len()..]
            .trim_start()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("no byte count in '{line}'"))
    };
    let (total, blocks, wal, database) = (
        bytes_of("disk:"),
        bytes_of("blocks:"),
        bytes_of("write-ahead log:"),
        bytes_of("database:"),
    );
    assert!(blocks > 0 && database > 0, "{out}");
    assert!(blocks + wal + database <= total, "{out}");
    assert!(out.contains("    change feed: "), "{out}");
    // Live rows by kind: one catalog row per block in a file, no rollups (no stats ran).
    let in_files: u64 = out
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains(" blocks, ") && l.contains(" rows, "))
        .map(|l| {
            let after = l.split(": ").nth(1).unwrap();
            after.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert!(
        out.contains(&format!("      block catalog: {in_files} rows, ~")),
        "{out}"
    );
    assert!(
        out.contains("      rollups: 0 rows, ~0 bytes live"),
        "{out}"
    );
    assert!(
        out.contains("Event times in blocks: oldest 2026-02-26T12:00:00")
            && out.contains("newest 2026-03-01T1"),
        "{out}"
    );
    // One line per (org, day): 3 orgs, each on 4 UTC days (a noon-to-noon span of 3 days).
    let per_day: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains(" blocks, ") && l.contains(" rows, "))
        .collect();
    assert_eq!(per_day.len(), 12, "{out}");
    let rows: u64 = per_day
        .iter()
        .map(|l| {
            let after = l.split(" blocks, ").nth(1).unwrap();
            after.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(rows, 600, "{out}");
    for org in 0..3 {
        let streamtally::store::Value::Uuid(u) = common::org(org) else {
            panic!("org id")
        };
        let org = uuid::Uuid::from_bytes(u).to_string();
        for day in ["2026-02-26", "2026-02-27", "2026-02-28", "2026-03-01"] {
            assert!(
                per_day.iter().any(|l| l.contains(&format!("{org} {day}:"))),
                "no line for {org} on {day}: {out}"
            );
        }
    }
}

#[test]
fn store_migrate_on_a_store_with_nothing_to_migrate() {
    // A store written before blocks is migrated in tests/blocks.rs (`migration`).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, out, err) = streamtally(
        &["--data", data.to_str().unwrap(), "store", "migrate"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "migrated 0 events into 0 blocks; 0 problem(s)\n");
    let (code, out, err) = streamtally(&["store", "migrate", "--help"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("into blocks") && out.contains("progress bar") && out.contains("verify"),
        "{out}"
    );
    let (_, out, _) = streamtally(&["store", "--help"], dir.path());
    assert!(out.contains("migrate"), "{out}");
}

#[test]
fn token_new_prints_a_token_and_its_config_entry() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let org = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    let (code, out, err) = streamtally(
        &["token", "new", "--org", org, "--name", "team \"dash\""],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("a token line");
    // 32 random bytes, base64url without padding.
    assert_eq!(token.len(), 43, "{token}");
    assert!(token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(out.contains(&format!("token_sha256 = \"{hash}\"")), "{out}");
    assert!(out.contains(&format!("org_id = \"{org}\"")), "{out}");
    // The printed entry is valid configuration as it stands.
    let entry = &out[out.find("[[auth.tokens]]").expect("an entry")..];
    std::fs::write(dir.path().join("connector.toml"), entry).unwrap();
    let (code, cfg, err) = streamtally(&["check-config"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        cfg.contains(&hash) && cfg.contains("team \"dash\""),
        "{cfg}"
    );
    assert!(!cfg.contains(token));

    // Two tokens are never the same.
    let (_, again, _) = streamtally(&["token", "new", "--org", org], dir.path());
    assert!(!again.contains(token));
    assert!(!again.contains("name ="));

    let (code, _, err) = streamtally(&["token", "new", "--org", "acme"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--org 'acme'"), "{err}");
}

#[test]
fn run_fails_clearly_when_the_gateway_address_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let (code, _, err) = streamtally(
        &[
            "--data",
            data.to_str().unwrap(),
            "--set",
            &format!("gateway.listen={addr}"),
            "run",
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&addr) && err.contains("gateway.listen"),
        "{err}"
    );
}
