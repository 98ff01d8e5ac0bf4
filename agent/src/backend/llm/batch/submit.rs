//! Sending items as a new batch: each item's request exactly as online
//! mode builds it, under its custom_id; the batch id journaled (fsynced)
//! the moment the provider returns it, before anything else.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use shared::batch::{BatchCounts, BatchLine, BatchRequest};
use shared::ids::IdKey;

use super::super::endpoint::Provider;
use super::super::{LlmError, Retry};
use super::ledger::OpenBatch;
use super::{append, custom_id, provider_name, unique, Flow, Stop};
use crate::backend::Call;
use crate::core::pool::Pending;
use crate::core::writer::Append;

impl<A: Append> Flow<'_, '_, '_, A> {
    /// Sends the items of `next` as one batch (those with attempts left).
    pub(super) fn submit_next(&mut self) -> Result<(), Stop> {
        let mut requests: Vec<(String, Value)> = Vec::new();
        let mut journaled: Vec<BatchRequest> = Vec::new();
        let mut taken: HashSet<String> = HashSet::new();
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
            let custom_id = unique(custom_id(&id), &taken);
            taken.insert(custom_id.clone());
            journaled.push(BatchRequest {
                custom_id: custom_id.clone(),
                id: id.to_value(),
            });
            requests.push((custom_id, body));
        }
        if requests.is_empty() {
            return Ok(());
        }
        let mut tries = 0;
        let batch = loop {
            tries += 1;
            match self.client.submit(&requests) {
                Ok(batch) => break batch,
                Err(error) => match error.retry() {
                    Retry::KeyRejected => return Err(Stop::NoKey(error)),
                    Retry::Never => {
                        return self.fail_all(&journaled, &error.to_string());
                    }
                    _ if tries >= self.attempts() => {
                        return self.fail_all(&journaled, &error.to_string());
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

    /// The request body online mode would send for this item.
    fn body(&self, pending: Pending<'_>) -> Result<Value, LlmError> {
        let call = Call {
            item: pending.item,
            id: pending.id,
            id_field: self.run.id_field,
            launch_attempt: 1,
            item_attempt: 1,
        };
        let prompt = self.backend.render(call)?;
        let request = self.backend.request(self.endpoint, &prompt);
        Ok(match self.endpoint.provider {
            Provider::OpenAi => super::super::openai::body(&request),
            Provider::Anthropic => super::super::anthropic::body(&request),
        })
    }
}
