//! Runs the built nightshift-agent on real tasks in a temporary folder, the
//! way the supervisor does: environment variables in, files and exit code out.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{lines, stderr, Agent, AGENT};
use serde_json::{json, Value};

/// Echoes the item line back: the item itself becomes the record.
fn echo_command() -> Value {
    json!(["sh", "-c", "read line; printf '%s' \"$line\""])
}

#[test]
fn exec_saves_records_in_order_and_skips_them_on_resume() {
    let items = json!([{"id": "a", "text": "one"}, {"id": 2, "text": "two"}, {"id": "c"}]);
    let agent = Agent::new(&items, &json!({"command": echo_command()}));

    let first = agent.run();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(
        lines(&agent.output()),
        items.as_array().expect("array").clone()
    );
    assert!(!agent.failures().exists());

    let before = std::fs::read(agent.output()).expect("output after the first run");
    let second = agent.run();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let after = std::fs::read(agent.output()).expect("output after the second run");
    assert_eq!(before, after, "a resumed agent appends nothing");
}

#[test]
fn plain_text_is_wrapped_with_the_id() {
    let command = json!(["sh", "-c", "cat >/dev/null; echo '  hello there  '"]);
    let agent = Agent::new(&json!([{"id": 5}]), &json!({"command": command}));
    let output = agent.run();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        lines(&agent.output()),
        [json!({"id": 5, "output": "hello there"})]
    );
}

#[test]
fn an_item_that_keeps_failing_goes_to_the_failures_file() {
    let command = json!([
        "sh",
        "-c",
        "read line; case \"$line\" in *'\"b\"'*) echo oops; exit 3;; esac; printf '%s' \"$line\""
    ]);
    let items = json!([{"id": "a"}, {"id": "b"}, {"id": "c"}]);
    let agent = Agent::new(&items, &json!({"command": command, "item_retries": 1}));

    let output = agent.run();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        lines(&agent.output()),
        [json!({"id": "a"}), json!({"id": "c"})]
    );
    let failures = lines(&agent.failures());
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["id"], json!("b"));
    assert_eq!(failures[0]["attempts"], json!(2));
    let reason = failures[0]["reason"].as_str().expect("reason is text");
    assert!(
        reason.contains("code 3") && reason.contains("oops"),
        "{reason}"
    );
    assert!(stderr(&output).contains("code 3"));
}

#[test]
fn a_record_with_another_id_is_a_failure() {
    let command = json!(["sh", "-c", "cat >/dev/null; echo '{\"id\": \"other\"}'"]);
    let agent = Agent::new(
        &json!([{"id": "a"}]),
        &json!({"command": command, "item_retries": 0}),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(lines(&agent.output()).is_empty());
    assert_eq!(lines(&agent.failures())[0]["attempts"], json!(1));
}

#[test]
fn item_timeout_kills_the_command() {
    let agent = Agent::new(
        &json!([{"id": 1}]),
        &json!({"command": ["sleep", "5"], "item_timeout": "300ms", "item_retries": 0}),
    );
    let started = Instant::now();
    let output = agent.run();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let failures = lines(&agent.failures());
    assert_eq!(failures[0]["reason"], json!("item timeout after 300ms"));
}

#[test]
fn demo_records_are_the_same_in_every_run() {
    let items: Vec<Value> = (1..=20)
        .map(|n| json!({"id": format!("item-{n:02}"), "text": format!("sentence {n}")}))
        .collect();
    let settings = json!({
        "backend": "demo",
        "item_retries": 1,
        "demo": {"latency": "0ms", "fail_rate": 0.3, "memory": "1MiB"},
    });
    let first = Agent::new(&json!(items), &settings);
    let second = Agent::new(&json!(items), &settings);
    let (one, two) = (first.run(), second.run());
    assert_eq!(one.status.code(), two.status.code(), "{}", stderr(&one));
    let output = std::fs::read(first.output()).expect("first output");
    assert!(!output.is_empty());
    assert_eq!(
        output,
        std::fs::read(second.output()).expect("second output")
    );
    for record in lines(&first.output()) {
        assert!(record["output"]
            .as_str()
            .is_some_and(|text| text.starts_with("demo result for item-")));
    }
}

#[test]
fn demo_crash_aborts_the_agent() {
    let agent = Agent::new(
        &json!([{"id": 1}]),
        &json!({"backend": "demo", "demo": {"latency": "0ms", "crash_rate": 1.0}}),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), None, "killed by SIGABRT");
    assert!(stderr(&output).contains("demo crash at item 1"));
    assert!(lines(&agent.output()).is_empty());
}

#[test]
fn bad_setup_exits_2_and_names_the_problem() {
    let output = Command::new(AGENT)
        .env_remove("NIGHTSHIFT_TASK")
        .output()
        .expect("run nightshift-agent");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("NIGHTSHIFT_TASK"));

    let agent = Agent::new(&json!([{"id": 1}]), &json!({"backend": "exec"}));
    let output = agent.run();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("agent.command"),
        "{}",
        stderr(&output)
    );

    let version = Command::new(AGENT)
        .arg("--version")
        .output()
        .expect("run nightshift-agent --version");
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("nightshift-agent "));
}
