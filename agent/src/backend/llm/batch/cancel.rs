//! `nightshift cancel RUN`, agent side (`nightshift-agent --cancel-batches`):
//! asks the provider to cancel every batch of this agent's journal that is
//! not settled, and journals the state the provider answers with. The
//! agent's own endpoint and key do it, so the supervisor needs no HTTP
//! client and the key stays where it always is: in the environment.

use std::path::Path;

use shared::batch::{batch_path, summarize, BatchJournal, BatchLine};

use super::append;
use super::client::Client;
use crate::backend::LlmBackend;
use crate::AgentError;

/// What cancelling this agent's batches came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cancelled {
    pub cancelled: usize,
    /// "batch: why" for each batch the provider did not cancel.
    pub failed: Vec<String>,
}

pub fn cancel(backend: &LlmBackend, output: &Path, agent: &str) -> Result<Cancelled, AgentError> {
    let path = batch_path(output);
    let (mut journal, lines) =
        BatchJournal::open(&path).map_err(|source| AgentError::BatchJournal {
            path: path.clone(),
            source,
        })?;
    let endpoint = backend.endpoints.first().ok_or_else(|| {
        crate::setup::SetupError::Llm("batch mode needs agent.llm's endpoint".into())
    })?;
    let client = Client {
        runtime: &backend.runtime,
        endpoint,
    };
    let mut done = Cancelled::default();
    for batch in summarize(&lines).into_iter().filter(|b| !b.settled) {
        match client.cancel(&batch.batch) {
            Ok(polled) => {
                eprintln!(
                    "{agent}: batch {} cancelled at {} (now {})",
                    batch.batch, endpoint.base_url, polled.state
                );
                let line = BatchLine::State {
                    batch: batch.batch,
                    state: polled.state,
                    counts: polled.counts,
                };
                append(&mut journal, &line)?;
                done.cancelled += 1;
            }
            Err(error) => {
                eprintln!("{agent}: cannot cancel batch {}: {error}", batch.batch);
                done.failed.push(format!("{}: {error}", batch.batch));
            }
        }
    }
    Ok(done)
}
