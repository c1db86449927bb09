//! `streamtally produce`: [`crate::produce::run`] until it is done or Ctrl-C, then the
//! summary (failed records on `err`, one line each; the totals on `out`).

use crate::produce::ProduceOptions;
use std::io::Write;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Sends what `opts` asks for; exit code 1 if any record failed.
pub fn produce(
    opts: &ProduceOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    cancel_on_ctrl_c(shutdown.clone());
    let summary = crate::produce::run(opts, &shutdown)?;
    for f in &summary.failures {
        writeln!(
            err,
            "{} {}: {}",
            if opts.input.is_some() {
                "line"
            } else {
                "event"
            },
            f.position,
            f.error
        )?;
    }
    writeln!(
        out,
        "produced {} record(s) to '{}' in {:.1} s ({} failed{})",
        summary.sent,
        opts.topic,
        summary.elapsed.as_secs_f64(),
        summary.failed,
        if summary.interrupted {
            ", interrupted"
        } else {
            ""
        }
    )?;
    Ok(super::problems_found(summary.failed > 0))
}

/// Cancels `token` on the first Ctrl-C (SIGINT), from a thread of its own: the producer
/// runs on the calling thread.
fn cancel_on_ctrl_c(token: CancellationToken) {
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            token.cancel();
        }
    });
}
