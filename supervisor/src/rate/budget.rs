//! The rate budget shared by every agent of a run: requests and tokens per
//! minute, spread evenly. Requests: a bucket that holds at most rate.burst
//! permits and refills at requests_per_minute / 60 per second. Tokens: a
//! bucket that refills at tokens_per_minute / 60 per second and holds at most
//! `burst` requests' worth (tokens_per_minute × burst / requests_per_minute, or
//! `burst` seconds' worth without a request limit); a permit needs the tokens
//! it asks for (at most a full bucket), and may leave the bucket in debt that
//! later permits wait out. A shared backoff pauses every permit until it ends.
//! Pure logic: the socket server (`rate::server`) drives it.

use std::time::{Duration, Instant};

use shared::job::RateSettings;

use crate::rate::bucket::Bucket;

#[derive(Debug, Clone)]
pub struct Limiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    paused_until: Option<Instant>,
    default_backoff: Duration,
}

impl Limiter {
    pub fn new(settings: Option<&RateSettings>, now: Instant) -> Self {
        let Some(rate) = settings else {
            return Self {
                requests: None,
                tokens: None,
                paused_until: None,
                default_backoff: Duration::from_secs(30),
            };
        };
        let burst = rate.burst.get() as f64;
        let rpm = rate.requests_per_minute.map(|r| r.0);
        let requests = rpm.map(|rpm| Bucket::new(burst, rpm / 60.0, now));
        let tokens = rate.tokens_per_minute.map(|tpm| {
            let capacity = match rpm {
                Some(rpm) => tpm.0 * burst / rpm,
                None => tpm.0 / 60.0 * burst,
            };
            Bucket::new(capacity.max(1.0), tpm.0 / 60.0, now)
        });
        Self {
            requests,
            tokens,
            paused_until: None,
            default_backoff: rate.backoff.get(),
        }
    }

    /// No budget at all: permits are granted at once (unless paused).
    pub fn unlimited(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }

    /// Grants a permit for `tokens` now, or says when to ask again.
    pub fn try_grant(&mut self, tokens: u64, now: Instant) -> Result<(), Instant> {
        match self.ready_at(tokens, now) {
            Some(ready) => Err(ready),
            None => {
                self.take(tokens);
                Ok(())
            }
        }
    }

    /// When a permit for `tokens` may be granted (`None`: now). Apart from
    /// `take` so that a keyed permit can wait for its key and this budget
    /// both before it takes from either.
    pub fn ready_at(&mut self, tokens: u64, now: Instant) -> Option<Instant> {
        if let Some(until) = self.paused_until(now) {
            return Some(until);
        }
        let requests = self
            .requests
            .as_mut()
            .and_then(|bucket| bucket.ready_for(1.0, now));
        let tokens = self
            .tokens
            .as_mut()
            .and_then(|bucket| bucket.ready_for(tokens as f64, now));
        requests.max(tokens)
    }

    /// Takes a permit for `tokens` that `ready_at` said may be granted.
    pub fn take(&mut self, tokens: u64) {
        if let Some(bucket) = self.requests.as_mut() {
            bucket.level -= 1.0;
        }
        if let Some(bucket) = self.tokens.as_mut() {
            bucket.level -= tokens as f64;
        }
    }

    /// The call used `actual` tokens where `estimated` were taken.
    pub fn report(&mut self, estimated: u64, actual: u64, now: Instant) {
        if let Some(bucket) = self.tokens.as_mut() {
            bucket.give_back(estimated as f64 - actual as f64, now);
        }
    }

    /// Pauses every permit for `seconds` (0: rate.backoff); returns the pause.
    pub fn back_off(&mut self, seconds: f64, now: Instant) -> Duration {
        let pause = if seconds > 0.0 {
            Duration::from_secs_f64(seconds.min(24.0 * 3600.0))
        } else {
            self.default_backoff
        };
        let until = now + pause;
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::job::{Count, HumanDuration, PositiveRate};

    fn settings(rpm: Option<f64>, tpm: Option<f64>, burst: usize) -> RateSettings {
        RateSettings {
            requests_per_minute: rpm.map(PositiveRate),
            tokens_per_minute: tpm.map(PositiveRate),
            burst: Count(burst),
            backoff: HumanDuration::from_secs(30),
            tokens_per_day: None,
            requests_per_day: None,
        }
    }

    #[test]
    fn requests_are_spread_evenly_after_the_burst() {
        let now = Instant::now();
        let mut limiter = Limiter::new(Some(&settings(Some(600.0), None, 2)), now);
        assert!(limiter.try_grant(1, now).is_ok());
        assert!(limiter.try_grant(1, now).is_ok());
        let next = limiter.try_grant(1, now).expect_err("the burst is spent");
        assert_eq!(next.duration_since(now).as_millis(), 100);
        assert!(limiter.try_grant(1, next).is_ok());
    }

    #[test]
    fn tokens_are_budgeted_and_refunded() {
        let now = Instant::now();
        // 6000 tokens a minute = 100 a second; capacity 100.
        let mut limiter = Limiter::new(Some(&settings(None, Some(6000.0), 1)), now);
        assert!(limiter.try_grant(100, now).is_ok());
        let next = limiter.try_grant(50, now).expect_err("bucket empty");
        assert_eq!(next.duration_since(now).as_millis(), 500);
        limiter.report(100, 40, now);
        assert!(
            limiter.try_grant(50, now).is_ok(),
            "60 unused tokens came back"
        );
    }

    #[test]
    fn a_backoff_pauses_every_permit() {
        let now = Instant::now();
        let mut limiter = Limiter::new(None, now);
        assert!(limiter.unlimited());
        assert!(limiter.try_grant(1, now).is_ok());
        assert_eq!(limiter.back_off(0.0, now), Duration::from_secs(30));
        assert_eq!(
            limiter.try_grant(1, now),
            Err(now + Duration::from_secs(30))
        );
        assert!(limiter.try_grant(1, now + Duration::from_secs(31)).is_ok());
    }
}
