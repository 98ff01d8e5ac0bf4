//! Sending items as a new batch: each item's request exactly as online
//! mode builds it, under its custom_id; the batch id journaled (fsynced)
//! the moment the provider returns it, before anything else.

use std::collections::HashMap;

use serde_json::Value;
use shared::batch::{BatchCounts, BatchLine, BatchRequest};
use shared::ids::IdKey;
use shared::money::Spend;

use super::super::endpoint::Provider;
use super::super::{LlmError, Retry};
use super::budget::Permit;
use super::ledger::OpenBatch;
use super::upload::BatchBody;
use super::{append, custom_id, provider_name, unique, Flow, Stop, Taken};
use crate::core::pool::Pending;
use crate::core::writer::Append;
use crate::AgentError;

impl<A: Append> Flow<'_, '_, '_, A> {
    /// Sends the items of `next` (those with attempts left) as one batch,
    /// or as few as the provider's limits allow.
    pub(super) fn submit_next(&mut self) -> Result<(), Stop> {
        // Each request is written into the batch's body as it is rendered
        // (`upload`): a full body goes out, and the next one starts.
        let mut part = self.new_part()?;
        let mut taken = Taken::default();
        for id in std::mem::take(&mut self.next) {
            let Some(item) = self.items.get(&id) else {
                continue;
            };
            if item.submissions >= self.attempts() {
                let reason = item
                    .last_error
                    .clone()
                    .unwrap_or_else(|| format!("no result after {} batches", item.submissions));
                self.fail(&id, reason)?;
                continue;
            }
            let body = match self.body(item.pending) {
                Ok(body) => body,
                Err(error) => {
                    self.fail(&id, error.to_string())?;
                    continue;
                }
            };
            // An item's first submission is answered from the answer cache
            // when its request is there: not sent, not paid.
            if item.submissions == 0 && self.answered_from_cache(&id, &body)? {
                continue;
            }
            let custom_id = unique(custom_id(&id), &taken);
            let request = BatchRequest {
                custom_id,
                id: id.to_value(),
            };
            if !part.push(&request, &body)? {
                let full = std::mem::replace(&mut part, self.new_part()?);
                self.submit(full)?;
                taken.clear();
                // An empty body takes any one request.
                part.push(&request, &body)?;
            }
            taken.insert(&request.custom_id);
            part.requests.push(request);
        }
        if !part.body.is_empty() {
            self.submit(part)?;
        }
        Ok(())
    }

    /// Submits one batch and journals it.
    fn submit(&mut self, part: Part) -> Result<(), Stop> {
        let journaled = part.requests;
        let pendings: Vec<Pending<'_>> = journaled
            .iter()
            .filter_map(|r| IdKey::from_value(&r.id))
            .filter_map(|id| self.items.get(&id).map(|item| item.pending))
            .collect();
        let reserved = match self.reserve(&pendings)? {
            Permit::Refused => return Ok(()),
            Permit::NotNeeded => None,
            Permit::Reserved(reserved) => Some(reserved),
        };
        let body = part.body.finish().map_err(|e| self.upload_error(e))?;
        let mut tries = 0;
        let sent = loop {
            tries += 1;
            match self.client.submit(&body) {
                Ok(batch) => break Ok(batch),
                Err(error) => match error.retry() {
                    Retry::KeyRejected => {
                        self.settle(reserved.as_ref(), Spend::default());
                        break Err((true, error));
                    }
                    Retry::Never => {
                        self.settle(reserved.as_ref(), Spend::default());
                        break Err((false, error));
                    }
                    _ if tries >= self.attempts() => {
                        self.settle(reserved.as_ref(), Spend::default());
                        break Err((false, error));
                    }
                    _ => {
                        eprintln!(
                            "{}: submitting a batch failed (try {tries}/{}): {error}; trying again in {:?}",
                            self.run.agent,
                            self.attempts(),
                            self.run.poll
                        );
                        std::thread::sleep(self.run.poll);
                    }
                },
            }
        };
        // Sent or given up: the body's file is done with.
        let _ = std::fs::remove_file(&body.path);
        let batch = match sent {
            Ok(batch) => batch,
            Err((true, error)) => return Err(Stop::NoKey(error)),
            Err((false, error)) => return self.fail_all(&journaled, &error.to_string()),
        };
        // Before anything else: a crash from here on must find this batch.
        let line = BatchLine::Submitted {
            batch: batch.clone(),
            provider: provider_name(self.endpoint.provider).to_owned(),
            endpoint: self.endpoint.base_url.clone(),
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            requests: journaled,
        };
        append(&mut self.journal, &line)?;
        let BatchLine::Submitted { requests, .. } = line else {
            return Ok(());
        };
        eprintln!(
            "{}: submitted batch {batch} ({} requests) to {}",
            self.run.agent,
            requests.len(),
            self.endpoint.base_url
        );
        let mut open = HashMap::new();
        for request in requests {
            if let Some(id) = IdKey::from_value(&request.id) {
                if let Some(item) = self.items.get_mut(&id) {
                    item.submissions += 1;
                }
                open.insert(request.custom_id, id);
            }
        }
        self.open.push(OpenBatch {
            id: batch,
            counts: BatchCounts {
                total: open.len() as u64,
                ..BatchCounts::default()
            },
            requests: open,
            state: "submitted".to_owned(),
            refused: 0,
            reserved,
        });
        Ok(())
    }

    fn fail_all(&mut self, requests: &[BatchRequest], reason: &str) -> Result<(), Stop> {
        for request in requests {
            if let Some(id) = IdKey::from_value(&request.id) {
                self.fail(&id, format!("cannot submit a batch: {reason}"))?;
            }
        }
        Ok(())
    }

    /// A new batch, its body written beside the agent's records.
    fn new_part(&self) -> Result<Part, Stop> {
        let body = BatchBody::new(self.endpoint.provider, &upload_path(self.run.output))
            .map_err(|e| self.upload_error(e))?;
        Ok(Part {
            requests: Vec::new(),
            body,
        })
    }

    fn upload_error(&self, error: std::io::Error) -> Stop {
        Stop::Write(AgentError::BatchUpload {
            path: upload_path(self.run.output),
            source: error,
        })
    }

    /// The request body online mode would send for this item.
    pub(super) fn body(&self, pending: Pending<'_>) -> Result<Value, LlmError> {
        let prompt = self.with_call(pending, |call| self.backend.render(call))??;
        let request = self.backend.request(self.endpoint, &prompt);
        Ok(match self.endpoint.provider {
            Provider::OpenAi => super::super::openai::body(&request),
            Provider::Anthropic => super::super::anthropic::body(&request),
        })
    }
}

/// Where a batch's body is written before it is sent (removed once sent).
fn upload_path(output: &std::path::Path) -> std::path::PathBuf {
    output.with_extension("upload.tmp")
}

/// The requests of one batch and its body, written as they come.
struct Part {
    requests: Vec<BatchRequest>,
    body: BatchBody,
}

impl Part {
    /// Writes the request into the body; false when the batch is full.
    fn push(&mut self, request: &BatchRequest, body: &Value) -> Result<bool, Stop> {
        self.body.push(&request.custom_id, body).map_err(|source| {
            Stop::Write(AgentError::BatchUpload {
                path: self.body.path().to_owned(),
                source,
            })
        })
    }
}
