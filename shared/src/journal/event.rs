//! The events of RUN/events.jsonl, typed: one variant per `event` name, with
//! the fields each one has always been written with (the envelope — `ts` and
//! `agent` — is in `entry`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::merge::FileStamp;

/// One journal event. The JSON is `{"event": "<kebab-case name>", ...fields}`;
/// optional fields are left out when absent, as they always were, except
/// `launched`'s `phase`, which is `null` outside a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A supervisor started (a new run, or a resume going on with one).
    RunStarted {
        job: String,
        items: usize,
        agents: usize,
        segments: usize,
        max_parallel: usize,
        supervisor_pid: i32,
        already_complete: usize,
        memory_mode: String,
        /// The platform implementation answering process and memory calls
        /// ("linux" or "portable"); absent from journals written before it was.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        platform: String,
    },
    /// `nightshift resume` took over the run directory.
    Resumed {
        leftovers_ended: usize,
        items_saved: usize,
        agents_complete: usize,
    },
    /// An attempt of an agent started: a process (`pid`) or a Slurm job (`job_id`).
    Launched {
        attempt: u32,
        items: usize,
        already_saved: usize,
        phase: Option<LaunchPhase>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
        /// The leader's start time in clock ticks since boot, so a later
        /// supervisor can tell the agent from a process that reused its pid.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_ticks: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<u32>,
    },
    /// An attempt could not be started at all.
    LaunchFailed {
        error: String,
    },
    /// A resumed supervisor took over a Slurm job an earlier one submitted.
    Adopted {
        job_id: u32,
        state: String,
        attempt: u32,
        elapsed_seconds: u64,
    },
    /// An attempt ended: `code` or `signal`; a Slurm job also has its `state`
    /// (and neither code nor signal when Slurm ended it, e.g. NODE_FAIL).
    Exited {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        seconds: f64,
    },
    /// A tree (or job) was ended.
    Killed(Killed),
    /// The kernel's OOM killer struck inside a running agent's cgroup.
    OomKilled {
        pid: i32,
        by: KilledBy,
    },
    /// Killed to make room for memory: back in the queue, not a failure.
    Requeued {
        reason: KillReason,
    },
    RetryScheduled {
        retry: u32,
        after_seconds: f64,
    },
    /// The halt policy stopped the run.
    Halted {
        policy: String,
        failed: usize,
    },
    /// A segment file was written; its stamp lets a later final merge trust it.
    Merged {
        segment: usize,
        file: String,
        stamp: FileStamp,
        problems: usize,
        seconds: f64,
    },
    SegmentDone {
        segment: usize,
    },
    SighupIgnored,
    Shutdown {
        signal: i32,
        grace_seconds: f64,
    },
    /// A second Ctrl-C: every tree being ended is killed at once.
    ShutdownNow {
        signal: i32,
    },
    Deadline {
        running: usize,
        drain_seconds: f64,
    },
    DrainOver {
        running: usize,
    },
    /// An agent said the run cannot go on (exit code 5: no usable API key, a
    /// full disk): nothing more starts, running agents are stopped; resumable
    /// once fixed. `reason` is the agent's last word on it.
    CannotGoOn {
        reason: String,
    },
    /// The run's budget (limits.max_cost / max_tokens) cannot cover another
    /// request: nothing more starts, requests in flight finish and are
    /// saved, then the run stops (exit code 4, resumable with a larger one).
    BudgetSpent {
        reason: String,
    },
    /// The server rejected an API key (401/403): it is dropped and the run
    /// goes on with the others. `key` is the broker's name for it (the
    /// endpoint and the variable, never the key).
    KeyRejected {
        key: String,
    },
    /// `nightshift resume --max-cost / --max-tokens` set the run's budget
    /// (for this session and the ones after it).
    Budget {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_cost: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_tokens: Option<u64>,
    },
    /// `nightshift control` changed the live run (`action`: max-parallel,
    /// pause, continue, stop; `max_parallel` for the first).
    Control {
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_parallel: Option<usize>,
    },
    RunFinished {
        state: RunEnd,
        items_done: usize,
        items_total: usize,
        exit_code: i32,
    },
    /// The notify command (`[notify]` or `--notify`) got the run's summary
    /// and exited 0.
    Notified {
        command: Vec<String>,
        seconds: f64,
    },
    /// The notify command could not start, exited non-zero or ran out of
    /// time; the run's exit code stands.
    NotifyFailed {
        command: Vec<String>,
        error: String,
        seconds: f64,
    },
}

impl Event {
    /// Every `event` name this version knows; a line with another name comes
    /// from a newer nightshift and is kept aside, not misread.
    pub const NAMES: &'static [&'static str] = &[
        "run-started",
        "resumed",
        "launched",
        "launch-failed",
        "adopted",
        "exited",
        "killed",
        "oom-killed",
        "requeued",
        "retry-scheduled",
        "halted",
        "merged",
        "segment-done",
        "sighup-ignored",
        "shutdown",
        "shutdown-now",
        "deadline",
        "drain-over",
        "cannot-go-on",
        "budget-spent",
        "key-rejected",
        "budget",
        "control",
        "run-finished",
        "notified",
        "notify-failed",
    ];

    /// The `event` name this event is written with.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RunStarted { .. } => "run-started",
            Self::Resumed { .. } => "resumed",
            Self::Launched { .. } => "launched",
            Self::LaunchFailed { .. } => "launch-failed",
            Self::Adopted { .. } => "adopted",
            Self::Exited { .. } => "exited",
            Self::Killed(_) => "killed",
            Self::OomKilled { .. } => "oom-killed",
            Self::Requeued { .. } => "requeued",
            Self::RetryScheduled { .. } => "retry-scheduled",
            Self::Halted { .. } => "halted",
            Self::Merged { .. } => "merged",
            Self::SegmentDone { .. } => "segment-done",
            Self::SighupIgnored => "sighup-ignored",
            Self::Shutdown { .. } => "shutdown",
            Self::ShutdownNow { .. } => "shutdown-now",
            Self::Deadline { .. } => "deadline",
            Self::DrainOver { .. } => "drain-over",
            Self::CannotGoOn { .. } => "cannot-go-on",
            Self::BudgetSpent { .. } => "budget-spent",
            Self::KeyRejected { .. } => "key-rejected",
            Self::Budget { .. } => "budget",
            Self::Control { .. } => "control",
            Self::RunFinished { .. } => "run-finished",
            Self::Notified { .. } => "notified",
            Self::NotifyFailed { .. } => "notify-failed",
        }
    }

    /// A segment's `merged` event; the file name follows the run directory's layout.
    pub fn merged(segment: usize, stamp: FileStamp, problems: usize, seconds: f64) -> Self {
        Self::Merged {
            segment,
            file: format!("segment_{segment:02}.jsonl"),
            stamp,
            problems,
            seconds,
        }
    }
}

/// The fields of a `killed` event: which tree, why, by whom (the supervisor
/// unless `by` says otherwise), and what was known of it then. Its writers know
/// different parts, so it is built as `Killed { pid: Some(pid), ..Killed::because(reason) }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Killed {
    pub reason: KillReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<KilledBy>,
    /// How many processes were signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss: Option<u64>,
}

impl Killed {
    /// A kill with nothing known but its reason.
    pub fn because(reason: KillReason) -> Self {
        Self {
            reason,
            pid: None,
            job_id: None,
            by: None,
            processes: None,
            rss: None,
            peak_rss: None,
        }
    }
}

/// Why the supervisor ended an agent's tree (the `reason` of `killed` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who ended a tree when it was not the supervisor itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KilledBy {
    Kernel,
    Slurm,
}

/// How a supervisor session ended (`run-finished`'s `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunEnd {
    Finished,
    Failed,
    Interrupted,
    Deadline,
    Halted,
    /// Stopped because it cannot go on (exit code 5); resumable once fixed.
    Stopped,
    /// Stopped because its budget is spent (exit code 4); resumable with a
    /// larger one.
    Budget,
}

impl RunEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Deadline => "deadline",
            Self::Halted => "halted",
            Self::Stopped => "stopped",
            Self::Budget => "budget",
        }
    }

    /// The documented exit code of a session that ended so (`run`, `resume`
    /// and `status` all say it with this).
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Finished => crate::exit_codes::SUCCESS,
            Self::Failed | Self::Halted => crate::exit_codes::INCOMPLETE,
            Self::Deadline => crate::exit_codes::DEADLINE,
            Self::Stopped => crate::exit_codes::CANNOT_GO_ON,
            Self::Budget => crate::exit_codes::BUDGET_SPENT,
            Self::Interrupted => crate::exit_codes::INTERRUPTED,
        }
    }
}

impl fmt::Display for RunEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a launch fell in the schedule: `"warmup"` or `"wave N"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchPhase {
    Warmup,
    Wave(usize),
}

impl fmt::Display for LaunchPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Warmup => f.write_str("warmup"),
            Self::Wave(n) => write!(f, "wave {n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a launch phase (\"warmup\" or \"wave N\")")]
pub struct BadPhase(String);

impl FromStr for LaunchPhase {
    type Err = BadPhase;

    fn from_str(text: &str) -> Result<Self, BadPhase> {
        if text == "warmup" {
            return Ok(Self::Warmup);
        }
        text.strip_prefix("wave ")
            .and_then(|n| n.parse().ok())
            .map(Self::Wave)
            .ok_or_else(|| BadPhase(text.to_owned()))
    }
}

impl Serialize for LaunchPhase {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LaunchPhase {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
