//! Which key of a pool a permit goes to: the one whose permit could go
//! soonest by what its server's rate-limit headers left it (its pacer's
//! readiness, a 429's pause and a hold on an empty window included), with
//! the permits already queued for it counted at its pace; ties go round the
//! pool, so two keys with the same room share the permits evenly. Keys the
//! server rejected (401/403) are never chosen. Pure logic: `rate::broker`
//! calls it under its lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use crate::rate::key_pacer::KeyPacers;

/// The keys the servers rejected, each named once.
#[derive(Debug, Default)]
pub struct Rejected {
    keys: HashSet<String>,
}

impl Rejected {
    /// Marks `key` rejected; true the first time.
    pub fn add(&mut self, key: &str) -> bool {
        self.keys.insert(key.to_owned())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }
}

/// The key of `pool` a permit for `tokens` goes to; None for an empty pool.
/// Every key rejected: the first of the pool (its answer will say so).
pub fn choose<T>(
    pool: &[String],
    pacers: &mut KeyPacers,
    queued: &HashMap<String, VecDeque<T>>,
    rejected: &Rejected,
    tokens: u64,
    rotation: u64,
    now: Instant,
) -> Option<String> {
    let live: Vec<&String> = pool.iter().filter(|key| !rejected.contains(key)).collect();
    if live.is_empty() {
        return pool.first().cloned();
    }
    let start = (rotation % live.len() as u64) as usize;
    let mut best: Option<(f64, &String)> = None;
    for offset in 0..live.len() {
        let key = live[(start + offset) % live.len()];
        let pacer = pacers.get(key, now);
        let ready = pacer
            .ready_at(tokens, now)
            .map_or(0.0, |at| at.saturating_duration_since(now).as_secs_f64());
        let waiting = queued.get(key.as_str()).map_or(0, VecDeque::len) as f64;
        // Each permit already queued takes one request interval of the key.
        let per_request = pacer.rates()[0].map_or(0.0, |per_second| 1.0 / per_second.max(1e-9));
        let wait = ready + waiting * per_request + waiting * 1e-6;
        if best.is_none_or(|(least, _)| wait < least) {
            best = Some((wait, key));
        }
    }
    best.map(|(_, key)| key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn idle_keys_share_the_permits_round_the_pool() {
        let now = Instant::now();
        let mut pacers = KeyPacers::new(None);
        let queued: HashMap<String, VecDeque<u64>> = HashMap::new();
        let rejected = Rejected::default();
        let chosen: Vec<String> = (0..6)
            .filter_map(|turn| choose(&pool(), &mut pacers, &queued, &rejected, 1, turn, now))
            .collect();
        assert_eq!(chosen, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn a_paused_a_busy_or_a_rejected_key_is_passed_over() {
        let now = Instant::now();
        let mut pacers = KeyPacers::new(None);
        pacers.get("a", now).back_off(30.0, now);
        let mut queued = HashMap::new();
        queued.insert("b".to_owned(), VecDeque::from([1, 2, 3]));
        let mut rejected = Rejected::default();
        assert!(rejected.add("c"));
        assert!(!rejected.add("c"), "named once");
        // a is paused for 30s; b has three permits queued; c is rejected.
        let chosen = choose(&pool(), &mut pacers, &queued, &rejected, 1, 0, now);
        assert_eq!(chosen.as_deref(), Some("b"));
        rejected.add("a");
        rejected.add("b");
        let all_gone = choose(&pool(), &mut pacers, &queued, &rejected, 1, 0, now);
        assert_eq!(all_gone.as_deref(), Some("a"));
        assert_eq!(
            choose(&[], &mut pacers, &queued, &rejected, 1, 0, now),
            None
        );
    }
}
