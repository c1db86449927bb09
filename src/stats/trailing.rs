//! [`TrailingCursor`]: the durable change-feed cursor of a worker that keeps only the feed's
//! last stretch of wall time in memory (the real-time counters, the alert windows). After a
//! restart such a worker replays from the cursor, which trails its read position by that
//! stretch, so the feed is kept no longer than the worker needs.

use super::StatsError;
use crate::store::{Store, WriteBatch};
use std::collections::VecDeque;

/// At most this many changes are replayed when the cursor is first registered.
const FIRST_REPLAY_CHANGES: u64 = 1_000_000;

pub struct TrailingCursor {
    name: &'static str,
    /// (wall ms, feed position) samples; the cursor is the newest older than the stretch.
    samples: VecDeque<(i64, u64)>,
    pin: u64,
}

impl TrailingCursor {
    /// The cursor `name`, registered (at most the last million changes back) if the store
    /// has none yet, so the feed is kept from there.
    pub fn open(store: &Store, name: &'static str) -> Result<TrailingCursor, StatsError> {
        let pin = match store.cursor(name)? {
            Some(c) => c,
            None => {
                let start = store
                    .feed_floor()
                    .max(store.feed_head().saturating_sub(FIRST_REPLAY_CHANGES));
                let mut b = WriteBatch::new();
                b.set_cursor(name, start);
                store.write_blocking(b)?;
                start
            }
        };
        Ok(TrailingCursor {
            name,
            samples: VecDeque::new(),
            pin,
        })
    }

    /// Where a replay starts: the durable position.
    pub fn pin(&self) -> u64 {
        self.pin
    }

    /// Records that the worker has read up to `next` at `now_ms`, and moves the cursor to the
    /// newest position read at least `keep_ms` ago.
    pub fn advance(&mut self, now_ms: i64, next: u64, keep_ms: i64) {
        self.samples.push_back((now_ms, next));
        while let Some(&(t, seq)) = self.samples.front() {
            if t > now_ms - keep_ms {
                break;
            }
            self.pin = seq;
            self.samples.pop_front();
        }
    }

    /// Adds the cursor's move to `batch` if the store's differs.
    pub fn stage(&self, store: &Store, batch: &mut WriteBatch) -> Result<(), StatsError> {
        if store.cursor(self.name)? != Some(self.pin) {
            batch.set_cursor(self.name, self.pin);
        }
        Ok(())
    }
}
