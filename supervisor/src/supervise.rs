//! The event loop of a run: segments one after another; inside a segment,
//! agents launched while fewer than limits.max_parallel run. Exits, signals and
//! timers all arrive in one loop on one thread, which owns the run's state and
//! never blocks on a single child. Kills (timeout, stall, shutdown) end an
//! agent's whole tree: TERM, agent.kill_grace, KILL. Between segments nothing
//! started for the finished segment may live on (see `sweep`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use shared::job::AgentTimeout;
use shared::plan::{AgentPlan, SegmentPlan};
use shared::rundir::RunDir;
use shared::validate::Problem;

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::events::EventLog;
use crate::launch::Launcher;
use crate::live_agents::{LiveAgent, LiveAgents};
use crate::merging;
use crate::proc_table::{self, ProcStat};
use crate::reaper::{self, ExitHow, Msg};
use crate::report::{AttemptRecord, Outcome};
use crate::run_setup::CheckedJob;
use crate::slot::{count_lines, Kill, Slot};
use crate::sweep::{end_processes, find_leftovers, Agents, Group};
use crate::tasks::write_segment_tasks;
use crate::timeouts::PerItemTimes;
use crate::tree::Tree;

/// How often a tree being killed is checked for its last process.
const KILL_POLL: Duration = Duration::from_millis(10);
/// Rounds of "scan the process table, end what is found" at a segment's end.
const SWEEP_ROUNDS: usize = 3;

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Interrupted,
}

pub struct RunResult {
    pub ending: Ending,
    pub attempts: Vec<AttemptRecord>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    No,
    /// TERM was sent to every tree; each slot KILLs at its own hard_at.
    Graceful,
    Immediate,
}

/// The tree of an attempt that has ended; leftovers are swept at segment end.
struct EndedTree {
    agent: String,
    leader_start: u64,
    tree: Tree,
}

pub struct Supervisor<'a> {
    run: &'a RunDir,
    checked: &'a CheckedJob,
    console: &'a Console,
    events: EventLog,
    rx: Receiver<Msg>,
    _signals: signal_hook::iterator::Handle,
    max_parallel: usize,
    slots: HashMap<i32, Slot<'a>>,
    ended: Vec<EndedTree>,
    /// Orphans adopted by the supervisor that no agent could be matched to.
    strays: Vec<ProcStat>,
    attempts: Vec<AttemptRecord>,
    per_item: PerItemTimes,
    stop: Stop,
    next_tick: Instant,
    me: i32,
    boot_id: String,
}

impl<'a> Supervisor<'a> {
    pub fn new(run: &'a RunDir, checked: &'a CheckedJob, console: &'a Console) -> Result<Self> {
        let (tx, rx) = channel();
        let signals =
            reaper::start(tx).map_err(SupervisorError::io("cannot install signal handlers"))?;
        // Orphaned descendants of agents become our children: reaped by us, and
        // still in view to be counted and killed.
        if let Err(error) = proc_table::become_subreaper() {
            tracing::warn!("cannot become a child subreaper ({error}); daemonised descendants are found by the segment-end scan only");
        }
        let events = EventLog::open(&run.events())
            .map_err(SupervisorError::io("cannot open events.jsonl"))?;
        let max_parallel = checked
            .job
            .settings
            .limits
            .max_parallel
            .map(|c| c.get())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok(Self {
            run,
            checked,
            console,
            events,
            rx,
            _signals: signals,
            max_parallel,
            slots: HashMap::new(),
            ended: Vec::new(),
            strays: Vec::new(),
            attempts: Vec::new(),
            per_item: PerItemTimes::default(),
            stop: Stop::No,
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

    fn settings(&self) -> &'a shared::job::JobSettings {
        &self.checked.job.settings
    }

    pub fn run(mut self) -> Result<RunResult> {
        let plan = &self.checked.plan;
        self.event(
            "run-started",
            None,
            json!({"job": plan.job, "items": plan.items_total, "agents": plan.agent_count(),
                   "segments": plan.segments.len(), "max_parallel": self.max_parallel,
                   "supervisor_pid": self.me}),
        )?;
        let mut problems = Vec::new();
        for segment in &plan.segments {
            if self.stop != Stop::No {
                break;
            }
            self.run_segment(segment)?;
            if self.stop != Stop::No {
                self.sweep(segment, "shutdown")?;
                break;
            }
            self.sweep(segment, "segment-end")?;
            let started = Instant::now();
            let found = merging::merge_segment(self.run, plan, segment).map_err(
                SupervisorError::io(format!("cannot merge segment {}", segment.number)),
            )?;
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
        let ending = if self.stop == Stop::No {
            Ending::Completed
        } else {
            Ending::Interrupted
        };
        Ok(RunResult {
            ending,
            attempts: self.attempts,
            problems,
        })
    }

    /// Launches and watches the agents of one segment until every attempt has
    /// ended (or a shutdown has ended them).
    fn run_segment(&mut self, segment: &'a SegmentPlan) -> Result<()> {
        let settings = self.settings();
        write_segment_tasks(
            self.run,
            segment,
            &self.checked.items.items,
            &self.checked.plan.id_field,
            &settings.agent,
        )
        .map_err(SupervisorError::io(format!(
            "cannot write the task files of segment {}",
            segment.number
        )))?;
        let mut queue: VecDeque<&'a AgentPlan> = segment.agents().collect();
        self.console
            .segment_started(segment, self.checked.plan.segments.len());
        loop {
            while self.stop == Stop::No && self.slots.len() < self.max_parallel {
                let Some(agent) = queue.pop_front() else {
                    break;
                };
                self.launch(agent, 1)?;
            }
            if self.slots.is_empty() && (queue.is_empty() || self.stop != Stop::No) {
                return Ok(());
            }
            let now = Instant::now();
            let wake = self.next_wake(now);
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
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

    fn launch(&mut self, agent: &'a AgentPlan, attempt: u32) -> Result<()> {
        let settings = self.settings();
        let launcher = Launcher {
            argv: &self.checked.agent_argv,
            job_dir: &self.checked.job.dir,
            env: &settings.agent.env,
            run: self.run,
            log_limit: settings.limits.agent_log_limit.bytes(),
        };
        let output = self.run.agent_output(agent.at);
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
                self.console
                    .agent_failed(&agent.name, &format!("could not start: {error}"), None);
                self.attempts.push(AttemptRecord {
                    agent: agent.name.clone(),
                    attempt,
                    pid: None,
                    launched: launched_at,
                    seconds: 0.0,
                    outcome: Outcome::LaunchFailed(error.to_string()),
                });
                return Ok(());
            }
        };
        let now = Instant::now();
        let tree = Tree::new(pid);
        let leader_start = proc_table::stat(pid).map_or(0, |s| s.start_ticks);
        let deadline = match settings.agent.timeout {
            Some(AgentTimeout::Fixed(limit)) => Some(now + limit.get()),
            _ => None,
        };
        self.event(
            "launched",
            Some(&agent.name),
            json!({"pid": pid, "start_ticks": leader_start, "attempt": attempt, "items": agent.ids.len()}),
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
                tree,
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
        live.write(self.run)
            .map_err(SupervisorError::io("cannot write live.json"))
    }

    fn on_message(&mut self, message: Msg) -> Result<()> {
        match message {
            Msg::Exited { pid, how } => {
                let Some(slot) = self.slots.get_mut(&pid) else {
                    // An adopted orphan, reaped: nothing to account for.
                    self.strays.retain(|s| s.pid != pid);
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
        for slot in self.slots.values_mut() {
            slot.tree.refresh();
            let output = self.run.agent_output(slot.agent.at);
            slot.observe_output(&output, now);
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
                || self.ended.iter().any(|e| e.tree.contains(pid))
                || self.strays.iter().any(|s| s.pid == pid)
            {
                continue;
            }
            let Some(stat) = proc_table::stat(pid).filter(|s| !s.is_gone()) else {
                continue;
            };
            let agent_name = proc_table::environ_var(pid, "NIGHTSHIFT_AGENT");
            let by_group = |leader: i32| stat.pgid == leader || stat.sid == leader;
            if let Some(slot) = self
                .slots
                .values_mut()
                .find(|s| by_group(s.pid) || agent_name.as_deref() == Some(s.agent.name.as_str()))
            {
                slot.tree.adopt(&stat);
            } else if let Some(ended) = self.ended.iter_mut().find(|e| {
                by_group(e.tree.leader) || agent_name.as_deref() == Some(e.agent.as_str())
            }) {
                ended.tree.adopt(&stat);
            } else {
                self.strays.push(stat);
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

    /// The attempt is over: record how it went.
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
            let saved = count_lines(&self.run.agent_output(slot.agent.at));
            self.per_item
                .record(seconds, saved.saturating_sub(slot.saved_at_launch));
        } else if !matches!(&outcome, Outcome::Killed(reason) if reason == "shutdown") {
            self.console.agent_failed(
                &slot.agent.name,
                &outcome.to_string(),
                Some(&self.run.agent_log(slot.agent.at)),
            );
        }
        self.attempts.push(AttemptRecord {
            agent: slot.agent.name.clone(),
            attempt: slot.attempt,
            pid: Some(pid),
            launched: slot.launched_at,
            seconds,
            outcome,
        });
        self.ended.push(EndedTree {
            agent: slot.agent.name.clone(),
            leader_start: slot.leader_start,
            tree: slot.tree,
        });
        self.write_live()
    }

    fn on_signal(&mut self, signal: i32) -> Result<()> {
        if signal == SIGHUP {
            // A closed terminal or ssh session must not end an overnight run.
            return self.event("sighup-ignored", None, json!({}));
        }
        if signal != SIGINT && signal != SIGTERM {
            return Ok(());
        }
        match self.stop {
            Stop::No => {
                let grace = self.settings().agent.kill_grace.get();
                self.console.stopping(grace);
                self.event(
                    "shutdown",
                    None,
                    json!({"signal": signal, "grace_seconds": grace.as_secs_f64()}),
                )?;
                self.stop = Stop::Graceful;
                let pids: Vec<i32> = self.slots.keys().copied().collect();
                for pid in pids {
                    self.start_kill(pid, "shutdown")?;
                }
            }
            Stop::Graceful | Stop::Immediate => {
                // Ctrl-C again: no more waiting.
                self.stop = Stop::Immediate;
                let now = Instant::now();
                for slot in self.slots.values_mut() {
                    if let Some(kill) = slot.kill.as_mut() {
                        kill.hard_at = now;
                    }
                }
            }
        }
        self.events
            .sync()
            .map_err(SupervisorError::io("cannot sync events.jsonl"))
    }

    /// Makes sure no process started for `segment` is alive: known trees,
    /// adopted strays, and whatever a scan of the process table attributes to
    /// the segment's agents are ended (TERM, kill_grace, KILL).
    fn sweep(&mut self, segment: &SegmentPlan, reason: &str) -> Result<()> {
        let grace = if self.stop == Stop::Immediate {
            Duration::ZERO
        } else {
            self.settings().agent.kill_grace.get()
        };
        let names: HashSet<String> = segment.agents().map(|a| a.name.clone()).collect();
        self.adopt_orphans();
        let groups: Vec<Group> = self
            .ended
            .iter()
            .map(|e| Group {
                agent: e.agent.clone(),
                pgid: e.tree.leader,
                leader_start: e.leader_start,
            })
            .collect();
        for round in 0..SWEEP_ROUNDS {
            let mut targets: HashMap<i32, (String, ProcStat)> = HashMap::new();
            for ended in &mut self.ended {
                for stat in ended.tree.refresh() {
                    targets.insert(stat.pid, (ended.agent.clone(), stat));
                }
            }
            for stray in self.strays.drain(..) {
                targets.insert(stray.pid, ("(unknown agent)".into(), stray));
            }
            for (agent, stat) in find_leftovers(self.run.root(), &Agents::Named(&names), &groups) {
                targets.entry(stat.pid).or_insert((agent, stat));
            }
            if targets.is_empty() {
                break;
            }
            let mut per_agent: HashMap<String, usize> = HashMap::new();
            for (agent, _) in targets.values() {
                *per_agent.entry(agent.clone()).or_default() += 1;
            }
            for (agent, processes) in &per_agent {
                self.event(
                    "killed",
                    Some(agent),
                    json!({"reason": reason, "processes": processes}),
                )?;
            }
            let stats: Vec<ProcStat> = targets.values().map(|(_, s)| *s).collect();
            let left = end_processes(&stats, grace);
            if !left.is_empty() && round + 1 == SWEEP_ROUNDS {
                let pids: Vec<i32> = left.iter().map(|s| s.pid).collect();
                tracing::warn!("processes {pids:?} survived SIGKILL (stuck in the kernel?)");
            }
        }
        self.ended.clear();
        Ok(())
    }
}

fn lost_signals() -> SupervisorError {
    SupervisorError::io("the signal thread stopped")(std::io::Error::other("channel closed"))
}
