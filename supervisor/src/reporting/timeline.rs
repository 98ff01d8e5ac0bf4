//! The attempts of a run as a timeline, read back from events.jsonl: when each
//! agent attempt started and ended, and how. Used by `nightshift report`.

use std::time::SystemTime;

use shared::journal::{Attempt, Journal, KillReason, Outcome};

#[derive(Debug, Clone)]
pub struct Bar {
    pub agent: String,
    pub attempt: u32,
    pub start: SystemTime,
    /// None while it runs (or when its supervisor died).
    pub end: Option<SystemTime>,
    /// succeeded, failed, crashed, killed, shutdown, running, interrupted
    pub outcome: String,
    pub detail: String,
}

pub struct Timeline {
    pub bars: Vec<Bar>,
    /// When each supervisor session after the first took the run up again.
    pub resumed: Vec<SystemTime>,
    pub first: Option<SystemTime>,
    pub last: Option<SystemTime>,
}

pub fn read_timeline(journal: &Journal) -> Timeline {
    let history = &journal.history;
    let mut attempts: Vec<(&String, &Attempt)> = history
        .agents
        .iter()
        .flat_map(|(agent, h)| h.attempts.iter().map(move |a| (agent, a)))
        .collect();
    attempts.sort_by_key(|(_, a)| a.seq);
    let bars = attempts
        .into_iter()
        .map(|(agent, attempt)| {
            let (end, outcome, detail) = match (&attempt.end, attempt.outcome()) {
                // Whatever it did after, no supervisor was watching.
                _ if attempt.orphaned => (None, "interrupted", "its supervisor stopped".into()),
                (None, _) => (None, "running", String::new()),
                (Some(end), Outcome::Killed(KillReason::Shutdown)) => {
                    (Some(end.at), "shutdown", "stopped by a shutdown".into())
                }
                (Some(end), how) => (Some(end.at), kind_of(&how), how.to_string()),
            };
            Bar {
                agent: agent.clone(),
                attempt: attempt.number,
                start: attempt.started,
                end,
                outcome: outcome.to_owned(),
                detail,
            }
        })
        .collect();
    Timeline {
        bars,
        resumed: history.sessions.iter().skip(1).copied().collect(),
        first: history.first,
        last: history.last,
    }
}

/// The bar's outcome for an attempt that ended.
fn kind_of(how: &Outcome) -> &'static str {
    match how {
        Outcome::Killed(_) => "killed",
        Outcome::Succeeded => "succeeded",
        Outcome::Crashed { .. } => "crashed",
        Outcome::Running => "running",
        // A Slurm job ended by Slurm (NODE_FAIL, PREEMPTED, ...) failed too.
        Outcome::Failed { .. } | Outcome::Slurm { .. } | Outcome::Ended => "failed",
    }
}
