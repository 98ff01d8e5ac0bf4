//! The journal folded into what its readers ask: each agent's attempts (how
//! they started, were killed and ended), the stamp of each merged segment, and
//! how the last supervisor session ended. Resume numbering, merge stamps,
//! `status` and the report's timeline all read this one fold.

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use super::entry::Entry;
use super::event::{Event, KillReason, Killed, RunEnd};
use crate::merge::FileStamp;

#[derive(Debug, Default)]
pub struct History {
    /// By agent name.
    pub agents: HashMap<String, AgentHistory>,
    /// The stamp of each segment file from its last `merged` event.
    pub segment_stamps: HashMap<usize, FileStamp>,
    /// How the latest supervisor session ended; None while one runs (or
    /// after one died without saying).
    pub finished: Option<RunEnd>,
    /// The live run's controls (`nightshift control`) in force: paused, and
    /// the concurrency it was set to; a new session starts from the job again.
    pub paused: bool,
    pub max_parallel: Option<usize>,
    /// When each supervisor session started (`run-started`), in order: a
    /// resumed run's charts mark where it was taken up again.
    pub sessions: Vec<SystemTime>,
    /// The earliest and latest `ts` of the journal.
    pub first: Option<SystemTime>,
    pub last: Option<SystemTime>,
    /// API keys the servers rejected (`key-rejected`), in order.
    pub rejected_keys: Vec<String>,
    /// Attempts of all agents so far, to number the next one's `seq`.
    attempts_seen: usize,
}

#[derive(Debug, Default)]
pub struct AgentHistory {
    /// One per launch, in order (and one for a Slurm job adopted without its
    /// launch ever being journalled).
    pub attempts: Vec<Attempt>,
    /// A retry (or a requeue after making room) is due; cleared by the next launch.
    pub waiting: bool,
    /// Why the latest launch could not start; cleared by the next launch.
    pub launch_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Its place among the attempts of all agents, in journal order.
    pub seq: usize,
    /// The attempt number the supervisor gave it (1 for the first launch).
    pub number: u32,
    pub started: SystemTime,
    pub pid: Option<i32>,
    pub job_id: Option<u32>,
    /// The latest kill while it ran.
    pub kill: Option<KillReason>,
    /// The highest resident memory a `killed` event reported for it.
    pub peak_rss: Option<u64>,
    pub end: Option<AttemptEnd>,
    /// Its supervisor stopped while it ran, and no later one adopted it.
    pub orphaned: bool,
}

/// The `exited` event of an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd {
    pub at: SystemTime,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The Slurm job state, under the Slurm executor.
    pub slurm_state: Option<String>,
}

/// How an attempt went, as far as the journal tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not ended (yet), and not being killed.
    Running,
    Killed(KillReason),
    Succeeded,
    Failed {
        code: i32,
    },
    Crashed {
        signal: i32,
    },
    /// Ended by Slurm without an exit status (NODE_FAIL, PREEMPTED, ...).
    Slurm {
        state: String,
    },
    /// Ended, nothing more known.
    Ended,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Running => f.write_str("running"),
            Self::Killed(reason) => write!(f, "killed ({reason})"),
            Self::Succeeded => f.write_str("exit code 0"),
            Self::Failed { code } => write!(f, "exit code {code}"),
            Self::Crashed { signal } => write!(f, "signal {signal}"),
            Self::Slurm { state } => write!(f, "Slurm: {state}"),
            Self::Ended => f.write_str("ended"),
        }
    }
}

impl Attempt {
    pub fn outcome(&self) -> Outcome {
        if let Some(reason) = self.kill {
            return Outcome::Killed(reason);
        }
        let Some(end) = &self.end else {
            return Outcome::Running;
        };
        match (end.code, end.signal, &end.slurm_state) {
            (Some(0), _, _) => Outcome::Succeeded,
            (Some(code), _, _) => Outcome::Failed { code },
            (None, Some(signal), _) => Outcome::Crashed { signal },
            (None, None, Some(state)) => Outcome::Slurm {
                state: state.clone(),
            },
            (None, None, None) => Outcome::Ended,
        }
    }
}

impl AgentHistory {
    /// Attempts so far: the next one is numbered one more.
    pub fn launches(&self) -> u32 {
        u32::try_from(self.attempts.len()).unwrap_or(u32::MAX)
    }

    pub fn last(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// The latest attempt that has ended.
    pub fn last_ended(&self) -> Option<&Attempt> {
        self.attempts.iter().rev().find(|a| a.end.is_some())
    }

    /// Launched (or adopted) and not exited.
    pub fn running(&self) -> bool {
        self.last().is_some_and(|a| a.end.is_none())
    }

    /// The attempt still running, which kills and exits belong to.
    fn open(&mut self) -> Option<&mut Attempt> {
        self.attempts.last_mut().filter(|a| a.end.is_none())
    }
}

impl History {
    pub fn apply(&mut self, entry: &Entry) {
        self.first = Some(self.first.map_or(entry.ts, |f| f.min(entry.ts)));
        self.last = Some(self.last.map_or(entry.ts, |l| l.max(entry.ts)));
        match &entry.event {
            Event::RunStarted { .. } | Event::Resumed { .. } => {
                if matches!(entry.event, Event::RunStarted { .. }) {
                    self.sessions.push(entry.ts);
                }
                // A new supervisor: attempts still open belonged to a dead one.
                self.finished = None;
                self.paused = false;
                self.max_parallel = None;
                for agent in self.agents.values_mut() {
                    if let Some(open) = agent.open() {
                        open.orphaned = true;
                    }
                }
            }
            Event::RunFinished { state, .. } => self.finished = Some(*state),
            Event::Control {
                action,
                max_parallel,
            } => match action.as_str() {
                "pause" => self.paused = true,
                "continue" | "stop" => self.paused = false,
                _ => self.max_parallel = max_parallel.or(self.max_parallel),
            },
            Event::Merged { segment, stamp, .. } => {
                self.segment_stamps.insert(*segment, *stamp);
            }
            Event::KeyRejected { key } if !self.rejected_keys.contains(key) => {
                self.rejected_keys.push(key.clone());
            }
            _ => {}
        }
        if let Some(name) = &entry.agent {
            let agent = self.agents.entry(name.clone()).or_default();
            let before = agent.attempts.len();
            agent.apply(entry.ts, &entry.event, self.attempts_seen);
            self.attempts_seen += agent.attempts.len() - before;
        }
    }
}

impl AgentHistory {
    /// Folds one event in; `seq` is the place an attempt it starts takes.
    fn apply(&mut self, ts: SystemTime, event: &Event, seq: usize) {
        match event {
            Event::Launched {
                attempt,
                pid,
                job_id,
                ..
            } => {
                self.waiting = false;
                self.launch_error = None;
                self.attempts.push(Attempt {
                    seq,
                    number: *attempt,
                    started: ts,
                    pid: *pid,
                    job_id: *job_id,
                    kill: None,
                    peak_rss: None,
                    end: None,
                    orphaned: false,
                });
            }
            Event::Adopted {
                job_id, attempt, ..
            } => {
                self.waiting = false;
                self.launch_error = None;
                match self.open() {
                    // The new supervisor watches it from here on.
                    Some(open) => {
                        open.orphaned = false;
                        open.kill = None;
                    }
                    // Submitted, but its supervisor died before journalling it.
                    None => self.attempts.push(Attempt {
                        seq,
                        number: *attempt,
                        started: ts,
                        pid: None,
                        job_id: Some(*job_id),
                        kill: None,
                        peak_rss: None,
                        end: None,
                        orphaned: false,
                    }),
                }
            }
            Event::Killed(Killed {
                reason, peak_rss, ..
            }) => {
                // The kernel's OOM kill is journalled after the exit it caused.
                if let Some(last) = self.attempts.last_mut() {
                    last.peak_rss = last.peak_rss.max(*peak_rss);
                }
                // Other kills after the end are sweeps of leftovers, not this
                // attempt's fate.
                if let Some(open) = self.open() {
                    open.kill = Some(*reason);
                }
            }
            Event::Exited {
                state,
                code,
                signal,
                ..
            } => {
                if let Some(open) = self.open() {
                    open.end = Some(AttemptEnd {
                        at: ts,
                        code: *code,
                        signal: *signal,
                        slurm_state: state.clone(),
                    });
                }
            }
            Event::LaunchFailed { error } => self.launch_error = Some(error.clone()),
            Event::RetryScheduled { .. } | Event::Requeued { .. } => self.waiting = true,
            _ => {}
        }
    }
}
