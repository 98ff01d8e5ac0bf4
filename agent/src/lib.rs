//! nightshift-agent, the ready-made agent of the agent contract: it runs a
//! backend on each item of its task, appends one fsynced record per finished
//! item to its output file, skips the items that file already holds (resume),
//! retries failed items and lists the ones that never succeed.

pub mod backend;
pub mod failures;
pub mod hash;
pub mod setup;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use serde_json::{Map, Value};
use shared::exit_codes;
use shared::ids::IdKey;
use shared::records::RecordAppender;

use backend::{AttemptError, Backend, Call};
use failures::FailureLog;
pub use setup::{Setup, SetupError};

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
    let attempts = settings.item_retries.saturating_add(1);
    let mut outcome = Outcome {
        total: task.items.len(),
        ..Outcome::default()
    };

    for (item, id) in task.items.iter().zip(&setup.ids) {
        if saved.contains(id) {
            outcome.already_saved += 1;
            continue;
        }
        let mut last_error = None;
        for item_attempt in 1..=attempts {
            let call = Call {
                item,
                id,
                id_field: &task.id_field,
                launch_attempt: setup.attempt,
                item_attempt,
            };
            match backend.call(call).and_then(|record| with_id(record, call)) {
                Ok(record) => {
                    appender.append(&Value::Object(record)).map_err(|source| {
                        AgentError::WriteOutput {
                            id: id.clone(),
                            path: setup.output.clone(),
                            source,
                        }
                    })?;
                    last_error = None;
                    break;
                }
                Err(error) => {
                    eprintln!(
                        "{}: item {id} attempt {item_attempt}/{attempts} failed: {error}",
                        setup.agent
                    );
                    last_error = Some(error);
                }
            }
        }
        match last_error {
            None => {
                saved.insert(id.clone());
                outcome.written += 1;
            }
            Some(error) => {
                let reason = error.to_string();
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

/// Makes sure a record carries the item's id: a missing id is added, a
/// different one makes the attempt a failure.
fn with_id(
    mut record: Map<String, Value>,
    call: Call<'_>,
) -> Result<Map<String, Value>, AttemptError> {
    match record.get(call.id_field) {
        None => {
            record.insert(call.id_field.to_owned(), call.id.to_value());
            Ok(record)
        }
        Some(found) if IdKey::from_value(found).as_ref() == Some(call.id) => Ok(record),
        Some(found) => Err(AttemptError::WrongId {
            field: call.id_field.to_owned(),
            found: found.to_string(),
            expected: call.id.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call<'a>(item: &'a Value, id: &'a IdKey) -> Call<'a> {
        Call {
            item,
            id,
            id_field: "id",
            launch_attempt: 1,
            item_attempt: 1,
        }
    }

    #[test]
    fn missing_id_is_added_and_wrong_id_refused() {
        let item = json!({"id": 7});
        let id = IdKey::from_value(&item["id"]).expect("integer id");
        let record = json!({"output": "x"});
        let Value::Object(record) = record else {
            panic!("object literal")
        };
        let fixed = with_id(record, call(&item, &id)).expect("id added");
        assert_eq!(fixed["id"], json!(7));
        let Value::Object(wrong) = json!({"id": "7"}) else {
            panic!("object literal")
        };
        assert!(matches!(
            with_id(wrong, call(&item, &id)),
            Err(AttemptError::WrongId { .. })
        ));
    }
}
