//! nightshift-agent, the ready-made agent of the agent contract: it runs a
//! backend on each item of its task, appends one fsynced record per finished
//! item to its output file, skips the items that file already holds (resume),
//! takes rate-limit permits, retries failed items (falling back to the next
//! command of a list), validates every result and lists the items that never
//! succeed.

pub mod backend;
pub mod failures;
pub mod hash;
pub mod item;
pub mod permit;
pub mod process;
pub mod setup;
pub mod validate;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use serde_json::Value;
use shared::exit_codes;
use shared::ids::IdKey;
use shared::records::RecordAppender;

use backend::Backend;
use failures::FailureLog;
use item::{Ending, ItemRunner};
use permit::Permits;
pub use setup::{Setup, SetupError};
use validate::Validator;

/// Why the agent stopped before going through its items.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot save the record of item {id} to {path}")]
    WriteOutput {
        id: IdKey,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// Bad setup is a usage error; a failed write leaves items missing.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Setup(_) => exit_codes::USAGE,
            Self::WriteOutput { .. } => exit_codes::INCOMPLETE,
        }
    }
}

/// What one launch did with its task.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub total: usize,
    /// Items already in the output file at start, skipped.
    pub already_saved: usize,
    /// Items saved by this launch.
    pub written: usize,
    /// Items that failed every attempt, in task order.
    pub failed: Vec<IdKey>,
}

impl Outcome {
    /// Every item of the task is in the output file.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    pub fn exit_code(&self) -> i32 {
        if self.is_complete() {
            exit_codes::SUCCESS
        } else {
            exit_codes::INCOMPLETE
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} items: {} written, {} already saved, {} failed",
            self.total,
            self.written,
            self.already_saved,
            self.failed.len()
        )
    }
}

/// Works through the task: each item not yet saved is run, checked and
/// appended before the next one starts.
pub fn run(setup: &Setup) -> Result<Outcome, AgentError> {
    let task = &setup.task;
    let settings = &task.settings;
    let backend = Backend::new(settings)?;
    let validator = Validator::new(settings.validate.as_ref(), settings.item_timeout)?;
    let (mut appender, existing) =
        RecordAppender::open(&setup.output, &task.id_field).map_err(|source| {
            SetupError::OpenOutput {
                path: setup.output.clone(),
                source,
            }
        })?;
    if existing.torn_bytes > 0 {
        eprintln!(
            "{}: cut off a torn last line ({} bytes) of {}",
            setup.agent,
            existing.torn_bytes,
            setup.output.display()
        );
    }
    let mut saved: HashSet<IdKey> = existing.ids.into_iter().collect();
    let mut failures = FailureLog::beside(&setup.output);
    let mut runner = ItemRunner::new(
        &backend,
        validator.as_ref(),
        Permits::new(setup.socket.clone(), &setup.agent),
        &setup.agent,
        &task.id_field,
        setup.attempt,
        settings.item_retries,
    );
    let mut outcome = Outcome {
        total: task.items.len(),
        ..Outcome::default()
    };

    for (item, id) in task.items.iter().zip(&setup.ids) {
        if saved.contains(id) {
            outcome.already_saved += 1;
            continue;
        }
        match runner.run(item, id) {
            Ending::Saved(record) => {
                appender.append(&Value::Object(record)).map_err(|source| {
                    AgentError::WriteOutput {
                        id: id.clone(),
                        path: setup.output.clone(),
                        source,
                    }
                })?;
                saved.insert(id.clone());
                outcome.written += 1;
            }
            Ending::Failed { reason, attempts } => {
                eprintln!(
                    "{}: item {id} failed after {attempts} attempts: {reason}",
                    setup.agent
                );
                // The failures file only explains; the item's absence from the
                // output file is what counts, so a failed write here is reported
                // and the agent goes on.
                if let Err(write_error) = failures.record(id, &reason, attempts) {
                    eprintln!(
                        "{}: cannot write {}: {write_error}",
                        setup.agent,
                        failures.path().display()
                    );
                }
                outcome.failed.push(id.clone());
            }
        }
    }
    Ok(outcome)
}
