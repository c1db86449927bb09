//! The exactly-once rules, one test each, without a broker or a store.
use super::*;
use chrono::{TimeZone, Utc};

const LIMITS: Limits = Limits {
    max_events: 3,
    max_delay: Duration::from_millis(500),
    max_inflight_bytes: 1 << 20,
};

fn tp(p: i32) -> TopicPartition {
    ("events".to_string(), p)
}

fn event(p: i32, offset: i64) -> DecodedEvent {
    DecodedEvent {
        id: uuid::Uuid::from_u128(offset as u128 + 1),
        id_from_payload: false,
        org_id: uuid::Uuid::nil(),
        event_type: "click".into(),
        event_name: "button".into(),
        user_id: None,
        session_id: None,
        properties: None,
        timestamp: Utc.timestamp_opt(1_700_000_000 + offset, 0).unwrap(),
        topic: "events".into(),
        partition: p,
        offset,
        key: None,
        headers: None,
        dropped_fields: 0,
    }
}

/// A ledger owning `parts` with no stored positions.
fn ledger(parts: &[i32], now: Instant) -> Ledger {
    let mut l = Ledger::new();
    let tps: Vec<_> = parts.iter().map(|&p| tp(p)).collect();
    l.assign(&tps, &[], now);
    l
}

fn read(l: &mut Ledger, p: i32, offset: i64, now: Instant) {
    assert!(matches!(l.observe(&tp(p), offset), Seen::Read { .. }));
    l.record(&tp(p), offset, event(p, offset), 100, now);
}

/// Submits the open batch and has the store answer that it is durable: its positions.
fn take_durable(l: &mut Ledger, now: Instant) -> Positions {
    let batch = l.take(now).unwrap();
    l.on_durable(batch.id).unwrap().offsets
}

#[test]
fn positions_are_the_next_offset_to_read() {
    let now = Instant::now();
    let mut l = ledger(&[0], now);
    read(&mut l, 0, 7, now);
    read(&mut l, 0, 8, now);
    let batch = l.take(now).unwrap();
    assert_eq!(batch.events, 2);
    let durable = l.on_durable(batch.id).unwrap();
    assert_eq!(durable.offsets[&tp(0)], 9);
    assert_eq!(l.committable(&durable.offsets)[&tp(0)], 9);
    assert_eq!(l.positions()[&tp(0)], 9);
    // A rejected record that was dead-lettered or skipped counts as read, too.
    assert!(l.reject_passed(&tp(0), 9, now));
    assert_eq!(take_durable(&mut l, now)[&tp(0)], 10);
}

#[test]
fn no_position_advances_past_a_failed_batch_and_later_batches_are_written_again_in_order() {
    let now = Instant::now();
    let mut l = ledger(&[0], now);
    let mut ids = Vec::new();
    for offset in 0..3 {
        read(&mut l, 0, offset, now);
        ids.push(l.take(now).unwrap().id);
    }
    l.on_failed(ids[0]);
    // The store refuses what follows a failure; even a success behind it is written again.
    assert!(l.on_durable(ids[1]).is_none());
    l.on_failed(ids[2]);
    assert!(l.failed());
    assert_eq!(l.positions().get(&tp(0)), None, "nothing durable yet");
    assert!(l.positions().is_empty());
    assert_eq!(l.retry_positions()[&tp(0)], 3);
    for expected in 1..=3 {
        let (_, events) = l.next_retry().unwrap();
        assert_eq!(events, 1);
        let d = l.on_retried().unwrap();
        assert_eq!(d.offsets[&tp(0)], expected, "retried in submission order");
        assert_eq!(l.positions()[&tp(0)], expected);
    }
    assert!(!l.failed());
    assert!(l.next_retry().is_none());
}

#[test]
fn a_revoked_partition_is_flushed_first_and_not_committed_afterwards() {
    let now = Instant::now();
    let mut l = ledger(&[0, 1], now);
    read(&mut l, 0, 0, now);
    read(&mut l, 1, 0, now);
    // The shell drains before letting go: the ledger says what is still held.
    assert!(l.holds_any(&[tp(1)]));
    let batch = l.take(now).unwrap();
    assert!(l.holds_any(&[tp(1)]), "in flight is not durable");
    l.revoke(&[tp(1)]);
    assert!(!l.is_assigned(&tp(1)));
    let d = l.on_durable(batch.id).unwrap();
    let commit = l.committable(&d.offsets);
    assert_eq!(commit.get(&tp(0)), Some(&1));
    assert_eq!(commit.get(&tp(1)), None, "revoked: not ours to commit");
    assert!(!l.positions().contains_key(&tp(1)));
    // Records fetched before the revoke took effect are skipped.
    assert_eq!(l.observe(&tp(1), 1), Seen::Skip);
    assert!(!l.holds_any(&[tp(1)]));
}

#[test]
fn a_blocked_partition_stays_at_its_record_until_the_dead_letter_is_delivered() {
    let now = Instant::now();
    let mut l = ledger(&[0, 1], now);
    read(&mut l, 0, 4, now);
    l.block(&tp(0), 5);
    assert!(l.is_blocked(&tp(0)));
    // Records fetched after it are skipped, and nothing moves the position past it.
    assert_eq!(l.observe(&tp(0), 6), Seen::Skip);
    assert!(!l.reject_passed(&tp(0), 5, now));
    read(&mut l, 1, 0, now);
    assert_eq!(
        take_durable(&mut l, now)[&tp(0)],
        5,
        "held at the rejected record"
    );
    assert_eq!(l.positions()[&tp(0)], 5);
    // Backpressure never resumes it: the shell asks before resuming.
    l.set_blocked_high(&tp(0), 50);
    assert_eq!(l.lag(&tp(0), 10), Some(45));
    l.dead_letter_delivered(&tp(0), 6, now);
    assert!(!l.is_blocked(&tp(0)));
    assert_eq!(take_durable(&mut l, now)[&tp(0)], 6);
    assert!(matches!(l.observe(&tp(0), 6), Seen::Read { .. }));
}

#[test]
fn a_revoked_blocked_partition_is_released_for_its_next_owner() {
    let now = Instant::now();
    let mut l = ledger(&[0], now);
    l.block(&tp(0), 3);
    l.revoke(&[tp(0)]);
    assert!(!l.is_blocked(&tp(0)));
    assert_eq!(l.blocked().count(), 0);
}

#[test]
fn records_before_the_assigned_position_are_ignored() {
    let now = Instant::now();
    let mut l = Ledger::new();
    let start = l.assign(&[tp(0), tp(1)], &[(tp(0), 10)], now);
    assert_eq!(start.get(&tp(0)), Some(&10), "seek to the stored position");
    assert_eq!(
        start.get(&tp(1)),
        None,
        "no position: Kafka's committed offset"
    );
    assert_eq!(l.observe(&tp(0), 9), Seen::Skip);
    assert_eq!(l.observe(&tp(0), 10), Seen::Read { gap_from: None });
    assert_eq!(l.observe(&tp(1), 0), Seen::Read { gap_from: None });
    assert_eq!(l.observe(&tp(2), 0), Seen::Skip, "not assigned");
}

#[test]
fn skipped_offsets_are_reported_from_the_expected_one() {
    let now = Instant::now();
    let mut l = Ledger::new();
    l.assign(&[tp(0)], &[(tp(0), 10)], now);
    // One control record in between is normal.
    assert_eq!(l.observe(&tp(0), 11), Seen::Read { gap_from: None });
    assert_eq!(l.observe(&tp(0), 20), Seen::Read { gap_from: Some(12) });
    // A reassignment starts again from the stored position.
    l.assign(&[tp(0)], &[(tp(0), 10)], now);
    assert_eq!(l.observe(&tp(0), 30), Seen::Read { gap_from: Some(10) });
}

#[test]
fn commit_confirmation_recommits_only_where_kafka_is_behind() {
    let now = Instant::now();
    let mut l = Ledger::new();
    l.assign(
        &[tp(0), tp(1), tp(2)],
        &[(tp(0), 10), (tp(1), 10), (tp(2), 10)],
        now,
    );
    assert!(!l.commit_check_due(now + Duration::from_secs(1)));
    let later = now + COMMIT_CHECK;
    assert!(l.commit_check_due(later));
    // Kafka behind on 0, ahead on 1 (never moved back), nothing committed on 2.
    let kafka = HashMap::from([(tp(0), 8), (tp(1), 12)]);
    let behind = l.on_commit_read(Some(&kafka), later);
    assert_eq!(behind, Positions::from([(tp(0), 10), (tp(2), 10)]));
    assert!(l.commit_check_due(later + COMMIT_CHECK), "checked again");
    // A failed read tries again later.
    assert!(l.on_commit_read(None, later).is_empty());
    assert!(l.commit_check_due(later + COMMIT_CHECK));
    // Caught up: nothing more to check until the next commit.
    let kafka = HashMap::from([(tp(0), 10), (tp(1), 12), (tp(2), 10)]);
    assert!(l.on_commit_read(Some(&kafka), later).is_empty());
    assert!(!l.commit_check_due(later + COMMIT_CHECK * 10));
    l.committed_async(later);
    assert!(l.commit_check_due(later + COMMIT_CHECK));
}

#[test]
fn the_open_batch_is_due_when_full_or_old_enough() {
    let now = Instant::now();
    let mut l = ledger(&[0], now);
    assert!(!l.due(now, &LIMITS));
    assert!(l.take(now).is_none(), "nothing read");
    assert_eq!(l.poll_wait(now, &LIMITS), Duration::from_millis(100));
    read(&mut l, 0, 0, now);
    assert!(!l.due(now + Duration::from_millis(499), &LIMITS));
    assert_eq!(
        l.poll_wait(now + Duration::from_millis(450), &LIMITS),
        Duration::from_millis(50)
    );
    assert!(l.due(now + Duration::from_millis(500), &LIMITS));
    read(&mut l, 0, 1, now);
    read(&mut l, 0, 2, now);
    assert!(l.due(now, &LIMITS), "max_events reached");
}

#[test]
fn backpressure_counts_batches_and_bytes_in_flight() {
    let now = Instant::now();
    let mut l = ledger(&[0], now);
    let mut ids = Vec::new();
    for offset in 0..MAX_INFLIGHT_BATCHES as i64 {
        assert!(!l.over_limit(&LIMITS));
        read(&mut l, 0, offset, now);
        ids.push(l.take(now).unwrap().id);
    }
    assert_eq!(
        l.inflight_load(),
        (MAX_INFLIGHT_BATCHES, 100 * MAX_INFLIGHT_BATCHES)
    );
    assert!(l.over_limit(&LIMITS));
    l.on_durable(ids[0]).unwrap();
    assert!(!l.over_limit(&LIMITS));
}

#[test]
fn a_scaled_out_instance_restores_a_partition_from_its_own_position_without_committing_it() {
    let now = Instant::now();
    let mut l = Ledger::restoring_history();
    assert!(l.restores());
    // Partition 0 stored up to 10 by this instance before; partition 1 never held.
    let start = l.assign(&[tp(0), tp(1)], &[(tp(0), 10)], now);
    assert_eq!(start.get(&tp(0)), Some(&10));
    assert_eq!(start.get(&tp(1)), None, "read from the start of the log");
    // The group's committed offsets are read at once, before anything is committed.
    assert!(l.commit_check_due(now));
    assert_eq!(
        l.offsets_to_check(now).keys().cloned().collect::<Vec<_>>(),
        vec![tp(0), tp(1)]
    );
    assert!(!l.commit_check_due(now), "asked; again only after a while");
    read(&mut l, 0, 10, now);
    let d = take_durable(&mut l, now);
    assert!(l.committable(&d).is_empty(), "unverified: not committed");
    // Another instance read partition 0 to 15 meanwhile, and partition 1 to 4.
    let committed: HashMap<TopicPartition, i64> = [(tp(0), 15), (tp(1), 4)].into();
    assert!(l.on_commit_read(Some(&committed), now).is_empty());
    assert_eq!(l.restore_lag(), vec![(tp(0), 4), (tp(1), 4)]);
    assert!(
        l.positions().is_empty(),
        "restoring: its lower positions are not committed"
    );
    for offset in 11..15 {
        read(&mut l, 0, offset, now);
    }
    for offset in 0..3 {
        read(&mut l, 1, offset, now);
    }
    let d = take_durable(&mut l, now);
    // Partition 0 reached the group's offset: restored, and committed from now on.
    assert_eq!(l.restore_lag(), vec![(tp(1), 1)]);
    assert_eq!(l.committable(&d), [(tp(0), 15)].into());
    read(&mut l, 1, 3, now);
    let d = take_durable(&mut l, now);
    assert!(l.restore_lag().is_empty());
    assert_eq!(l.committable(&d), [(tp(1), 4)].into());
    // A partition revoked while restoring is forgotten.
    l.assign(&[tp(2)], &[(tp(2), 0)], now);
    let committed: HashMap<TopicPartition, i64> = [(tp(2), 9)].into();
    l.on_commit_read(Some(&committed), now);
    assert_eq!(l.restore_lag(), vec![(tp(2), 9)]);
    l.revoke(&[tp(2)]);
    assert!(l.restore_lag().is_empty());
}

#[test]
fn a_failed_read_of_the_committed_offsets_keeps_new_partitions_uncommitted_and_asks_again() {
    let now = Instant::now();
    let mut l = Ledger::restoring_history();
    l.assign(&[tp(0)], &[(tp(0), 5)], now);
    l.offsets_to_check(now);
    assert!(l.on_commit_read(None, now).is_empty());
    read(&mut l, 0, 5, now);
    let d = take_durable(&mut l, now);
    assert!(l.committable(&d).is_empty());
    assert!(l.commit_check_due(now + Duration::from_secs(1)));
    // Kafka behind the store (a kill before the commit): not restoring, committed again.
    let committed: HashMap<TopicPartition, i64> = [(tp(0), 2)].into();
    l.offsets_to_check(now);
    assert_eq!(l.on_commit_read(Some(&committed), now), [(tp(0), 6)].into());
    assert!(l.restore_lag().is_empty());
    // A single instance (no scale-out) never restores.
    let mut single = Ledger::new();
    single.assign(&[tp(0)], &[(tp(0), 1)], now);
    assert!(!single.commit_check_due(now));
    let committed: HashMap<TopicPartition, i64> = [(tp(0), 9)].into();
    single.on_commit_read(Some(&committed), now);
    assert!(single.restore_lag().is_empty());
}
