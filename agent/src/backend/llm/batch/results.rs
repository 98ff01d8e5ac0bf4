//! Polling one batch and reading its results: state changes go to the
//! journal (for `status`), each result becomes a record through the reply
//! code of online mode — or sends its item again, alone, in the next batch,
//! while it has attempts left — and a batch whose results are all saved is
//! marked settled.

use std::collections::HashSet;

use serde_json::Value;
use shared::batch::BatchLine;
use shared::ids::IdKey;
use shared::money::Spend;

use super::super::endpoint::Provider;
use super::super::reply::Shape;
use super::super::{LlmError, Retry};
use super::ledger::OpenBatch;
use super::{append, Flow, Outcome, Stop, REFUSED_POLLS};
use crate::core::writer::{Append, Finished};
use crate::item::Ending;

impl<A: Append> Flow<'_, '_, '_, A> {
    /// Polls `batch` once; true when it is settled (every result read).
    pub(super) fn poll(&mut self, batch: &mut OpenBatch) -> Result<bool, Stop> {
        let agent = self.run.agent;
        let polled = match self.client.poll(&batch.id) {
            Ok(polled) => polled,
            Err(error) => return self.poll_failed(batch, error),
        };
        batch.refused = 0;
        if polled.state != batch.state || polled.counts != batch.counts {
            eprintln!(
                "{agent}: batch {} is {} ({} of {} done, {} failed)",
                batch.id,
                polled.state,
                polled.counts.succeeded,
                polled.counts.total,
                polled.counts.failed
            );
            batch.state.clone_from(&polled.state);
            batch.counts = polled.counts;
            let line = BatchLine::State {
                batch: batch.id.clone(),
                state: polled.state.clone(),
                counts: polled.counts,
            };
            append(&mut self.journal, &line)?;
        }
        if !polled.ended {
            return Ok(false);
        }
        // Results are saved as they are read. A read that fails leaves the
        // batch open, to be read again at the next poll: what was saved then
        // is not saved again (its item is no longer outstanding).
        let mut seen: HashSet<IdKey> = HashSet::new();
        for at in &polled.results {
            let client = self.client;
            let read = client.each_result(at, |custom_id, outcome| {
                self.take_result(batch, &mut seen, &custom_id, outcome)
            });
            match read {
                Ok(Ok(())) => {}
                Ok(Err(stop)) => return Err(stop),
                Err(error) if error.retry() == Retry::KeyRejected => {
                    return Err(Stop::NoKey(error))
                }
                Err(error) => {
                    eprintln!(
                        "{agent}: cannot read the results of batch {}: {error}; trying again at the next poll",
                        batch.id
                    );
                    self.writer.sync()?;
                    return Ok(false);
                }
            }
        }
        let mut missing: Vec<IdKey> = batch
            .requests
            .values()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        missing.sort_by_key(|id| self.items.get(id).map(|item| item.pending.index));
        for id in missing {
            let reason = format!("no result in batch {} ({})", batch.id, polled.state);
            self.again(&id, reason)?;
        }
        // Saved for good before the batch is marked done with.
        self.writer.sync()?;
        append(
            &mut self.journal,
            &BatchLine::Settled {
                batch: batch.id.clone(),
            },
        )?;
        // What its results cost (a cut-short read's included), for its permit.
        let spend = std::mem::take(&mut self.batch_spend);
        self.settle(batch.reserved.as_ref(), spend);
        self.next
            .sort_by_key(|id| self.items.get(id).map(|item| item.pending.index));
        Ok(true)
    }

    /// One result of `batch`: a record, or its item into the next batch.
    fn take_result(
        &mut self,
        batch: &OpenBatch,
        seen: &mut HashSet<IdKey>,
        custom_id: &str,
        outcome: Outcome,
    ) -> Result<(), Stop> {
        let Some(id) = batch.requests.get(custom_id) else {
            return Ok(());
        };
        // A result read twice, or saved at an earlier, cut-short read.
        if !seen.insert(id.clone()) || !self.items.contains_key(id) {
            return Ok(());
        }
        let id = id.clone();
        match outcome {
            Outcome::Succeeded(answer) => match self.record(&id, &answer) {
                Ok(record) => {
                    self.keep_in_cache(&id, &answer);
                    self.save(&id, record)
                }
                Err(reason) => self.again(&id, reason),
            },
            Outcome::Failed(reason) => self.again(&id, reason),
        }
    }

    /// A poll that got no answer: tried again at the next poll, but a batch
    /// the provider keeps refusing is lost and its items go again.
    fn poll_failed(&mut self, batch: &mut OpenBatch, error: LlmError) -> Result<bool, Stop> {
        match error.retry() {
            Retry::KeyRejected => Err(Stop::NoKey(error)),
            Retry::Never => {
                batch.refused += 1;
                eprintln!(
                    "{}: polling batch {} was refused ({}/{REFUSED_POLLS}): {error}",
                    self.run.agent, batch.id, batch.refused
                );
                if batch.refused < REFUSED_POLLS {
                    return Ok(false);
                }
                let mut ids: Vec<IdKey> = batch.requests.values().cloned().collect();
                ids.sort_by_key(|id| self.items.get(id).map(|item| item.pending.index));
                for id in ids {
                    self.again(&id, format!("batch {} is lost: {error}", batch.id))?;
                }
                self.settle(batch.reserved.as_ref(), Spend::default());
                append(
                    &mut self.journal,
                    &BatchLine::Settled {
                        batch: batch.id.clone(),
                    },
                )?;
                Ok(true)
            }
            _ => {
                eprintln!(
                    "{}: polling batch {} failed: {error}; trying again at the next poll",
                    self.run.agent, batch.id
                );
                Ok(false)
            }
        }
    }

    /// The record of a succeeded request, as online mode makes it: the
    /// reply read and checked, the id in place, the validator passed, and
    /// usage and cost (at the batch price) stamped — those of every paid
    /// answer at the item, a refused and resubmitted one's included.
    fn record(
        &mut self,
        id: &IdKey,
        answer: &Value,
    ) -> Result<serde_json::Map<String, Value>, String> {
        let reply = match self.endpoint.provider {
            Provider::OpenAi => super::super::openai::parse(answer),
            Provider::Anthropic => super::super::anthropic::parse(answer),
        }
        .map_err(|e| e.to_string())?;
        let price = self.endpoint.price.map(|price| price.batched());
        let paid = Spend::of(reply.usage, price.as_ref());
        self.batch_spend += paid;
        let spend = match self.items.get_mut(id) {
            Some(item) => {
                let spend = item.spend.get_or_insert_with(Spend::default);
                *spend += paid;
                *spend
            }
            None => paid,
        };
        let shape = Shape {
            json: self.backend.json,
            schema: self.backend.validator.as_ref(),
        };
        let mut record = reply
            .into_record(&shape, self.run.id_field, &self.endpoint.base_url)
            .map_err(|e| e.to_string())?;
        record.insert(self.run.id_field.to_owned(), id.to_value());
        if let Some(validator) = self.run.validator {
            validator.check(&record).map_err(|e| e.to_string())?;
        }
        spend.stamp(&mut record);
        Ok(record)
    }

    /// A batch answer that made a record goes into the answer cache, under
    /// the key of its request (the same as online mode's).
    fn keep_in_cache(&self, id: &IdKey, answer: &Value) {
        if self.backend.cache.is_none() {
            return;
        }
        let Some(item) = self.items.get(id) else {
            return;
        };
        if let Ok(body) = self.body(item.pending) {
            let key = super::super::cached::key(self.endpoint, &body);
            self.backend.store(&key, &self.endpoint.model, answer);
        }
    }

    /// The record of the cached answer to `body`, saved, when the cache has
    /// one that passes the checks; false (send it) otherwise.
    pub(super) fn answered_from_cache(&mut self, id: &IdKey, body: &Value) -> Result<bool, Stop> {
        let Some(answer) = self.backend.cached_answer(self.endpoint, body) else {
            return Ok(false);
        };
        let price = self.endpoint.price.map(|price| price.batched());
        let checked = self
            .backend
            .cached_record(self.endpoint, &answer, self.run.id_field, price.as_ref())
            .map_err(|e| e.to_string())
            .and_then(|mut record| {
                record.insert(self.run.id_field.to_owned(), id.to_value());
                match self.run.validator {
                    Some(validator) => validator.check(&record).map_err(|e| e.to_string()),
                    None => Ok(()),
                }
                .map(|()| record)
            });
        match checked {
            Ok(record) => {
                self.save(id, record)?;
                Ok(true)
            }
            Err(reason) => {
                eprintln!(
                    "{}: item {id}: the cached answer is refused ({reason}); asking the provider",
                    self.run.agent
                );
                Ok(false)
            }
        }
    }

    fn save(&mut self, id: &IdKey, record: serde_json::Map<String, Value>) -> Result<(), Stop> {
        let Some(item) = self.items.remove(id) else {
            return Ok(());
        };
        self.writer.save(Finished {
            index: item.pending.index,
            id: id.clone(),
            ending: Ending::Saved(record),
        })?;
        Ok(())
    }

    /// The request of `id` gave no record: into the next batch while it has
    /// attempts left, else a failure.
    fn again(&mut self, id: &IdKey, reason: String) -> Result<(), Stop> {
        let attempts = self.attempts();
        let Some(item) = self.items.get_mut(id) else {
            return Ok(());
        };
        eprintln!(
            "{}: item {id} attempt {}/{attempts} failed: {reason}",
            self.run.agent, item.submissions
        );
        if item.submissions < attempts {
            item.last_error = Some(reason);
            self.next.push(id.clone());
            return Ok(());
        }
        self.fail(id, reason)
    }

    /// `id` failed for good.
    pub(super) fn fail(&mut self, id: &IdKey, reason: String) -> Result<(), Stop> {
        let Some(item) = self.items.remove(id) else {
            return Ok(());
        };
        self.writer.save(Finished {
            index: item.pending.index,
            id: id.clone(),
            ending: Ending::Failed {
                reason,
                attempts: item.submissions.max(1),
                spend: item.spend,
            },
        })?;
        Ok(())
    }
}
