//! The event loop of a run: segments one after another; inside a segment,
//! agents launched while fewer than limits.max_parallel run. Exits, signals and
//! timers all arrive in one loop on one thread, which owns the run's state and
//! never blocks on a single child. Kills (timeout, stall, shutdown) end an
//! agent's whole tree: TERM, agent.kill_grace, KILL. A failed agent is retried
//! on its remaining items after a doubling backoff. Between segments nothing
//! started for the finished segment may live on (see `sweep`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use shared::job::{AgentTimeout, Job, JobSettings};
use shared::plan::{AgentPlan, AgentRef, Plan, SegmentPlan};
use shared::rundir::RunDir;
use shared::validate::Problem;

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::events::EventLog;
use crate::halt::{HaltPolicy, HaltWhen};
use crate::launch::Launcher;
use crate::live_agents::{LiveAgent, LiveAgents};
use crate::merging;
use crate::proc_table;
use crate::reaper::{self, ExitHow, Msg};
use crate::report::{AttemptRecord, Outcome};
use crate::slot::{count_lines, Kill, Slot};
use crate::sweep::{EndedTree, Leftovers};
use crate::timeouts::PerItemTimes;
use crate::tree::Tree;

/// How often a tree being killed is checked for its last process.
const KILL_POLL: Duration = Duration::from_millis(10);

/// Everything a supervisor needs to run (or go on with) a run.
pub struct RunInputs<'a> {
    pub run: &'a RunDir,
    pub job: &'a Job,
    pub plan: &'a Plan,
    pub agent_argv: &'a [OsString],
    pub halt: HaltPolicy,
    /// Agents whose files already hold all their items (resume).
    pub complete: HashSet<AgentRef>,
    /// Launches of each agent so far (resume), so attempt numbers go on.
    pub launches: HashMap<String, u32>,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Interrupted,
    Halted,
}

pub struct RunResult {
    pub ending: Ending,
    pub attempts: Vec<AttemptRecord>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    No,
    /// No new launches; running agents finish (halt soon).
    Draining,
    /// Every tree was sent TERM; each is KILLed at its own hard_at.
    Killing,
}

/// An agent waiting for its retry backoff to pass.
struct Retry<'p> {
    at: Instant,
    agent: &'p AgentPlan,
}

pub struct Supervisor<'a> {
    inputs: RunInputs<'a>,
    console: &'a Console,
    events: EventLog,
    rx: Receiver<Msg>,
    _signals: signal_hook::iterator::Handle,
    max_parallel: usize,
    slots: HashMap<i32, Slot<'a>>,
    leftovers: Leftovers,
    retries: Vec<Retry<'a>>,
    retries_used: HashMap<AgentRef, u32>,
    failed_for_good: usize,
    attempts: Vec<AttemptRecord>,
    per_item: PerItemTimes,
    stop: Stop,
    ending: Ending,
    next_tick: Instant,
    me: i32,
    boot_id: String,
}

impl<'a> Supervisor<'a> {
    pub fn new(inputs: RunInputs<'a>, console: &'a Console) -> Result<Self> {
        let (tx, rx) = channel();
        let signals =
            reaper::start(tx).map_err(SupervisorError::io("cannot install signal handlers"))?;
        // Orphaned descendants of agents become our children: reaped by us, and
        // still in view to be counted and killed.
        if let Err(error) = proc_table::become_subreaper() {
            tracing::warn!("cannot become a child subreaper ({error}); daemonised descendants are found by the segment-end scan only");
        }
        let events = EventLog::open(&inputs.run.events())
            .map_err(SupervisorError::io("cannot open events.jsonl"))?;
        let max_parallel = inputs
            .job
            .settings
            .limits
            .max_parallel
            .map(|c| c.get())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok(Self {
            inputs,
            console,
            events,
            rx,
            _signals: signals,
            max_parallel,
            slots: HashMap::new(),
            leftovers: Leftovers::default(),
            retries: Vec::new(),
            retries_used: HashMap::new(),
            failed_for_good: 0,
            attempts: Vec::new(),
            per_item: PerItemTimes::default(),
            stop: Stop::No,
            ending: Ending::Completed,
            next_tick: Instant::now(),
            me: i32::try_from(std::process::id()).unwrap_or(0),
            boot_id: proc_table::boot_id(),
        })
    }

    fn event(&mut self, event: &str, agent: Option<&str>, fields: serde_json::Value) -> Result<()> {
        self.events
            .record(event, agent, fields)
            .map_err(SupervisorError::io("cannot append to events.jsonl"))
    }

    fn settings(&self) -> &'a JobSettings {
        &self.inputs.job.settings
    }

    pub fn run(mut self) -> Result<RunResult> {
        let plan = self.inputs.plan;
        let run = self.inputs.run;
        self.event(
            "run-started",
            None,
            json!({"job": plan.job, "items": plan.items_total, "agents": plan.agent_count(),
                   "segments": plan.segments.len(), "max_parallel": self.max_parallel,
                   "supervisor_pid": self.me, "already_complete": self.inputs.complete.len()}),
        )?;
        let mut problems = Vec::new();
        for segment in &plan.segments {
            if self.stop != Stop::No {
                break;
            }
            let todo: Vec<&'a AgentPlan> = segment
                .agents()
                .filter(|a| !self.inputs.complete.contains(&a.at))
                .collect();
            if todo.is_empty() && merging::segment_up_to_date(run, segment) {
                self.console.line(&format!(
                    "segment {}/{}: already complete",
                    segment.number,
                    plan.segments.len()
                ));
                continue;
            }
            self.run_segment(segment, todo)?;
            let names: HashSet<String> = segment.agents().map(|a| a.name.clone()).collect();
            if self.stop != Stop::No {
                self.sweep(&names, "shutdown")?;
                break;
            }
            self.sweep(&names, "segment-end")?;
            let started = Instant::now();
            let found = merging::merge_segment(run, plan, segment).map_err(SupervisorError::io(
                format!("cannot merge segment {}", segment.number),
            ))?;
            self.event(
                "merged",
                None,
                json!({"segment": segment.number, "file": format!("segment_{:02}.jsonl", segment.number),
                       "problems": found.len(), "seconds": started.elapsed().as_secs_f64()}),
            )?;
            for problem in &found {
                self.console.problem(problem);
            }
            problems.extend(found);
            self.event("segment-done", None, json!({"segment": segment.number}))?;
            self.events
                .sync()
                .map_err(SupervisorError::io("cannot sync events.jsonl"))?;
            self.console.segment_done(segment, plan.segments.len());
        }
        Ok(RunResult {
            ending: self.ending,
            attempts: self.attempts,
            problems,
        })
    }

    /// Launches and watches the agents of one segment until every attempt,
    /// retries included, has ended (or a shutdown or halt has ended them).
    fn run_segment(&mut self, segment: &'a SegmentPlan, todo: Vec<&'a AgentPlan>) -> Result<()> {
        let mut queue: VecDeque<&'a AgentPlan> = todo.into();
        self.console
            .segment_started(segment, self.inputs.plan.segments.len());
        loop {
            let now = Instant::now();
            let (due, waiting): (Vec<Retry<'a>>, Vec<Retry<'a>>) =
                std::mem::take(&mut self.retries)
                    .into_iter()
                    .partition(|r| r.at <= now);
            self.retries = waiting;
            queue.extend(due.into_iter().map(|r| r.agent));
            while self.stop == Stop::No && self.slots.len() < self.max_parallel {
                let Some(agent) = queue.pop_front() else {
                    break;
                };
                self.launch(agent)?;
            }
            let nothing_left = queue.is_empty() && self.retries.is_empty();
            if self.slots.is_empty() && (nothing_left || self.stop != Stop::No) {
                return Ok(());
            }
            let wake = self.next_wake(now);
            match self
                .rx
                .recv_timeout(wake.saturating_duration_since(Instant::now()))
            {
                Ok(message) => self.on_message(message)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(lost_signals()),
            }
            while let Ok(message) = self.rx.try_recv() {
                self.on_message(message)?;
            }
            self.on_time(Instant::now())?;
        }
    }

    /// The next instant something must be looked at.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = self.next_tick;
        for retry in &self.retries {
            wake = wake.min(retry.at);
        }
        for slot in self.slots.values() {
            match slot.kill {
                None => {
                    if let Some(deadline) = slot.deadline {
                        wake = wake.min(deadline);
                    }
                }
                Some(kill) => {
                    wake = wake.min(now + KILL_POLL);
                    if !kill.hard_sent {
                        wake = wake.min(kill.hard_at);
                    }
                }
            }
        }
        wake
    }

    fn launch(&mut self, agent: &'a AgentPlan) -> Result<()> {
        let settings = self.settings();
        let attempt = {
            let launches = self.inputs.launches.entry(agent.name.clone()).or_insert(0);
            *launches += 1;
            *launches
        };
        let launcher = Launcher {
            argv: self.inputs.agent_argv,
            job_dir: &self.inputs.job.dir,
            env: &settings.agent.env,
            run: self.inputs.run,
            log_limit: settings.limits.agent_log_limit.bytes(),
        };
        let output = self.inputs.run.agent_output(agent.at);
        let saved_at_launch = count_lines(&output);
        let launched_at =
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let pid = match launcher.launch(agent, attempt) {
            Ok(pid) => pid,
            Err(error) => {
                self.event(
                    "launch-failed",
                    Some(&agent.name),
                    json!({"error": error.to_string()}),
                )?;
                let record = AttemptRecord {
                    agent: agent.name.clone(),
                    attempt,
                    pid: None,
                    launched: launched_at,
                    seconds: 0.0,
                    outcome: Outcome::LaunchFailed(error.to_string()),
                };
                return self.after_attempt(agent, record);
            }
        };
        let now = Instant::now();
        let leader_start = proc_table::stat(pid).map_or(0, |s| s.start_ticks);
        let deadline = match settings.agent.timeout {
            Some(AgentTimeout::Fixed(limit)) => Some(now + limit.get()),
            _ => None,
        };
        self.event(
            "launched",
            Some(&agent.name),
            json!({"pid": pid, "start_ticks": leader_start, "attempt": attempt, "items": agent.ids.len(),
                   "already_saved": saved_at_launch}),
        )?;
        self.slots.insert(
            pid,
            Slot {
                agent,
                attempt,
                pid,
                leader_start,
                started: now,
                launched_at,
                tree: Tree::new(pid),
                exit: None,
                deadline,
                saved_at_launch,
                output_len: std::fs::metadata(&output).map_or(0, |m| m.len()),
                last_progress: now,
                kill: None,
            },
        );
        self.write_live()
    }

    fn write_live(&self) -> Result<()> {
        let live = LiveAgents {
            supervisor_pid: self.me,
            boot_id: self.boot_id.clone(),
            agents: self
                .slots
                .values()
                .map(|s| LiveAgent {
                    agent: s.agent.name.clone(),
                    pid: s.pid,
                    start_ticks: s.leader_start,
                    attempt: s.attempt,
                })
                .collect(),
        };
        live.write(self.inputs.run)
            .map_err(SupervisorError::io("cannot write live.json"))
    }

    fn on_message(&mut self, message: Msg) -> Result<()> {
        match message {
            Msg::Exited { pid, how } => {
                let Some(slot) = self.slots.get_mut(&pid) else {
                    // An adopted orphan, reaped: nothing to account for.
                    self.leftovers.strays.retain(|s| s.pid != pid);
                    return Ok(());
                };
                slot.exit = Some(how);
                let seconds = slot.started.elapsed().as_secs_f64();
                let name = slot.agent.name.clone();
                let killing = slot.kill.is_some();
                let fields = match how {
                    ExitHow::Code(code) => json!({"pid": pid, "code": code, "seconds": seconds}),
                    ExitHow::Signal(signal) => {
                        json!({"pid": pid, "signal": signal, "seconds": seconds})
                    }
                };
                self.event("exited", Some(&name), fields)?;
                if !killing {
                    self.finish(pid)?;
                }
                Ok(())
            }
            Msg::Signal(signal) => self.on_signal(signal),
        }
    }

    fn on_time(&mut self, now: Instant) -> Result<()> {
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + self.settings().limits.sample_interval.get();
        }
        let stall_timeout = self.settings().agent.stall_timeout.map(|d| d.get());
        let pids: Vec<i32> = self.slots.keys().copied().collect();
        for pid in pids {
            let Some(slot) = self.slots.get_mut(&pid) else {
                continue;
            };
            match slot.kill {
                None if slot.exit.is_none() && slot.timed_out(now) => {
                    self.start_kill(pid, "timeout")?
                }
                None if slot.exit.is_none() && slot.stalled(stall_timeout, now) => {
                    self.start_kill(pid, "stall")?
                }
                Some(kill) if !kill.hard_sent && now >= kill.hard_at => {
                    slot.tree.signal(Signal::SIGKILL);
                    slot.kill = Some(Kill {
                        hard_sent: true,
                        ..kill
                    });
                }
                _ => {}
            }
            if self
                .slots
                .get(&pid)
                .is_some_and(|s| s.kill.is_some() && s.finished())
            {
                self.finish(pid)?;
            }
        }
        Ok(())
    }

    /// The periodic look at every tree: new descendants, adopted orphans,
    /// agent-file growth, and relative timeouts once they are known.
    fn tick(&mut self, now: Instant) {
        self.adopt_orphans();
        let relative = match self.settings().agent.timeout {
            Some(AgentTimeout::PercentOfMedian(percent)) => Some(percent),
            _ => None,
        };
        let run = self.inputs.run;
        for slot in self.slots.values_mut() {
            slot.tree.refresh();
            slot.observe_output(&run.agent_output(slot.agent.at), now);
            if let (Some(percent), None) = (relative, slot.deadline) {
                let items = slot.agent.ids.len().saturating_sub(slot.saved_at_launch);
                if let Some(limit) = self.per_item.limit(percent, items) {
                    slot.deadline = Some(slot.started + limit);
                }
            }
        }
    }

    /// Children of the supervisor that are not agents are orphans it adopted
    /// as subreaper: each joins the tree of the agent it came from (by process
    /// group or session, else by its inherited NIGHTSHIFT_AGENT).
    fn adopt_orphans(&mut self) {
        for pid in proc_table::children(self.me) {
            if self.slots.contains_key(&pid)
                || self.slots.values().any(|s| s.tree.contains(pid))
                || self.leftovers.knows(pid)
            {
                continue;
            }
            let Some(stat) = proc_table::stat(pid).filter(|s| !s.is_gone()) else {
                continue;
            };
            let agent_name = proc_table::environ_var(pid, "NIGHTSHIFT_AGENT");
            let from = |s: &&mut Slot<'a>| {
                stat.pgid == s.pid
                    || stat.sid == s.pid
                    || agent_name.as_deref() == Some(s.agent.name.as_str())
            };
            match self.slots.values_mut().find(from) {
                Some(slot) => slot.tree.adopt(&stat),
                None => self.leftovers.adopt(stat, agent_name.as_deref()),
            }
        }
    }

    fn start_kill(&mut self, pid: i32, reason: &'static str) -> Result<()> {
        let grace = self.settings().agent.kill_grace.get();
        let Some(slot) = self.slots.get_mut(&pid) else {
            return Ok(());
        };
        if slot.kill.is_some() {
            return Ok(());
        }
        let processes = slot.tree.signal(Signal::SIGTERM);
        slot.kill = Some(Kill {
            reason,
            hard_at: Instant::now() + grace,
            hard_sent: false,
        });
        let name = slot.agent.name.clone();
        if reason != "shutdown" {
            self.console.agent_failed(
                &name,
                &format!("hit its {reason}: ending its {processes} process(es)"),
                None,
            );
        }
        self.event(
            "killed",
            Some(&name),
            json!({"pid": pid, "reason": reason, "processes": processes}),
        )
    }

    /// The attempt is over: record how it went, then retry or give up.
    fn finish(&mut self, pid: i32) -> Result<()> {
        let Some(slot) = self.slots.remove(&pid) else {
            return Ok(());
        };
        let seconds = slot.started.elapsed().as_secs_f64();
        let outcome = match (slot.kill, slot.exit) {
            (Some(kill), _) => Outcome::Killed(kill.reason.to_owned()),
            (None, Some(ExitHow::Code(0))) => Outcome::Succeeded,
            (None, Some(ExitHow::Code(code))) => Outcome::Failed(code),
            (None, Some(ExitHow::Signal(signal))) => Outcome::Crashed(signal),
            (None, None) => Outcome::Failed(-1),
        };
        if outcome == Outcome::Succeeded {
            let saved = count_lines(&self.inputs.run.agent_output(slot.agent.at));
            self.per_item
                .record(seconds, saved.saturating_sub(slot.saved_at_launch));
        }
        let record = AttemptRecord {
            agent: slot.agent.name.clone(),
            attempt: slot.attempt,
            pid: Some(pid),
            launched: slot.launched_at,
            seconds,
            outcome,
        };
        self.leftovers.ended.push(EndedTree {
            agent: slot.agent.name.clone(),
            leader_start: slot.leader_start,
            tree: slot.tree,
        });
        self.write_live()?;
        self.after_attempt(slot.agent, record)
    }

    /// Records an ended attempt; a failed one is retried after its backoff
    /// (retry_backoff, doubling) while retries remain, else it counts towards
    /// the halt policy.
    fn after_attempt(&mut self, agent: &'a AgentPlan, record: AttemptRecord) -> Result<()> {
        let outcome = record.outcome.clone();
        self.attempts.push(record);
        if outcome == Outcome::Succeeded || outcome == Outcome::Killed("shutdown".into()) {
            return Ok(());
        }
        let log = self.inputs.run.agent_log(agent.at);
        let used = self.retries_used.entry(agent.at).or_insert(0);
        let settings = &self.inputs.job.settings.agent;
        if *used < settings.retries && self.stop == Stop::No {
            *used += 1;
            let delay = settings
                .retry_backoff
                .get()
                .saturating_mul(1 << (*used - 1).min(16));
            let retry = *used;
            self.console.agent_failed(
                &agent.name,
                &format!(
                    "{outcome}; retry {retry} of {} in {}",
                    settings.retries,
                    humantime::format_duration(delay)
                ),
                Some(&log),
            );
            self.retries.push(Retry {
                at: Instant::now() + delay,
                agent,
            });
            return self.event(
                "retry-scheduled",
                Some(&agent.name),
                json!({"retry": retry, "after_seconds": delay.as_secs_f64()}),
            );
        }
        self.console
            .agent_failed(&agent.name, &outcome.to_string(), Some(&log));
        self.failed_for_good += 1;
        let total = self.inputs.plan.agent_count();
        if let Some(when) = self.inputs.halt.triggered(self.failed_for_good, total) {
            if self.stop == Stop::No {
                self.halt(when)?;
            }
        }
        Ok(())
    }

    fn halt(&mut self, when: HaltWhen) -> Result<()> {
        self.ending = Ending::Halted;
        self.retries.clear();
        let policy = self.inputs.halt.to_string();
        self.console.line(&format!(
            "halting (--halt {policy}): {} agent(s) failed for good; {}",
            self.failed_for_good,
            if when == HaltWhen::Now {
                "ending every agent now"
            } else {
                "no new agents, running ones finish"
            }
        ));
        self.event(
            "halted",
            None,
            json!({"policy": policy, "failed": self.failed_for_good}),
        )?;
        match when {
            HaltWhen::Soon => self.stop = Stop::Draining,
            HaltWhen::Now => {
                self.stop = Stop::Killing;
                let pids: Vec<i32> = self.slots.keys().copied().collect();
                for pid in pids {
                    self.start_kill(pid, "shutdown")?;
                }
            }
        }
        Ok(())
    }

    fn on_signal(&mut self, signal: i32) -> Result<()> {
        if signal == SIGHUP {
            // A closed terminal or ssh session must not end an overnight run.
            return self.event("sighup-ignored", None, json!({}));
        }
        if signal != SIGINT && signal != SIGTERM {
            return Ok(());
        }
        if self.stop == Stop::Killing {
            // Ctrl-C again: no more waiting.
            let now = Instant::now();
            for slot in self.slots.values_mut() {
                if let Some(kill) = slot.kill.as_mut() {
                    kill.hard_at = now;
                }
            }
            return self.event("shutdown-now", None, json!({"signal": signal}));
        }
        let grace = self.settings().agent.kill_grace.get();
        self.console.stopping(grace);
        self.event(
            "shutdown",
            None,
            json!({"signal": signal, "grace_seconds": grace.as_secs_f64()}),
        )?;
        self.ending = Ending::Interrupted;
        self.stop = Stop::Killing;
        self.retries.clear();
        let pids: Vec<i32> = self.slots.keys().copied().collect();
        for pid in pids {
            self.start_kill(pid, "shutdown")?;
        }
        self.events
            .sync()
            .map_err(SupervisorError::io("cannot sync events.jsonl"))
    }

    /// Makes sure no process started for the agents `names` is alive.
    fn sweep(&mut self, names: &HashSet<String>, reason: &str) -> Result<()> {
        let grace = self.settings().agent.kill_grace.get();
        self.adopt_orphans();
        let rounds = self.leftovers.sweep(self.inputs.run.root(), names, grace);
        for round in rounds {
            for (agent, processes) in round {
                self.event(
                    "killed",
                    Some(&agent),
                    json!({"reason": reason, "processes": processes}),
                )?;
            }
        }
        Ok(())
    }
}

fn lost_signals() -> SupervisorError {
    SupervisorError::io("the signal thread stopped")(std::io::Error::other("channel closed"))
}
