//! The scheduler: which agent attempt starts next. It holds the queue of
//! attempts waiting to start (fed through `feed`, by a segment today, by a
//! later stage or a control command tomorrow), the retries waiting for their
//! backoff, agents killed to make room that go back to the queue's front, the
//! attempt numbers, the concurrency limit and the launch gate (warm-up,
//! waves, orchestrator stagger).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use shared::job::{AgentSettings, ScheduleSettings};
use shared::plan::{AgentPlan, AgentRef};

use super::gate::{LaunchGate, Phase};

/// An agent waiting for its retry backoff to pass.
struct Retry<'p> {
    at: Instant,
    agent: &'p AgentPlan,
}

/// What the scheduler says when asked for the next launch.
#[derive(Debug)]
pub enum Next<'p> {
    /// Start this agent now.
    Launch(&'p AgentPlan),
    /// Nothing may start before this instant (the schedule holds it).
    WaitUntil(Instant),
    /// Nothing waits to start (or the concurrency limit is reached).
    Nothing,
}

pub struct Scheduler<'p> {
    queue: VecDeque<&'p AgentPlan>,
    retries: Vec<Retry<'p>>,
    /// Agents killed to make room, waiting to go back to the queue's front.
    requeued: Vec<&'p AgentPlan>,
    retries_used: HashMap<AgentRef, u32>,
    /// Launches of each agent so far (resume: from the journal), so attempt
    /// numbers go on across sessions.
    launches: HashMap<String, u32>,
    max_parallel: usize,
    gate: LaunchGate,
    /// When the gate holds launches back (warm-up delay, wave, stagger).
    wake: Option<Instant>,
}

impl<'p> Scheduler<'p> {
    pub fn new(
        schedule: &ScheduleSettings,
        max_parallel: usize,
        launches: HashMap<String, u32>,
        now: Instant,
    ) -> Self {
        Self {
            queue: VecDeque::new(),
            retries: Vec::new(),
            requeued: Vec::new(),
            retries_used: HashMap::new(),
            launches,
            max_parallel,
            gate: LaunchGate::new(schedule, now),
            wake: None,
        }
    }

    /// Agents to run, at the back of the queue. The one way in.
    pub fn feed(&mut self, agents: impl IntoIterator<Item = &'p AgentPlan>) {
        self.queue.extend(agents);
    }

    /// A new segment: the orchestrator stagger counts from now.
    pub fn start_segment(&mut self, now: Instant) {
        self.gate.start_segment(now);
    }

    pub fn max_parallel(&self) -> usize {
        self.max_parallel
    }

    /// `nightshift control --max-parallel`: from the next launch on. Lowering
    /// ends nothing: running agents finish, fewer start.
    pub fn set_max_parallel(&mut self, max_parallel: usize) {
        self.max_parallel = max_parallel.max(1);
    }

    /// The number of the next attempt of `agent`, counted as launched.
    pub fn next_attempt(&mut self, agent: &AgentPlan) -> u32 {
        let launches = self.launches.entry(agent.name.clone()).or_insert(0);
        *launches += 1;
        *launches
    }

    /// The number of an attempt found running (resume): the last one the
    /// journal knows, or 1 if the supervisor died before it could say so.
    pub fn adopted_attempt(&mut self, agent: &AgentPlan) -> u32 {
        let launches = self.launches.entry(agent.name.clone()).or_insert(0);
        if *launches == 0 {
            *launches = 1;
        }
        *launches
    }

    /// Notes a launch for the schedule's waves; where it fell, for the journal.
    pub fn note_launch(&mut self, now: Instant) -> Phase {
        self.gate.note_launch(now)
    }

    /// Moves retries whose backoff has passed to the queue's back, and agents
    /// killed to make room to its front.
    pub fn admit_due(&mut self, now: Instant) {
        let (due, waiting): (Vec<Retry<'p>>, Vec<Retry<'p>>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|r| r.at <= now);
        self.retries = waiting;
        self.queue.extend(due.into_iter().map(|r| r.agent));
        for agent in self.requeued.drain(..).rev() {
            self.queue.push_front(agent);
        }
        self.wake = None;
    }

    /// The next agent to launch with `running` attempts alive, if the
    /// concurrency limit and the schedule allow one now.
    pub fn next(&mut self, now: Instant, running: usize) -> Next<'p> {
        if running >= self.max_parallel || self.queue.is_empty() {
            return Next::Nothing;
        }
        // The schedule: warm-up and waves for every launch, the orchestrator
        // stagger for each agent.
        let allowed_at = self.gate.next_launch_at(now);
        if allowed_at > now {
            self.wake = Some(allowed_at);
            return Next::WaitUntil(allowed_at);
        }
        let gate = &self.gate;
        let ready = self
            .queue
            .iter()
            .position(|a| gate.orchestrator_ready(a.at.orchestrator) <= now);
        match ready.and_then(|index| self.queue.remove(index)) {
            Some(agent) => Next::Launch(agent),
            None => {
                let at = self
                    .queue
                    .iter()
                    .map(|a| gate.orchestrator_ready(a.at.orchestrator))
                    .min();
                self.wake = at;
                at.map_or(Next::Nothing, Next::WaitUntil)
            }
        }
    }

    /// A failed attempt: the agent is retried on its remaining items after
    /// agent.retry_backoff, doubling at each retry, while retries remain.
    /// Returns the retry's number and delay, or None when none is left.
    pub fn retry(
        &mut self,
        agent: &'p AgentPlan,
        settings: &AgentSettings,
        now: Instant,
    ) -> Option<(u32, Duration)> {
        let used = self.retries_used.entry(agent.at).or_insert(0);
        if *used >= settings.retries {
            return None;
        }
        *used += 1;
        let delay = settings
            .retry_backoff
            .get()
            .saturating_mul(1 << (*used - 1).min(16));
        self.retries.push(Retry {
            at: now + delay,
            agent,
        });
        Some((*used, delay))
    }

    /// An agent killed to make room: back at the queue's front, not a failure.
    pub fn requeue(&mut self, agent: &'p AgentPlan) {
        self.requeued.push(agent);
    }

    /// No retry will run (a halt, a shutdown).
    pub fn drop_retries(&mut self) {
        self.retries.clear();
    }

    /// Nothing more starts (the deadline): retries and requeued agents dropped.
    pub fn drop_waiting(&mut self) {
        self.retries.clear();
        self.requeued.clear();
    }

    /// Agents waiting for their retry backoff, and when each may start.
    pub fn waiting(&self) -> impl Iterator<Item = (&'p AgentPlan, Instant)> + '_ {
        self.retries.iter().map(|r| (r.agent, r.at))
    }

    /// Attempts waiting in the queue (not those waiting for a backoff).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Nothing waits to start, now or later.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.retries.is_empty() && self.requeued.is_empty()
    }

    /// The next instant the scheduler has something to do by itself.
    pub fn next_wake(&self) -> Option<Instant> {
        self.retries.iter().map(|r| r.at).chain(self.wake).min()
    }

    /// Forgets what is queued (a segment given up: its agents are not run).
    pub fn clear_queue(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
