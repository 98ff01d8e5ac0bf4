//! One item, from its first backend call to a record ready to save or a
//! failure: a permit before every call, rate-limit answers retried without
//! counting, agent.item_retries + 1 counted attempts per command, a sticky
//! switch to the next fallback command (shared by every worker), and
//! validation of every result.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Map, Value};
use shared::ids::IdKey;

use crate::backend::{AttemptError, Backend, Call, RateLimit};
use crate::permit::{estimate_tokens, used_tokens, Permits};
use crate::validate::Validator;

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
    /// Every attempt with every command failed; `reason` is the last one's.
    Failed { reason: String, attempts: u32 },
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
        }
    }
}

/// Runs one worker's items one after the other, with its own permit client.
pub struct ItemRunner<'a> {
    context: &'a ItemContext<'a>,
    permits: Permits,
}

impl<'a> ItemRunner<'a> {
    pub fn new(context: &'a ItemContext<'a>, permits: Permits) -> Self {
        Self { context, permits }
    }

    pub fn run(&mut self, item: &Value, id: &IdKey) -> Ending {
        let context = self.context;
        let backend = context.backend;
        let estimate = estimate_tokens(item);
        let choices = backend.choices();
        let mut choice = context.choice.load(Ordering::Relaxed);
        let mut counted = 0u32;
        let mut rate_limited = 0u32;
        loop {
            // produced_by, and the command's name in messages, only when
            // there is a choice of commands.
            let label = (choices > 1).then(|| backend.label(choice));
            let with = label
                .as_ref()
                .map(|label| format!(" with `{label}`"))
                .unwrap_or_default();
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
                    match self.attempt(call, choice, estimate) {
                        Err(AttemptError::RateLimited(limit)) => {
                            rate_limited += 1;
                            self.back_off(id, limit, rate_limited);
                            if rate_limited <= MAX_RATE_LIMITED {
                                continue;
                            }
                            break Err(AttemptError::RateLimitedTooOften(MAX_RATE_LIMITED));
                        }
                        other => break other,
                    }
                };
                counted = counted.saturating_add(1);
                match result {
                    Ok(mut record) => {
                        if let Some(label) = label {
                            record.insert("produced_by".to_owned(), Value::String(label));
                        }
                        return Ending::Saved(record);
                    }
                    Err(error) => {
                        eprintln!(
                            "{}: item {id} attempt {item_attempt}/{}{with} failed: {error}",
                            context.agent, context.attempts
                        );
                        last_error = Some(error);
                    }
                }
            }
            if choice + 1 >= choices {
                return Ending::Failed {
                    reason: last_error.map(|e| e.to_string()).unwrap_or_default(),
                    attempts: counted,
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

    /// One backend call and the checks of its result.
    fn attempt(
        &mut self,
        call: Call<'_>,
        choice: usize,
        estimate: u64,
    ) -> Result<Map<String, Value>, AttemptError> {
        // Every call waits for its permit, retries included: each one is a
        // request the rate limit must account for.
        self.permits.permit(estimate);
        let record = self.context.backend.call(call, choice)?;
        // Tokens were spent even when the result is rejected below.
        if let Some(used) = used_tokens(&record) {
            self.permits.report(used, estimate);
        }
        let record = with_id(record, call)?;
        if let Some(validator) = self.context.validator {
            validator.check(&record)?;
        }
        Ok(record)
    }

    /// After a rate-limit answer: the broker pauses every agent's permits;
    /// without a broker this agent waits itself (retry_after, else a short
    /// doubling pause), so a standalone agent does not hammer the API.
    fn back_off(&mut self, id: &IdKey, limit: RateLimit, count: u32) {
        let counted = if count <= MAX_RATE_LIMITED {
            format!("retry {count}/{MAX_RATE_LIMITED}, not counted against item_retries")
        } else {
            format!("more than {MAX_RATE_LIMITED} times, counted as a failed attempt")
        };
        let pause = match self.permits.backoff(limit.retry_after.unwrap_or(0.0)) {
            Some(paused_ms) => format!("the broker paused permits for {:.1}s", paused_ms / 1000.0),
            None => {
                let wait = local_wait(limit.retry_after, count);
                thread::sleep(wait);
                format!("waited {wait:?}")
            }
        };
        eprintln!(
            "{}: item {id} rate limited ({limit}); {counted}; {pause}",
            self.context.agent
        );
    }
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
mod tests {
    use super::*;
    use serde_json::json;

    fn call<'a>(item: &'a Value, id: &'a IdKey) -> Call<'a> {
        Call {
            item,
            id,
            id_field: "id",
            launch_attempt: 1,
            item_attempt: 1,
        }
    }

    #[test]
    fn missing_id_is_added_and_wrong_id_refused() {
        let item = json!({"id": 7});
        let id = IdKey::from_value(&item["id"]).expect("integer id");
        let Value::Object(record) = json!({"output": "x"}) else {
            panic!("object literal")
        };
        let fixed = with_id(record, call(&item, &id)).expect("id added");
        assert_eq!(fixed["id"], json!(7));
        let Value::Object(wrong) = json!({"id": "7"}) else {
            panic!("object literal")
        };
        assert!(matches!(
            with_id(wrong, call(&item, &id)),
            Err(AttemptError::WrongId { .. })
        ));
    }

    #[test]
    fn local_wait_follows_retry_after_or_doubles() {
        assert_eq!(local_wait(Some(0.25), 1), Duration::from_millis(250));
        assert_eq!(local_wait(Some(1e300), 1), MAX_LOCAL_WAIT);
        let waits: Vec<u64> = (1..=8).map(|n| local_wait(None, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
