//! `streamtally store verify` and `streamtally store info`, on the store of `store.path`
//! opened exclusively (its write-ahead log replayed) and closed again.

use crate::config::Config;
use crate::schema::Schema;
use crate::store::Store;
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

/// Prints the row counts per entity, the consumer offsets, the feed's range and disk use.
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
            writeln!(out, "  {} blocks: {blocks}, {bytes} bytes", e.name)?;
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
    writeln!(out, "  disk: {} bytes", store.disk_bytes())?;
    Ok(())
}
