//! `agent_NN.batch.jsonl`, beside each agent file: the journal of an agent's
//! provider batches (`agent.llm.mode = "batch"`). The agent appends a
//! `submitted` line, fsynced, the moment the provider returns a batch id —
//! before it does anything else — so that a relaunched agent (or `nightshift
//! resume`) goes on polling that batch instead of paying for its items again.
//! Later lines tell the batch's provider state (for `status`) and that its
//! results were all saved (`settled`: it is never polled again). The line type,
//! the file's name and its reading live here, for the agent that writes it and
//! the supervisor that shows it.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::records::{Lines, RecordAppender};

/// mode = "auto": the environment variable that tells an agent when its
/// outstanding items go online (milliseconds since the Unix epoch), set by the
/// supervisor from batch_deadline or the run's deadline.
pub const ONLINE_AT_VAR: &str = "NIGHTSHIFT_BATCH_ONLINE_AT";

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "kebab-case")]
pub enum BatchLine {
    /// The provider accepted a batch of these requests.
    Submitted {
        batch: String,
        /// "openai" | "anthropic".
        provider: String,
        /// The base URL the batch lives at.
        endpoint: String,
        /// RFC 3339, UTC.
        at: String,
        requests: Vec<BatchRequest>,
    },
    /// The batch's provider state when it last changed.
    State {
        batch: String,
        /// The provider's own word: validating, in_progress, finalizing,
        /// completed, expired… (OpenAI); in_progress, canceling, ended (Anthropic).
        state: String,
        counts: BatchCounts,
    },
    /// Every result of the batch was read and saved (or its item set aside
    /// for another batch): it is done with.
    Settled { batch: String },
}

/// One request of a batch: the provider's `custom_id` and the item it asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    pub custom_id: String,
    pub id: Value,
}

/// A batch's request counts as the provider last told them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCounts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
}

/// `agent_01.jsonl` → `agent_01.batch.jsonl`; any other name gets the suffix
/// appended.
pub fn batch_path(output: &Path) -> PathBuf {
    crate::rundir::beside_agent_file(output, "batch")
}

/// Every readable line of a journal, in file order; a line that cannot be
/// read (a torn last line) is skipped, a missing file has none.
pub fn read_batch_lines(path: &Path) -> Vec<BatchLine> {
    std::fs::read(path)
        .map(|bytes| parse(&bytes))
        .unwrap_or_default()
}

fn parse(bytes: &[u8]) -> Vec<BatchLine> {
    let lines = Lines::new(bytes);
    lines
        .iter()
        .filter_map(|(_, range)| serde_json::from_slice(&bytes[range]).ok())
        .collect()
}

/// What the journal says of one batch, folded from its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSummary {
    pub batch: String,
    pub provider: String,
    pub endpoint: String,
    pub submitted_at: String,
    pub requests: Vec<BatchRequest>,
    /// The last provider state seen ("submitted" before any poll).
    pub state: String,
    pub counts: BatchCounts,
    pub settled: bool,
}

/// The batches of a journal in submission order.
pub fn summarize(lines: &[BatchLine]) -> Vec<BatchSummary> {
    let mut batches: Vec<BatchSummary> = Vec::new();
    for line in lines {
        match line {
            BatchLine::Submitted {
                batch,
                provider,
                endpoint,
                at,
                requests,
            } => batches.push(BatchSummary {
                batch: batch.clone(),
                provider: provider.clone(),
                endpoint: endpoint.clone(),
                submitted_at: at.clone(),
                counts: BatchCounts {
                    total: requests.len() as u64,
                    ..BatchCounts::default()
                },
                requests: requests.clone(),
                state: "submitted".to_owned(),
                settled: false,
            }),
            BatchLine::State {
                batch,
                state,
                counts,
            } => {
                if let Some(summary) = batches.iter_mut().find(|b| &b.batch == batch) {
                    summary.state.clone_from(state);
                    summary.counts = *counts;
                }
            }
            BatchLine::Settled { batch } => {
                if let Some(summary) = batches.iter_mut().find(|b| &b.batch == batch) {
                    summary.settled = true;
                }
            }
        }
    }
    batches
}

/// The journal opened for appending: a torn last line is cut off first, and
/// every line is fsynced before `append` returns — an agent file's appender
/// does both, so the journal is one (its lines carry no item id).
pub struct BatchJournal {
    appender: RecordAppender,
    path: PathBuf,
}

impl BatchJournal {
    /// Opens (or creates) the journal at `path` with the lines it holds.
    pub fn open(path: &Path) -> io::Result<(Self, Vec<BatchLine>)> {
        let (appender, existing) = RecordAppender::open(path, "")?;
        let lines = read_batch_lines(path);
        if lines.is_empty() && existing.torn_bytes == 0 {
            // Maybe a new journal: its name must survive a crash too.
            crate::atomic::sync_parent(path)?;
        }
        Ok((
            Self {
                appender,
                path: path.to_owned(),
            },
            lines,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line and fsyncs it: once this returns it survives a crash.
    pub fn append(&mut self, line: &BatchLine) -> io::Result<()> {
        // Written as it serializes: a batch of 50,000 requests is never a
        // tree of JSON values.
        self.appender.append(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn submitted(batch: &str) -> BatchLine {
        BatchLine::Submitted {
            batch: batch.into(),
            provider: "openai".into(),
            endpoint: "http://x/v1".into(),
            at: "2026-12-03T00:00:00.000Z".into(),
            requests: vec![BatchRequest {
                custom_id: "a-1".into(),
                id: json!("a-1"),
            }],
        }
    }

    #[test]
    fn the_journal_sits_beside_the_agent_file() {
        assert_eq!(
            batch_path(Path::new("RUN/s/o/agent_01.jsonl")),
            Path::new("RUN/s/o/agent_01.batch.jsonl")
        );
    }

    #[test]
    fn lines_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent_01.batch.jsonl");
        let (mut journal, lines) = BatchJournal::open(&path).expect("open");
        assert!(lines.is_empty());
        journal.append(&submitted("b1")).expect("append");
        let state = BatchLine::State {
            batch: "b1".into(),
            state: "in_progress".into(),
            counts: BatchCounts {
                total: 1,
                succeeded: 0,
                failed: 0,
            },
        };
        journal.append(&state).expect("append");
        drop(journal);
        let mut file = OpenOptions::new().append(true).open(&path).expect("reopen");
        file.write_all(b"{\"line\": \"settled\", \"bat")
            .expect("torn write");
        let (mut journal, lines) = BatchJournal::open(&path).expect("open");
        assert_eq!(lines, vec![submitted("b1"), state]);
        journal
            .append(&BatchLine::Settled { batch: "b1".into() })
            .expect("append");
        let summary = summarize(&read_batch_lines(&path));
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].state, "in_progress");
        assert!(summary[0].settled);
        assert_eq!(summary[0].requests.len(), 1);
    }
}
