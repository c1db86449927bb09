//! The `streamtally` binary as a child process: a command run to its end with its output
//! collected ([`streamtally`]), and `streamtally run` spawned with settings in the
//! environment, SIGKILL, SIGTERM, and waits for progress through the group's Kafka commits.

use super::broker::committed_offsets;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `streamtally ARGS` in `dir`, without the test process's `STREAMTALLY__*` settings and
/// `RUST_LOG` (the command reads the configuration layers; the tests' own must not leak in).
pub fn command<S: AsRef<OsStr>>(dir: &Path, args: impl IntoIterator<Item = S>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamtally"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("STREAMTALLY__") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs `streamtally ARGS` in `dir` to its end: (exit code or -1 after a signal, stdout,
/// stderr).
pub fn streamtally(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = command(dir, args).output().expect("run streamtally");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `streamtally run` on `topic` with its store in `store`, stderr appended to `log`,
/// extra environment `env` (e.g. `STREAMTALLY_FAULT`).
pub fn spawn_run(
    broker: &str,
    topic: &str,
    group: &str,
    store: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamtally"));
    cmd.arg("run")
        .env("STREAMTALLY__KAFKA__BROKERS", broker)
        .env("STREAMTALLY__KAFKA__TOPICS", format!("[\"{topic}\"]"))
        .env("STREAMTALLY__KAFKA__GROUP_ID", group)
        .env("STREAMTALLY__KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("STREAMTALLY__STORE__PATH", store)
        .env("STREAMTALLY__BATCHING__MAX_BATCH_EVENTS", "500")
        .env("STREAMTALLY__LOG__LEVEL", "info")
        // Several runs at once (and other tests) must not fight over the default port.
        .env("STREAMTALLY__GATEWAY__LISTEN", "127.0.0.1:0")
        .env_remove("STREAMTALLY_FAULT")
        .current_dir(store.parent().unwrap_or(store))
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn streamtally run")
}

pub fn sigkill(child: &mut Child) {
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().expect("reap");
}

pub fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    wait_exit(child, Duration::from_secs(30)).expect("exit within 30 s of SIGTERM")
}

/// The exit status, or None if the child is still running after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to `timeout`) until the group's committed offsets pass `beyond` in sum, or
/// reach `all` (everything produced so far); returns the sum.
pub fn wait_progress(
    broker: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    beyond: i64,
    timeout: Duration,
) -> i64 {
    let started = Instant::now();
    loop {
        let sum: i64 = committed_offsets(broker, group, topic, partitions)
            .iter()
            .map(|o| o.max(&0))
            .sum();
        if sum > beyond || started.elapsed() > timeout {
            return sum;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many lines of `log` contain `needle` (0 if there is no log yet).
pub fn log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

/// Waits until `log` has more than `seen` lines containing `needle`: e.g. a child spawned
/// after `seen` were counted got as far as logging it. Panics after `timeout`.
pub fn wait_log(log: &Path, needle: &str, seen: usize, timeout: Duration) {
    let started = Instant::now();
    while log_count(log, needle) <= seen {
        assert!(
            started.elapsed() < timeout,
            "no new {needle:?} line in {} within {timeout:?}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The line a run logs once it owns partitions; its signal handler is installed by then, so
/// a SIGTERM after it is a graceful stop, not the default action of a process still starting.
pub const ASSIGNED: &str = "partitions assigned at their stored positions";
