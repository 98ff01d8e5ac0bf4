//! Prompt-cache warm-up across every agent of the run: the first permit for
//! a request that carries a cacheable prefix (`shared::broker::prefix_id`)
//! goes alone; permits for other requests with that prefix wait until its
//! report says it was answered, so the cache is written once and read by
//! every request after it, instead of 30 agents each writing it at once. A
//! warm-up that got no answer leaves the prefix cold (the next request warms
//! it); one that never reports (its agent died) is given up on after
//! `MAX_WARMUP`. Pure logic: `rate::broker` drives it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The longest other requests wait for a warm-up's answer.
pub const MAX_WARMUP: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Prefix {
    /// Its first request is in flight, since then.
    Warming(Instant),
    /// Written to the cache.
    Warm,
}

#[derive(Debug, Default)]
pub struct Warmup {
    prefixes: HashMap<String, Prefix>,
}

impl Warmup {
    /// When a permit for a request with `prefix` may go (None: now).
    pub fn ready_at(&self, prefix: Option<&str>, now: Instant) -> Option<Instant> {
        match self.prefixes.get(prefix?) {
            Some(Prefix::Warming(since)) => Some(*since + MAX_WARMUP).filter(|until| *until > now),
            Some(Prefix::Warm) | None => None,
        }
    }

    /// A permit with `prefix` was granted; true when it is the warm-up.
    pub fn granted(&mut self, prefix: Option<&str>, now: Instant) -> bool {
        let Some(prefix) = prefix else {
            return false;
        };
        match self.prefixes.get(prefix) {
            None => {
                self.prefixes
                    .insert(prefix.to_owned(), Prefix::Warming(now));
                true
            }
            Some(Prefix::Warming(since)) if now >= *since + MAX_WARMUP => {
                // Given up on: the prefix is taken as written.
                self.prefixes.insert(prefix.to_owned(), Prefix::Warm);
                false
            }
            Some(_) => false,
        }
    }

    /// A request with `prefix` was answered (`answered`) or not. Only the
    /// warm-up's report changes anything: an answer makes the prefix warm,
    /// none leaves it cold for the next request to warm.
    pub fn reported(&mut self, prefix: Option<&str>, answered: bool) {
        let Some(prefix) = prefix else {
            return;
        };
        if let Some(Prefix::Warming(_)) = self.prefixes.get(prefix) {
            if answered {
                self.prefixes.insert(prefix.to_owned(), Prefix::Warm);
            } else {
                self.prefixes.remove(prefix);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_goes_alone_and_the_rest_after_its_answer() {
        let now = Instant::now();
        let mut warmup = Warmup::default();
        let p = Some("p");
        assert_eq!(warmup.ready_at(p, now), None);
        assert!(warmup.granted(p, now), "the first is the warm-up");
        assert_eq!(warmup.ready_at(p, now), Some(now + MAX_WARMUP));
        assert_eq!(warmup.ready_at(Some("other"), now), None);
        assert_eq!(warmup.ready_at(None, now), None);
        warmup.reported(p, true);
        assert_eq!(warmup.ready_at(p, now), None);
        assert!(!warmup.granted(p, now), "warm: no second warm-up");
    }

    #[test]
    fn a_failed_warm_up_leaves_the_prefix_cold_and_a_lost_one_is_given_up() {
        let now = Instant::now();
        let mut warmup = Warmup::default();
        assert!(warmup.granted(Some("p"), now));
        warmup.reported(Some("p"), false);
        assert!(warmup.granted(Some("p"), now), "the next request warms it");
        let later = now + MAX_WARMUP;
        assert_eq!(warmup.ready_at(Some("p"), later), None);
        assert!(!warmup.granted(Some("p"), later));
    }
}
