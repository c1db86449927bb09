//! Blocks in the store: background merges keep every event once (also when killed mid-merge),
//! the dedup window, and reads through the catalog.

use super::common;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use streamtally::store::blocks::merge;
use streamtally::store::{Query, Store, StoreOptions, Value, WriteBatch};

const CHILD_ENV: &str = "STREAMTALLY_MERGE_CHILD_DIR";

fn open(dir: &std::path::Path, merges: bool, window: Duration) -> Store {
    let mut opts = StoreOptions::new(dir);
    opts.merge_interval = merges.then_some(Duration::from_millis(50));
    opts.dedup_window = window;
    Store::open(opts, &common::schema()).unwrap()
}

/// Every event's fields, by id.
fn all_events(store: &Store) -> BTreeMap<[u8; 16], Vec<(String, Value)>> {
    let mut out = BTreeMap::new();
    store
        .for_each_row("Event", |row| {
            let id = row.id().unwrap();
            assert!(out.insert(id, row.fields).is_none(), "event stored twice");
        })
        .unwrap();
    out
}

/// Event `i` is stored with the event name "renamed".
fn assert_renamed(store: &Store, i: u64) {
    let row = store
        .get("Event", &common::event(i).id().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        row.get("event_name"),
        Some(&Value::String("renamed".into()))
    );
}

/// 48 small batches: several small blocks per (org, partition).
fn write_small_batches(store: &Store) {
    for b in 0..48u64 {
        let mut batch = WriteBatch::new();
        for i in b * 25..(b + 1) * 25 {
            batch.insert("Event", common::event(i));
        }
        store.write_blocking(batch).unwrap();
    }
}

#[test]
fn merges_keep_every_event_once_and_fewer_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false, Duration::from_secs(86_400));
    write_small_batches(&store);
    let before = all_events(&store);
    let (blocks_before, rows, _) = store.block_totals("Event").unwrap();
    assert_eq!(rows, 1200);
    // Batches write resident blocks: none is due yet (too few rows, too young).
    assert_eq!(store.resident_blocks().0 as u64, blocks_before);
    assert_eq!(merge::merge_due(&store).unwrap(), 0);
    let mut merged = merge::seal_all(&store).unwrap();
    assert_eq!(store.resident_blocks(), (0, 0));
    assert_eq!(all_events(&store), before);
    while let Ok(n) = merge::merge_due(&store) {
        if n == 0 {
            break;
        }
        merged += n;
    }
    assert!(merged > 0, "{blocks_before} blocks, none merged");
    let (blocks_after, rows, _) = store.block_totals("Event").unwrap();
    assert_eq!(rows, 1200);
    assert!(
        blocks_after < blocks_before,
        "{blocks_after} >= {blocks_before}"
    );
    assert_eq!(all_events(&store), before);
    assert!(store.verify().unwrap().is_empty(), "{:?}", store.verify());
    // Ranges read through the catalog give the same as a filter over every event.
    let org = common::org(1);
    let n = store
        .count(&Query::new("Event").eq("org_id", org.clone()))
        .unwrap();
    let expect = before
        .values()
        .filter(|f| f.iter().any(|(k, v)| k == "org_id" && *v == org))
        .count() as u64;
    assert_eq!(n, expect);
    // Dropped ids of merged-away blocks still dedupe: the same events again change nothing.
    let mut again = WriteBatch::new();
    for i in 0..1200 {
        again.insert("Event", common::event(i));
    }
    let info = store.write_blocking(again).unwrap();
    assert_eq!((info.inserted, info.unchanged), (0, 1200));
    store.close().unwrap();
    drop(store);
    let store = open(dir.path(), false, Duration::from_secs(86_400));
    assert_eq!(all_events(&store), before);
    assert!(store.verify().unwrap().is_empty());
}

#[test]
fn updates_and_deletes_rewrite_merged_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false, Duration::from_secs(86_400));
    write_small_batches(&store);
    merge::seal_all(&store).unwrap();
    // Then rows in resident blocks too.
    let mut b = WriteBatch::new();
    for i in 1200..1450 {
        b.insert("Event", common::event(i));
    }
    store.write_blocking(b).unwrap();
    assert!(store.resident_blocks().0 > 0);
    let mut b = WriteBatch::new();
    for i in (0..1450).step_by(7) {
        b.delete("Event", common::event(i).id().unwrap());
    }
    for i in [3, 1201] {
        b.update(
            "Event",
            common::event(i).id().unwrap(),
            common::event(i).with("event_name", Value::String("renamed".into())),
        );
    }
    store.write_blocking(b).unwrap();
    let check = |store: &Store| {
        let events = all_events(store);
        assert_eq!(events.len(), 1450 - 1450usize.div_ceil(7));
        for i in [3, 1201] {
            assert_renamed(store, i);
        }
        assert!(store.verify().unwrap().is_empty(), "{:?}", store.verify());
    };
    check(&store);
    // The same after a crash (no close: the resident blocks come back from the WAL).
    drop(store);
    let store = open(dir.path(), false, Duration::from_secs(86_400));
    check(&store);
}

#[test]
fn ids_older_than_the_dedup_window_are_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    // A zero window: every block is out of it at the first sweep.
    let store = open(dir.path(), true, Duration::ZERO);
    let mut b = WriteBatch::new();
    b.insert("Event", common::event(1));
    store.write_blocking(b.clone()).unwrap();
    // The merge thread sweeps every 50 ms.
    std::thread::sleep(Duration::from_millis(400));
    let info = store.write_blocking(b).unwrap();
    assert_eq!(info.inserted, 1, "forgotten id stored again");
    // Reads still find rows out of the window.
    assert!(store
        .get("Event", &common::event(1).id().unwrap())
        .unwrap()
        .is_some());
}

#[test]
#[ignore = "child process of a kill during a merge"]
fn merge_child() {
    let dir = std::env::var(CHILD_ENV).expect("run by sigkill_during_a_merge_loses_nothing");
    let store = open(
        std::path::Path::new(&dir),
        false,
        Duration::from_secs(86_400),
    );
    // Armed by STREAMTALLY_FAULT=crash_in_merge_write:1: the first merge round dies while
    // its store write is drafted, before its WAL record.
    let _ = merge::seal_all(&store);
    unreachable!("the fault kills the process");
}

#[test]
fn sigkill_during_a_merge_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = open(dir.path(), false, Duration::from_secs(86_400));
        write_small_batches(&store);
        store.checkpoint().unwrap();
        // Dropped without a close: the blocks stay resident, in the WAL only.
        all_events(&store)
    };
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "merge::merge_child", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .env("STREAMTALLY_FAULT", "crash_in_merge_write:1")
        .status()
        .unwrap();
    assert!(!status.success(), "the child was to be killed");
    let store = open(dir.path(), false, Duration::from_secs(86_400));
    let files = || {
        std::fs::read_dir(dir.path().join("blocks"))
            .unwrap()
            .count() as u64
    };
    let (blocks, rows, _) = store.block_totals("Event").unwrap();
    assert_eq!(rows, 1200);
    assert_eq!(
        store.resident_blocks().0 as u64,
        blocks,
        "all still resident"
    );
    assert_eq!(files(), 0);
    assert_eq!(all_events(&store), before);
    assert!(store.verify().unwrap().is_empty(), "{:?}", store.verify());
    // The seal, run again, completes.
    assert!(merge::seal_all(&store).unwrap() > 0);
    let (blocks, _, _) = store.block_totals("Event").unwrap();
    assert_eq!(store.resident_blocks().0, 0);
    assert_eq!(files(), blocks);
    assert_eq!(all_events(&store), before);
    assert!(store.verify().unwrap().is_empty(), "{:?}", store.verify());
    // A checkpoint now lets the WAL go: a reopen finds the same in files.
    store.close().unwrap();
    drop(store);
    let store = open(dir.path(), false, Duration::from_secs(86_400));
    assert_eq!(store.resident_blocks().0, 0);
    assert_eq!(all_events(&store), before);
}

#[test]
fn a_batch_that_inserts_and_changes_the_same_events_stores_the_changes() {
    // The writer's thread encodes a batch's inserts as its resident block; an update or
    // delete of one of them in the same batch must not let that block through unchanged.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false, Duration::from_secs(86_400));
    let mut b = WriteBatch::new();
    for i in 0..50 {
        b.insert("Event", common::event(i));
    }
    b.update(
        "Event",
        common::event(10).id().unwrap(),
        common::event(10).with("event_name", Value::String("renamed".into())),
    );
    b.delete("Event", common::event(20).id().unwrap());
    // A duplicate insert in the batch is dropped, not stored twice.
    b.insert("Event", common::event(30));
    let info = store.write_blocking(b).unwrap();
    assert_eq!((info.inserted, info.unchanged), (50, 1));
    let check = |store: &Store| {
        let events = all_events(store);
        assert_eq!(events.len(), 49);
        assert!(!events.contains_key(&common::event(20).id().unwrap()));
        assert_renamed(store, 10);
        assert!(store.verify().unwrap().is_empty(), "{:?}", store.verify());
    };
    check(&store);
    drop(store);
    let store = open(dir.path(), false, Duration::from_secs(86_400));
    check(&store);
    merge::seal_all(&store).unwrap();
    check(&store);
}
