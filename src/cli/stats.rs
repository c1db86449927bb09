//! `streamtally stats rebuild` and `streamtally stats verify`: apply what the change feed
//! holds, then recompute the rollups from the raw events (a progress bar on stderr) and swap
//! them in, or compare them with the stored ones.

use crate::config::Config;
use crate::schema::Schema;
use crate::stats::rebuild::{self as rb, Scope};
use crate::stats::rollup::RollupWorker;
use crate::stats::StatsError;
use crate::store::{Query, Store};
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::process::ExitCode;
use tokio::runtime::Runtime;

/// How many differences `verify` prints one by one (the rest are counted).
const SHOWN_DIFFERENCES: usize = 200;

/// Which of the two commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Recompute and write the rollups in one atomic write.
    Rebuild,
    /// Recompute and report every difference; exit code 1 if any.
    Verify,
}

/// The scope of `--org UUID --from DATE --to DATE` (each optional; dates YYYY-MM-DD, UTC,
/// inclusive); the error names the flag and its value.
pub fn scope(org: Option<&str>, from: Option<&str>, to: Option<&str>) -> anyhow::Result<Scope> {
    let date = |flag: &str, v: Option<&str>| -> anyhow::Result<Option<NaiveDate>> {
        v.map(|s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|e| anyhow::anyhow!("--{flag} '{s}': not a YYYY-MM-DD date ({e})"))
        })
        .transpose()
    };
    let scope = Scope {
        org: org
            .map(|s| {
                uuid::Uuid::parse_str(s)
                    .map(|u| *u.as_bytes())
                    .map_err(|e| anyhow::anyhow!("--org '{s}': not a UUID ({e})"))
            })
            .transpose()?,
        from: date("from", from)?,
        to: date("to", to)?,
        per_partition: false,
    };
    if let (Some(f), Some(t)) = (scope.from, scope.to) {
        anyhow::ensure!(f <= t, "--from {f} is after --to {t}");
    }
    Ok(scope)
}

/// Runs `action` on the store of `store.path` (opened exclusively, closed again even when
/// the action fails).
pub fn run(
    cfg: &Config,
    schema: &Schema,
    scope: &Scope,
    action: Action,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let store = super::open_store(cfg, schema)?;
    // Rows per source partition when the group is scaled out (as `streamtally run` keeps them).
    let scope = &Scope {
        per_partition: cfg.scale_out.enabled,
        ..scope.clone()
    };
    let code = run_on(&store, cfg, scope, action, out);
    store.close()?;
    code
}

/// What both actions work on.
struct Job<'a> {
    store: &'a Store,
    scope: &'a Scope,
    threshold: u64,
    rt: Runtime,
    bar: ProgressBar,
}

fn run_on(
    store: &Store,
    cfg: &Config,
    scope: &Scope,
    action: Action,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let switching = rb::stored_per_partition(store)? != scope.per_partition;
    let caught_up = if switching && action == Action::Rebuild && scope.is_everything() {
        // Recomputed whole from the raw events in the new keying: the feed's pending
        // changes are in them already.
        writeln!(
            out,
            "the rollups are keyed {}: rebuilding every rollup from the stored events",
            if scope.per_partition {
                "for the whole store and this configuration keeps them per source partition"
            } else {
                "per source partition and this configuration keeps them for the whole store"
            }
        )?;
        Ok(0)
    } else {
        RollupWorker::new(store.clone(), crate::app::rollup_options(cfg))
            .and_then(|mut worker| rt.block_on(worker.catch_up()))
    };
    match caught_up {
        Ok(0) if switching => {}
        Ok(applied) => writeln!(
            out,
            "applied {applied} pending change(s) from the change feed"
        )?,
        // The rollups cannot catch up (the feed was truncated without them, e.g. while
        // `stats.enabled` was false): a rebuild of every org and day recomputes them from
        // the events whole. A partial one would leave the rest behind the feed for good.
        Err(StatsError::FeedGone { needed, oldest })
            if action == Action::Rebuild && scope.is_everything() =>
        {
            writeln!(
                out,
                "the change feed no longer holds sequence {needed} (oldest kept: {oldest}): \
                 rebuilding every rollup from the stored events"
            )?
        }
        Err(e @ StatsError::FeedGone { .. }) if action == Action::Rebuild => {
            anyhow::bail!("{e}; rebuild every org and day (no --org, --from or --to)")
        }
        Err(e) => return Err(e.into()),
    }
    let job = Job {
        store,
        scope,
        threshold: cfg.stats.unique_exact_threshold,
        rt,
        bar: progress_bar(store)?,
    };
    match action {
        Action::Rebuild => rebuild(&job, out),
        Action::Verify => verify(&job, out),
    }
}

/// A bar over the stored events (drawn on stderr, hidden when it is not a terminal).
fn progress_bar(store: &Store) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(store.count(&Query::new("Event"))?);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})")?
            .progress_chars("=> "),
    );
    Ok(bar)
}

fn rebuild(job: &Job, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    job.bar.set_message("recomputing");
    let report = job
        .rt
        .block_on(rb::rebuild(job.store, job.scope, job.threshold, &job.bar))?;
    job.bar.finish_and_clear();
    writeln!(
        out,
        "rebuilt: {} row(s) written ({} differed from before), {} deleted",
        report.written, report.corrected, report.deleted
    )?;
    Ok(ExitCode::SUCCESS)
}

fn verify(job: &Job, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    job.bar.set_message("verifying");
    let expected = rb::recompute(job.store, job.scope, job.threshold, &job.bar)?;
    job.bar.finish_and_clear();
    let stored = rb::stored(job.store, job.scope)?;
    let diffs = rb::diff(&stored, &expected);
    for d in diffs.iter().take(SHOWN_DIFFERENCES) {
        writeln!(out, "difference: {d}")?;
    }
    if diffs.len() > SHOWN_DIFFERENCES {
        writeln!(out, "... and {} more", diffs.len() - SHOWN_DIFFERENCES)?;
    }
    writeln!(
        out,
        "stats verify: {} rollup row(s) checked, {} difference(s)",
        expected.len().max(stored.len()),
        diffs.len()
    )?;
    Ok(super::problems_found(!diffs.is_empty()))
}
