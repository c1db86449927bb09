//! Regression tests for the defects an outside trial found (issue "Reliability"): one module
//! per defect, each against real components (a Kafka-protocol broker, the real store, real
//! sockets). The modules live in tests/hardening/ so that each is its own file.

mod common;

#[path = "hardening/dead_letters.rs"]
mod dead_letters;
#[path = "hardening/dedup.rs"]
mod dedup;
#[path = "hardening/fatal_store.rs"]
mod fatal_store;
#[path = "hardening/gateway_limits.rs"]
mod gateway_limits;
#[path = "hardening/round_trip.rs"]
mod round_trip;
