//! A token bucket: a level that refills at a steady rate up to a capacity and
//! may go into debt, which later takers wait out. Shared by the run's budget
//! (`budget`) and each key's pacer (`key_pacer`). Pure: takes `Instant`s.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Bucket {
    pub level: f64,
    pub capacity: f64,
    pub per_second: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(capacity: f64, per_second: f64, now: Instant) -> Self {
        Self {
            level: capacity,
            capacity,
            per_second,
            updated: now,
        }
    }

    pub fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }

    /// When the level will reach `needed` (after `refill`).
    pub fn ready_at(&self, needed: f64, now: Instant) -> Instant {
        let missing = (needed - self.level).max(0.0);
        now + Duration::from_secs_f64(missing / self.per_second.max(1e-9))
    }

    /// When `wanted` may be taken: it needs at most a full bucket, so a take
    /// larger than the capacity goes through and leaves a debt.
    pub fn ready_for(&mut self, wanted: f64, now: Instant) -> Option<Instant> {
        self.refill(now);
        let needed = wanted.min(self.capacity);
        (self.level < needed).then(|| self.ready_at(needed, now))
    }

    /// A new rate and capacity; what was refilled so far at the old rate
    /// stays, and the level never exceeds the new capacity.
    pub fn retune(&mut self, capacity: f64, per_second: f64, now: Instant) {
        self.refill(now);
        self.capacity = capacity;
        self.per_second = per_second;
        self.level = self.level.min(capacity);
    }

    /// Gives `amount` back (or, negative, charges it), never above capacity.
    pub fn give_back(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        self.level = (self.level + amount).min(self.capacity);
    }
}
