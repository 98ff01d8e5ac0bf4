//! The run's budget in batch mode (`limits.max_cost` / `max_tokens`): one
//! permit per batch, before it is submitted, for the whole batch's estimate
//! at the batch price — a batch the budget cannot cover is not sent, its
//! items stay for a resume with a larger budget (exit code 4) — and one
//! report when its results are saved, with what they really used. Batches
//! do not count against the per-minute rate limits, but a permit for many
//! tokens at once goes through the broker's buckets as a debt, so online
//! agents of the same run slow down accordingly.

use shared::money::Spend;

use super::{Flow, Stop};
use crate::core::pool::Pending;
use crate::core::writer::{Append, Finished};
use crate::item::Ending;
use crate::permit::{Grant, Need};

/// What the budget says to a batch.
pub enum Permit {
    /// The run takes no permits.
    NotNeeded,
    Reserved(Reserved),
    /// The budget cannot cover it: its items were set aside.
    Refused,
}

/// A batch's permit: what it reserved, under which key.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserved {
    pub need: Need,
    pub key: Option<String>,
}

impl<A: Append> Flow<'_, '_, '_, A> {
    /// The permit of a batch of `items`; when the budget is spent the
    /// items (and every one not sent yet) are set aside for a resume.
    pub(super) fn reserve(&mut self, items: &[Pending<'_>]) -> Result<Permit, Stop> {
        if let Some(reason) = self.spent.clone() {
            self.out_of_budget(items, &reason)?;
            return Ok(Permit::Refused);
        }
        if self.permits.is_none() {
            return Ok(Permit::NotNeeded);
        }
        let price = self.endpoint.price.map(|price| price.batched());
        let mut need = Need::default();
        for pending in items {
            let parts = self.with_call(*pending, |call| self.backend.estimate_parts(call, 0));
            // An item that cannot be read fails when its body is made.
            let (prompt, output) = parts.unwrap_or((0, 0));
            need.tokens += prompt + output;
            if let Some(price) = &price {
                *need.cost.get_or_insert(0.0) += price.estimate(prompt, output);
            }
        }
        let keys: Vec<String> = self
            .endpoint
            .key()
            .map(|(_, k)| k.id.clone())
            .into_iter()
            .collect();
        let Some(permits) = self.permits.as_mut() else {
            return Ok(Permit::NotNeeded);
        };
        match permits.permit_within(&keys, &need) {
            Grant::Spent(reason) => {
                self.out_of_budget(items, &reason)?;
                Ok(Permit::Refused)
            }
            Grant::Granted { key, .. } => Ok(Permit::Reserved(Reserved {
                need,
                key: key.or_else(|| keys.first().cloned()),
            })),
            Grant::Off => Ok(Permit::NotNeeded),
        }
    }

    /// Tells the broker what a batch used (nothing, for one never sent).
    pub(super) fn settle(&mut self, reserved: Option<&Reserved>, spent: Spend) {
        if let (Some(reserved), Some(permits)) = (reserved, self.permits.as_mut()) {
            let cost = spent.cost.or(reserved.need.cost.map(|_| 0.0));
            permits.report_spend(
                reserved.key.as_deref(),
                &reserved.need,
                spent.usage.total(),
                cost,
            );
        }
    }

    /// These items and every one not yet sent stay for a resume with a
    /// larger budget; the batches already sent are still collected.
    fn out_of_budget(&mut self, items: &[Pending<'_>], reason: &str) -> Result<(), Stop> {
        if self.spent.is_none() {
            eprintln!(
                "{}: budget spent: {reason}; no more batches are sent",
                self.run.agent
            );
            self.spent = Some(reason.to_owned());
        }
        let mut ids: Vec<_> = items.iter().map(|p| p.id.clone()).collect();
        ids.append(&mut self.next);
        for id in ids {
            if let Some(item) = self.items.remove(&id) {
                self.writer.save(Finished {
                    index: item.pending.index,
                    id,
                    ending: Ending::OutOfBudget {
                        reason: reason.to_owned(),
                    },
                })?;
            }
        }
        Ok(())
    }
}
