//! How things end: why the supervisor killed an agent's tree, how one attempt
//! ended, and the memory side of a run, shared by the event loop, the
//! executors, the watchdog and the reports.

use std::fmt;

/// Why the supervisor ended an agent's tree: the `reason` of `killed` events
/// (a journal type, so it lives in `shared`).
pub use shared::journal::KillReason;

/// How one attempt of an agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed(i32),
    Crashed(i32),
    Killed(KillReason),
    LaunchFailed(String),
    /// A Slurm job ended by Slurm for a reason of its own (NODE_FAIL,
    /// PREEMPTED, CANCELLED by somebody else, ...).
    Slurm(&'static str),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Succeeded => f.write_str("succeeded"),
            Self::Failed(code) => write!(f, "failed with exit code {code}"),
            Self::Crashed(signal) => write!(f, "crashed (signal {signal})"),
            Self::Killed(reason) => write!(f, "killed ({reason})"),
            Self::LaunchFailed(error) => write!(f, "could not start: {error}"),
            Self::Slurm(state) => write!(f, "ended by Slurm ({state})"),
        }
    }
}

/// The memory side of a run, for report.json.
#[derive(Debug, serde::Serialize)]
pub struct MemoryReport {
    /// When the samples' `t` counts from (RFC 3339): the session's start, so
    /// a resumed run's chart sits on the timeline's axis.
    pub started: String,
    pub mode: String,
    /// The platform implementation that sampled it ("linux" or "portable").
    pub platform: &'static str,
    pub ceiling: Option<u64>,
    pub peak_total: u64,
    pub samples: Vec<crate::watchdog::memory::MemorySample>,
}
