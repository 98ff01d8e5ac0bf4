//! Anthropic's Message Batches API, as the wire has it: `POST
//! /messages/batches` with every request's `custom_id` and `params` (the
//! Messages body), polled at `GET /messages/batches/{id}` until its
//! `processing_status` is `ended`, its results a JSONL file at `results_url`,
//! one line per request, in any order.

use serde_json::Value;
use shared::batch::BatchCounts;

use super::{count_of, state_of, Outcome, Polled};

/// A message batch: its processing status, counts, and once it ended, where
/// its results are.
pub fn read_batch(batch: &Value) -> Result<Polled, String> {
    let state = state_of(batch, "processing_status")?;
    let count = |key: &str| count_of(batch, key);
    let failed = count("errored") + count("canceled") + count("expired");
    let ended = state == "ended";
    let results = batch
        .get("results_url")
        .and_then(Value::as_str)
        .filter(|_| ended)
        .map(str::to_owned)
        .into_iter()
        .collect();
    Ok(Polled {
        counts: BatchCounts {
            total: count("processing") + count("succeeded") + failed,
            succeeded: count("succeeded"),
            failed,
        },
        state,
        ended,
        results,
    })
}

/// One results line: `{custom_id, result: {type: succeeded, message} |
/// {type: errored, error} | {type: canceled | expired}}`.
pub fn read_result(line: &Value) -> Option<(String, Outcome)> {
    let custom_id = line.get("custom_id")?.as_str()?.to_owned();
    let result = line.get("result")?;
    let kind = result.get("type").and_then(Value::as_str).unwrap_or("");
    let outcome = match (kind, result.get("message")) {
        ("succeeded", Some(message)) => Outcome::Succeeded(message.clone()),
        ("errored", _) => {
            // The error is wrapped like an API error body: {type: error, error: {…}}.
            let error = result.get("error");
            let inner = error.and_then(|e| e.get("error")).or(error);
            let message = inner
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("no message");
            let kind = inner
                .and_then(|e| e.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("error");
            Outcome::Failed(format!("errored ({kind}): {message}"))
        }
        (other, _) => Outcome::Failed(format!("{other}: the request was not processed")),
    };
    Some((custom_id, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batches_and_results_are_read() {
        let polled = read_batch(&json!({"id": "msgbatch_1", "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 1},
            "results_url": "http://x/v1/messages/batches/msgbatch_1/results"}))
        .expect("a batch");
        assert!(polled.ended);
        assert_eq!(
            polled.counts,
            BatchCounts {
                total: 4,
                succeeded: 2,
                failed: 2
            }
        );
        assert_eq!(polled.results.len(), 1);
        let running = read_batch(&json!({"processing_status": "in_progress", "results_url": null}))
            .expect("a batch");
        assert!(!running.ended && running.results.is_empty());
        let ok = read_result(
            &json!({"custom_id": "a", "result": {"type": "succeeded", "message": {"content": []}}}),
        );
        assert!(matches!(ok, Some((_, Outcome::Succeeded(_)))));
        let errored = read_result(&json!({"custom_id": "b", "result": {"type": "errored",
            "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}}}));
        assert!(
            matches!(errored, Some((_, Outcome::Failed(why))) if why == "errored (invalid_request_error): bad")
        );
        let expired = read_result(&json!({"custom_id": "c", "result": {"type": "expired"}}));
        assert!(matches!(expired, Some((_, Outcome::Failed(why))) if why.starts_with("expired")));
    }
}
