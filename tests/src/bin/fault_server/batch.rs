//! The provider batch APIs, both shapes, held in memory.
//!
//! OpenAI: `POST /v1/files` (multipart, purpose `batch`, a JSONL file of
//! `{custom_id, method, url, body}` lines), `POST /v1/batches`
//! (`{input_file_id, endpoint, completion_window}`), `GET /v1/batches/{id}`
//! (`status` validating → in_progress → completed | expired | cancelled,
//! `request_counts`, `output_file_id`, `error_file_id`), `GET
//! /v1/files/{id}/content`, `POST /v1/batches/{id}/cancel`.
//! Anthropic: `POST /v1/messages/batches` (`{requests: [{custom_id,
//! params}]}`), `GET /v1/messages/batches/{id}` (`processing_status`
//! in_progress → ended, `request_counts`, `results_url`), `GET
//! …/{id}/results` (JSONL `{custom_id, result: {type, message | error}}`),
//! `POST …/{id}/cancel`.
//!
//! A batch ends at its `--batch-polls`th poll. `--batch-expire ITEM[,ITEM…]`
//! makes the first submission of those items come back expired (and the
//! batch `expired`, its finished part kept); `--batch-error ITEM[,…]` makes
//! it come back errored (a 500 inside the results). Results are written in
//! reverse order, so a client must match them by custom_id. Every request of
//! every batch created is logged as one `{"event": "batch-request", "item",
//! "custom_id", "batch"}` line: a test counts submissions per item from them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use serde_json::{json, Value};

use crate::answer::{self, Api};
use crate::http::{Answer, Request};

/// What one request of a batch came to.
enum Fate {
    Succeeded(Value),
    Errored,
    Expired,
    Canceled,
}

struct Entry {
    custom_id: String,
    item: Option<String>,
    body: Value,
    /// The how-many-th submission of its item this is, from 1.
    nth: u32,
}

struct Batch {
    api: Api,
    entries: Vec<Entry>,
    polls: u32,
    cancelled: bool,
    /// Once ended: each entry's fate, in entry order.
    fates: Option<Vec<Fate>>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    batches: HashMap<String, Batch>,
    submissions: HashMap<String, u32>,
    serial: u64,
}

pub struct Batches {
    state: Mutex<State>,
    polls: u32,
    expire: Vec<String>,
    error: Vec<String>,
}

/// How a successful reply to a request body is made: the answer body
/// online mode would get for it.
pub type Reply<'a> = &'a dyn Fn(Api, &Value) -> Value;

impl Batches {
    pub fn new(polls: u32, expire: Vec<String>, error: Vec<String>) -> Self {
        Self {
            state: Mutex::default(),
            polls: polls.max(1),
            expire,
            error,
        }
    }

    /// The answer to a batch API request, with log lines to add; None for
    /// any other path.
    pub fn route(
        &self,
        request: &Request,
        find_item: &dyn Fn(&str) -> Option<String>,
        reply: Reply<'_>,
    ) -> Option<(Answer, Vec<Value>)> {
        let path = request.path.split('?').next().unwrap_or_default();
        let rest = path.strip_prefix("/v1")?;
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let host = request.header("host").unwrap_or("127.0.0.1").to_owned();
        let answer = match (request.method.as_str(), parts.as_slice()) {
            ("POST", ["files"]) => upload(&mut state, request),
            ("GET", ["files", id, "content"]) => match state.files.get(*id) {
                Some(bytes) => Answer {
                    status: 200,
                    headers: vec![("content-type".into(), "application/jsonl".into())],
                    body: bytes.clone(),
                },
                None => not_found(Api::OpenAi),
            },
            ("POST", ["batches"]) => {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let file = body["input_file_id"].as_str().unwrap_or_default();
                let Some(bytes) = state.files.get(file).cloned() else {
                    return Some((not_found(Api::OpenAi), Vec::new()));
                };
                let lines: Vec<Value> = String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                let requests = requests_of(&lines, "body");
                let (id, logs) = create(&mut state, Api::OpenAi, requests, find_item);
                return Some((self.show(&mut state, &id, &host, reply, false), logs));
            }
            ("POST", ["messages", "batches"]) => {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let listed = body["requests"].as_array().cloned().unwrap_or_default();
                let requests = requests_of(&listed, "params");
                let (id, logs) = create(&mut state, Api::Anthropic, requests, find_item);
                return Some((self.show(&mut state, &id, &host, reply, false), logs));
            }
            ("GET", ["batches", id]) | ("GET", ["messages", "batches", id]) => {
                self.show(&mut state, id, &host, reply, true)
            }
            ("POST", ["batches", id, "cancel"])
            | ("POST", ["messages", "batches", id, "cancel"]) => {
                if let Some(batch) = state.batches.get_mut(*id) {
                    batch.cancelled = true;
                }
                self.show(&mut state, id, &host, reply, false)
            }
            ("GET", ["messages", "batches", id, "results"]) => {
                let results = state.files.get(&format!("{id}-results")).cloned();
                match results {
                    Some(bytes) => Answer {
                        status: 200,
                        headers: vec![("content-type".into(), "application/binary".into())],
                        body: bytes,
                    },
                    None => not_found(Api::Anthropic),
                }
            }
            _ => return None,
        };
        Some((answer, Vec::new()))
    }

    /// The batch object, after counting a poll when `poll`; a batch ends at
    /// its `polls`th poll (or when cancelled) and its result files appear.
    fn show(
        &self,
        state: &mut State,
        id: &str,
        host: &str,
        reply: Reply<'_>,
        poll: bool,
    ) -> Answer {
        let Some(batch) = state.batches.get_mut(id) else {
            return not_found(if id.starts_with("msgbatch") {
                Api::Anthropic
            } else {
                Api::OpenAi
            });
        };
        if poll {
            batch.polls += 1;
        }
        if batch.fates.is_none() && (batch.polls >= self.polls || batch.cancelled) {
            let fates = batch
                .entries
                .iter()
                .map(|entry| {
                    let first = entry.nth == 1;
                    let item = entry.item.as_deref().unwrap_or("");
                    if batch.cancelled {
                        Fate::Canceled
                    } else if first && self.expire.iter().any(|e| e == item) {
                        Fate::Expired
                    } else if first && self.error.iter().any(|e| e == item) {
                        Fate::Errored
                    } else {
                        Fate::Succeeded(reply(batch.api, &entry.body))
                    }
                })
                .collect();
            batch.fates = Some(fates);
            let files = result_files(id, batch);
            state.files.extend(files);
        }
        let Some(batch) = state.batches.get(id) else {
            return not_found(Api::OpenAi);
        };
        Answer::json(200, &batch_object(id, batch, host))
    }
}

/// (custom_id, request body) of each listed request; the body under `key`.
fn requests_of(listed: &[Value], key: &str) -> Vec<(String, Value)> {
    listed
        .iter()
        .map(|r| {
            (
                r["custom_id"].as_str().unwrap_or("").to_owned(),
                r[key].clone(),
            )
        })
        .collect()
}

fn not_found(api: Api) -> Answer {
    answer::error(api, 404, "not_found_error", "no such batch or file")
}

/// `POST /files`: the part named `file` of a multipart body.
fn upload(state: &mut State, request: &Request) -> Answer {
    let boundary = request
        .header("content-type")
        .and_then(|t| t.split("boundary=").nth(1))
        .map(|b| b.trim_matches('"').to_owned());
    let body = &request.body;
    let file = boundary.and_then(|boundary| {
        let text = String::from_utf8_lossy(body);
        let start = text.find("name=\"file\"")?;
        let content = start + text[start..].find("\r\n\r\n")? + 4;
        let end = content + text[content..].find(&format!("\r\n--{boundary}"))?;
        Some(text[content..end].as_bytes().to_vec())
    });
    let purpose_ok = String::from_utf8_lossy(body).contains("name=\"purpose\"\r\n\r\nbatch\r\n");
    let (Some(file), true) = (file, purpose_ok) else {
        return answer::error(
            Api::OpenAi,
            400,
            "invalid_request_error",
            "expected multipart with purpose=batch and a file",
        );
    };
    state.serial += 1;
    let id = format!("file-fault{}", state.serial);
    let bytes = file.len();
    state.files.insert(id.clone(), file);
    Answer::json(
        200,
        &json!({"id": id, "object": "file", "bytes": bytes, "purpose": "batch", "filename": "batch.jsonl"}),
    )
}

/// A new batch of (custom_id, body): its id, and one log line per request.
fn create(
    state: &mut State,
    api: Api,
    requests: Vec<(String, Value)>,
    find_item: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<Value>) {
    state.serial += 1;
    let id = match api {
        Api::OpenAi => format!("batch_fault{}", state.serial),
        Api::Anthropic => format!("msgbatch_fault{}", state.serial),
    };
    let mut logs = Vec::new();
    let mut entries = Vec::new();
    for (custom_id, body) in requests {
        let item = find_item(&body.to_string());
        let nth = item.as_ref().map_or(1, |item| {
            let seen = state.submissions.entry(item.clone()).or_insert(0);
            *seen += 1;
            *seen
        });
        logs.push(
            json!({"event": "batch-request", "item": item, "custom_id": custom_id, "batch": id}),
        );
        entries.push(Entry {
            custom_id,
            item,
            body,
            nth,
        });
    }
    state.batches.insert(
        id.clone(),
        Batch {
            api,
            entries,
            polls: 0,
            cancelled: false,
            fates: None,
        },
    );
    (id, logs)
}

/// The result files of an ended batch, written in reverse entry order.
fn result_files(id: &str, batch: &Batch) -> Vec<(String, Vec<u8>)> {
    let Some(fates) = &batch.fates else {
        return Vec::new();
    };
    let (mut output, mut errors) = (Vec::new(), Vec::new());
    for (entry, fate) in batch.entries.iter().zip(fates).rev() {
        let custom_id = &entry.custom_id;
        let (line, good) = match batch.api {
            Api::OpenAi => match fate {
                Fate::Succeeded(body) => (
                    json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id,
                    "response": {"status_code": 200, "request_id": "req_fault", "body": body}, "error": null}),
                    true,
                ),
                Fate::Errored => (
                    json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id,
                    "response": {"status_code": 500, "request_id": "req_fault", "body": {"error": {"message": "The server had an error", "type": "server_error"}}}, "error": null}),
                    false,
                ),
                Fate::Expired => (
                    json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id, "response": null,
                    "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}),
                    false,
                ),
                Fate::Canceled => (
                    json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id, "response": null,
                    "error": {"code": "batch_cancelled", "message": "This request was cancelled."}}),
                    false,
                ),
            },
            Api::Anthropic => {
                let result = match fate {
                    Fate::Succeeded(message) => json!({"type": "succeeded", "message": message}),
                    Fate::Errored => {
                        json!({"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}})
                    }
                    Fate::Expired => json!({"type": "expired"}),
                    Fate::Canceled => json!({"type": "canceled"}),
                };
                (json!({"custom_id": custom_id, "result": result}), true)
            }
        };
        let lines = if good { &mut output } else { &mut errors };
        lines.extend_from_slice(line.to_string().as_bytes());
        lines.push(b'\n');
    }
    match batch.api {
        Api::OpenAi => vec![
            (format!("{id}-output"), output),
            (format!("{id}-errors"), errors),
        ],
        Api::Anthropic => vec![(format!("{id}-results"), output)],
    }
}

/// The batch object of either API.
fn batch_object(id: &str, batch: &Batch, host: &str) -> Value {
    let total = batch.entries.len();
    let count = |want: fn(&Fate) -> bool| {
        batch
            .fates
            .as_ref()
            .map_or(0, |f| f.iter().filter(|x| want(x)).count())
    };
    let succeeded = count(|f| matches!(f, Fate::Succeeded(_)));
    let expired = count(|f| matches!(f, Fate::Expired));
    let errored = count(|f| matches!(f, Fate::Errored));
    let canceled = count(|f| matches!(f, Fate::Canceled));
    let ended = batch.fates.is_some();
    match batch.api {
        Api::OpenAi => {
            let status = match (ended, batch.cancelled, expired > 0, batch.polls) {
                (false, _, _, 0) => "validating",
                (false, _, _, _) => "in_progress",
                (true, true, _, _) => "cancelled",
                (true, false, true, _) => "expired",
                (true, false, false, _) => "completed",
            };
            let files = |suffix: &str| ended.then(|| format!("{id}-{suffix}"));
            json!({"id": id, "object": "batch", "endpoint": "/v1/chat/completions", "status": status,
                   "completion_window": "24h", "output_file_id": files("output"), "error_file_id": files("errors"),
                   "request_counts": {"total": total, "completed": succeeded, "failed": errored + expired + canceled}})
        }
        Api::Anthropic => json!({"id": id, "type": "message_batch",
            "processing_status": if ended { "ended" } else if batch.cancelled { "canceling" } else { "in_progress" },
            "request_counts": {"processing": if ended { 0 } else { total }, "succeeded": succeeded, "errored": errored,
                               "canceled": canceled, "expired": expired},
            "results_url": ended.then(|| format!("http://{host}/v1/messages/batches/{id}/results"))}),
    }
}
