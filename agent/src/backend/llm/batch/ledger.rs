//! What an agent's batch journal says at launch: which of its items were
//! submitted how often, and the batches still to poll — the ones submitted
//! but not settled — with the requests of theirs whose items are still to
//! save. A relaunched agent goes on from here instead of submitting again.

use std::collections::{HashMap, HashSet};

use shared::batch::{summarize, BatchCounts, BatchLine};
use shared::ids::IdKey;

/// A batch at the provider whose results are not all saved yet.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenBatch {
    pub id: String,
    /// custom_id → the item, for the items still outstanding.
    pub requests: HashMap<String, IdKey>,
    pub state: String,
    pub counts: BatchCounts,
    /// Polls in a row the provider refused (a batch it does not know).
    pub refused: u32,
    /// Its permit, when this launch sent it and the run takes permits.
    pub reserved: Option<super::budget::Reserved>,
}

/// The journal, folded: the open batches and how many batches each item was
/// sent in.
#[derive(Debug, Default)]
pub struct Ledger {
    pub open: Vec<OpenBatch>,
    /// Batches with nothing outstanding left that are not marked settled.
    pub done: Vec<String>,
    pub submissions: HashMap<IdKey, u32>,
}

/// Reads the journal's lines against the items still `outstanding`.
pub fn restore(lines: &[BatchLine], outstanding: &HashSet<&IdKey>) -> Ledger {
    let mut ledger = Ledger::default();
    for batch in summarize(lines) {
        let mut requests = HashMap::new();
        for request in &batch.requests {
            let Some(id) = IdKey::from_value(&request.id) else {
                continue;
            };
            *ledger.submissions.entry(id.clone()).or_insert(0) += 1;
            if outstanding.contains(&id) {
                requests.insert(request.custom_id.clone(), id);
            }
        }
        if batch.settled {
            continue;
        }
        if requests.is_empty() {
            ledger.done.push(batch.batch);
            continue;
        }
        ledger.open.push(OpenBatch {
            id: batch.batch,
            requests,
            state: batch.state,
            counts: batch.counts,
            refused: 0,
            reserved: None,
        });
    }
    ledger
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::batch::BatchRequest;

    fn submitted(batch: &str, ids: &[&str]) -> BatchLine {
        BatchLine::Submitted {
            batch: batch.into(),
            provider: "openai".into(),
            endpoint: "http://x/v1".into(),
            at: "t".into(),
            requests: ids
                .iter()
                .map(|id| BatchRequest {
                    custom_id: format!("c-{id}"),
                    id: json!(id),
                })
                .collect(),
        }
    }

    fn key(id: &str) -> IdKey {
        IdKey::from_value(&json!(id)).expect("an id")
    }

    #[test]
    fn unsettled_batches_are_polled_for_their_outstanding_items() {
        let lines = vec![
            submitted("b1", &["a", "b"]),
            BatchLine::Settled { batch: "b1".into() },
            submitted("b2", &["b", "c"]),
            submitted("b3", &["d"]),
        ];
        let (b, c) = (key("b"), key("c"));
        let outstanding: HashSet<&IdKey> = [&b, &c].into_iter().collect();
        let ledger = restore(&lines, &outstanding);
        assert_eq!(ledger.open.len(), 1);
        assert_eq!(ledger.open[0].id, "b2");
        assert_eq!(ledger.open[0].requests.len(), 2);
        assert_eq!(ledger.open[0].requests["c-c"], key("c"));
        assert_eq!(ledger.done, ["b3"]);
        assert_eq!(ledger.submissions[&key("b")], 2);
        assert_eq!(ledger.submissions[&key("a")], 1);
    }
}
