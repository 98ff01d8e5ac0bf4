//! One running agent attempt, as the event loop sees it whatever executor
//! runs it: its deadlines, its progress, its memory, how it ended, and, once
//! it is being killed, why and when the TERM turns into a KILL.

use std::path::Path;
use std::time::Instant;

use shared::plan::AgentPlan;

use crate::executor::AttemptKey;
use crate::outcome::{KillReason, Outcome};

pub struct Slot<'p> {
    pub agent: &'p AgentPlan,
    pub attempt: u32,
    /// What the executor knows the attempt by (a pid, a Slurm job).
    pub key: AttemptKey,
    /// Start time of the local agent process (pid-reuse check), 0 elsewhere.
    pub start_ticks: u64,
    pub started: Instant,
    pub launched_at: String,
    /// Set once the executor saw the attempt end: the outcome if nobody
    /// killed it.
    pub exit: Option<Outcome>,
    /// agent.timeout, once known (a relative timeout becomes known later).
    pub deadline: Option<Instant>,
    /// Records in the agent file when this attempt started, and now.
    pub saved_at_launch: usize,
    pub done: usize,
    /// Size of the agent file when it last grew, and when that was.
    pub output_len: u64,
    pub last_progress: Instant,
    pub kill: Option<Kill>,
    /// Resident memory of the whole tree at the last sample, and its peak.
    pub rss: u64,
    pub peak_rss: u64,
}

/// A kill in progress: TERM was sent; KILL follows at `hard_at`.
#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub reason: KillReason,
    pub hard_at: Instant,
    pub hard_sent: bool,
}

impl Slot<'_> {
    /// Notes growth of the agent file; true when it grew.
    pub fn observe_output(&mut self, path: &Path, now: Instant) -> bool {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        if len != self.output_len {
            self.output_len = len;
            self.last_progress = now;
            return true;
        }
        false
    }

    /// The attempt's clocks start again (a queued job began to run).
    pub fn restart_clocks(&mut self, now: Instant, timeout: Option<std::time::Duration>) {
        self.started = now;
        self.last_progress = now;
        self.deadline = timeout.map(|t| now + t);
    }
}

/// Complete lines in an agent file (records saved, for per-item timing).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count())
}
