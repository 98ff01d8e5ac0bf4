//! The rate broker's decisions, for every connection of `rate::server`: the
//! run's budget (`budget`, from `[rate]`) for every permit, and for a permit
//! that names an API key, that key's pacer (`key_pacer`) as well. Permits are
//! granted first come, first served within a key (or among those naming
//! none); each key queues apart, so a paused key holds up no other. A backoff
//! naming a key pauses that key; one naming none pauses every permit. Every
//! grant, backoff, change of a key's pace and hold is a line of RUN/rate.log.
//! Keys are only ever their `key_id` (a URL and a variable's name). A permit
//! may name a pool of keys instead of one: the broker chooses the key
//! (`key_choice`). It also holds the run's budgets (`spend`: a permit the
//! budget cannot cover is refused, and every one after it) and the prompt
//! cache's warm-up (`warmup`: the first request with a cacheable prefix goes
//! alone).
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
use crate::rate::key_choice::{self, Rejected};
use crate::rate::key_pacer::{KeyPacer, KeyPacers};
use crate::rate::learned::Dimension;
use crate::rate::log::RateLog;
use crate::rate::spend::SpendLimit;
use crate::rate::warmup::Warmup;

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
    /// The USD it may cost at most (for the budget).
    cost: Option<f64>,
    /// The cacheable prefix its request carries (for the warm-up).
    prefix: Option<String>,
    /// The key the broker chose of the permit's pool, for the reply.
    chosen: Option<String>,
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
    /// The run's budgets (`limits.max_cost`, `limits.max_tokens`).
    spend: SpendLimit,
    /// Keys the servers rejected: no pool's permit goes to them.
    rejected: Rejected,
    /// Rejected keys the supervisor has not journaled yet.
    unannounced: Vec<String>,
    /// Prompt-cache warm-up, per cacheable prefix.
    warmup: Warmup,
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
            spend: SpendLimit::default(),
            rejected: Rejected::default(),
            unannounced: Vec::new(),
            warmup: Warmup::default(),
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
            Request::Permit {
                tokens,
                agent,
                key,
                cost,
                keys,
                prefix,
            } => {
                let ticket = Ticket(self.next_ticket);
                self.next_ticket += 1;
                // A pool's key is chosen now: the permit then queues for it.
                let chosen = match key {
                    Some(_) => None,
                    None => key_choice::choose(
                        keys,
                        &mut self.keys,
                        &self.keyed,
                        &self.rejected,
                        *tokens,
                        ticket.0,
                        now,
                    ),
                };
                let queue = key.as_deref().or(chosen.as_deref()).map(str::to_owned);
                self.queue_mut(queue.as_deref()).push_back(ticket);
                self.waiting.insert(
                    ticket,
                    Waiting {
                        agent: agent.clone(),
                        tokens: *tokens,
                        cost: *cost,
                        prefix: prefix.clone(),
                        chosen,
                        asked: now,
                    },
                );
                Answer::Later(ticket)
            }
            Request::Rejected { key, agent } => {
                self.reject(agent, key, now);
                Answer::Now(Reply::ok())
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
                let estimated = estimated.unwrap_or(*tokens);
                self.warmup.reported(prefix.as_deref(), *tokens > 0);
                self.spend
                    .settle(estimated, *tokens, *estimated_cost, *cost);
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

    /// Grants every permit that may go now, oldest first within each queue,
    /// and refuses those the budget cannot cover; the ticket and reply of each.
    pub fn grant_due(&mut self, now: Instant) -> Vec<(Ticket, Reply)> {
        let mut answered = Vec::new();
        self.next_due = None;
        if self.paused {
            return answered;
        }
        let mut next_due: Option<Instant> = None;
        let mut queues: Vec<Option<String>> = vec![None];
        queues.extend(
            self.keyed
                .iter()
                .filter(|(_, queue)| !queue.is_empty())
                .map(|(key, _)| Some(key.clone())),
        );
        for key in queues {
            while let Some(ticket) = self.front(key.as_deref()) {
                match self.decide(ticket, key.as_deref(), now) {
                    Decision::Wait(until) => {
                        next_due = earliest(next_due, until);
                        break;
                    }
                    Decision::Answer(reply) => {
                        self.queue_mut(key.as_deref()).pop_front();
                        answered.push((ticket, reply));
                    }
                }
            }
        }
        self.next_due = next_due;
        answered
    }

    fn front(&self, key: Option<&str>) -> Option<Ticket> {
        match key {
            None => self.unkeyed.front().copied(),
            Some(key) => self.keyed.get(key).and_then(|q| q.front().copied()),
        }
    }

    /// What the permit at the front of `key`'s queue gets now.
    fn decide(&mut self, ticket: Ticket, key: Option<&str>, now: Instant) -> Decision {
        let (tokens, cost, prefix) = match self.waiting.get(&ticket) {
            Some(w) => (w.tokens, w.cost, w.prefix.clone()),
            None => (0, None, None),
        };
        // The run's pace, the key's, and a warm-up of the same prefix.
        let mut ready = self.limiter.ready_at(tokens, now);
        if let Some(key) = key {
            ready = ready.max(self.keys.get(key, now).ready_at(tokens, now));
        }
        ready = ready.max(self.warmup.ready_at(prefix.as_deref(), now));
        // A spent budget refuses at once, without waiting for the pace.
        let refused = match ready {
            Some(_) if self.spend.exhausted().is_none() => None,
            _ => self.spend.reserve(tokens, cost).err(),
        };
        if let Some(why) = refused {
            let agent = self.waiting.remove(&ticket).map(|w| w.agent);
            let t = self.since_start(now);
            self.log.write(
                &json!({"t": t, "op": "spent", "agent": agent, "tokens": tokens, "cost": cost}),
            );
            return Decision::Answer(Reply::spent(why));
        }
        if let Some(until) = ready {
            return Decision::Wait(until);
        }
        self.limiter.take(tokens);
        if let Some(key) = key {
            self.keys.get(key, now).take(tokens);
        }
        let warming = self.warmup.granted(prefix.as_deref(), now);
        Decision::Answer(self.granted(ticket, key, warming, now))
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
    fn granted(&mut self, ticket: Ticket, key: Option<&str>, warming: bool, now: Instant) -> Reply {
        let Some(waiting) = self.waiting.remove(&ticket) else {
            return Reply::granted(0.0);
        };
        let waited = now.duration_since(waiting.asked).as_secs_f64();
        // The hot path's line, written without a JSON tree (fields in the
        // order the other lines have theirs: sorted).
        #[derive(serde::Serialize)]
        struct Grant<'a> {
            agent: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            key: Option<&'a str>,
            op: &'static str,
            t: f64,
            tokens: u64,
            waited_ms: f64,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            warmup: bool,
        }
        let line = Grant {
            agent: &waiting.agent,
            key,
            op: "grant",
            t: self.since_start(now),
            tokens: waiting.tokens,
            waited_ms: waited * 1000.0,
            warmup: warming,
        };
        self.log.write(&line);
        Reply {
            key: waiting.chosen,
            ..Reply::granted(waited * 1000.0)
        }
    }

    /// The server rejected `key`: said once, in rate.log and the supervisor's
    /// log, and no pool's permit goes to it again.
    fn reject(&mut self, agent: &str, key: &str, now: Instant) {
        if self.rejected.add(key) {
            let t = self.since_start(now);
            self.log
                .write(&json!({"t": t, "op": "rejected", "agent": agent, "key": key}));
            self.unannounced.push(key.to_owned());
            tracing::warn!("the server rejected the key {key} (reported by {agent}); the run goes on with the others");
        }
    }

    /// Keys rejected since the last call, for the journal.
    pub fn newly_rejected(&mut self) -> Vec<String> {
        std::mem::take(&mut self.unannounced)
    }

    /// Writes the rate.log lines of what was just decided.
    pub fn flush_log(&mut self) {
        self.log.flush();
    }

    /// Holds the run's budgets from now on (what earlier sessions spent
    /// is in `limit`).
    pub fn set_budget(&mut self, limit: SpendLimit) {
        self.spend = limit;
    }

    /// Why the budget refuses permits, once it does.
    pub fn budget_spent(&self) -> Option<String> {
        self.spend.exhausted().map(str::to_owned)
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

/// What the permit at the front of a queue gets.
enum Decision {
    Wait(Instant),
    Answer(Reply),
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
