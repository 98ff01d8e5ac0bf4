//! One running agent attempt, as the event loop sees it: its process tree, its
//! deadlines, its progress, and, once it is being killed, why and when the
//! TERM turns into a KILL.

use std::path::Path;
use std::time::{Duration, Instant};

use shared::plan::AgentPlan;

use crate::cgroup::AgentCgroup;
use crate::reaper::ExitHow;
use crate::tree::Tree;

pub struct Slot<'p> {
    pub agent: &'p AgentPlan,
    pub attempt: u32,
    /// The agent process: also its process group and session id.
    pub pid: i32,
    pub leader_start: u64,
    pub started: Instant,
    pub launched_at: String,
    pub tree: Tree,
    /// Set once the agent process has been reaped.
    pub exit: Option<ExitHow>,
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
    /// The attempt's memory cgroup, in cgroup mode.
    pub cgroup: Option<AgentCgroup>,
}

/// Why the supervisor ended an agent's tree (the `reason` of `killed` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    Timeout,
    Stall,
    Memory,
    Ceiling,
    MinFree,
    Shutdown,
    Deadline,
    /// Leftovers of a finished segment, swept before the next one.
    SegmentEnd,
}

impl KillReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Stall => "stall",
            Self::Memory => "memory",
            Self::Ceiling => "ceiling",
            Self::MinFree => "min-free",
            Self::Shutdown => "shutdown",
            Self::Deadline => "deadline",
            Self::SegmentEnd => "segment-end",
        }
    }

    /// Killed to make room for the run's memory: requeued, not a failure.
    pub fn makes_room(self) -> bool {
        matches!(self, Self::Ceiling | Self::MinFree)
    }

    /// Killed because the run is stopping: neither a failure nor retried.
    pub fn stops_run(self) -> bool {
        matches!(self, Self::Shutdown | Self::Deadline)
    }
}

impl std::fmt::Display for KillReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

    pub fn stalled(&self, stall_timeout: Option<Duration>, now: Instant) -> bool {
        stall_timeout.is_some_and(|limit| now.duration_since(self.last_progress) >= limit)
    }

    pub fn timed_out(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// The agent and its whole tree are gone: the attempt is over.
    pub fn finished(&self) -> bool {
        self.exit.is_some() && (self.kill.is_none() || self.tree.is_empty())
    }
}

/// Complete lines in an agent file (records saved, for per-item timing).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count())
}
