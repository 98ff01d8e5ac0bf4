//! Slurm's job states, as squeue, scontrol and sacct print them, and how a
//! finished job maps to an attempt's outcome. The State decides, not only the
//! exit code: a job ended by its time limit can report ExitCode=0:0.

use crate::outcome::{KillReason, Outcome};

/// A job's state (the first word of squeue's %T, scontrol's JobState or
/// sacct's State: sacct prints "CANCELLED by 0").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    /// Ended or being ended; processes may still be alive.
    Completing,
    Suspended,
    Completed,
    Failed,
    Timeout,
    OutOfMemory,
    Cancelled,
    NodeFail,
    Preempted,
    BootFail,
    Deadline,
    /// Known to no Slurm command any more (purged, or the controller's state
    /// was lost): final, a failure.
    Lost,
    /// Any other state Slurm may report (CONFIGURING, REQUEUED, RESIZING,
    /// SIGNALING, STAGE_OUT, ...): not finished yet.
    Other,
}

impl JobState {
    pub fn parse(text: &str) -> Self {
        let word = text.split_whitespace().next().unwrap_or("");
        match word.trim_end_matches('+') {
            "PENDING" | "PD" => Self::Pending,
            "RUNNING" | "R" => Self::Running,
            "COMPLETING" | "CG" => Self::Completing,
            "SUSPENDED" | "S" => Self::Suspended,
            "COMPLETED" | "CD" => Self::Completed,
            "FAILED" | "F" => Self::Failed,
            "TIMEOUT" | "TO" => Self::Timeout,
            "OUT_OF_MEMORY" | "OOM" => Self::OutOfMemory,
            "CANCELLED" | "CA" => Self::Cancelled,
            "NODE_FAIL" | "NF" => Self::NodeFail,
            "PREEMPTED" | "PR" => Self::Preempted,
            "BOOT_FAIL" | "BF" => Self::BootFail,
            "DEADLINE" | "DL" => Self::Deadline,
            _ => Self::Other,
        }
    }

    /// The job is over and Slurm has ended every process of it.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Running | Self::Completing | Self::Suspended | Self::Other
        )
    }

    /// Processes of the job may be running (or about to).
    pub fn is_live(self) -> bool {
        !self.is_final()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Completing => "COMPLETING",
            Self::Suspended => "SUSPENDED",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Timeout => "TIMEOUT",
            Self::OutOfMemory => "OUT_OF_MEMORY",
            Self::Cancelled => "CANCELLED",
            Self::NodeFail => "NODE_FAIL",
            Self::Preempted => "PREEMPTED",
            Self::BootFail => "BOOT_FAIL",
            Self::Deadline => "DEADLINE",
            Self::Lost => "LOST",
            Self::Other => "OTHER",
        }
    }
}

/// How a finished job ended: its state and its ExitCode "code:signal".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobEnd {
    pub state: JobState,
    pub code: i32,
    pub signal: i32,
}

impl JobEnd {
    /// Parses an ExitCode value, "1:0" (exit code 1) or "0:9" (signal 9).
    pub fn new(state: JobState, exit_code: &str) -> Self {
        let mut parts = exit_code.trim().split(':');
        let mut number = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let code = number();
        let signal = number();
        Self {
            state,
            code,
            signal,
        }
    }

    /// The attempt's outcome when nightshift did not cancel the job itself.
    pub fn outcome(self) -> Outcome {
        match self.state {
            JobState::Completed if self.code == 0 && self.signal == 0 => Outcome::Succeeded,
            JobState::Timeout => Outcome::Killed(KillReason::Timeout),
            JobState::OutOfMemory => Outcome::Killed(KillReason::Memory),
            JobState::Completed | JobState::Failed if self.signal != 0 => {
                Outcome::Crashed(self.signal)
            }
            JobState::Completed | JobState::Failed => Outcome::Failed(self.code),
            // Cancelled by someone else, node failure, preemption, ...: a
            // failure of the attempt, retried on its remaining items.
            other => Outcome::Slurm(other.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_and_abbreviations() {
        assert_eq!(JobState::parse("CANCELLED by 0"), JobState::Cancelled);
        assert_eq!(JobState::parse("OUT_OF_MEMORY"), JobState::OutOfMemory);
        assert_eq!(JobState::parse("CD"), JobState::Completed);
        assert_eq!(JobState::parse("CONFIGURING"), JobState::Other);
        assert!(JobState::Timeout.is_final());
        assert!(!JobState::Completing.is_final());
    }

    #[test]
    fn outcome_reads_the_state_before_the_exit_code() {
        let timeout = JobEnd::new(JobState::Timeout, "0:0");
        assert_eq!(timeout.outcome(), Outcome::Killed(KillReason::Timeout));
        let oom = JobEnd::new(JobState::OutOfMemory, "0:125");
        assert_eq!(oom.outcome(), Outcome::Killed(KillReason::Memory));
        assert_eq!(
            JobEnd::new(JobState::Completed, "0:0").outcome(),
            Outcome::Succeeded
        );
        assert_eq!(
            JobEnd::new(JobState::Failed, "1:0").outcome(),
            Outcome::Failed(1)
        );
        assert_eq!(
            JobEnd::new(JobState::Failed, "0:15").outcome(),
            Outcome::Crashed(15)
        );
        assert_eq!(
            JobEnd::new(JobState::NodeFail, "0:0").outcome(),
            Outcome::Slurm("NODE_FAIL")
        );
    }
}
