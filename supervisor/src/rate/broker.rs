//! The rate broker's decisions, for every connection of `rate::server`: the
//! run's budget (`budget`, from `[rate]`) for every permit, and for a permit
//! that names an API key, that key's pacer (`key_pacer`) as well. Permits are
//! granted first come, first served within a key (or among those naming
//! none); each key queues apart, so a paused key holds up no other. A backoff
//! naming a key pauses that key; one naming none pauses every permit. Every
//! grant, backoff, change of a key's pace and hold is a line of RUN/rate.log.
//! Keys are only ever their `key_id` (a URL and a variable's name).
//!
//! Nothing here blocks or keeps a thread: a permit is queued under a ticket,
//! and the server's one I/O thread calls `grant_due` after every request it
//! read and whenever the time `next_due` names has come; a ticket whose
//! connection closed is `cancel`led, so it holds up no queue.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use shared::broker::{LearnedLimits, Reply, Request};
use shared::job::RateSettings;

use crate::rate::budget::Limiter;
use crate::rate::key_pacer::{KeyPacer, KeyPacers};
use crate::rate::learned::Dimension;
use crate::rate::log::RateLog;

/// The handle of a queued permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// What a request gets: its reply now, or a ticket whose reply `grant_due`
/// gives once the permit is granted.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Now(Reply),
    Later(Ticket),
}

/// A permit request waiting its turn.
struct Waiting {
    agent: String,
    tokens: u64,
    asked: Instant,
}

pub struct Broker {
    /// `nightshift control --pause`: no permit is granted until --continue.
    paused: bool,
    limiter: Limiter,
    keys: KeyPacers,
    /// Tickets of the permits waiting that name no key, oldest first.
    unkeyed: VecDeque<Ticket>,
    /// The same per key.
    keyed: HashMap<String, VecDeque<Ticket>>,
    waiting: HashMap<Ticket, Waiting>,
    next_ticket: u64,
    /// When the first permit that could not go may go.
    next_due: Option<Instant>,
    log: RateLog,
    started: Instant,
    /// RUN/rate.limited, made at the first limit an agent reports.
    limited_file: Option<PathBuf>,
}

impl Broker {
    /// `limited_file`: RUN/rate.limited (`shared::broker::LIMITED_FILE`).
    pub fn new(
        settings: Option<&RateSettings>,
        log: RateLog,
        limited_file: Option<PathBuf>,
        now: Instant,
    ) -> Self {
        Self {
            paused: false,
            limiter: Limiter::new(settings, now),
            keys: KeyPacers::new(settings),
            unkeyed: VecDeque::new(),
            keyed: HashMap::new(),
            waiting: HashMap::new(),
            next_ticket: 0,
            next_due: None,
            log,
            started: now,
            limited_file,
        }
    }

    /// A limit shows: agents that took no permits take them from now on.
    fn mark_limited(&mut self) {
        let Some(path) = self.limited_file.take() else {
            return;
        };
        if let Err(error) = std::fs::write(&path, b"") {
            tracing::warn!(
                "cannot make {}: {error}; agents without a rate limit of their own go on without permits",
                path.display()
            );
        }
    }

    /// The reply to one request, or for a permit the ticket it waits under
    /// (then `grant_due` says when it is granted — at once, when it can be).
    pub fn answer(&mut self, request: &Request, now: Instant) -> Answer {
        match request {
            Request::Permit { tokens, agent, key } => {
                let ticket = Ticket(self.next_ticket);
                self.next_ticket += 1;
                self.queue_mut(key.as_deref()).push_back(ticket);
                self.waiting.insert(
                    ticket,
                    Waiting {
                        agent: agent.clone(),
                        tokens: *tokens,
                        asked: now,
                    },
                );
                Answer::Later(ticket)
            }
            Request::Report {
                tokens,
                estimated,
                key,
                ..
            } => {
                let estimated = estimated.unwrap_or(*tokens);
                self.limiter.report(estimated, *tokens, now);
                if let Some(key) = key {
                    self.keys.get(key, now).report(estimated, *tokens, now);
                }
                Answer::Now(Reply::ok())
            }
            Request::Backoff {
                seconds,
                agent,
                key,
            } => {
                self.mark_limited();
                let pause = self.back_off(agent, *seconds, key.as_deref(), now);
                Answer::Now(Reply::paused(pause.as_secs_f64() * 1000.0))
            }
            Request::Learned { key, agent, limits } => {
                if !limits.is_empty() {
                    self.mark_limited();
                }
                self.learn(agent, key, limits, now);
                Answer::Now(Reply::ok())
            }
            // The server answers hellos itself; a repeated one is harmless.
            Request::Hello { .. } => Answer::Now(Reply::ok()),
        }
    }

    /// Grants every permit that may go now, oldest first within each queue;
    /// the ticket and reply of each.
    pub fn grant_due(&mut self, now: Instant) -> Vec<(Ticket, Reply)> {
        let mut granted = Vec::new();
        self.next_due = None;
        if self.paused {
            return granted;
        }
        let mut next_due: Option<Instant> = None;
        while let Some(&ticket) = self.unkeyed.front() {
            let tokens = self.waiting.get(&ticket).map_or(0, |w| w.tokens);
            if let Err(ready) = self.limiter.try_grant(tokens, now) {
                next_due = earliest(next_due, ready);
                break;
            }
            self.unkeyed.pop_front();
            granted.push((ticket, self.granted(ticket, None, now)));
        }
        let keys: Vec<String> = self
            .keyed
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            while let Some(&ticket) = self.keyed.get(&key).and_then(VecDeque::front) {
                let tokens = self.waiting.get(&ticket).map_or(0, |w| w.tokens);
                // The run's budget and the key's pace both.
                let run = self.limiter.ready_at(tokens, now);
                if let Some(ready) = run.max(self.keys.get(&key, now).ready_at(tokens, now)) {
                    next_due = earliest(next_due, ready);
                    break;
                }
                self.limiter.take(tokens);
                self.keys.get(&key, now).take(tokens);
                if let Some(queue) = self.keyed.get_mut(&key) {
                    queue.pop_front();
                }
                granted.push((ticket, self.granted(ticket, Some(&key), now)));
            }
        }
        self.next_due = next_due;
        granted
    }

    /// When `grant_due` may grant a permit that cannot go now (None: none
    /// waits, or the run is paused and only `set_paused` lets them go).
    pub fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    /// Forgets a waiting permit whose connection went away.
    pub fn cancel(&mut self, ticket: Ticket) {
        if self.waiting.remove(&ticket).is_none() {
            return;
        }
        if let Some(at) = self.unkeyed.iter().position(|t| *t == ticket) {
            self.unkeyed.remove(at);
            return;
        }
        for queue in self.keyed.values_mut() {
            if let Some(at) = queue.iter().position(|t| *t == ticket) {
                queue.remove(at);
                return;
            }
        }
    }

    /// Holds every permit, keyed or not, until called again with false.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    fn queue_mut(&mut self, key: Option<&str>) -> &mut VecDeque<Ticket> {
        match key {
            None => &mut self.unkeyed,
            Some(key) => self.keyed.entry(key.to_owned()).or_default(),
        }
    }

    fn since_start(&self, now: Instant) -> f64 {
        now.duration_since(self.started).as_secs_f64()
    }

    /// The reply to a permit just granted, and its line in rate.log.
    fn granted(&mut self, ticket: Ticket, key: Option<&str>, now: Instant) -> Reply {
        let Some(waiting) = self.waiting.remove(&ticket) else {
            return Reply::granted(0.0);
        };
        let waited = now.duration_since(waiting.asked).as_secs_f64();
        let t = self.since_start(now);
        let mut line = json!({"t": t, "op": "grant", "agent": waiting.agent, "tokens": waiting.tokens, "waited_ms": waited * 1000.0});
        if let Some(key) = key {
            line["key"] = json!(key);
        }
        self.log.write(&line);
        Reply::granted(waited * 1000.0)
    }

    /// Pauses `key`'s permits, or without a key every permit.
    fn back_off(&mut self, agent: &str, seconds: f64, key: Option<&str>, now: Instant) -> Duration {
        let t = self.since_start(now);
        let pause = match key {
            None => {
                let pause = self.limiter.back_off(seconds, now);
                let line = json!({"t": t, "op": "backoff", "agent": agent, "seconds": pause.as_secs_f64()});
                self.log.write(&line);
                pause
            }
            Some(key) => {
                let pacer = self.keys.get(key, now);
                let pause = pacer.back_off(seconds, now);
                let mut line = pace(pacer);
                line["t"] = json!(t);
                line["op"] = json!("backoff");
                line["agent"] = json!(agent);
                line["key"] = json!(key);
                line["seconds"] = json!(pause.as_secs_f64());
                self.log.write(&line);
                pause
            }
        };
        let whose = key.map_or_else(|| "every key".to_owned(), |key| format!("key {key}"));
        tracing::info!(
            "rate-limit backoff of {:.1}s for {whose}, reported by {agent}",
            pause.as_secs_f64()
        );
        pause
    }

    /// Paces `key` to what an answer's headers said.
    fn learn(&mut self, agent: &str, key: &str, limits: &LearnedLimits, now: Instant) {
        let t = self.since_start(now);
        let pacer = self.keys.get(key, now);
        let outcome = pacer.learn(limits, now);
        let paced = outcome.retuned.then(|| pace(pacer));
        if let Some(mut line) = paced {
            line["t"] = json!(t);
            line["op"] = json!("learned");
            line["agent"] = json!(agent);
            line["key"] = json!(key);
            tracing::debug!("{agent} learned the limits of {key}: now {line}");
            self.log.write(&line);
        }
        if let Some(hold) = outcome.hold {
            let line = json!({"t": t, "op": "hold", "agent": agent, "key": key, "seconds": hold.as_secs_f64()});
            self.log.write(&line);
            tracing::info!(
                "{key} has nothing left in a rate-limit window: its permits wait {:.1}s for the reset",
                hold.as_secs_f64()
            );
        }
    }
}

fn earliest(current: Option<Instant>, candidate: Instant) -> Option<Instant> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
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
