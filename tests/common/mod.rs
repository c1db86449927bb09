//! Shared helpers for integration tests: a temp-dir store over the real schema.ormdb.
#![allow(dead_code)]

pub mod broker;

use streamtally::schema::Schema;
use streamtally::store::{Row, Store, StoreOptions, Value};
use streamtally::synth::{SynthConfig, SynthEvent};

pub fn schema() -> Schema {
    Schema::parse(include_str!("../../schema.ormdb")).expect("schema.ormdb parses")
}

pub fn open(dir: &std::path::Path) -> Store {
    Store::open(StoreOptions::new(dir), &schema()).expect("open store")
}

/// Event `i` of a small synthetic stream (3 orgs, 50 users, spread over 3 days).
pub fn event(i: u64) -> Row {
    let mut cfg = SynthConfig::new(1000);
    cfg.orgs = 3;
    cfg.users = 50;
    cfg.span_days = 3;
    cfg.end = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .expect("date")
        .to_utc();
    SynthEvent::generate(&cfg, i).to_row()
}

pub fn org(n: usize) -> Value {
    let mut cfg = SynthConfig::new(1000);
    cfg.orgs = 3;
    Value::Uuid(cfg.org_id(n))
}

pub fn str_of(row: &Row, field: &str) -> String {
    match row.get(field) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("{field} is {other:?}"),
    }
}
