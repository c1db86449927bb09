//! Test-only fault injection (feature `fault-injection`): `STREAMTALLY_FAULT` names faults as
//! comma-separated `name:argument` pairs, e.g. `crash_after_store_durable:3` or
//! `wal_fsync_error_on:HourlyStats,rollups_crash:2`. Each fault point asks [`arg`] or
//! [`armed`] here, so the syntax is parsed in one place.

/// The argument of fault `name`, if `STREAMTALLY_FAULT` names it.
pub fn arg(name: &str) -> Option<String> {
    let spec = std::env::var("STREAMTALLY_FAULT").ok()?;
    parse(&spec, name).map(str::to_string)
}

/// Whether fault `name` is armed for the `n`-th pass (its argument is `n`).
pub fn armed(name: &str, n: u64) -> bool {
    arg(name).and_then(|k| k.parse::<u64>().ok()) == Some(n)
}

/// The argument of `name` in `spec`.
fn parse<'s>(spec: &'s str, name: &str) -> Option<&'s str> {
    spec.split(',')
        .find_map(|part| part.trim().strip_prefix(name)?.strip_prefix(':'))
}

/// Kills the process as `kill -9` would, saying why on stderr.
pub fn kill(what: &str) -> ! {
    eprintln!("fault injection: SIGKILL {what}");
    // SAFETY: kill(2) on our own pid; SIGKILL does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn faults_are_comma_separated_name_argument_pairs() {
        let spec = "wal_fsync_error_on:HourlyStats, crash_after_store_durable:3";
        assert_eq!(parse(spec, "wal_fsync_error_on"), Some("HourlyStats"));
        assert_eq!(parse(spec, "crash_after_store_durable"), Some("3"));
        assert_eq!(
            parse(spec, "crash_after"),
            None,
            "a prefix of a name is not the name"
        );
        assert_eq!(parse("", "x"), None);
    }
}
