//! Fallback command lists: the command in use gets item_retries + 1 attempts
//! per item, then the agent moves on to the next command for good, and every
//! record says which command produced it.

mod common;

use common::{line_count, lines, stderr, Agent};
use serde_json::{json, Value};

/// A command that logs each call to `log` and then runs `then`.
fn logged(log: &str, then: &str) -> Value {
    json!(["sh", "-c", format!("echo call >> {log}; {then}")])
}

const FAIL: &str = "cat >/dev/null; echo down; exit 1";
const ECHO: &str = "read line; printf '%s' \"$line\"";

fn label(command: &Value) -> String {
    command
        .as_array()
        .expect("argv")
        .iter()
        .map(|arg| arg.as_str().expect("text"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_switch_is_sticky_and_records_say_who_produced_them() {
    let first = logged("one.log", FAIL);
    let second = logged("two.log", ECHO);
    let agent = Agent::new(
        &json!([{"id": "a"}, {"id": "b"}, {"id": "c"}]),
        &json!({"command": [first, second], "item_retries": 1}),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Item a: two attempts with the first command, then the second; b and c
    // start with the second.
    assert_eq!(line_count(&agent.path("one.log")), 2);
    assert_eq!(line_count(&agent.path("two.log")), 3);
    let produced_by = label(&second);
    assert_eq!(
        lines(&agent.output()),
        [
            json!({"id": "a", "produced_by": produced_by}),
            json!({"id": "b", "produced_by": produced_by}),
            json!({"id": "c", "produced_by": produced_by}),
        ]
    );
    let log = stderr(&output);
    assert_eq!(log.matches("switching to").count(), 1, "{log}");
    assert!(log.contains("(command 2 of 2)"), "{log}");
}

#[test]
fn commands_are_tried_in_order_and_never_go_back() {
    // The second command fails item a only; the third works for every item.
    let fail_a = "read line; case \"$line\" in *'\"a\"'*) exit 2;; esac; printf '%s' \"$line\"";
    let commands = json!([
        logged("one.log", FAIL),
        logged("two.log", fail_a),
        logged("three.log", ECHO),
    ]);
    let agent = Agent::new(
        &json!([{"id": "a"}, {"id": "b"}]),
        &json!({"command": commands, "item_retries": 0}),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(line_count(&agent.path("one.log")), 1);
    assert_eq!(line_count(&agent.path("two.log")), 1);
    assert_eq!(line_count(&agent.path("three.log")), 2);
    let third = label(&commands[2]);
    let records = lines(&agent.output());
    assert!(
        records.iter().all(|r| r["produced_by"] == json!(third)),
        "{records:?}"
    );
}

#[test]
fn an_item_the_last_command_fails_is_recorded_as_failed() {
    let commands = json!([logged("one.log", FAIL), logged("two.log", FAIL)]);
    let agent = Agent::new(
        &json!([{"id": "a"}, {"id": "b"}]),
        &json!({"command": commands, "item_retries": 1}),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(line_count(&agent.path("one.log")), 2);
    // a: two attempts; b: two more, already with the last command.
    assert_eq!(line_count(&agent.path("two.log")), 4);
    assert!(lines(&agent.output()).is_empty());
    let failures = lines(&agent.failures());
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0]["id"], json!("a"));
    assert_eq!(failures[0]["attempts"], json!(4));
    assert_eq!(failures[1]["attempts"], json!(2));
    let reason = failures[1]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("code 1") && reason.contains("down"),
        "{reason}"
    );
}

#[test]
fn a_single_command_in_list_form_adds_no_produced_by() {
    let agent = Agent::new(
        &json!([{"id": 1}]),
        &json!({"command": [["sh", "-c", ECHO]]}),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(lines(&agent.output()), [json!({"id": 1})]);
}
