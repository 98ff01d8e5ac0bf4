//! RUN/events.jsonl, the run's append-only journal: its typed events, the one
//! encoding of a line, and the one reader, which folds the journal into each
//! agent's attempts, the merge stamps and how the last session ended.

mod entry;
mod event;
mod fold;
mod read;

#[cfg(test)]
mod fold_tests;
#[cfg(test)]
mod tests;

pub use entry::{encode, Entry, EntryError};
pub use event::{BadPhase, Event, KillReason, Killed, KilledBy, LaunchPhase, RunEnd};
pub use fold::{AgentHistory, Attempt, AttemptEnd, History, Outcome};
pub use read::{Journal, JournalError, JournalProblem, UnknownEvent};
