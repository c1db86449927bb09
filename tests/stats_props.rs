//! Property tests of the unique-count sketches and the bucket math (fixed seeds, so a run is
//! reproducible; the statistical claims are checked over many estimates, not one).

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::collections::HashSet;
use streamtally::stats::bucket::{hour_start_us, utc_day_hour};
use streamtally::stats::sketch::{hash_value, Hll, Uniq, UniqUnion, HLL_STANDARD_ERROR};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(20261127),
        ..ProptestConfig::default()
    }
}

fn hll_of(values: impl IntoIterator<Item = u64>) -> Hll {
    let mut h = Hll::new();
    for v in values {
        h.insert_hash(hash_value(&v.to_string()));
    }
    h
}

fn merged(a: &Hll, b: &Hll) -> Hll {
    let mut m = a.clone();
    m.merge(b);
    m
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn sketch_merge_is_commutative_associative_and_equals_the_union(
        a in prop::collection::vec(0u64..60_000, 0..20_000),
        b in prop::collection::vec(0u64..60_000, 0..20_000),
        c in prop::collection::vec(0u64..60_000, 0..20_000),
    ) {
        let (ha, hb, hc) = (hll_of(a.clone()), hll_of(b.clone()), hll_of(c.clone()));
        prop_assert_eq!(merged(&ha, &hb), merged(&hb, &ha));
        prop_assert_eq!(merged(&merged(&ha, &hb), &hc), merged(&ha, &merged(&hb, &hc)));
        let union = hll_of(a.iter().chain(&b).chain(&c).copied());
        prop_assert_eq!(merged(&merged(&ha, &hb), &hc), union);
    }

    #[test]
    fn exact_until_the_threshold_then_the_sketch_of_every_value(
        threshold in 1u64..400,
        values in prop::collection::vec(0u64..800, 0..3000),
    ) {
        let mut u = Uniq::default();
        for v in &values {
            u.add(hash_value(&v.to_string()), threshold);
        }
        let distinct: HashSet<u64> = values.iter().copied().collect();
        if distinct.len() as u64 <= threshold {
            prop_assert!(u.is_exact());
            prop_assert_eq!(u.count(), distinct.len() as u64);
        } else {
            prop_assert!(!u.is_exact());
            prop_assert_eq!(&u, &Uniq::Sketch(Box::new(hll_of(distinct.iter().copied()))));
        }
        // The stored form reads back to the same state.
        prop_assert_eq!(Uniq::decode(&u.encode()).unwrap(), u);
    }

    #[test]
    fn unique_over_a_range_is_the_distinct_count_of_the_union_within_one_percent(
        days in 1usize..31,
        per_day in 200u64..30_000,
        universe in 1_000u64..300_000,
        seed in any::<u64>(),
    ) {
        // Each day holds `per_day` draws from the universe; some days are exact, busy ones
        // sketched (threshold 10,000, the default).
        let mut union = UniqUnion::new();
        let mut truth: HashSet<u64> = HashSet::new();
        let mut x = seed | 1;
        for _ in 0..days {
            let mut day = Uniq::default();
            for _ in 0..per_day {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                let v = x % universe;
                day.add(hash_value(&v.to_string()), 10_000);
                truth.insert(v);
            }
            union.add(&day);
        }
        let (n, exact) = union.count();
        let t = truth.len() as f64;
        if exact {
            prop_assert_eq!(n, truth.len() as u64);
        } else {
            let err = (n as f64 - t).abs() / t;
            prop_assert!(err <= 0.01, "estimate {} for {} distinct: error {:.3}%", n, t, err * 100.0);
        }
    }

    #[test]
    fn buckets_are_the_utc_day_and_hour_around_boundaries_and_leap_days(
        day in -1_000i64..60_000,
        second in prop_oneof![Just(0i64), Just(86_399), Just(3_599), Just(3_600), 0i64..86_400],
        micro in 0i64..1_000_000,
    ) {
        let ts = (day * 86_400 + second) * 1_000_000 + micro;
        let (date, hour) = utc_day_hour(ts);
        // Howard Hinnant's days-to-civil, independent of chrono.
        let z = day + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        prop_assert_eq!(date.format("%Y-%m-%d").to_string(), format!("{y:04}-{m:02}-{d:02}"));
        prop_assert_eq!(hour as i64, second / 3600);
        let start = hour_start_us(date, hour);
        prop_assert!(start <= ts && ts < start + 3_600_000_000);
    }
}

#[test]
fn leap_days_and_century_rules() {
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    };
    let day = |s: &str| utc_day_hour(at(s)).0.format("%Y-%m-%d").to_string();
    assert_eq!(day("2024-02-29T23:59:59.999999Z"), "2024-02-29");
    assert_eq!(day("2024-02-29T23:59:59.999999-00:01"), "2024-03-01");
    assert_eq!(day("2000-02-29T12:00:00Z"), "2000-02-29");
    assert_eq!(day("2100-02-28T23:59:59Z"), "2100-02-28");
    assert_eq!(
        day("2100-02-28T24:00:00Z"
            .replace("24:00:00", "23:59:59")
            .as_str()),
        "2100-02-28"
    );
    assert_eq!(day("2100-03-01T00:00:00Z"), "2100-03-01");
    assert_eq!(day("1969-12-31T23:59:59.999999Z"), "1969-12-31");
}

#[test]
fn sketch_error_is_as_documented_over_many_estimates() {
    // 300 independent sets from 10k to 1M values: the documented standard error is 0.41%;
    // >= 95% of estimates must fall within 1% and the mean absolute error under 0.5%.
    let mut within = 0;
    let mut total_err = 0.0;
    let n_sets = 300;
    for s in 0..n_sets {
        let n = 10_000 + (s as u64 * 3_331) % 990_000;
        let mut h = Hll::new();
        for v in 0..n {
            h.insert_hash(hash_value(&format!("set{s}-user{v}")));
        }
        let err = (h.estimate() - n as f64).abs() / n as f64;
        total_err += err;
        if err <= 0.01 {
            within += 1;
        }
    }
    let mean = total_err / n_sets as f64;
    println!(
        "sketch: {within}/{n_sets} estimates within 1%, mean absolute error {:.3}% (standard error {:.2}%)",
        mean * 100.0,
        HLL_STANDARD_ERROR * 100.0
    );
    assert!(within as f64 >= 0.95 * n_sets as f64, "{within}/{n_sets}");
    assert!(mean <= 0.005, "mean error {mean}");
}
