//! One API key's pace, to the limits its server announced: a bucket per
//! dimension the server limits (requests, tokens, input and output tokens),
//! each refilled at the learned rate (`learned`), capped by the job's
//! `[rate]` when it has one, scaled by a factor that halves at once on a
//! rate-limit answer and climbs back a step per quiet interval (AIMD: no 429
//! storm, no oscillation). Also: a hold while the server says a window has
//! nothing left, a pause after a rate-limit answer (its retry-after, else a
//! growing backoff), and tokens reserved by a permit and given back by its
//! report. Before anything is learned (and without `[rate]`) a key starts
//! slowly: a few permits at once, then more as answers come back.
//! Pure logic: takes `Instant`s; `rate::broker` drives it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shared::broker::LearnedLimits;
use shared::job::RateSettings;

use crate::rate::bucket::Bucket;
use crate::rate::learned::{output_share, sane_seconds, Dimension, Learned};

/// Permits a key gets at once before any answer came back.
const START_BURST: f64 = 4.0;
/// Before anything is learned, permits still trickle at this rate, so a
/// client that never reports is slow, not stuck.
const START_PER_SECOND: f64 = 1.0;
/// Before anything is learned, how far answers may widen the start.
const MAX_START_BURST: f64 = 10_000.0;
/// A learned bucket holds this many seconds of its rate: enough to keep
/// agents busy, too little to burst through a window.
const BURST_SECONDS: f64 = 2.0;
/// The pace after a rate-limit answer, of what it was.
const DECREASE: f64 = 0.5;
/// The pace never drops below this share of the learned one.
const MIN_FACTOR: f64 = 1.0 / 16.0;
/// After a rate-limit answer, each interval this long without another one
/// gives back this much of the learned pace.
const CLIMB_EVERY: Duration = Duration::from_secs(5);
const CLIMB_STEP: f64 = 0.1;
/// A rate-limit answer without retry-after pauses the key this long first,
/// then twice as long each time, up to MAX_BACKOFF…
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// …until the key has had no pause for this long.
const QUIET: Duration = Duration::from_secs(60);

/// What `[rate]` allows at most, per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cap {
    requests: Option<f64>,
    tokens: Option<f64>,
}

impl Cap {
    pub fn new(settings: Option<&RateSettings>) -> Self {
        Self {
            requests: settings.and_then(|r| r.requests_per_minute.map(|v| v.0 / 60.0)),
            tokens: settings.and_then(|r| r.tokens_per_minute.map(|v| v.0 / 60.0)),
        }
    }
}

/// What a `learn` changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnOutcome {
    /// The pace changed.
    pub retuned: bool,
    /// A window has nothing left: permits wait this long.
    pub hold: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct KeyPacer {
    learned: [Option<Learned>; 4],
    buckets: [Option<Bucket>; 4],
    cap: Cap,
    /// The share of the learned pace in use (AIMD).
    factor: f64,
    climbed_at: Instant,
    /// The slow start, until a limit is learned or `[rate]` paces requests.
    start: Option<Bucket>,
    held_until: Option<Instant>,
    paused_until: Option<Instant>,
    next_backoff: Duration,
    /// Of a permit's tokens, the share the output window is charged.
    output_share: f64,
}

impl KeyPacer {
    pub fn new(cap: Cap, now: Instant) -> Self {
        let start =
            (cap.requests.is_none()).then(|| Bucket::new(START_BURST, START_PER_SECOND, now));
        let mut pacer = Self {
            learned: [None; 4],
            buckets: [None, None, None, None],
            cap,
            factor: 1.0,
            climbed_at: now,
            start,
            held_until: None,
            paused_until: None,
            next_backoff: FIRST_BACKOFF,
            output_share: 0.5,
        };
        pacer.retune(now);
        pacer
    }

    /// When a permit for `tokens` may be granted (`None`: now).
    pub fn ready_at(&mut self, tokens: u64, now: Instant) -> Option<Instant> {
        self.climb(now);
        let stopped = self.paused_until.max(self.held_until).filter(|t| *t > now);
        if stopped.is_some() {
            return stopped;
        }
        let mut ready = self.start.as_mut().and_then(|b| b.ready_for(1.0, now));
        for dim in Dimension::ALL {
            let wanted = self.charge(dim, tokens as f64);
            if let Some(bucket) = self.buckets[dim.index()].as_mut() {
                ready = ready.max(bucket.ready_for(wanted, now));
            }
        }
        ready
    }

    /// Takes a permit `ready_at` said may be granted: one request, and its
    /// tokens reserved until its report.
    pub fn take(&mut self, tokens: u64) {
        if let Some(start) = self.start.as_mut() {
            start.level -= 1.0;
        }
        for dim in Dimension::ALL {
            let charge = self.charge(dim, tokens as f64);
            if let Some(bucket) = self.buckets[dim.index()].as_mut() {
                bucket.level -= charge;
            }
        }
    }

    /// A call reserved `estimated` tokens and used `used`: the difference
    /// goes back (or, used more, is owed). An answer came back, too, so the
    /// slow start widens.
    pub fn report(&mut self, estimated: u64, used: u64, now: Instant) {
        let difference = estimated as f64 - used as f64;
        for dim in [
            Dimension::Tokens,
            Dimension::InputTokens,
            Dimension::OutputTokens,
        ] {
            let amount = self.charge(dim, difference);
            if let Some(bucket) = self.buckets[dim.index()].as_mut() {
                bucket.give_back(amount, now);
            }
        }
        if let Some(start) = self.start.as_mut() {
            // Its own permit back and one more: doubling per round trip.
            let capacity = (start.capacity + 1.0).min(MAX_START_BURST);
            start.retune(capacity, START_PER_SECOND, now);
            start.give_back(2.0, now);
        }
    }

    /// Folds in an answer's headers: the pace follows the limits; a level is
    /// never above what the server says remains; a window with nothing left
    /// holds the key until its reset.
    pub fn learn(&mut self, limits: &LearnedLimits, now: Instant) -> LearnOutcome {
        let before = self.rates();
        let mut hold = None;
        let mut any = false;
        for dim in Dimension::ALL {
            let Some(window) = dim.window(limits) else {
                continue;
            };
            any = true;
            let slot = &mut self.learned[dim.index()];
            *slot = Some(Learned::update(*slot, &window));
            if window.remaining == 0 && window.reset_seconds > 0.0 {
                let until = now + Duration::from_secs_f64(window.reset_seconds);
                self.held_until = self.held_until.max(Some(until));
                hold = hold.max(Some(Duration::from_secs_f64(window.reset_seconds)));
            }
        }
        if !any {
            return LearnOutcome {
                retuned: false,
                hold: None,
            };
        }
        if let (Some(input), Some(output)) = (limits.input_tokens, limits.output_tokens) {
            if let Some(share) = output_share(&input, &output) {
                self.output_share = share;
            }
        }
        // The server announces its limits: they pace the key from now on.
        self.start = None;
        self.retune(now);
        for dim in Dimension::ALL {
            if let (Some(window), Some(bucket)) =
                (dim.window(limits), self.buckets[dim.index()].as_mut())
            {
                bucket.refill(now);
                bucket.level = bucket.level.min(window.remaining as f64);
            }
        }
        LearnOutcome {
            retuned: self.rates() != before,
            hold,
        }
    }

    /// A rate-limit answer: pauses the key `seconds` (retry-after), or
    /// without one a backoff that grows while answers keep saying so; the
    /// pace drops at once. Several agents report the same burst of answers:
    /// while the key is paused already, a report only extends the pause.
    /// Returns the pause from now.
    pub fn back_off(&mut self, seconds: f64, now: Instant) -> Duration {
        let paused = self.paused_until.filter(|until| *until > now);
        // Quiet: the last pause ended long ago (or there was none).
        let quiet = !matches!(self.paused_until,
            Some(until) if now.saturating_duration_since(until) < QUIET);
        if quiet {
            self.next_backoff = FIRST_BACKOFF;
        }
        let seconds = sane_seconds(seconds);
        let pause = match (seconds > 0.0, paused) {
            (true, _) => Duration::from_secs_f64(seconds),
            (false, Some(until)) => until - now,
            (false, None) => {
                let pause = self.next_backoff;
                self.next_backoff = (pause * 2).min(MAX_BACKOFF);
                pause
            }
        };
        if paused.is_none() {
            self.decrease(now);
        }
        let until = now + pause;
        self.paused_until = self.paused_until.max(Some(until));
        // The climb starts once the pause is over.
        self.climbed_at = self.climbed_at.max(until);
        pause
    }

    /// Until when the key is paused or held, if it is.
    pub fn stopped_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until
            .max(self.held_until)
            .filter(|until| *until > now)
    }

    /// Per second, per dimension (`Dimension::index`): the pace in force.
    pub fn rates(&self) -> [Option<f64>; 4] {
        Dimension::ALL.map(|dim| self.rate(dim))
    }

    pub fn factor(&self) -> f64 {
        self.factor
    }

    fn decrease(&mut self, now: Instant) {
        self.factor = (self.factor * DECREASE).max(MIN_FACTOR);
        if let Some(start) = self.start.as_mut() {
            let capacity = (start.capacity * DECREASE).max(START_BURST);
            start.retune(capacity, START_PER_SECOND, now);
        }
        self.retune(now);
    }

    /// Additive increase: a step for every quiet interval since the last one.
    fn climb(&mut self, now: Instant) {
        if self.factor >= 1.0 || now < self.climbed_at + CLIMB_EVERY {
            return;
        }
        let steps = (now - self.climbed_at).as_secs_f64() / CLIMB_EVERY.as_secs_f64();
        let steps = steps.floor();
        self.factor = (self.factor + steps * CLIMB_STEP).min(1.0);
        self.climbed_at += CLIMB_EVERY.mul_f64(steps);
        self.retune(now);
    }

    /// The pace of one dimension: the learned rate, at most `[rate]`'s, times
    /// the factor. `[rate]` alone paces requests and tokens before anything
    /// is learned.
    fn rate(&self, dim: Dimension) -> Option<f64> {
        let learned = self.learned[dim.index()].map(|l| l.per_second());
        let (cap, cap_alone) = match dim {
            Dimension::Requests => (self.cap.requests, true),
            Dimension::Tokens => (self.cap.tokens, true),
            // A run's token cap bounds input and output tokens as well.
            Dimension::InputTokens | Dimension::OutputTokens => (self.cap.tokens, false),
        };
        let base = match (learned, cap) {
            (Some(learned), Some(cap)) => learned.min(cap),
            (Some(learned), None) => learned,
            (None, Some(cap)) if cap_alone => cap,
            _ => return None,
        };
        Some(base * self.factor)
    }

    fn retune(&mut self, now: Instant) {
        for dim in Dimension::ALL {
            let rate = self.rate(dim);
            let slot = &mut self.buckets[dim.index()];
            match (rate, slot.as_mut()) {
                (Some(rate), Some(bucket)) => bucket.retune(capacity(rate), rate, now),
                (Some(rate), None) => *slot = Some(Bucket::new(capacity(rate), rate, now)),
                (None, _) => *slot = None,
            }
        }
    }

    /// What `tokens` of a permit weigh in `dim`: a permit names only its
    /// total, which input and output windows share.
    fn charge(&self, dim: Dimension, tokens: f64) -> f64 {
        match dim {
            Dimension::Requests => 1.0,
            Dimension::Tokens => tokens,
            Dimension::InputTokens => tokens * (1.0 - self.output_share),
            Dimension::OutputTokens => tokens * self.output_share,
        }
    }
}

fn capacity(per_second: f64) -> f64 {
    (per_second * BURST_SECONDS).max(1.0)
}

/// Every key's pacer, made at its first use.
#[derive(Debug, Clone)]
pub struct KeyPacers {
    cap: Cap,
    pacers: HashMap<String, KeyPacer>,
}

impl KeyPacers {
    pub fn new(settings: Option<&RateSettings>) -> Self {
        Self {
            cap: Cap::new(settings),
            pacers: HashMap::new(),
        }
    }

    pub fn get(&mut self, key: &str, now: Instant) -> &mut KeyPacer {
        // No allocation for a key seen before: this is every permit's path.
        if !self.pacers.contains_key(key) {
            self.pacers
                .insert(key.to_owned(), KeyPacer::new(self.cap, now));
        }
        self.pacers
            .get_mut(key)
            .expect("the key's pacer was inserted above")
    }
}

#[cfg(test)]
mod tests;
