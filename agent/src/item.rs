//! One item, from its first backend call to a record ready to save or a
//! failure: a permit before every call, rate-limit answers retried without
//! counting, agent.item_retries + 1 counted attempts per command, a sticky
//! switch to the next fallback command (shared by every worker), and
//! validation of every result.
//!
//! An item is a future. For a backend whose calls hold their thread (exec)
//! it runs on a worker thread of its own, which also waits out its pauses
//! and talks to the broker itself; otherwise it is one task among the
//! agent's others on the event loop, which must never block: its pauses are
//! timers, and its broker exchanges (a permit may take seconds) go to a
//! blocking thread, only when there is a broker to talk to.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Map, Value};
use shared::ids::IdKey;

use crate::backend::llm::{pause_before_retry, Retry};
use crate::backend::{AttemptError, Backend, Call, Meter};
use crate::hash::StableHasher;
use crate::permit::{used_tokens, Grant, Need, Permits};
use crate::validate::Validator;
use shared::money::Spend;

/// Rate-limit answers retried for free per item; past them, a rate-limit
/// answer is an ordinary failed attempt.
pub const MAX_RATE_LIMITED: u32 = 20;

/// The longest an agent without a broker sleeps after a rate-limit answer,
/// whatever retry_after says (the broker has the same cap).
const MAX_LOCAL_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How one item ended.
#[derive(Debug)]
pub enum Ending {
    /// A record that passed every check, id and produced_by in place.
    Saved(Map<String, Value>),
    /// Every attempt with every command failed; `reason` is the last one's,
    /// `spend` what the attempts' answers used and cost (LLM backends).
    Failed {
        reason: String,
        attempts: u32,
        spend: Option<Spend>,
    },
    /// No usable API key is left: the item did not fail, the agent cannot
    /// go on (exit code 5) and leaves it for a resume.
    Stopped { reason: String },
    /// The run's budget cannot cover another request (the broker said so):
    /// the item did not fail, the agent stops (exit code 4) and leaves it
    /// for a resume with a larger budget.
    OutOfBudget { reason: String },
}

/// What every worker shares while it runs items: the backend, the checks,
/// and which command is in use.
pub struct ItemContext<'a> {
    backend: &'a dyn Backend,
    validator: Option<&'a Validator>,
    agent: &'a str,
    id_field: &'a str,
    launch_attempt: u32,
    /// Counted attempts per command: agent.item_retries + 1.
    attempts: u32,
    /// The command new items start with. It only moves forward: once a
    /// command has failed an item every time, later items start with the
    /// next one, whichever worker runs them.
    choice: AtomicUsize,
    /// Set when no usable API key is left: later items end at once,
    /// without a request, while the items in flight still get saved.
    stopped: AtomicBool,
    /// Set when the run's budget is spent: the same.
    spent: AtomicBool,
}

impl<'a> ItemContext<'a> {
    pub fn new(
        backend: &'a dyn Backend,
        validator: Option<&'a Validator>,
        agent: &'a str,
        id_field: &'a str,
        launch_attempt: u32,
        item_retries: u32,
    ) -> Self {
        Self {
            backend,
            validator,
            agent,
            id_field,
            launch_attempt,
            attempts: item_retries.saturating_add(1),
            choice: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            spent: AtomicBool::new(false),
        }
    }
}

/// Runs one worker's items one after the other, with its own permit client.
pub struct ItemRunner<'a> {
    context: &'a ItemContext<'a>,
    permits: Permits,
    /// What the answers of the item in hand used and cost, over all its
    /// attempts (None: no answer told).
    spend: Option<Spend>,
}

impl<'a> ItemRunner<'a> {
    pub fn new(context: &'a ItemContext<'a>, permits: Permits) -> Self {
        Self {
            context,
            permits,
            spend: None,
        }
    }

    pub async fn run(&mut self, item: &Value, id: &IdKey) -> Ending {
        let context = self.context;
        let backend = context.backend;
        let choices = backend.choices();
        let mut choice = context.choice.load(Ordering::Relaxed);
        let mut counted = 0u32;
        let mut rate_limited = 0u32;
        self.spend = None;
        if context.stopped.load(Ordering::Relaxed) {
            return Ending::Stopped {
                reason: "the agent is stopping".to_owned(),
            };
        }
        if context.spent.load(Ordering::Relaxed) {
            return Ending::OutOfBudget {
                reason: "the run's budget is spent".to_owned(),
            };
        }
        'choices: loop {
            let mut last_error = None;
            for item_attempt in 1..=context.attempts {
                let call = Call {
                    item,
                    id,
                    id_field: context.id_field,
                    launch_attempt: context.launch_attempt,
                    item_attempt,
                };
                let result = loop {
                    let (error, key) = match self.attempt(call, choice).await {
                        Ok(record) => break Ok(record),
                        Err(Failed::OutOfBudget(reason)) => {
                            context.spent.store(true, Ordering::Relaxed);
                            return Ending::OutOfBudget { reason };
                        }
                        Err(Failed::Attempt(error, key)) => (error, key),
                    };
                    match free_retry(&error) {
                        Some(FreeRetry::RateLimited(retry_after)) => {
                            rate_limited += 1;
                            self.back_off(id, &error, retry_after, key.clone(), rate_limited)
                                .await;
                            if rate_limited <= MAX_RATE_LIMITED {
                                continue;
                            }
                            break Err(AttemptError::RateLimitedTooOften(MAX_RATE_LIMITED));
                        }
                        Some(FreeRetry::KeyRejected) => {
                            eprintln!("{}: item {id}: {error}", context.agent);
                            // No permit of any agent chooses it again.
                            if let Some(key) = key {
                                self.with_permits((), move |p| p.rejected(&key)).await;
                            }
                            match (choice..choices).find(|c| backend.usable(*c)) {
                                // Another key of the same endpoint.
                                Some(next) if next == choice => continue,
                                Some(next) => {
                                    context.choice.fetch_max(next, Ordering::Relaxed);
                                    eprintln!(
                                        "{}: no usable key left for `{}`; switching to `{}` (choice {} of {choices}) for this item and the ones after it",
                                        context.agent,
                                        backend.label(choice),
                                        backend.label(next),
                                        next + 1,
                                    );
                                    choice = next;
                                    continue 'choices;
                                }
                                None => {
                                    context.stopped.store(true, Ordering::Relaxed);
                                    return Ending::Stopped {
                                        reason: error.to_string(),
                                    };
                                }
                            }
                        }
                        None => break Err(error),
                    }
                };
                counted = counted.saturating_add(1);
                match result {
                    Ok(mut record) => {
                        // Every paid answer at the item counts: a retried
                        // or refused one's tokens are in the record's too.
                        if let Some(spend) = self.spend {
                            spend.stamp(&mut record);
                        }
                        if choices > 1 && backend.marks_producer() {
                            record.insert(
                                "produced_by".to_owned(),
                                Value::String(backend.label(choice)),
                            );
                        }
                        return Ending::Saved(record);
                    }
                    Err(error) => {
                        let with = if choices > 1 {
                            format!(" with `{}`", backend.label(choice))
                        } else {
                            String::new()
                        };
                        eprintln!(
                            "{}: item {id} attempt {item_attempt}/{}{with} failed: {error}",
                            context.agent, context.attempts
                        );
                        match llm_retry(&error) {
                            // Asking again would get the same answer.
                            Some(Retry::Never) => {
                                return Ending::Failed {
                                    reason: error.to_string(),
                                    attempts: counted,
                                    spend: self.spend,
                                }
                            }
                            Some(Retry::AfterPause) if item_attempt < context.attempts => {
                                self.pause(pause_before_retry(item_attempt, jitter(id)))
                                    .await;
                            }
                            _ => {}
                        }
                        last_error = Some(error);
                    }
                }
            }
            if choice + 1 >= choices {
                return Ending::Failed {
                    reason: last_error.map(|e| e.to_string()).unwrap_or_default(),
                    attempts: counted,
                    spend: self.spend,
                };
            }
            choice += 1;
            context.choice.fetch_max(choice, Ordering::Relaxed);
            eprintln!(
                "{}: `{}` failed item {id} {} times; switching to `{}` (command {} of {choices}) for this item and the ones after it",
                context.agent,
                backend.label(choice - 1),
                context.attempts,
                backend.label(choice),
                choice + 1,
            );
        }
    }

    /// One backend call and the checks of its result; a failure comes with
    /// the API key the call used, for the broker's backoff.
    async fn attempt(
        &mut self,
        call: Call<'_>,
        choice: usize,
    ) -> Result<Map<String, Value>, Failed> {
        let backend = self.context.backend;
        if let Some(result) = backend.cached(call, choice) {
            return self
                .checked(result, call)
                .map_err(|error| Failed::Attempt(error, None));
        }
        let keys = backend.permit_keys(choice);
        let need = Need {
            tokens: backend.estimate(call, choice),
            cost: backend.estimate_cost(call, choice),
            prefix: backend.cache_prefix(choice),
        };
        // Every call waits for its permit, retries included: each one is a
        // request the rate limit and the budget must account for. With a
        // pool of keys, the broker chooses the key.
        // One call probes at a time; the others go on once it is answered,
        // without a permit if its answer showed no limit.
        let _probing = match self.permits.probe_turn() {
            Some(turn) => Some(turn.await),
            None => None,
        };
        let grant = if self.permits.needs_broker() {
            let asked = need.clone();
            let keys = keys.clone();
            self.with_permits(Grant::Off, move |p| p.permit_within(&keys, &asked))
                .await
        } else {
            Grant::Off
        };
        // Only a call that had a permit is reported (no limit applies yet: none).
        let permitted = matches!(grant, Grant::Granted { .. });
        let key = match grant {
            Grant::Spent(reason) => return Err(Failed::OutOfBudget(reason)),
            Grant::Granted {
                key: Some(chosen), ..
            } => Some(chosen),
            Grant::Granted { key: None, .. } | Grant::Off => keys.first().cloned(),
        };
        let mut meter = Meter {
            key: key.clone(),
            ..Meter::default()
        };
        let result = backend.call(call, choice, &mut meter).await;
        // The key the request really used (another worker may have moved
        // on from the one the permit was for).
        let key = meter.key.or(key);
        if result.is_ok() && meter.learned.is_none() {
            self.permits.no_limit_announced();
        }
        if let (Some(key), Some(limits)) = (&key, meter.learned) {
            let key = key.clone();
            self.with_permits((), move |p| p.learned(&key, limits))
                .await;
        }
        // Tokens were spent even when the result is rejected below.
        let used = meter
            .used_tokens
            .or_else(|| result.as_ref().ok().and_then(used_tokens));
        if let Some(spend) = meter.spend {
            *self.spend.get_or_insert_with(Spend::default) += spend;
        }
        // An LLM call's permit is settled even when the call got no answer
        // (it used nothing the server told of), so that the broker's budget
        // lets go of what the permit reserved.
        let cost = meter.spend.and_then(|spend| spend.cost);
        let cost = cost.or(need.cost.map(|_| 0.0));
        let settled = used.or_else(|| backend.settles_permits().then_some(0));
        if let (Some(tokens), true) = (settled, permitted) {
            let key = key.clone();
            self.with_permits((), move |p| {
                p.report_spend(key.as_deref(), &need, tokens, cost)
            })
            .await;
        }
        self.checked(result, call)
            .map_err(|error| Failed::Attempt(error, key))
    }

    /// A call's record with the item's id, past agent.validate.
    fn checked(
        &self,
        result: Result<Map<String, Value>, AttemptError>,
        call: Call<'_>,
    ) -> Result<Map<String, Value>, AttemptError> {
        let record = with_id(result?, call)?;
        if let Some(validator) = self.context.validator {
            validator.check(&record)?;
        }
        Ok(record)
    }

    /// After a rate-limit answer: the broker pauses the permits of every
    /// agent (of the key, for an API key); without a broker this agent waits
    /// itself (retry_after, else a short doubling pause), so a standalone
    /// agent does not hammer the API.
    async fn back_off(
        &mut self,
        id: &IdKey,
        error: &AttemptError,
        retry_after: Option<f64>,
        key: Option<String>,
        count: u32,
    ) {
        let counted = if count <= MAX_RATE_LIMITED {
            format!("retry {count}/{MAX_RATE_LIMITED}, not counted against item_retries")
        } else {
            format!("more than {MAX_RATE_LIMITED} times, counted as a failed attempt")
        };
        let seconds = retry_after.unwrap_or(0.0);
        let paused = self
            .with_permits(None, move |p| p.backoff_for(key.as_deref(), seconds))
            .await;
        let pause = match paused {
            Some(paused_ms) => format!("the broker paused permits for {:.1}s", paused_ms / 1000.0),
            None => {
                let wait = local_wait(retry_after, count);
                self.pause(wait).await;
                format!("waited {wait:?}")
            }
        };
        let what = match error {
            AttemptError::RateLimited(limit) => format!("rate limited ({limit})"),
            other => other.to_string(),
        };
        eprintln!(
            "{}: item {id} {what}; {counted}; {pause}",
            self.context.agent
        );
    }
}

impl ItemRunner<'_> {
    /// Waits `how_long`: on a worker thread of its own, by sleeping; on the
    /// event loop, on a timer, while the other items go on.
    async fn pause(&self, how_long: Duration) {
        if self.context.backend.holds_thread() {
            thread::sleep(how_long);
        } else {
            tokio::time::sleep(how_long).await;
        }
    }

    /// Runs `talk` with this worker's permit client: right here on a worker
    /// thread of its own or when there is no broker (every exchange is then
    /// a no-op); from the event loop on a blocking thread, since the broker
    /// may hold a permit back for seconds. `fallback` is the answer should
    /// that thread die (a panic in the client): the item goes on without.
    async fn with_permits<T: Send + 'static>(
        &mut self,
        fallback: T,
        talk: impl FnOnce(&mut Permits) -> T + Send + 'static,
    ) -> T {
        if self.context.backend.holds_thread() || !self.permits.is_on() {
            return talk(&mut self.permits);
        }
        let stand_in = self.permits.another();
        let mut permits = std::mem::replace(&mut self.permits, stand_in);
        let talked = tokio::task::spawn_blocking(move || {
            let answer = talk(&mut permits);
            (permits, answer)
        });
        match talked.await {
            Ok((permits, answer)) => {
                self.permits = permits;
                answer
            }
            Err(error) => {
                eprintln!(
                    "{}: the rate broker client stopped ({error}); going on",
                    self.context.agent
                );
                fallback
            }
        }
    }
}

/// Why an attempt gave no record.
enum Failed {
    /// The call failed (with the API key it used, for the broker's backoff).
    Attempt(AttemptError, Option<String>),
    /// The budget could not cover the call: it was not made.
    OutOfBudget(String),
}

/// A retry that does not count against item_retries.
enum FreeRetry {
    RateLimited(Option<f64>),
    KeyRejected,
}

fn free_retry(error: &AttemptError) -> Option<FreeRetry> {
    match error {
        AttemptError::RateLimited(limit) => Some(FreeRetry::RateLimited(limit.retry_after)),
        AttemptError::Llm(llm) => match llm.retry() {
            Retry::RateLimited(after) => Some(FreeRetry::RateLimited(after)),
            Retry::KeyRejected => Some(FreeRetry::KeyRejected),
            _ => None,
        },
        _ => None,
    }
}

fn llm_retry(error: &AttemptError) -> Option<Retry> {
    match error {
        AttemptError::Llm(llm) => Some(llm.retry()),
        _ => None,
    }
}

/// A number in [0, 1) that differs between items and moments, so that
/// pauses of items that failed together spread out.
fn jitter(id: &IdKey) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    StableHasher::new()
        .part(id.as_str().as_bytes())
        .part_u64(u64::from(nanos))
        .unit()
}

/// retry_after when given, else 1s doubling with each rate-limit answer of
/// the item, up to 30s.
fn local_wait(retry_after: Option<f64>, count: u32) -> Duration {
    match retry_after {
        Some(seconds) => Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_LOCAL_WAIT)
            .min(MAX_LOCAL_WAIT),
        None => Duration::from_secs((1u64 << count.saturating_sub(1).min(5)).min(30)),
    }
}

/// Makes sure a record carries the item's id: a missing id is added, a
/// different one makes the attempt a failure.
fn with_id(
    mut record: Map<String, Value>,
    call: Call<'_>,
) -> Result<Map<String, Value>, AttemptError> {
    match record.get(call.id_field) {
        None => {
            record.insert(call.id_field.to_owned(), call.id.to_value());
            Ok(record)
        }
        Some(found) if IdKey::from_value(found).as_ref() == Some(call.id) => Ok(record),
        Some(found) => Err(AttemptError::WrongId {
            field: call.id_field.to_owned(),
            found: found.to_string(),
            expected: call.id.clone(),
        }),
    }
}

#[cfg(test)]
mod tests;
