//! The executor seam: where an agent attempt runs. The event loop starts,
//! kills, samples and sweeps attempts through the `Executor` trait and never
//! knows which executor it drives. Two implementations: `local` (every agent a
//! child process group of the supervisor) and `slurm` (one batch job per
//! attempt). Everything else — planning, merging, resume, progress from the
//! agent files — is independent of the executor.

pub mod local;
mod setup;
pub mod slurm;

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use shared::plan::AgentPlan;

use crate::executor::local::reaper::ExitHow;
use crate::outcome::{KillReason, Outcome};

pub use setup::{for_run, ExecutorSetup};

/// What an executor knows a running attempt by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttemptKey {
    /// A local agent: its pid, which is also its process group and session.
    Local { pid: i32 },
    /// A Slurm batch job.
    Slurm { job_id: u32 },
}

impl AttemptKey {
    pub fn pid(self) -> Option<i32> {
        match self {
            Self::Local { pid } => Some(pid),
            Self::Slurm { .. } => None,
        }
    }

    pub fn job_id(self) -> Option<u32> {
        match self {
            Self::Local { .. } => None,
            Self::Slurm { job_id } => Some(job_id),
        }
    }
}

impl fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { pid } => write!(f, "pid {pid}"),
            Self::Slurm { job_id } => write!(f, "Slurm job {job_id}"),
        }
    }
}

/// An attempt the executor has just started.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub key: AttemptKey,
    /// Start time of the agent process in clock ticks since boot (local: the
    /// pid-reuse check of `status` and of a resumed sweep).
    pub start_ticks: Option<u64>,
}

/// An attempt an earlier supervisor started that is still running (resume).
#[derive(Debug, Clone)]
pub struct Adopted {
    pub key: AttemptKey,
    /// The executor's word for its state ("PENDING", "RUNNING", …).
    pub state: &'static str,
    /// How long it has run already: its timeout kept counting.
    pub elapsed: Duration,
}

/// How an attempt ended, as its executor saw it.
#[derive(Debug, Clone)]
pub struct Ended {
    pub key: AttemptKey,
    /// The outcome when nobody killed it.
    pub outcome: Outcome,
    /// Ended by the executor's own limits (Slurm's TIMEOUT, OUT_OF_MEMORY).
    pub killed_by: Option<KillReason>,
    /// For the `exited` event: the exit code or signal where there is one, and
    /// the executor's final state (Slurm).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub state: Option<&'static str>,
}

impl Ended {
    /// A local process reaped with this status.
    pub fn of_process(key: AttemptKey, how: ExitHow) -> Self {
        let (outcome, code, signal) = match how {
            ExitHow::Code(0) => (Outcome::Succeeded, Some(0), None),
            ExitHow::Code(code) => (Outcome::Failed(code), Some(code), None),
            ExitHow::Signal(signal) => (Outcome::Crashed(signal), None, Some(signal)),
        };
        Self {
            key,
            outcome,
            killed_by: None,
            code,
            signal,
            state: None,
        }
    }
}

/// What an executor saw happen to an attempt since it was last asked.
#[derive(Debug, Clone)]
pub enum Change {
    /// It began to run (a Slurm job left the queue): its clocks start now.
    Running(AttemptKey),
    Ended(Ended),
}

/// Resident memory at one sampling tick, bytes.
#[derive(Debug, Default)]
pub struct Usage {
    /// Each attempt's whole tree (none where another machine holds it).
    pub attempts: Vec<(AttemptKey, u64)>,
    /// Everything the executor watches, leftovers of ended attempts included.
    pub total: u64,
}

/// Something a sweep ended, for the journal's `killed` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    pub agent: String,
    /// Processes ended (local).
    pub processes: Option<usize>,
    /// The job cancelled (Slurm).
    pub job_id: Option<u32>,
}

/// Starting, killing, watching and sweeping agent attempts.
pub trait Executor {
    /// At the start of a run: attempts of this run that an earlier supervisor
    /// left running. A resume keeps them for `adopt`; a fresh run ends them.
    fn discover(&mut self, resumed: bool) -> Result<(), String>;

    /// Takes over an attempt `discover` found for `agent`, if there is one.
    fn adopt(&mut self, agent: &AgentPlan) -> Option<Adopted>;

    /// Starts attempt number `attempt` of `agent`.
    fn start(&mut self, agent: &AgentPlan, attempt: u32) -> Result<Started, String>;

    /// The graceful step of a kill: TERM to every process of the attempt (a
    /// queued job is cancelled). Returns the processes signalled, where known.
    fn soft_kill(&mut self, key: AttemptKey) -> usize;

    /// The hard step: KILL to whatever is left of the attempt.
    fn hard_kill(&mut self, key: AttemptKey);

    /// True once nothing of the attempt runs any more.
    fn is_gone(&self, key: AttemptKey) -> bool;

    /// Still waiting for the resources to run (its clocks have not started).
    fn is_queued(&self, key: AttemptKey) -> bool;

    /// A child of the supervisor was reaped: the end of an attempt, or of a
    /// process the executor only had to forget.
    fn reaped(&mut self, pid: i32, how: ExitHow) -> Option<Ended>;

    /// Looks for changes the executor has to ask about (Slurm's job states).
    fn poll(&mut self, now: Instant) -> Vec<Change>;

    /// When `poll` wants to be called next, while it has anything to watch.
    fn next_poll(&self) -> Option<Instant>;

    /// The periodic look at what runs: new descendants, adopted orphans, and
    /// resident memory. `deep`: read the slower sources too (cgroup files).
    fn sample(&mut self, deep: bool) -> Usage;

    /// The kernel's OOM killer struck inside the attempt (cgroup mode).
    fn oom_struck(&self, key: AttemptKey) -> bool;

    /// Agents write their files from other machines: growth has to be polled
    /// (file notifications may not see it).
    fn writes_elsewhere(&self) -> bool;

    /// The attempt is over: the executor stops watching it (what is left of a
    /// local tree waits for the sweep at the segment's end).
    fn release(&mut self, key: AttemptKey);

    /// Ends everything started for `agents` that still lives.
    fn sweep(&mut self, agents: &HashSet<String>) -> Vec<Swept>;

    /// The run is over: remove what the executor set up for it.
    fn close(&mut self);
}
