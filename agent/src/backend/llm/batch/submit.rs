//! Sending items as a new batch: each item's request exactly as online
//! mode builds it, under its custom_id; the batch id journaled (fsynced)
//! the moment the provider returns it, before anything else.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use shared::batch::{BatchCounts, BatchLine, BatchRequest};
use shared::ids::IdKey;
use shared::money::Spend;

use super::super::endpoint::Provider;
use super::super::{LlmError, Retry};
use super::budget::Permit;
use super::ledger::OpenBatch;
use super::{append, custom_id, provider_name, unique, Flow, Stop};
use crate::core::pool::Pending;
use crate::core::writer::Append;

impl<A: Append> Flow<'_, '_, '_, A> {
    /// Sends the items of `next` (those with attempts left) as one batch,
    /// or as few as the provider's limits allow.
    pub(super) fn submit_next(&mut self) -> Result<(), Stop> {
        let mut requests: Vec<(BatchRequest, Value)> = Vec::new();
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
            // An item's first submission is answered from the answer cache
            // when its request is there: not sent, not paid.
            if item.submissions == 0 && self.answered_from_cache(&id, &body)? {
                continue;
            }
            let custom_id = unique(custom_id(&id), &taken);
            taken.insert(custom_id.clone());
            let request = BatchRequest {
                custom_id,
                id: id.to_value(),
            };
            requests.push((request, body));
        }
        for part in split(self.endpoint.provider, requests) {
            self.submit(part)?;
        }
        Ok(())
    }

    /// Submits one batch and journals it.
    fn submit(&mut self, part: Vec<(BatchRequest, Value)>) -> Result<(), Stop> {
        let (journaled, bodies): (Vec<BatchRequest>, Vec<Value>) = part.into_iter().unzip();
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
        let requests: Vec<(String, Value)> = journaled
            .iter()
            .map(|r| r.custom_id.clone())
            .zip(bodies)
            .collect();
        let mut tries = 0;
        let batch = loop {
            tries += 1;
            match self.client.submit(&requests) {
                Ok(batch) => break batch,
                Err(error) => match error.retry() {
                    Retry::KeyRejected => {
                        self.settle(reserved.as_ref(), Spend::default());
                        return Err(Stop::NoKey(error));
                    }
                    Retry::Never => {
                        self.settle(reserved.as_ref(), Spend::default());
                        return self.fail_all(&journaled, &error.to_string());
                    }
                    _ if tries >= self.attempts() => {
                        self.settle(reserved.as_ref(), Spend::default());
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

    /// The request body online mode would send for this item.
    pub(super) fn body(&self, pending: Pending<'_>) -> Result<Value, LlmError> {
        let prompt = self.backend.render(self.call(pending))?;
        let request = self.backend.request(self.endpoint, &prompt);
        Ok(match self.endpoint.provider {
            Provider::OpenAi => super::super::openai::body(&request),
            Provider::Anthropic => super::super::anthropic::body(&request),
        })
    }
}

/// The most a batch may hold: (requests, bytes of its requests), a little
/// under each provider's published limit (OpenAI: 50,000 requests and a
/// 200 MB file; Anthropic: 100,000 requests and 256 MB).
fn limits(provider: Provider) -> (usize, usize) {
    match provider {
        Provider::OpenAi => (50_000, 190_000_000),
        Provider::Anthropic => (100_000, 240_000_000),
    }
}

/// `requests` in as few batches as the provider's limits allow, in order.
fn split(
    provider: Provider,
    requests: Vec<(BatchRequest, Value)>,
) -> Vec<Vec<(BatchRequest, Value)>> {
    let (most, most_bytes) = limits(provider);
    let mut parts: Vec<Vec<(BatchRequest, Value)>> = Vec::new();
    let mut bytes = 0;
    for request in requests {
        // The body and its line's framing (custom_id, method, url).
        let size = request.1.to_string().len() + request.0.custom_id.len() + 100;
        match parts.last_mut() {
            Some(part) if part.len() < most && bytes + size <= most_bytes => part.push(request),
            _ => {
                bytes = 0;
                parts.push(vec![request]);
            }
        }
        bytes += size;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batches_are_split_at_the_providers_limits() {
        let requests = |n: usize| -> Vec<(BatchRequest, Value)> {
            (0..n)
                .map(|i| {
                    let request = BatchRequest {
                        custom_id: format!("c{i}"),
                        id: json!(i),
                    };
                    (request, json!({"prompt": "x"}))
                })
                .collect()
        };
        assert_eq!(split(Provider::OpenAi, requests(3)).len(), 1);
        assert!(split(Provider::OpenAi, Vec::new()).is_empty());
        let parts = split(Provider::OpenAi, requests(120_001));
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(sizes, [50_000, 50_000, 20_001]);
        assert_eq!(parts[1][0].0.custom_id, "c50000", "in order");
        assert_eq!(split(Provider::Anthropic, requests(120_001)).len(), 2);
    }
}
