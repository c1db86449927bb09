//! The command line as a user runs it: the README's commands, and clear failures.

use std::process::Command;

fn streamtally(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamtally"))
        .args(args)
        .current_dir(dir)
        .env_remove("STREAMTALLY__KAFKA__BROKERS")
        .output()
        .expect("run streamtally");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
        out.contains("Event: 16 fields @index([org_id, date, event_name])"),
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
