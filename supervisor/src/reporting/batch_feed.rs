//! Provider batches on the console as their agents journal them (batch
//! mode): one line when a batch is submitted, when its provider state
//! changes (validating, in_progress, finalizing…) and when its results are
//! all saved — never one per poll, so a night of polling stays quiet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use shared::batch::{read_batch_lines, BatchLine};

use super::failure_feed::agent_of;
use crate::console::Console;

pub struct BatchFeed {
    run: PathBuf,
    /// Per journal: lines already seen, and each batch's last state shown.
    seen: HashMap<PathBuf, (usize, HashMap<String, String>)>,
}

impl BatchFeed {
    pub fn new(run: &Path) -> Self {
        Self {
            run: run.to_path_buf(),
            seen: HashMap::new(),
        }
    }

    /// Whether `path` is an agent's batch journal.
    pub fn is_journal(path: &Path) -> bool {
        path.to_string_lossy().ends_with(".batch.jsonl")
    }

    /// Shows what is new in the journal at `path`.
    pub fn update(&mut self, console: &Console, path: &Path) {
        let agent = agent_of(&self.run, path, ".batch.jsonl");
        let lines = read_batch_lines(path);
        let (seen, states) = self.seen.entry(path.to_path_buf()).or_default();
        for line in lines.get(*seen..).unwrap_or_default() {
            let text = match line {
                BatchLine::Submitted {
                    batch,
                    provider,
                    requests,
                    ..
                } => format!(
                    "{agent}: {provider} batch {batch} submitted ({} requests)",
                    requests.len()
                ),
                BatchLine::State {
                    batch,
                    state,
                    counts,
                } => {
                    if states.get(batch) == Some(state) {
                        continue;
                    }
                    states.insert(batch.clone(), state.clone());
                    format!(
                        "{agent}: batch {batch} {state} ({} of {} done, {} failed)",
                        counts.succeeded, counts.total, counts.failed
                    )
                }
                BatchLine::Settled { batch } => {
                    format!("{agent}: batch {batch}: every result saved")
                }
            };
            console.line(&text);
        }
        *seen = lines.len();
    }
}
