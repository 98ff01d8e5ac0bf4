//! Reading events.jsonl back, line by line: every entry in order, folded into
//! the run's history as it is read. Nothing that can be read is lost: events
//! from a newer version are kept aside, and a damaged line is reported with its
//! line number rather than silently dropped — except a torn last line, the
//! normal trace of a supervisor killed mid-write.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::entry::{decode, Decoded, Entry, EntryError};
use super::fold::History;

/// The journal of a run, read whole.
#[derive(Debug, Default)]
pub struct Journal {
    /// Every known event, in the order written.
    pub entries: Vec<Entry>,
    /// What the entries say about the run, its agents and its merges.
    pub history: History,
    /// Events this version does not know, kept as they were read.
    pub unknown: Vec<UnknownEvent>,
    /// Lines skipped, and the first line of each unknown event name: for the
    /// caller to show (the journal is still usable without them).
    pub problems: Vec<JournalProblem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UnknownEvent {
    pub line: usize,
    pub name: String,
    pub raw: Value,
}

/// A journal that cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct JournalError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl From<JournalError> for io::Error {
    fn from(error: JournalError) -> Self {
        io::Error::new(error.source.kind(), error)
    }
}

/// Something in the journal that was skipped; reading went on.
#[derive(Debug, thiserror::Error)]
pub enum JournalProblem {
    #[error("{} line {line}: not JSON ({source}); line skipped", path.display())]
    NotJson {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} line {line}: {source}; line skipped", path.display())]
    BadEntry {
        path: PathBuf,
        line: usize,
        #[source]
        source: EntryError,
    },
    #[error(
        "{} line {line}: event `{name}` is unknown to this version of nightshift (written by a newer one?); such events are skipped",
        path.display()
    )]
    UnknownEvent {
        path: PathBuf,
        line: usize,
        name: String,
    },
}

impl Journal {
    /// Reads a run's events.jsonl; a journal not written yet has no events.
    pub fn read(path: &Path) -> Result<Self, JournalError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Self::parse(path, &bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(JournalError {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The journal in `bytes`; `path` only names it in problems.
    pub fn parse(path: &Path, bytes: &[u8]) -> Self {
        let mut journal = Self::default();
        let mut unknown_names = HashSet::new();
        for (index, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
            let number = index + 1;
            let (line, complete) = match line.strip_suffix(b"\n") {
                Some(line) => (line, true),
                None => (line, false),
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value: Value = match serde_json::from_slice(line) {
                Ok(value) => value,
                // A line without its newline is the last one, torn by a crash.
                Err(_) if !complete => continue,
                Err(source) => {
                    journal.problems.push(JournalProblem::NotJson {
                        path: path.to_owned(),
                        line: number,
                        source,
                    });
                    continue;
                }
            };
            match decode(value) {
                Ok(Decoded::Known(entry)) => {
                    journal.history.apply(&entry);
                    journal.entries.push(entry);
                }
                Ok(Decoded::Unknown { name, raw }) => {
                    if unknown_names.insert(name.clone()) {
                        journal.problems.push(JournalProblem::UnknownEvent {
                            path: path.to_owned(),
                            line: number,
                            name: name.clone(),
                        });
                    }
                    journal.unknown.push(UnknownEvent {
                        line: number,
                        name,
                        raw,
                    });
                }
                Err(source) => journal.problems.push(JournalProblem::BadEntry {
                    path: path.to_owned(),
                    line: number,
                    source,
                }),
            }
        }
        journal
    }
}
