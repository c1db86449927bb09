//! [`DeadLetterQueue`]: the dead letters under way, one per blocked partition at most, moved
//! on from the poll loop without waiting (see the module above).

use super::{DeadLetter, DeadLetters, DeliveryStatus, Refusal, DELIVERY_TIMEOUT, FIRST_SEND_WAIT};
use crate::config::Config;
use crate::ingest::consumer::IngestError;
use crate::metrics::{BlockedPartition, DeadLetterLabel, Metrics};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where one dead letter stands.
enum Attempt {
    /// Handed to the producer, waiting for its delivery report.
    Sent {
        status: Arc<DeliveryStatus>,
        at: Instant,
    },
    /// Refused; the next attempt is due then.
    Waiting { until: Instant },
}

/// A partition held at a record whose dead letter is not delivered yet.
struct Blocked {
    letter: DeadLetter,
    /// Set once the record itself was refused for its size: send envelopes from then on.
    envelope: Option<Refusal>,
    attempt: Attempt,
    backoff: Duration,
    since: Instant,
    since_ms: i64,
    last_refusal: Option<Refusal>,
}

/// What became of a record handed to [`DeadLetterQueue::reject`].
pub enum Rejected {
    /// Delivered (or nothing to deliver): the partition moves past the record.
    Delivered,
    /// Not delivered yet: pause the partition; [`DeadLetterQueue::progress`] says when it
    /// may move on.
    Blocked,
}

/// The dead letters in progress, one partition at most per record.
pub struct DeadLetterQueue {
    producer: DeadLetters,
    blocked: BTreeMap<(String, i32), Blocked>,
    metrics: Arc<Metrics>,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl DeadLetterQueue {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Result<DeadLetterQueue, IngestError> {
        Ok(DeadLetterQueue {
            producer: DeadLetters::new(cfg)?,
            blocked: BTreeMap::new(),
            metrics,
            backoff_initial: cfg.kafka.retry_backoff_initial(),
            backoff_max: cfg.kafka.retry_backoff_max(),
        })
    }

    /// Sends the dead letter of `letter`, waiting a moment for the acknowledgement.
    pub fn reject(&mut self, letter: DeadLetter) -> Rejected {
        let now = Instant::now();
        let mut blocked = Blocked {
            since: now,
            since_ms: chrono::Utc::now().timestamp_millis(),
            envelope: None,
            attempt: Attempt::Waiting { until: now },
            backoff: self.backoff_initial,
            last_refusal: None,
            letter,
        };
        let started = Instant::now();
        self.send(&mut blocked);
        while let Attempt::Sent { status, .. } = &blocked.attempt {
            let status = status.clone();
            while status.0.lock().is_none() && started.elapsed() < FIRST_SEND_WAIT {
                self.producer.poll();
                std::thread::sleep(Duration::from_millis(1));
            }
            let report = status.0.lock().take();
            match report {
                None => break,
                Some(Ok(())) => {
                    self.delivered(&blocked);
                    return Rejected::Delivered;
                }
                Some(Err(e)) => {
                    let refusal = Refusal::of(&e, false, self.producer.max_bytes);
                    if !self.refused(&mut blocked, refusal) {
                        break;
                    }
                    self.send(&mut blocked);
                }
            }
        }
        let tp = (blocked.letter.topic.clone(), blocked.letter.partition);
        self.blocked.insert(tp, blocked);
        self.publish();
        Rejected::Blocked
    }

    /// Moves every blocked dead letter on without waiting; returns the partitions whose dead
    /// letter was delivered, with the offset to resume at.
    pub fn progress(&mut self) -> Vec<((String, i32), i64)> {
        if self.blocked.is_empty() {
            return Vec::new();
        }
        self.producer.poll();
        let mut done = Vec::new();
        let keys: Vec<(String, i32)> = self.blocked.keys().cloned().collect();
        for tp in keys {
            let Some(mut b) = self.blocked.remove(&tp) else {
                continue;
            };
            let delivered = match &b.attempt {
                Attempt::Sent { status, at } => {
                    let report = status.0.lock().take();
                    match report {
                        Some(Ok(())) => true,
                        Some(Err(e)) => {
                            let refusal = Refusal::of(&e, false, self.producer.max_bytes);
                            if self.refused(&mut b, refusal) {
                                self.send(&mut b);
                            }
                            false
                        }
                        None if at.elapsed() > DELIVERY_TIMEOUT => {
                            let refusal = Refusal {
                                by: "no delivery report",
                                error: format!("none after {} s", DELIVERY_TIMEOUT.as_secs()),
                                too_large: false,
                            };
                            self.refused(&mut b, refusal);
                            false
                        }
                        None => false,
                    }
                }
                Attempt::Waiting { until } => {
                    if Instant::now() >= *until {
                        self.send(&mut b);
                    }
                    false
                }
            };
            if delivered {
                self.delivered(&b);
                tracing::info!(partition = %b.letter.coordinates(), waited_ms = b.since.elapsed().as_millis() as u64,
                    "dead letter delivered after retrying; the partition resumes");
                done.push((tp, b.letter.offset + 1));
            } else {
                self.blocked.insert(tp, b);
            }
        }
        self.publish();
        done
    }

    /// Forgets the dead letters of partitions this instance no longer owns (their records
    /// are read again by the next owner, from the stored position).
    pub fn forget(&mut self, keep: impl Fn(&(String, i32)) -> bool) {
        let before = self.blocked.len();
        self.blocked.retain(|tp, _| keep(tp));
        if self.blocked.len() != before {
            self.publish();
        }
    }

    /// Before stopping: waits up to `timeout` for deliveries under way and says what stays
    /// undelivered (read again on the next start, since the partition did not move past it).
    pub fn shutdown(&mut self, timeout: Duration) -> Vec<((String, i32), i64)> {
        let deadline = Instant::now() + timeout;
        let mut done = Vec::new();
        while !self.blocked.is_empty() && Instant::now() < deadline {
            let sending = self
                .blocked
                .values()
                .any(|b| matches!(b.attempt, Attempt::Sent { .. }));
            if !sending {
                break;
            }
            done.extend(self.progress());
            std::thread::sleep(Duration::from_millis(5));
        }
        for b in self.blocked.values() {
            tracing::warn!(partition = %b.letter.coordinates(), reason = b.letter.reason.code(),
                last_refusal = %b.last_refusal.as_ref().map(|r| r.to_string()).unwrap_or_default(),
                "stopping with a dead letter undelivered; the record is read again on the next start");
        }
        self.blocked.clear();
        self.publish();
        self.producer.flush(Duration::from_secs(1));
        done
    }

    /// Hands the record (or its envelope) to the producer; a record too large for the local
    /// limit is replaced by its envelope at once.
    fn send(&self, b: &mut Blocked) {
        for _ in 0..2 {
            match self.producer.start(&b.letter, b.envelope.as_ref()) {
                Ok(status) => {
                    b.attempt = Attempt::Sent {
                        status,
                        at: Instant::now(),
                    };
                    return;
                }
                Err(refusal) => {
                    if !self.refused(b, refusal) {
                        return;
                    }
                }
            }
        }
    }

    /// Records a refusal and schedules the next attempt; returns true when the envelope
    /// should be sent at once (the record itself was too large).
    fn refused(&self, b: &mut Blocked, refusal: Refusal) -> bool {
        let dlq = self.producer.dlq_topic(&b.letter.topic);
        if refusal.too_large && b.envelope.is_none() {
            tracing::warn!(partition = %b.letter.coordinates(), dlq = %dlq,
                size = b.letter.payload.as_ref().map_or(0, Vec::len), refusal = %refusal,
                "dead letter too large; sending an envelope instead (streamtally.truncated: true)");
            b.envelope = Some(refusal.clone());
            b.last_refusal = Some(refusal);
            b.attempt = Attempt::Waiting {
                until: Instant::now(),
            };
            return true;
        }
        self.metrics.dead_letter_errors.inc();
        tracing::error!(partition = %b.letter.coordinates(), dlq = %dlq, reason = b.letter.reason.code(),
            refusal = %refusal, backoff_ms = b.backoff.as_millis() as u64,
            "dead letter not delivered; this partition waits (paused) and retries, the others go on");
        b.attempt = Attempt::Waiting {
            until: Instant::now() + b.backoff,
        };
        b.backoff = (b.backoff * 2).min(self.backoff_max);
        b.last_refusal = Some(refusal);
        false
    }

    fn delivered(&self, b: &Blocked) {
        let dlq = self.producer.dlq_topic(&b.letter.topic);
        tracing::warn!(partition = %b.letter.coordinates(), dlq = %dlq, reason = %b.letter.reason,
            envelope = b.envelope.is_some(), "invalid message sent to the dead-letter topic");
        self.metrics
            .events_dead_lettered
            .get_or_create(&DeadLetterLabel {
                topic: b.letter.topic.clone(),
                reason: b.letter.reason.code().to_string(),
            })
            .inc();
    }

    /// Shows the blocked partitions to `/readyz` and the metrics.
    fn publish(&self) {
        let list: Vec<BlockedPartition> = self
            .blocked
            .values()
            .map(|b| BlockedPartition {
                topic: b.letter.topic.clone(),
                partition: b.letter.partition,
                offset: b.letter.offset,
                reason_code: b.letter.reason.code(),
                refusal: b
                    .last_refusal
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "no acknowledgement yet".into()),
                since_ms: b.since_ms,
            })
            .collect();
        self.metrics.set_blocked_partitions(list);
    }
}
