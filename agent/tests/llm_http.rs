//! The LLM backends end to end: the real nightshift-agent against a tiny
//! HTTP server in the test, which answers with canned OpenAI or Anthropic
//! answers and keeps every request it got, so the tests can check what was
//! sent as well as what was saved.

mod common;

use common::llm_server::{Canned, Server};
use common::{lines, stderr, Agent};
use serde_json::{json, Value};

const KEY_VAR: &str = "NS_TEST_LLM_KEY";
const KEY: &str = "sk-test-very-secret-4242";

fn openai_answer(text: &str) -> Canned {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25,
                  "prompt_tokens_details": {"cached_tokens": 8}}
    });
    let limits = vec![
        ("x-ratelimit-limit-requests", "120".to_owned()),
        ("x-ratelimit-remaining-requests", "119".to_owned()),
        ("x-ratelimit-reset-requests", "500ms".to_owned()),
    ];
    (200, limits, body.to_string())
}

fn error(status: u16, message: &str) -> Canned {
    let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
    (status, Vec::new(), body.to_string())
}

fn settings(url: &str, backend: &str, extra: Value) -> Value {
    let mut llm = json!({
        "base_url": url, "model": "test-model", "api_key_env": KEY_VAR,
        "system": "Be brief.", "prompt": "Say {{text}}", "max_tokens": 20,
        "request_timeout": "5s",
    });
    if let (Some(llm), Value::Object(extra)) = (llm.as_object_mut(), extra) {
        llm.extend(extra);
    }
    json!({"backend": backend, "item_retries": 1, "llm": llm})
}

fn items() -> Value {
    json!([{"id": "a", "text": "fish"}])
}

fn run(agent: &Agent) -> std::process::Output {
    agent.run_with_env(&[(KEY_VAR, KEY)])
}

#[test]
fn openai_request_and_record() {
    let server = Server::start(|_, _| openai_answer("Fish!"));
    let agent = Agent::new(&items(), &settings(&server.url, "openai", json!({})));
    let output = run(&agent);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let got = server.got();
    assert_eq!(got.len(), 1);
    let request = &got[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.body,
        json!({"model": "test-model", "max_tokens": 20,
               "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say fish"}]})
    );
    assert_eq!(
        lines(&agent.output()),
        [
            json!({"id": "a", "output": "Fish!", "model": "test-model-1", "finish_reason": "stop",
                "usage": {"input_tokens": 12, "output_tokens": 5, "cached_input_tokens": 8, "cache_write_tokens": 0},
                "endpoint": server.url})
        ]
    );
}

#[test]
fn anthropic_request_and_record() {
    let server = Server::start(|_, _| {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": "{\"answer\": \"fish\"}"}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 9, "output_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0}
        });
        let limits = vec![
            ("anthropic-ratelimit-input-tokens-limit", "40000".to_owned()),
            (
                "anthropic-ratelimit-input-tokens-remaining",
                "39000".to_owned(),
            ),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2030-01-01T00:00:00Z".to_owned(),
            ),
        ];
        (200, limits, body.to_string())
    });
    let extra = json!({"cache_prefix": true, "response_format": "json", "max_tokens": null});
    let agent = Agent::new(&items(), &settings(&server.url, "anthropic", extra));
    let output = run(&agent);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let request = &server.got()[0];
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.header("x-api-key"), Some(KEY));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.header("authorization"), None);
    assert_eq!(
        request.body,
        json!({"model": "test-model", "max_tokens": 1024,
               "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
               "messages": [{"role": "user", "content": "Say fish"}]})
    );
    assert_eq!(
        lines(&agent.output()),
        [
            json!({"id": "a", "answer": "fish", "model": "claude-test", "finish_reason": "max_tokens",
                "truncated": true,
                "usage": {"input_tokens": 9, "output_tokens": 20, "cached_input_tokens": 100, "cache_write_tokens": 0},
                "endpoint": server.url})
        ]
    );
}

#[test]
fn a_server_error_is_retried_and_a_rate_limit_is_not_counted() {
    let server = Server::start(|n, _| match n {
        0 => error(500, "boom"),
        1 => (
            429,
            vec![("retry-after-ms", "50".to_owned())],
            "{}".to_owned(),
        ),
        _ => openai_answer("ok"),
    });
    // One counted retry: the 500 takes it, the 429 is free.
    let agent = Agent::new(&items(), &settings(&server.url, "openai", json!({})));
    let output = run(&agent);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert_eq!(server.got().len(), 3);
    assert!(log.contains("HTTP 500: boom"), "{log}");
    assert!(log.contains("rate limited: HTTP 429"), "{log}");
    assert_eq!(lines(&agent.output())[0]["output"], "ok");
}

#[test]
fn a_bad_request_fails_the_item_at_once_with_the_servers_message() {
    let server = Server::start(|_, _| error(400, "max_tokens is too large"));
    let agent = Agent::new(&items(), &settings(&server.url, "openai", json!({})));
    let output = run(&agent);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(server.got().len(), 1, "not retried");
    let failures = lines(&agent.failures());
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["reason"], "HTTP 400: max_tokens is too large");
    assert!(lines(&agent.output()).is_empty());
}

#[test]
fn a_missing_prompt_field_fails_the_item_without_a_request() {
    let server = Server::start(|_, _| openai_answer("x"));
    let extra = json!({"prompt": "Say {{colour}}"});
    let agent = Agent::new(&items(), &settings(&server.url, "openai", extra));
    let output = run(&agent);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(server.got().is_empty());
    let reason = lines(&agent.failures())[0]["reason"].clone();
    assert_eq!(
        reason,
        "item \"a\" has no field \"colour\", which the prompt uses"
    );
}

#[test]
fn a_rejected_key_stops_the_agent_with_exit_5_naming_the_variable_only() {
    let server = Server::start(|_, _| error(401, &format!("Incorrect API key provided: {KEY}")));
    let many =
        json!([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "c", "text": "z"}]);
    let agent = Agent::new(&many, &settings(&server.url, "openai", json!({})));
    let output = run(&agent);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(5), "{log}");
    assert!(log.contains(KEY_VAR) && log.contains(&server.url), "{log}");
    assert_eq!(
        server.got().len(),
        1,
        "no request after the key was rejected"
    );
    // No item was marked failed, and the key is nowhere.
    assert!(!agent.failures().exists());
    for entry in std::fs::read_dir(agent.dir.path()).expect("the agent's folder") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains(KEY), "{} holds the key", path.display());
    }
    assert!(!log.contains(KEY), "{log}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(KEY));
}

#[test]
fn the_next_key_then_the_fallback_endpoint_take_over() {
    let main = Server::start(|_, request| match request.header("authorization") {
        Some("Bearer first") => error(401, "bad key"),
        _ => error(403, "forbidden"),
    });
    let fallback = Server::start(|_, _| openai_answer("from the fallback"));
    let extra = json!({
        "api_key_env": ["NS_TEST_KEY_ONE", "NS_TEST_KEY_TWO"],
        "fallback": [{"base_url": fallback.url, "model": "other", "api_key_env": KEY_VAR}],
    });
    let agent = Agent::new(&items(), &settings(&main.url, "openai", extra));
    let output = agent.run_with_env(&[
        ("NS_TEST_KEY_ONE", "first"),
        ("NS_TEST_KEY_TWO", "second"),
        (KEY_VAR, KEY),
    ]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert_eq!(main.got().len(), 2, "each key once");
    assert_eq!(fallback.got()[0].body["model"], "other");
    let record = &lines(&agent.output())[0];
    assert_eq!(record["endpoint"], fallback.url);
    assert!(record.get("produced_by").is_none());
    assert!(log.contains("switching to"), "{log}");
}

#[test]
fn an_unset_key_variable_is_refused_at_setup() {
    let agent = Agent::new(
        &items(),
        &settings("http://127.0.0.1:9/v1", "openai", json!({})),
    );
    let output = agent.run();
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{log}");
    assert!(log.contains(KEY_VAR), "{log}");
}

#[test]
fn schema_failures_are_retried_and_named_by_path() {
    let server = Server::start(|n, _| {
        openai_answer(if n == 0 {
            r#"{"count": "three"}"#
        } else {
            "```json\n{\"count\": 3}\n```"
        })
    });
    let schema = json!({"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}});
    let agent = Agent::new(
        &items(),
        &settings(&server.url, "openai", json!({"schema": schema})),
    );
    let output = run(&agent);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("does not match the schema at /count"), "{log}");
    let got = server.got();
    assert_eq!(got[0].body["response_format"]["type"], "json_schema");
    assert_eq!(
        got[0].body["response_format"]["json_schema"]["schema"],
        schema
    );
    assert_eq!(lines(&agent.output())[0]["count"], 3);
}

#[test]
fn a_hang_past_request_timeout_and_a_hang_up_are_retried() {
    let server = Server::start(|n, _| match n {
        0 => (1, Vec::new(), String::new()),
        1 => (0, Vec::new(), String::new()),
        _ => openai_answer("third time"),
    });
    let extra = json!({"request_timeout": "300ms"});
    let mut task = settings(&server.url, "openai", extra);
    task["item_retries"] = json!(2);
    let agent = Agent::new(&items(), &task);
    let output = run(&agent);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("within request_timeout"), "{log}");
    assert!(log.contains("the connection to"), "{log}");
    assert_eq!(lines(&agent.output())[0]["output"], "third time");
}

#[test]
fn concurrency_keeps_that_many_requests_in_flight() {
    let server = Server::start(|_, _| {
        std::thread::sleep(std::time::Duration::from_millis(150));
        openai_answer("slow")
    });
    let many: Vec<Value> = (0..16).map(|i| json!({"id": i, "text": "t"})).collect();
    let mut task = settings(&server.url, "openai", json!({}));
    task["concurrency"] = json!(8);
    let agent = Agent::new(&Value::Array(many), &task);
    let output = run(&agent);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(lines(&agent.output()).len(), 16);
    assert!(
        server.most_at_once() >= 4,
        "{} at once",
        server.most_at_once()
    );
}
