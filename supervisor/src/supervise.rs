//! The event loop of a run: segments one after another; inside a segment, agents
//! launched while fewer than limits.max_parallel run; exits, signals and the
//! shutdown grace all arrive as messages on one channel, so one thread owns the
//! run's state and never blocks on any single child.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Instant;

use nix::sys::signal::Signal;
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use shared::plan::{AgentPlan, SegmentPlan};
use shared::rundir::RunDir;
use shared::validate::Problem;

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::events::EventLog;
use crate::launch::Launcher;
use crate::merging;
use crate::reaper::{self, ExitHow, Msg};
use crate::report::{AttemptRecord, Outcome};
use crate::run_setup::CheckedJob;
use crate::tasks::write_segment_tasks;
use crate::unix::signal_group;

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

struct Running<'p> {
    agent: &'p AgentPlan,
    attempt: u32,
    started: Instant,
    launched_at: String,
    killed: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    No,
    /// TERM was sent; KILL what is left at this instant.
    Graceful {
        kill_at: Instant,
    },
    Immediate,
}

pub struct Supervisor<'a> {
    run: &'a RunDir,
    checked: &'a CheckedJob,
    console: &'a Console,
    events: EventLog,
    rx: Receiver<Msg>,
    _signals: signal_hook::iterator::Handle,
    max_parallel: usize,
    running: HashMap<i32, Running<'a>>,
    attempts: Vec<AttemptRecord>,
    stop: Stop,
}

impl<'a> Supervisor<'a> {
    pub fn new(run: &'a RunDir, checked: &'a CheckedJob, console: &'a Console) -> Result<Self> {
        let (tx, rx) = channel();
        let signals =
            reaper::start(tx).map_err(SupervisorError::io("cannot install signal handlers"))?;
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
            running: HashMap::new(),
            attempts: Vec::new(),
            stop: Stop::No,
        })
    }

    fn event(&mut self, event: &str, agent: Option<&str>, fields: serde_json::Value) -> Result<()> {
        self.events
            .record(event, agent, fields)
            .map_err(SupervisorError::io("cannot append to events.jsonl"))
    }

    pub fn run(mut self) -> Result<RunResult> {
        let plan = &self.checked.plan;
        self.event(
            "run-started",
            None,
            json!({"job": plan.job, "items": plan.items_total, "agents": plan.agent_count(),
                   "segments": plan.segments.len(), "max_parallel": self.max_parallel}),
        )?;
        let mut problems = Vec::new();
        for segment in &plan.segments {
            if self.stop != Stop::No {
                break;
            }
            self.run_segment(segment)?;
            if self.stop != Stop::No {
                break;
            }
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

    /// Launches and watches the agents of one segment until all have exited
    /// (or a shutdown has ended them).
    fn run_segment(&mut self, segment: &'a SegmentPlan) -> Result<()> {
        let settings = &self.checked.job.settings;
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
            while self.stop == Stop::No && self.running.len() < self.max_parallel {
                let Some(agent) = queue.pop_front() else {
                    break;
                };
                self.launch(agent, 1)?;
            }
            if self.running.is_empty() && (queue.is_empty() || self.stop != Stop::No) {
                return Ok(());
            }
            let message = match self.stop {
                Stop::Graceful { kill_at } => {
                    match self
                        .rx
                        .recv_timeout(kill_at.saturating_duration_since(Instant::now()))
                    {
                        Ok(message) => Some(message),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return Err(lost_signals()),
                    }
                }
                _ => Some(self.rx.recv().map_err(|_| lost_signals())?),
            };
            match message {
                Some(Msg::Exited { pid, how }) => self.on_exit(pid, how)?,
                Some(Msg::Signal(signal)) => self.on_signal(signal)?,
                None => {}
            }
            if let Stop::Graceful { kill_at } = self.stop {
                if Instant::now() >= kill_at {
                    self.kill_all(Signal::SIGKILL);
                    self.stop = Stop::Immediate;
                }
            }
        }
    }

    fn launch(&mut self, agent: &'a AgentPlan, attempt: u32) -> Result<()> {
        let settings = &self.checked.job.settings;
        let launcher = Launcher {
            argv: &self.checked.agent_argv,
            job_dir: &self.checked.job.dir,
            env: &settings.agent.env,
            run: self.run,
        };
        let launched_at =
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        match launcher.launch(agent, attempt) {
            Ok(pid) => {
                self.event(
                    "launched",
                    Some(&agent.name),
                    json!({"pid": pid, "attempt": attempt, "items": agent.ids.len()}),
                )?;
                self.running.insert(
                    pid,
                    Running {
                        agent,
                        attempt,
                        started: Instant::now(),
                        launched_at,
                        killed: None,
                    },
                );
            }
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
            }
        }
        Ok(())
    }

    fn on_exit(&mut self, pid: i32, how: ExitHow) -> Result<()> {
        // Not one of ours (e.g. an adopted orphan): nothing to account for.
        let Some(running) = self.running.remove(&pid) else {
            return Ok(());
        };
        let seconds = running.started.elapsed().as_secs_f64();
        let name = running.agent.name.as_str();
        let fields = match how {
            ExitHow::Code(code) => json!({"pid": pid, "code": code, "seconds": seconds}),
            ExitHow::Signal(signal) => json!({"pid": pid, "signal": signal, "seconds": seconds}),
        };
        self.event("exited", Some(name), fields)?;
        let outcome = match (running.killed, how) {
            (Some(reason), _) => Outcome::Killed(reason.to_owned()),
            (None, ExitHow::Code(0)) => Outcome::Succeeded,
            (None, ExitHow::Code(code)) => Outcome::Failed(code),
            (None, ExitHow::Signal(signal)) => Outcome::Crashed(signal),
        };
        if outcome != Outcome::Succeeded {
            self.console.agent_failed(
                name,
                &outcome.to_string(),
                Some(&self.run.agent_log(running.agent.at)),
            );
        }
        // The agent has exited; anything still in its group is a leftover.
        if signal_group(pid, Signal::SIGKILL) {
            self.event("leftovers-killed", Some(name), json!({"pgid": pid}))?;
        }
        self.attempts.push(AttemptRecord {
            agent: name.to_owned(),
            attempt: running.attempt,
            pid: Some(pid),
            launched: running.launched_at,
            seconds,
            outcome,
        });
        Ok(())
    }

    fn on_signal(&mut self, signal: i32) -> Result<()> {
        if signal == SIGHUP {
            // A closed terminal or ssh session must not end an overnight run.
            self.event("sighup-ignored", None, json!({}))?;
            return Ok(());
        }
        if signal != SIGINT && signal != SIGTERM {
            return Ok(());
        }
        match self.stop {
            Stop::No => {
                let grace = self.checked.job.settings.agent.kill_grace.get();
                self.console.stopping(grace);
                self.event(
                    "shutdown",
                    None,
                    json!({"signal": signal, "grace_seconds": grace.as_secs_f64()}),
                )?;
                let names: Vec<(i32, String)> = self
                    .running
                    .iter()
                    .map(|(pid, r)| (*pid, r.agent.name.clone()))
                    .collect();
                for (pid, name) in names {
                    self.event(
                        "killed",
                        Some(&name),
                        json!({"pid": pid, "reason": "shutdown"}),
                    )?;
                }
                for running in self.running.values_mut() {
                    running.killed = Some("shutdown");
                }
                self.kill_all(Signal::SIGTERM);
                self.stop = Stop::Graceful {
                    kill_at: Instant::now() + grace,
                };
            }
            Stop::Graceful { .. } | Stop::Immediate => {
                // A second Ctrl-C: no more waiting.
                self.kill_all(Signal::SIGKILL);
                self.stop = Stop::Immediate;
            }
        }
        self.events
            .sync()
            .map_err(SupervisorError::io("cannot sync events.jsonl"))
    }

    fn kill_all(&self, signal: Signal) {
        for pid in self.running.keys() {
            signal_group(*pid, signal);
        }
    }
}

fn lost_signals() -> SupervisorError {
    SupervisorError::io("the signal thread stopped")(std::io::Error::other("channel closed"))
}
