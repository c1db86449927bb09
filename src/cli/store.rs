//! `streamtally store verify`, `store info` and `store migrate`, on the store of
//! `store.path` opened exclusively (its write-ahead log replayed, rows an earlier release
//! kept as ORMDB rows moved into blocks) and closed again.

use crate::config::Config;
use crate::schema::Schema;
use crate::store::{Migration, Store, StoreOptions};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::process::ExitCode;

/// Checks that every index agrees with the rows and the change feed is contiguous; prints
/// each problem. Exit code 1 if there is any.
pub fn verify(cfg: &Config, schema: &Schema, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let store = super::open_store(cfg, schema)?;
    let problems = store.verify()?;
    for p in &problems {
        writeln!(out, "problem: {p}")?;
    }
    writeln!(
        out,
        "store {}: {} problem(s); feed {}..{}",
        cfg.store.path.display(),
        problems.len(),
        store.feed_floor(),
        store.feed_head()
    )?;
    store.close()?;
    Ok(super::problems_found(!problems.is_empty()))
}

/// Prints the row counts per entity, the consumer offsets, the feed's range, disk use by
/// kind, and the event blocks' time range and blocks per org and day (from the catalog).
pub fn info(cfg: &Config, schema: &Schema, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let store = super::open_store(cfg, schema)?;
    print_info(&store, cfg, schema, out)?;
    store.close()?;
    Ok(ExitCode::SUCCESS)
}

fn print_info(
    store: &Store,
    cfg: &Config,
    schema: &Schema,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    writeln!(out, "store: {}", cfg.store.path.display())?;
    for e in &schema.entities {
        if e.blocks {
            // From the block catalog: no block is read.
            let (blocks, rows, bytes) = store.block_totals(&e.name)?;
            writeln!(out, "  {}: {rows} rows", e.name)?;
            let (resident, _) = store.resident_blocks();
            let resident = match resident {
                0 => String::new(),
                n => format!(" ({n} resident: in the write-ahead log, not yet in files)"),
            };
            writeln!(
                out,
                "  {} blocks: {blocks}, {bytes} bytes{resident}",
                e.name
            )?;
        } else {
            writeln!(out, "  {}: {} rows", e.name, store.count_rows(&e.name)?)?;
        }
    }
    for (topic, partition, offset) in store.offsets()? {
        writeln!(out, "  offset {topic}[{partition}] next {offset}")?;
    }
    writeln!(
        out,
        "  change feed: sequences {}..{}",
        store.feed_floor(),
        store.feed_head()
    )?;
    let disk = store.disk_usage()?;
    writeln!(out, "  disk: {} bytes", disk.total)?;
    writeln!(out, "    blocks: {} bytes", disk.blocks)?;
    writeln!(out, "    write-ahead log: {} bytes", disk.wal)?;
    writeln!(
        out,
        "    database: {} bytes (block catalog, rollups, offsets, cursors)",
        disk.database
    )?;
    // Live rows by kind (the database file also holds space sled has not reused yet).
    let catalogs: Vec<String> = (schema.entities.iter().filter(|e| e.blocks))
        .map(|e| format!("{}Block", e.name))
        .filter(|name| schema.entity(name).is_some())
        .collect();
    let kinds: [(&str, Vec<String>); 2] = [
        ("block catalog", catalogs),
        (
            "rollups",
            [
                "HourlyStats",
                "DailyStats",
                "EventNameDaily",
                "RollupStatePart",
            ]
            .iter()
            .filter(|n| schema.entity(n).is_some())
            .map(|n| n.to_string())
            .collect(),
        ),
    ];
    for (kind, entities) in kinds {
        let (mut rows, mut bytes) = (0, 0);
        for name in &entities {
            let (r, b) = store.row_bytes(name)?;
            rows += r;
            bytes += b;
        }
        writeln!(out, "      {kind}: {rows} rows, ~{bytes} bytes live")?;
    }
    writeln!(out, "    change feed: {} bytes", disk.feed)?;
    for e in schema.entities.iter().filter(|e| e.blocks) {
        print_block_days(store, &e.name, out)?;
    }
    Ok(())
}

/// The oldest and newest stored row time of a `@blocks` entity, then its blocks per org
/// and day, from the catalog.
fn print_block_days(store: &Store, entity: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let days = store.block_days(entity)?;
    let time = |us: Option<i64>| {
        us.and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_else(|| "none".into())
    };
    let oldest = days.iter().filter_map(|d| d.min_time).min();
    let newest = days.iter().filter_map(|d| d.max_time).max();
    writeln!(
        out,
        "  {entity} times in blocks: oldest {}, newest {}",
        time(oldest),
        time(newest)
    )?;
    match store.retained_from(entity) {
        Some(from) => writeln!(
            out,
            "  {entity} retention (store.retention.events_days): rows before {} dropped",
            time(Some(from))
        )?,
        None => writeln!(out, "  {entity} retention: nothing dropped")?,
    }
    if days.is_empty() {
        return Ok(());
    }
    writeln!(out, "  {entity} blocks by org and day:")?;
    for d in &days {
        let day = d
            .day
            .and_then(|n| chrono::DateTime::from_timestamp(n * 86_400, 0))
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "no time".into());
        let org = if d.org.is_empty() { "no org" } else { &d.org };
        writeln!(
            out,
            "    {org} {day}: {} blocks, {} rows, {} bytes",
            d.blocks, d.rows, d.bytes
        )?;
    }
    Ok(())
}

/// Opens the store, which moves the events a release before blocks stored as rows into
/// blocks (a progress bar over the rows to convert, counted from ormdb-core's type index
/// first), then verifies it. Prints `migrated N events into M blocks; K problem(s)`
/// (N = 0 for a store with nothing to migrate); exit code 1 if verify finds problems.
/// Interrupted, it leaves every event stored once and continues on the next run or open.
pub fn migrate(cfg: &Config, schema: &Schema, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})")?
            .progress_chars("=> "),
    );
    let mut done: Vec<Migration> = Vec::new();
    let store = Store::open_with_progress(
        StoreOptions::from_config(&cfg.store),
        schema,
        &mut |m: &Migration| {
            if bar.length() != Some(m.rows_total)
                || done.last().map(|d| &d.entity) != Some(&m.entity)
            {
                bar.set_length(m.rows_total);
                bar.set_message(format!("migrating {}", m.entity));
                bar.reset();
            }
            bar.set_position(m.rows_done);
            match done.last_mut() {
                Some(last) if last.entity == m.entity => *last = m.clone(),
                _ => done.push(m.clone()),
            }
        },
    )
    .with_context(|| {
        format!(
            "opening and migrating the store at {}",
            cfg.store.path.display()
        )
    })?;
    bar.finish_and_clear();
    let problems = store.verify()?;
    for p in &problems {
        writeln!(out, "problem: {p}")?;
    }
    let (moved, blocks) = done
        .iter()
        .fold((0, 0), |(n, b), m| (n + m.moved, b + m.blocks));
    writeln!(
        out,
        "migrated {moved} events into {blocks} blocks; {} problem(s)",
        problems.len()
    )?;
    store.close()?;
    Ok(super::problems_found(!problems.is_empty()))
}
