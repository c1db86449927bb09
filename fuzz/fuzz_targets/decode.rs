//! Fuzzes `ingest::decode::decode` with arbitrary payloads, headers, keys, timestamps and
//! options. Run from the repository root (nightly):
//!
//!     cargo +nightly fuzz run decode fuzz/corpus/decode fuzz/seeds/decode
//!
//! Input layout: `payload ++ meta ++ [n]`. When the last byte `n` is below 64 and the input
//! is longer than `n`, the `n` bytes before it steer the Kafka metadata and the options;
//! otherwise the whole input is the payload. So a plain JSON file (as in fuzz/seeds/) is a
//! valid seed, and most mutations land on the JSON itself.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use streamtally::ingest::decode::{decode, DecodeOptions, RejectReason, SourceMeta};
use uuid::Uuid;

const ORG: &str = "0b6f3c1e-7d2a-4c53-9f0e-2a1b3c4d5e6f";
/// 2024-06-01T12:00:00Z
const NOW_MS: i64 = 1_717_243_200_000;

fuzz_target!(|data: &[u8]| {
    let (payload, meta_bytes) = match data.split_last() {
        Some((&n, rest)) if n < 64 && rest.len() >= usize::from(n) => {
            rest.split_at(rest.len() - usize::from(n))
        }
        _ => (data, &[][..]),
    };
    let mut u = Unstructured::new(meta_bytes);

    let mut headers: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for _ in 0..u.int_in_range(0u8..=3).unwrap_or(0) {
        let name = if u.arbitrary::<bool>().unwrap_or(false) {
            "X-Org-Id".to_string()
        } else {
            u.arbitrary::<String>().unwrap_or_default()
        };
        let value = match u.int_in_range(0u8..=2).unwrap_or(0) {
            0 => None,
            1 => Some(ORG.as_bytes().to_vec()),
            _ => Some(u.arbitrary::<Vec<u8>>().unwrap_or_default()),
        };
        headers.push((name, value));
    }
    let key: Option<Vec<u8>> = u.arbitrary().unwrap_or(None);
    let kafka_timestamp_ms: Option<i64> = u.arbitrary().unwrap_or(None);
    let partition: i32 = u.arbitrary().unwrap_or(0);
    let offset: i64 = u.arbitrary().unwrap_or(0);
    let tombstone = payload.is_empty() && u.arbitrary::<bool>().unwrap_or(false);
    let small_limit = u.int_in_range(0u8..=7).unwrap_or(1) == 0;
    let default_org = u.arbitrary::<bool>().unwrap_or(false);
    let skew_secs: u64 = u.arbitrary().unwrap_or(3600);
    // Mostly a realistic clock; sometimes anything chrono can represent.
    let now_ms = match u.arbitrary::<Option<i64>>().unwrap_or(None) {
        Some(ms) => ms % 8_000_000_000_000_000,
        None => NOW_MS,
    };

    let meta = SourceMeta {
        topic: "events",
        partition,
        offset,
        kafka_timestamp_ms,
        key: key.as_deref(),
        headers: &headers,
    };
    let opts = DecodeOptions {
        max_message_bytes: if small_limit { 64 } else { 1 << 20 },
        max_future_skew: Duration::from_secs(skew_secs),
        default_org_id: default_org.then(|| Uuid::from_u128(7)),
        org_id_header: "x-org-id".to_string(),
        now: chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default(),
    };
    let payload = if tombstone { None } else { Some(payload) };

    let first = decode(payload, &meta, &opts);
    match &first {
        Ok(event) => {
            let row = event.to_row();
            assert!(row.get("date").is_some() && row.get("hour").is_some());
        }
        Err(reason) => {
            assert!(RejectReason::ALL_CODES.contains(&reason.code()));
            let _ = reason.to_string();
        }
    }
    // Pure: the same input decodes the same way.
    assert_eq!(first, decode(payload, &meta, &opts));
});
