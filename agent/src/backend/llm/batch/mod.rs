//! `agent.llm.mode = "batch"`: the agent's remaining items go to the
//! provider's batch API (half price, answers within 24 hours) instead of one
//! request each. The request of an item is exactly the one online mode sends;
//! its result becomes a record through the same reply code, priced at
//! `[agent.price] batch`.
//!
//! Crash safety comes first: the id of a new batch is appended and fsynced to
//! `agent_NN.batch.jsonl` the moment the provider returns it, and a launch
//! reads that journal before anything else, so batches found there are polled
//! again, not submitted again. Results are saved as they are read; a batch is
//! marked settled only once all of them are. Requests that come back errored
//! or expired (or without a result) go again, alone, in a new batch, within
//! item_retries. One sleep of `batch_poll` paces every batch of the agent.

mod anthropic;
mod auto;
mod budget;
mod cancel;
mod client;
mod ledger;
mod openai;
mod results;
mod submit;
mod upload;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shared::batch::{batch_path, BatchCounts, BatchJournal, BatchLine};
use shared::ids::IdKey;
use shared::money::Spend;

use super::endpoint::{Endpoint, Provider};
use super::{LlmBackend, LlmError};
use crate::backend::Call;
use crate::core::pool::Pending;
use crate::core::writer::{Append, Finished, Writer};
use crate::hash::StableHasher;
use crate::item::Ending;
use crate::permit::Permits;
use crate::validate::Validator;
use crate::AgentError;
use client::Client;
use ledger::OpenBatch;

pub use cancel::{cancel, Cancelled};

/// A batch's state and counts as one poll saw them; once it `ended`, the
/// files (or URL) its results are in.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    pub state: String,
    pub counts: BatchCounts,
    pub ended: bool,
    pub results: Vec<String>,
}

/// How one request of a batch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider's answer, shaped as online mode gets it.
    Succeeded(Value),
    Failed(String),
}

/// A batch object's state word under `key` (both providers name it apart).
fn state_of(batch: &Value, key: &str) -> Result<String, String> {
    match batch.get(key).and_then(Value::as_str) {
        Some(state) => Ok(state.to_owned()),
        None => Err(format!("the batch has no {key}")),
    }
}

/// `request_counts[key]` of a batch object, 0 when absent.
fn count_of(batch: &Value, key: &str) -> u64 {
    batch
        .pointer(&format!("/request_counts/{key}"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// Polls in a row that the provider may refuse (a 4xx: it does not know the
/// batch) before its items are taken as lost and sent again.
const REFUSED_POLLS: u32 = 3;

/// What the batch flow works with besides the backend.
pub struct BatchRun<'a> {
    pub agent: &'a str,
    pub id_field: &'a str,
    pub output: &'a Path,
    pub validator: Option<&'a Validator>,
    pub item_retries: u32,
    pub poll: Duration,
    /// mode = "auto": when the items still outstanding go online instead.
    pub online_at: Option<std::time::SystemTime>,
}

/// An item not yet saved or failed.
struct Item<'p> {
    pending: Pending<'p>,
    submissions: u32,
    last_error: Option<String>,
    /// What this launch's answers at the item cost (a refused reply was paid).
    spend: Option<Spend>,
}

struct Flow<'a, 'p, 'w, A: Append> {
    backend: &'a LlmBackend,
    endpoint: &'a Endpoint,
    client: Client<'a>,
    run: &'a BatchRun<'a>,
    journal: BatchJournal,
    writer: &'a mut Writer<'w, A>,
    items: HashMap<IdKey, Item<'p>>,
    open: Vec<OpenBatch>,
    /// Items to send in the next batch, in task order.
    next: Vec<IdKey>,
    /// The broker's permits, when the run takes them (a budget, limits).
    permits: Option<Permits>,
    /// Why no more batches are sent: the run's budget is spent.
    spent: Option<String>,
    /// What the results read at this poll cost, for the batch's permit.
    batch_spend: Spend,
}

/// Settles every pending item through provider batches: saved, failed, or
/// (no usable key) left for a resume as `Ending::Stopped`. Returns the items
/// that must go online instead (mode = "auto", at its deadline), in task order.
pub fn run<A: Append>(
    backend: &LlmBackend,
    run: &BatchRun<'_>,
    pending: &[Pending<'_>],
    writer: &mut Writer<'_, A>,
    permits: Option<Permits>,
) -> Result<Vec<IdKey>, AgentError> {
    // The main endpoint: batch mode has no fallbacks (refused at load).
    let endpoint = backend.endpoints.first().ok_or_else(|| {
        crate::setup::SetupError::Llm("batch mode needs agent.llm's endpoint".into())
    })?;
    let path = batch_path(run.output);
    let (mut journal, lines) =
        BatchJournal::open(&path).map_err(|source| AgentError::BatchJournal {
            path: path.clone(),
            source,
        })?;
    let outstanding: HashSet<&IdKey> = pending.iter().map(|p| p.id).collect();
    let ledger = ledger::restore(&lines, &outstanding);
    drop(outstanding);
    for batch in &ledger.done {
        append(
            &mut journal,
            &BatchLine::Settled {
                batch: batch.clone(),
            },
        )?;
    }
    let in_flight: HashSet<&IdKey> = ledger
        .open
        .iter()
        .flat_map(|b| b.requests.values())
        .collect();
    if !ledger.open.is_empty() {
        eprintln!(
            "{}: going on with {} batch(es) already submitted ({} items), found in {}",
            run.agent,
            ledger.open.len(),
            in_flight.len(),
            path.display()
        );
    }
    let next = pending
        .iter()
        .filter(|p| !in_flight.contains(p.id))
        .map(|p| p.id.clone())
        .collect();
    let items = pending
        .iter()
        .map(|p| {
            let submissions = ledger.submissions.get(p.id).copied().unwrap_or(0);
            let item = Item {
                pending: *p,
                submissions,
                last_error: None,
                spend: None,
            };
            (p.id.clone(), item)
        })
        .collect();
    let mut flow = Flow {
        backend,
        endpoint,
        client: Client {
            runtime: &backend.runtime,
            endpoint,
        },
        run,
        journal,
        writer,
        items,
        open: ledger.open,
        next,
        permits,
        spent: None,
        batch_spend: Spend::default(),
    };
    flow.go()
}

fn append(journal: &mut BatchJournal, line: &BatchLine) -> Result<(), AgentError> {
    journal
        .append(line)
        .map_err(|source| AgentError::BatchJournal {
            path: journal.path().to_owned(),
            source,
        })
}

impl<'a, A: Append> Flow<'a, '_, '_, A> {
    fn attempts(&self) -> u32 {
        self.run.item_retries.saturating_add(1)
    }

    /// `work` on an item as the backend's prompt and estimate code take it:
    /// one call, whatever the batch (a batch has no attempts of its own).
    /// The item is parsed from its text for the call only.
    fn with_call<R>(
        &self,
        pending: Pending<'_>,
        work: impl FnOnce(Call<'_>) -> R,
    ) -> Result<R, LlmError> {
        let item: Value = serde_json::from_str(pending.item.get())
            .map_err(|e| LlmError::BadBody(format!("item {}: {e}", pending.id)))?;
        Ok(work(Call {
            item: &item,
            id: pending.id,
            id_field: self.run.id_field,
            launch_attempt: 1,
            item_attempt: 1,
        }))
    }

    fn go(&mut self) -> Result<Vec<IdKey>, AgentError> {
        match self.rounds() {
            Ok(()) => self.writer.sync().map(|()| Vec::new()),
            Err(Stop::Online) => {
                self.writer.sync()?;
                let mut left: Vec<&Item<'_>> = self.items.values().collect();
                left.sort_by_key(|item| item.pending.index);
                Ok(left.iter().map(|item| item.pending.id.clone()).collect())
            }
            Err(Stop::NoKey(reason)) => self.stop(reason).map(|()| Vec::new()),
            Err(Stop::Write(error)) => Err(error),
        }
    }

    /// Submit, poll every open batch, sleep; until no batch is open (or,
    /// in auto mode, the items left go online).
    fn rounds(&mut self) -> Result<(), Stop> {
        loop {
            self.online_if_due()?;
            self.submit_next()?;
            if self.open.is_empty() {
                return Ok(());
            }
            let mut still_open = Vec::new();
            let mut batches = std::mem::take(&mut self.open).into_iter();
            while let Some(mut batch) = batches.next() {
                match self.poll(&mut batch) {
                    Ok(true) => {}
                    Ok(false) => still_open.push(batch),
                    Err(stop) => {
                        still_open.push(batch);
                        still_open.extend(batches);
                        self.open = still_open;
                        return Err(stop);
                    }
                }
            }
            self.open = still_open;
            if !self.open.is_empty() && self.next.is_empty() {
                std::thread::sleep(self.wait());
            }
        }
    }

    /// No usable key is left: every outstanding item stays for a resume.
    fn stop(&mut self, reason: LlmError) -> Result<(), AgentError> {
        let reason = reason.to_string();
        let mut left: Vec<&Item<'_>> = self.items.values().collect();
        left.sort_by_key(|item| item.pending.index);
        let endings: Vec<Finished> = left
            .iter()
            .map(|item| Finished {
                index: item.pending.index,
                id: item.pending.id.clone(),
                ending: Ending::Stopped {
                    reason: reason.clone(),
                },
            })
            .collect();
        for finished in endings {
            self.writer.save(finished)?;
        }
        self.writer.sync()
    }
}

/// Why the flow stops before every item is settled.
enum Stop {
    /// No usable API key is left: the items stay for a resume.
    NoKey(LlmError),
    /// A record or the journal could not be written.
    Write(AgentError),
    /// mode = "auto" at its deadline: the items left go online.
    Online,
}

impl From<AgentError> for Stop {
    fn from(error: AgentError) -> Self {
        Self::Write(error)
    }
}

fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => "openai",
        Provider::Anthropic => "anthropic",
    }
}

/// The custom_id of an item: its id where every provider takes it as one
/// (`^[a-zA-Z0-9_-]{1,64}$`, Anthropic's rule), else a stable hash of it
/// (the journal maps it back).
pub fn custom_id(id: &IdKey) -> String {
    if let Value::String(text) = id.to_value() {
        let fits = !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if fits {
            return text;
        }
    }
    format!(
        "h-{:016x}",
        StableHasher::new().part(id.as_str().as_bytes()).finish()
    )
}

/// The custom_ids a batch has given out, kept as hashes: a batch of 50,000
/// requests needs no second copy of their ids. Two ids with one hash only
/// cost the second a suffix.
#[derive(Default)]
pub struct Taken(HashSet<u64>);

impl Taken {
    fn hash(id: &str) -> u64 {
        StableHasher::new().part(id.as_bytes()).finish()
    }

    fn contains(&self, id: &str) -> bool {
        self.0.contains(&Self::hash(id))
    }

    pub fn insert(&mut self, id: &str) {
        self.0.insert(Self::hash(id));
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// `wanted`, or it with a suffix when another request of the batch has it.
fn unique(wanted: String, taken: &Taken) -> String {
    if !taken.contains(&wanted) {
        return wanted;
    }
    (2..)
        .map(|n| format!("{}-{n}", &wanted[..wanted.len().min(56)]))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(value: Value) -> IdKey {
        IdKey::from_value(&value).expect("an id")
    }

    #[test]
    fn custom_ids_are_the_id_where_allowed_else_a_stable_hash() {
        assert_eq!(custom_id(&key(json!("item-001"))), "item-001");
        let spaced = custom_id(&key(json!("a b")));
        assert!(spaced.starts_with("h-") && spaced.len() == 18, "{spaced}");
        assert_eq!(spaced, custom_id(&key(json!("a b"))), "stable");
        // "7" and 7 are different ids: they must not share a custom_id.
        assert_ne!(custom_id(&key(json!(7))), custom_id(&key(json!("7"))));
        assert!(custom_id(&key(json!("x".repeat(65)))).starts_with("h-"));
        let mut taken = Taken::default();
        taken.insert("a");
        taken.insert("a-2");
        assert_eq!(unique("a".into(), &taken), "a-3");
        assert_eq!(unique("b".into(), &taken), "b");
    }
}
