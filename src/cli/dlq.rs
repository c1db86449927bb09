//! `streamtally dlq list|replay`: the bodies of the commands (`crate::dlq` does the reading
//! and sending); a progress bar on stderr, the report on `out`.

use crate::config::Config;
use crate::dlq::{self, Filter, Letter};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

/// The dead-letter topics to read: `topic`, else the configuration's.
fn topics(cfg: &Config, topic: Option<&str>) -> anyhow::Result<Vec<String>> {
    if let Some(t) = topic {
        return Ok(vec![t.to_string()]);
    }
    let t = dlq::configured_topics(cfg);
    if t.is_empty() {
        anyhow::bail!(
            "no dead-letter topic: kafka.dead_letter.policy is not \"topic\"; name one with --topic"
        );
    }
    Ok(t)
}

fn bar(topic: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} dead letters ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(format!("reading '{topic}'"));
    pb
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

fn sample(l: &Letter) -> String {
    let value = l
        .value
        .as_deref()
        .map(|v| String::from_utf8_lossy(&v[..v.len().min(120)]).into_owned())
        .unwrap_or_else(|| "(null)".into());
    format!(
        "{}/{}/{} -> {}: {}\n      value: {}{}",
        l.source_topic().unwrap_or_else(|| "?".into()),
        l.source_partition().map_or("?".into(), |p| p.to_string()),
        l.source_offset().map_or("?".into(), |o| o.to_string()),
        l.offset,
        l.reason(),
        value.replace('\n', " "),
        if l.truncated() {
            " (envelope: not replayable)"
        } else {
            ""
        },
    )
}

#[derive(Default)]
struct ByReason {
    count: u64,
    first: Option<i64>,
    last: Option<i64>,
    samples: Vec<String>,
}

/// `dlq list`: counts by reason (first and last time, samples) and by source partition.
pub fn list(
    cfg: &Config,
    topic: Option<&str>,
    samples: usize,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    for t in topics(cfg, topic)? {
        let mut reasons: BTreeMap<String, ByReason> = BTreeMap::new();
        let mut sources: BTreeMap<(String, i32), u64> = BTreeMap::new();
        let pb = bar(&t);
        let read = dlq::scan(
            cfg,
            &t,
            |l| {
                let r = reasons.entry(l.reason_code()).or_default();
                r.count += 1;
                if let Some(t) = l.timestamp_ms {
                    r.first = Some(r.first.map_or(t, |f| f.min(t)));
                    r.last = Some(r.last.map_or(t, |x| x.max(t)));
                }
                if r.samples.len() < samples {
                    r.samples.push(sample(&l));
                }
                *sources
                    .entry((
                        l.source_topic().unwrap_or_else(|| "?".into()),
                        l.source_partition().unwrap_or(-1),
                    ))
                    .or_default() += 1;
            },
            |pos, len| {
                pb.set_length(len);
                pb.set_position(pos);
            },
        )?;
        pb.finish_and_clear();
        writeln!(out, "'{t}': {read} dead letter(s)")?;
        if read == 0 {
            continue;
        }
        writeln!(out, "  by reason:")?;
        for (code, r) in &reasons {
            writeln!(
                out,
                "    {code:<24} {:>8}   {} .. {}",
                r.count,
                time(r.first),
                time(r.last)
            )?;
            for s in &r.samples {
                writeln!(out, "      e.g. {s}")?;
            }
        }
        writeln!(out, "  by source:")?;
        for ((topic, partition), n) in &sources {
            writeln!(out, "    {topic}/{partition:<6} {n:>8}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq replay`: sends the matching dead letters back; exit 1 if any was refused.
pub fn replay(
    cfg: &Config,
    topic: Option<&str>,
    filter: &Filter,
    to_topic: Option<&str>,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut any_failed = false;
    for t in topics(cfg, topic)? {
        let pb = bar(&t);
        let s = dlq::replay(cfg, &t, filter, to_topic, dry_run, |pos, len| {
            pb.set_length(len);
            pb.set_position(pos);
        })?;
        pb.finish_and_clear();
        let verb = if dry_run { "would replay" } else { "replayed" };
        let sent: u64 = s.sent.values().sum();
        let to: Vec<String> = s
            .sent
            .iter()
            .map(|(t, n)| format!("{n} to '{t}'"))
            .collect();
        writeln!(
            out,
            "'{t}': read {}, matched {}, {verb} {sent}{}",
            s.read,
            s.matched,
            if to.is_empty() {
                String::new()
            } else {
                format!(" ({})", to.join(", "))
            }
        )?;
        if s.envelopes > 0 {
            writeln!(
                out,
                "  skipped {} envelope(s): records too big to dead-letter whole cannot be replayed",
                s.envelopes
            )?;
        }
        if s.no_target > 0 {
            writeln!(
                out,
                "  skipped {} without a source topic header: name one with --to-topic",
                s.no_target
            )?;
        }
        if s.without_id > 0 {
            writeln!(
                out,
                "  {} without an event id: each replay stores them again",
                s.without_id
            )?;
        }
        if s.failed > 0 {
            any_failed = true;
            writeln!(
                out,
                "  {} refused; the first: {}",
                s.failed,
                s.first_error.as_deref().unwrap_or("?")
            )?;
        }
    }
    Ok(super::problems_found(any_failed))
}
