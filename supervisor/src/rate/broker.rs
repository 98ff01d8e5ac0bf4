//! The rate broker's decisions, for every connection of `rate::server`: the
//! run's budget (`budget`, from `[rate]`) for every permit, and for a permit
//! that names an API key, that key's pacer (`key_pacer`) as well. Permits are
//! granted first come, first served within a key (or among those naming
//! none); each key queues apart, so a paused key holds up no other. A backoff
//! naming a key pauses that key; one naming none pauses every permit. Every
//! grant, backoff, change of a key's pace and hold is a line of RUN/rate.log.
//! Keys are only ever their `key_id` (a URL and a variable's name).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use shared::broker::{LearnedLimits, Reply, Request};
use shared::job::RateSettings;

use crate::rate::budget::Limiter;
use crate::rate::key_choice::{self, Rejected};
use crate::rate::key_pacer::{KeyPacer, KeyPacers};
use crate::rate::learned::Dimension;
use crate::rate::spend::SpendLimit;
use crate::rate::warmup::Warmup;

struct State {
    /// `nightshift control --pause`: no permit is granted until --continue.
    paused: bool,
    limiter: Limiter,
    keys: KeyPacers,
    /// Tickets of the permits waiting that name no key, oldest first.
    unkeyed: VecDeque<u64>,
    /// The same per key.
    keyed: HashMap<String, VecDeque<u64>>,
    next_ticket: u64,
    /// The run's budgets (`limits.max_cost`, `limits.max_tokens`).
    spend: SpendLimit,
    /// Keys the servers rejected: no pool's permit goes to them.
    rejected: Rejected,
    /// Rejected keys the supervisor has not journaled yet.
    unannounced: Vec<String>,
    /// Prompt-cache warm-up, per cacheable prefix.
    warmup: Warmup,
    log: BufWriter<File>,
}

impl State {
    fn queue_of(&self, key: Option<&str>) -> Option<&VecDeque<u64>> {
        match key {
            None => Some(&self.unkeyed),
            Some(key) => self.keyed.get(key),
        }
    }

    fn queue_mut(&mut self, key: Option<&str>) -> &mut VecDeque<u64> {
        match key {
            None => &mut self.unkeyed,
            Some(key) => self.keyed.entry(key.to_owned()).or_default(),
        }
    }

    /// When a permit may be granted: the run's budget and the key's pace both.
    fn ready_at(&mut self, key: &str, tokens: u64, now: Instant) -> Option<Instant> {
        let run = self.limiter.ready_at(tokens, now);
        run.max(self.keys.get(key, now).ready_at(tokens, now))
    }

    /// Writes one line to RUN/rate.log.
    fn log(&mut self, line: &Value) {
        // The log is a record, not a duty: a full disk must not stop permits.
        let _ = writeln!(self.log, "{line}").and_then(|()| self.log.flush());
    }
}

/// What one permit asks for: its estimated tokens, the USD it may cost at
/// most, and the cacheable prefix its request carries.
#[derive(Debug, Clone, Copy)]
struct Ask<'a> {
    tokens: u64,
    cost: Option<f64>,
    prefix: Option<&'a str>,
}

pub struct Broker {
    state: Mutex<State>,
    changed: Condvar,
    started: Instant,
}

impl Broker {
    pub fn new(settings: Option<&RateSettings>, log: BufWriter<File>, now: Instant) -> Self {
        Self {
            state: Mutex::new(State {
                paused: false,
                limiter: Limiter::new(settings, now),
                keys: KeyPacers::new(settings),
                unkeyed: VecDeque::new(),
                keyed: HashMap::new(),
                next_ticket: 0,
                spend: SpendLimit::default(),
                rejected: Rejected::default(),
                unannounced: Vec::new(),
                warmup: Warmup::default(),
                log,
            }),
            changed: Condvar::new(),
            started: now,
        }
    }

    /// The reply to one request; a permit's comes once it is granted.
    pub fn answer(&self, request: &Request) -> Reply {
        match request {
            Request::Permit {
                tokens,
                agent,
                key,
                cost,
                keys,
                prefix,
            } => {
                let ask = Ask {
                    tokens: *tokens,
                    cost: *cost,
                    prefix: prefix.as_deref(),
                };
                match self.permit(agent, key.as_deref(), keys, &ask) {
                    Ok((waited, _)) if keys.is_empty() => Reply::granted(waited * 1000.0),
                    Ok((waited, chosen)) => Reply {
                        key: chosen,
                        ..Reply::granted(waited * 1000.0)
                    },
                    Err(why) => Reply::spent(why),
                }
            }
            Request::Rejected { key, agent } => {
                self.reject(agent, key);
                Reply::ok()
            }
            Request::Report {
                tokens,
                estimated,
                key,
                cost,
                estimated_cost,
                prefix,
                ..
            } => {
                let now = Instant::now();
                let estimated = estimated.unwrap_or(*tokens);
                let mut state = self.lock();
                state.warmup.reported(prefix.as_deref(), *tokens > 0);
                state
                    .spend
                    .settle(estimated, *tokens, *estimated_cost, *cost);
                state.limiter.report(estimated, *tokens, now);
                if let Some(key) = key {
                    state.keys.get(key, now).report(estimated, *tokens, now);
                }
                drop(state);
                self.changed.notify_all();
                Reply::ok()
            }
            Request::Backoff {
                seconds,
                agent,
                key,
            } => {
                let pause = self.back_off(agent, *seconds, key.as_deref());
                Reply::paused(pause.as_secs_f64() * 1000.0)
            }
            Request::Learned { key, agent, limits } => {
                self.learn(agent, key, limits);
                Reply::ok()
            }
            // `serve` answers hellos itself; a repeated one is harmless.
            Request::Hello { .. } => Reply::ok(),
        }
    }

    /// The server rejected `key`: said once, in rate.log and the supervisor's
    /// log, and no pool's permit goes to it again.
    fn reject(&self, agent: &str, key: &str) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.rejected.add(key) {
            let t = self.since_start(now);
            state.log(&json!({"t": t, "op": "rejected", "agent": agent, "key": key}));
            state.unannounced.push(key.to_owned());
            tracing::warn!("the server rejected the key {key} (reported by {agent}); the run goes on with the others");
        }
    }

    /// Keys rejected since the last call, for the journal.
    pub fn newly_rejected(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().unannounced)
    }

    /// Holds the run's budgets from now on (what earlier sessions spent
    /// is in `limit`).
    pub fn set_budget(&self, limit: SpendLimit) {
        self.lock().spend = limit;
        self.changed.notify_all();
    }

    /// Why the budget refuses permits, once it does.
    pub fn budget_spent(&self) -> Option<String> {
        self.lock().spend.exhausted().map(str::to_owned)
    }

    /// Holds every permit, keyed or not, until called again with false.
    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn since_start(&self, now: Instant) -> f64 {
        now.duration_since(self.started).as_secs_f64()
    }

    /// Blocks until a permit for `key` — or, without one, for the key it
    /// chooses of `pool` — is granted; returns the seconds waited and the
    /// key, or why the run's budget cannot cover it.
    fn permit(
        &self,
        agent: &str,
        key: Option<&str>,
        pool: &[String],
        ask: &Ask<'_>,
    ) -> Result<(f64, Option<String>), String> {
        let Ask {
            tokens,
            cost,
            prefix,
        } = *ask;
        let asked = Instant::now();
        let mut state = self.lock();
        let chosen = match key {
            Some(_) => None,
            None => {
                let state = &mut *state;
                let rotation = state.next_ticket;
                key_choice::choose(
                    pool,
                    &mut state.keys,
                    &state.keyed,
                    &state.rejected,
                    tokens,
                    rotation,
                    asked,
                )
            }
        };
        let key = key.or(chosen.as_deref());
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue_mut(key).push_back(ticket);
        loop {
            let now = Instant::now();
            let first = state.queue_of(key).and_then(VecDeque::front) == Some(&ticket);
            // A paused run holds every permit; others wait their turn.
            let ready = match (first && !state.paused, key) {
                (false, _) => {
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    continue;
                }
                (true, None) => state.limiter.ready_at(tokens, now),
                (true, Some(key)) => state.ready_at(key, tokens, now),
            };
            // Another request with the same prefix may be writing the cache.
            let ready = ready.max(state.warmup.ready_at(prefix, now));
            // A spent budget refuses at once, without waiting for the pace.
            let refused = match ready {
                Some(_) if state.spend.exhausted().is_none() => None,
                _ => state.spend.reserve(tokens, cost).err(),
            };
            if let Some(why) = refused {
                state.queue_mut(key).pop_front();
                let t = self.since_start(now);
                state.log(
                    &json!({"t": t, "op": "spent", "agent": agent, "tokens": tokens, "cost": cost}),
                );
                drop(state);
                self.changed.notify_all();
                return Err(why);
            }
            if ready.is_none() {
                state.limiter.take(tokens);
                if let Some(key) = key {
                    state.keys.get(key, now).take(tokens);
                }
            }
            if let Some(ready) = ready {
                let wait = ready.saturating_duration_since(now);
                state = self
                    .changed
                    .wait_timeout(state, wait)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
                continue;
            }
            state.queue_mut(key).pop_front();
            let waited = now.duration_since(asked).as_secs_f64();
            let t = self.since_start(now);
            let mut line = json!({"t": t, "op": "grant", "agent": agent, "tokens": tokens, "waited_ms": waited * 1000.0});
            if let Some(key) = key {
                line["key"] = json!(key);
            }
            if state.warmup.granted(prefix, now) {
                line["warmup"] = json!(true);
            }
            state.log(&line);
            drop(state);
            self.changed.notify_all();
            return Ok((waited, chosen));
        }
    }

    /// Pauses `key`'s permits, or without a key every permit.
    fn back_off(&self, agent: &str, seconds: f64, key: Option<&str>) -> Duration {
        let now = Instant::now();
        let mut state = self.lock();
        let t = self.since_start(now);
        let pause = match key {
            None => {
                let pause = state.limiter.back_off(seconds, now);
                let line = json!({"t": t, "op": "backoff", "agent": agent, "seconds": pause.as_secs_f64()});
                state.log(&line);
                pause
            }
            Some(key) => {
                let pacer = state.keys.get(key, now);
                let pause = pacer.back_off(seconds, now);
                let mut line = pace(pacer);
                line["t"] = json!(t);
                line["op"] = json!("backoff");
                line["agent"] = json!(agent);
                line["key"] = json!(key);
                line["seconds"] = json!(pause.as_secs_f64());
                state.log(&line);
                pause
            }
        };
        drop(state);
        self.changed.notify_all();
        let whose = key.map_or_else(|| "every key".to_owned(), |key| format!("key {key}"));
        tracing::info!(
            "rate-limit backoff of {:.1}s for {whose}, reported by {agent}",
            pause.as_secs_f64()
        );
        pause
    }

    /// Paces `key` to what an answer's headers said.
    fn learn(&self, agent: &str, key: &str, limits: &LearnedLimits) {
        let now = Instant::now();
        let mut state = self.lock();
        let t = self.since_start(now);
        let pacer = state.keys.get(key, now);
        let outcome = pacer.learn(limits, now);
        let paced = outcome.retuned.then(|| pace(pacer));
        if let Some(mut line) = paced {
            line["t"] = json!(t);
            line["op"] = json!("learned");
            line["agent"] = json!(agent);
            line["key"] = json!(key);
            tracing::debug!("{agent} learned the limits of {key}: now {line}");
            state.log(&line);
        }
        if let Some(hold) = outcome.hold {
            let line = json!({"t": t, "op": "hold", "agent": agent, "key": key, "seconds": hold.as_secs_f64()});
            state.log(&line);
            tracing::info!(
                "{key} has nothing left in a rate-limit window: its permits wait {:.1}s for the reset",
                hold.as_secs_f64()
            );
        }
        drop(state);
        // A learned limit may let a waiting permit go sooner (or later).
        self.changed.notify_all();
    }
}

/// A key's pace for the log: per minute in each dimension paced, and the
/// share of the learned pace in use.
fn pace(pacer: &KeyPacer) -> Value {
    let mut fields = Map::new();
    for (dim, rate) in Dimension::ALL.into_iter().zip(pacer.rates()) {
        if let Some(per_second) = rate {
            let per_minute = (per_second * 60.0 * 1000.0).round() / 1000.0;
            fields.insert(format!("{}_per_minute", dim.name()), json!(per_minute));
        }
    }
    fields.insert("factor".into(), json!(pacer.factor()));
    Value::Object(fields)
}
