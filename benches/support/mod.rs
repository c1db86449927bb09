//! Helpers shared by the benchmarks (included with `#[path]`).
#![allow(dead_code)]

/// The value of `--name N` on the command line, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} expects a number, got {v:?}"))
        })
        .unwrap_or(default)
}

/// An on/off switch: `--name` turns it on, `--no-name` off (the last one given wins);
/// `default` when neither is given.
pub fn switch(name: &str, default: bool) -> bool {
    let (on, off) = (format!("--{name}"), format!("--no-{name}"));
    std::env::args()
        .rev()
        .find_map(|a| {
            if a == on {
                Some(true)
            } else if a == off {
                Some(false)
            } else {
                None
            }
        })
        .unwrap_or(default)
}

/// The synthetic id shape named by `--ids v4|v7` (default v4: random ids).
pub fn ids_arg() -> streamtally::synth::SynthIds {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--ids") {
        None => streamtally::synth::SynthIds::Random,
        Some(i) => {
            let v = args.get(i + 1).map_or("", String::as_str);
            streamtally::synth::SynthIds::parse(v)
                .unwrap_or_else(|| panic!("--ids expects v4 or v7, got {v:?}"))
        }
    }
}

/// A memory figure of this process from /proc/self/status (`VmHWM`, `VmRSS`), in MiB.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Restarts the peak resident set size (VmHWM) from the current one, so that a later
/// [`peak_rss_mb`] measures one phase of a bench, not the bench's own apparatus before it
/// (Linux >= 4.0: `clear_refs` 5). Whether that worked.
#[allow(dead_code)]
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Resident set size of this process now (VmRSS), in MiB.
pub fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// CPU time this process has used (user + system, every thread), in seconds.
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The `p` quantile (0..=1) of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Events `from..to` of `cfg` as one write, the way ingest writes them: each row with its
/// topic, partition (of 6) and offset, and the partitions' offsets advanced to `to / 6`.
pub fn event_batch(
    cfg: &streamtally::synth::SynthConfig,
    from: u64,
    to: u64,
) -> streamtally::store::WriteBatch {
    event_batch_over(cfg, from, to, 6)
}

/// [`event_batch`] over `partitions` partitions of topic `events` (event `i` in partition
/// `i % partitions`).
pub fn event_batch_over(
    cfg: &streamtally::synth::SynthConfig,
    from: u64,
    to: u64,
    partitions: u64,
) -> streamtally::store::WriteBatch {
    use streamtally::store::Value;
    let mut b = streamtally::store::WriteBatch::new();
    for i in from..to {
        let mut row = streamtally::synth::SynthEvent::generate(cfg, i).to_row();
        row.set("topic", Value::String("events".into()));
        row.set("partition", Value::Int32((i % partitions) as i32));
        row.set("offset", Value::Int64((i / partitions) as i64));
        b.insert("Event", row);
    }
    for p in 0..partitions {
        b.set_offset("events", p as i32, (to / partitions) as i64);
    }
    b
}
