//! One running agent attempt, as the event loop sees it: its process tree, its
//! deadlines, its progress, and, once it is being killed, why and when the
//! TERM turns into a KILL.

use std::path::Path;
use std::time::{Duration, Instant};

use shared::plan::AgentPlan;

use crate::cgroup::AgentCgroup;
use crate::reaper::ExitHow;
use crate::slurm::{self, JobEnd, JobState};
use crate::tree::Tree;
use nix::sys::signal::Signal;

pub struct Slot<'p> {
    pub agent: &'p AgentPlan,
    pub attempt: u32,
    /// The agent process (also its process group and session id), or under
    /// Slurm the job id: the key of the supervisor's slots either way.
    pub pid: i32,
    pub started: Instant,
    pub launched_at: String,
    pub placement: Placement,
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
}

/// Where an attempt runs.
pub enum Placement {
    /// A child process of the supervisor, with its tree tracked through /proc.
    Local(LocalTree),
    /// A Slurm batch job: Slurm's cgroups hold its tree.
    Slurm(SlurmJob),
}

pub struct LocalTree {
    pub leader_start: u64,
    pub tree: Tree,
    /// The attempt's memory cgroup, in cgroup mode.
    pub cgroup: Option<AgentCgroup>,
}

pub struct SlurmJob {
    pub id: u32,
    /// The state at the last look.
    pub state: JobState,
    /// Set once the job is final: Slurm has ended all its processes.
    pub end: Option<JobEnd>,
}

/// Why the supervisor ended an agent's tree: the `reason` of `killed` events.
pub use shared::journal::KillReason;

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
        match &self.placement {
            Placement::Local(local) => {
                self.exit.is_some() && (self.kill.is_none() || local.tree.is_empty())
            }
            Placement::Slurm(job) => job.end.is_some(),
        }
    }

    /// The graceful step of a kill: TERM to every process of the tree (under
    /// Slurm: to every process of the job; a job still pending is cancelled).
    /// The number of processes signalled, where known.
    pub fn soft_kill(&mut self) -> usize {
        match &mut self.placement {
            Placement::Local(local) => local.tree.signal(Signal::SIGTERM),
            Placement::Slurm(job) => {
                let signal = (job.state != JobState::Pending).then_some("TERM");
                if let Err(error) = slurm::cancel(job.id, signal) {
                    tracing::warn!("scancel of job {} ({}): {error}", job.id, self.agent.name);
                }
                0
            }
        }
    }

    /// The hard step: KILL to what is left (under Slurm: KILL to the job's
    /// processes, then the job cancelled outright).
    pub fn hard_kill(&mut self) {
        match &mut self.placement {
            Placement::Local(local) => {
                local.tree.signal(Signal::SIGKILL);
            }
            Placement::Slurm(job) => {
                for signal in [Some("KILL"), None] {
                    if let Err(error) = slurm::cancel(job.id, signal) {
                        tracing::debug!("scancel of job {}: {error}", job.id);
                    }
                }
            }
        }
    }

    /// A Slurm job still waiting in the queue: its clocks have not started.
    pub fn is_queued(&self) -> bool {
        self.slurm().is_some_and(|j| j.state == JobState::Pending)
    }

    pub fn local(&self) -> Option<&LocalTree> {
        match &self.placement {
            Placement::Local(local) => Some(local),
            Placement::Slurm(_) => None,
        }
    }

    pub fn local_mut(&mut self) -> Option<&mut LocalTree> {
        match &mut self.placement {
            Placement::Local(local) => Some(local),
            Placement::Slurm(_) => None,
        }
    }

    pub fn slurm(&self) -> Option<&SlurmJob> {
        match &self.placement {
            Placement::Local(_) => None,
            Placement::Slurm(job) => Some(job),
        }
    }
}

/// Complete lines in an agent file (records saved, for per-item timing).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count())
}
