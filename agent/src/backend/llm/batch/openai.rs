//! OpenAI's Files and Batch APIs, as the wire has them: the requests go up
//! as one JSONL file (`POST /files`, multipart, purpose `batch`), the batch
//! is created on it (`POST /batches`, 24 h window), polled (`GET
//! /batches/{id}`), and its results come as JSONL output and error files
//! (`GET /files/{id}/content`), one line per request, in any order.

use serde_json::{json, Value};
use shared::batch::BatchCounts;

use super::{count_of, state_of, Outcome, Polled};

/// The endpoint every request of the file is for (the `url` of each line
/// and the batch's `endpoint`).
pub const ENDPOINT: &str = "/v1/chat/completions";

/// The body of `POST /batches` on an uploaded file.
pub fn create(input_file_id: &str) -> Value {
    json!({"input_file_id": input_file_id, "endpoint": ENDPOINT, "completion_window": "24h"})
}

/// A batch object: its status, counts, and once it is over, the files to read.
pub fn read_batch(batch: &Value) -> Result<Polled, String> {
    let state = state_of(batch, "status")?;
    let count = |key: &str| count_of(batch, key);
    let ended = matches!(
        state.as_str(),
        "completed" | "failed" | "expired" | "cancelled"
    );
    let files = ["output_file_id", "error_file_id"]
        .iter()
        .filter_map(|key| batch.get(*key).and_then(Value::as_str))
        .map(|id| format!("/files/{id}/content"))
        .collect();
    Ok(Polled {
        counts: BatchCounts {
            total: count("total"),
            succeeded: count("completed"),
            failed: count("failed"),
        },
        state,
        ended,
        results: files,
    })
}

/// One line of an output or error file: the request's custom_id and how it
/// ended (a 200's body is the chat completion).
pub fn read_result(line: &Value) -> Option<(String, Outcome)> {
    let custom_id = line.get("custom_id")?.as_str()?.to_owned();
    let response = line.get("response").filter(|r| !r.is_null());
    let status = response
        .and_then(|r| r.get("status_code"))
        .and_then(Value::as_u64);
    let outcome = match (status, response.and_then(|r| r.get("body"))) {
        (Some(200), Some(body)) => Outcome::Succeeded(body.clone()),
        (status, body) => {
            let error = line.get("error").filter(|e| !e.is_null());
            let message = body
                .and_then(|b| b.get("error"))
                .or(error)
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("no message");
            let code = error
                .and_then(|e| e.get("code"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| status.map(|s| format!("HTTP {s}")))
                .unwrap_or_else(|| "error".to_owned());
            Outcome::Failed(format!("{code}: {message}"))
        }
    };
    Some((custom_id, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_and_results_are_read() {
        let polled = read_batch(&json!({"id": "batch_1", "status": "completed",
            "request_counts": {"total": 3, "completed": 2, "failed": 1},
            "output_file_id": "file-o", "error_file_id": "file-e"}))
        .expect("a batch");
        assert!(polled.ended);
        assert_eq!(
            polled.results,
            ["/files/file-o/content", "/files/file-e/content"]
        );
        assert_eq!(polled.counts.failed, 1);
        let running = read_batch(&json!({"status": "in_progress"})).expect("a batch");
        assert!(!running.ended && running.results.is_empty());
        let ok = read_result(
            &json!({"custom_id": "a", "response": {"status_code": 200, "body": {"x": 1}}, "error": null}),
        );
        assert!(matches!(ok, Some((id, Outcome::Succeeded(body))) if id == "a" && body["x"] == 1));
        let expired = read_result(&json!({"custom_id": "b", "response": null,
            "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}));
        assert!(
            matches!(expired, Some((_, Outcome::Failed(why))) if why.starts_with("batch_expired"))
        );
        let refused = read_result(
            &json!({"custom_id": "c", "response": {"status_code": 400, "body": {"error": {"message": "bad"}}}}),
        );
        assert!(matches!(refused, Some((_, Outcome::Failed(why))) if why == "HTTP 400: bad"));
    }
}
