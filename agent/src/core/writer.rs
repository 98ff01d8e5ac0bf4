//! The one writer of an agent's results: every finished item comes here, from
//! whichever worker ran it. A record becomes one fsynced line of the agent
//! file; a failure one line of the failures file. Nothing else writes either.

use std::io;
use std::path::Path;

use serde_json::Value;
use shared::ids::IdKey;
use shared::records::RecordAppender;

use crate::failures::FailureLog;
use crate::item::Ending;
use crate::AgentError;

/// Where saved records go: the agent file, or a stand-in in tests.
pub trait Append {
    /// Writes one record as one line; durable once `sync` returns.
    fn append(&mut self, record: &Value) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
}

impl Append for RecordAppender {
    fn append(&mut self, record: &Value) -> io::Result<()> {
        self.write(record)
    }
    fn sync(&mut self) -> io::Result<()> {
        RecordAppender::sync(self)
    }
}

/// One item, done: its place in the task, its id and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub index: usize,
    pub id: IdKey,
    pub ending: Ending,
}

/// What the writer did, once every item went through it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub written: usize,
    /// Items that failed every attempt, in task order.
    pub failed: Vec<IdKey>,
    /// Why the agent cannot go on (no usable API key), if so.
    pub stopped: Option<String>,
    /// Why the run's budget stopped the agent, if it did.
    pub out_of_budget: Option<String>,
}

pub struct Writer<'a, A> {
    records: A,
    failures: FailureLog,
    agent: &'a str,
    output: &'a Path,
    written: usize,
    /// (task index, id): items may finish in any order.
    failed: Vec<(usize, IdKey)>,
    /// Why the agent cannot go on, once an item said so.
    stopped: Option<String>,
    /// The last record written since the last sync, for its error message.
    unsynced: Option<IdKey>,
    out_of_budget: Option<String>,
}

impl<'a, A: Append> Writer<'a, A> {
    /// Writes records through `records` (the agent file at `output`, named
    /// in messages) and failures to `failures`.
    pub fn new(records: A, failures: FailureLog, agent: &'a str, output: &'a Path) -> Self {
        Self {
            records,
            failures,
            agent,
            output,
            written: 0,
            failed: Vec::new(),
            stopped: None,
            unsynced: None,
            out_of_budget: None,
        }
    }

    /// Makes every record written since the last call durable (one fsync).
    pub fn sync(&mut self) -> Result<(), AgentError> {
        let Some(id) = self.unsynced.take() else {
            return Ok(());
        };
        self.records
            .sync()
            .map_err(|source| AgentError::WriteOutput {
                id,
                path: self.output.to_owned(),
                source,
            })
    }

    /// Saves one finished item. A record that cannot be written stops the
    /// agent: its item would be missing while the agent went on as if saved.
    pub fn save(&mut self, finished: Finished) -> Result<(), AgentError> {
        let Finished { index, id, ending } = finished;
        match ending {
            Ending::Saved(record) => {
                self.records
                    .append(&Value::Object(record))
                    .map_err(|source| AgentError::WriteOutput {
                        id: id.clone(),
                        path: self.output.to_owned(),
                        source,
                    })?;
                self.unsynced = Some(id);
                self.written += 1;
            }
            Ending::Failed {
                reason,
                attempts,
                spend,
            } => {
                eprintln!(
                    "{}: item {id} failed after {attempts} attempts: {reason}",
                    self.agent
                );
                // The failures file only explains; the item's absence from the
                // output file is what counts, so a failed write here is reported
                // and the agent goes on.
                if let Err(write_error) = self.failures.record(&id, &reason, attempts, spend) {
                    eprintln!(
                        "{}: cannot write {}: {write_error}",
                        self.agent,
                        self.failures.path().display()
                    );
                }
                self.failed.push((index, id));
            }
            // Not a failure of the item: it stays missing, for a resume.
            // The first reason is the one the agent exits with.
            Ending::Stopped { reason } => {
                self.stopped.get_or_insert(reason);
            }
            Ending::OutOfBudget { reason } => {
                self.out_of_budget.get_or_insert(reason);
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Written {
        self.failed.sort_by_key(|(index, _)| *index);
        Written {
            written: self.written,
            failed: self.failed.into_iter().map(|(_, id)| id).collect(),
            stopped: self.stopped,
            out_of_budget: self.out_of_budget,
        }
    }
}

impl<A: Append> crate::core::pool::Sink for &mut Writer<'_, A> {
    type Error = AgentError;
    fn save(&mut self, finished: Finished) -> Result<(), AgentError> {
        Writer::save(self, finished)
    }
    fn flush(&mut self) -> Result<(), AgentError> {
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    /// Keeps the records in memory; fails the write of one id.
    #[derive(Default)]
    struct Memory {
        lines: Vec<Value>,
        broken: Option<Value>,
    }

    impl Append for &mut Memory {
        fn append(&mut self, record: &Value) -> io::Result<()> {
            if self.broken.as_ref() == record.get("id") {
                return Err(io::Error::other("disk full"));
            }
            self.lines.push(record.clone());
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn saved(n: i64) -> Finished {
        let mut record = Map::new();
        record.insert("id".into(), json!(n));
        Finished {
            index: usize::try_from(n).expect("small"),
            id: IdKey::from_value(&json!(n)).expect("id"),
            ending: Ending::Saved(record),
        }
    }

    fn failed(n: i64) -> Finished {
        Finished {
            ending: Ending::Failed {
                reason: "no".into(),
                attempts: 3,
                spend: None,
            },
            ..saved(n)
        }
    }

    #[test]
    fn records_are_appended_and_failures_listed_in_task_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("agent_01.jsonl");
        let mut memory = Memory::default();
        let mut writer = Writer::new(&mut memory, FailureLog::beside(&output), "a", &output);
        for finished in [saved(2), failed(3), saved(0), failed(1)] {
            writer.save(finished).expect("saved");
        }
        let written = writer.finish();
        assert_eq!(written.written, 2);
        let ids: Vec<String> = written.failed.iter().map(|id| id.to_string()).collect();
        assert_eq!(ids, ["1", "3"]);
        assert_eq!(memory.lines, [json!({"id": 2}), json!({"id": 0})]);
        let failures = std::fs::read_to_string(dir.path().join("agent_01.failures.jsonl"))
            .expect("failures file");
        assert_eq!(failures.lines().count(), 2, "{failures}");
    }

    #[test]
    fn a_failed_write_is_the_agents_write_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("agent_01.jsonl");
        let mut memory = Memory {
            broken: Some(json!(1)),
            ..Memory::default()
        };
        let mut writer = Writer::new(&mut memory, FailureLog::beside(&output), "a", &output);
        writer.save(saved(0)).expect("saved");
        let error = writer.save(saved(1)).expect_err("the write fails");
        assert!(matches!(error, AgentError::WriteOutput { .. }), "{error}");
        assert_eq!(error.exit_code(), shared::exit_codes::INCOMPLETE);
        assert!(error.to_string().contains("item 1"), "{error}");
    }
}
