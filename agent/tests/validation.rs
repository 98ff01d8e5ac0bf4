//! [agent.validate] on the real binary: a rejected result is a failed
//! attempt, retried, then listed in the failures file and never saved.

mod common;

use common::{line_count, lines, stderr, Agent};
use serde_json::json;

#[test]
fn a_rejected_result_is_retried_and_a_good_one_saved() {
    // The first call answers with a refusal, the next ones properly.
    let script = "echo call >> calls.log; n=$(wc -l < calls.log); cat >/dev/null; \
        if [ $n -eq 1 ]; then echo 'As an AI model I cannot'; else echo 'Hola'; fi";
    let agent = Agent::new(
        &json!([{"id": 1}]),
        &json!({
            "command": ["sh", "-c", script],
            "item_retries": 1,
            "validate": {"required": ["output"], "reject": ["(?i)as an ai"]},
        }),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(line_count(&agent.path("calls.log")), 2);
    assert_eq!(lines(&agent.output()), [json!({"id": 1, "output": "Hola"})]);
    assert!(stderr(&output).contains("matches reject pattern \"(?i)as an ai\""));
}

#[test]
fn an_item_rejected_every_time_goes_to_the_failures_file() {
    let agent = Agent::new(
        &json!([{"id": "a"}, {"id": "b"}]),
        &json!({
            "command": ["sh", "-c", "read line; printf '%s' \"$line\""],
            "item_retries": 1,
            "validate": {
                "command": ["sh", "-c", "grep -q '\"b\"' || exit 0; echo 'b is not wanted'; exit 4"],
            },
        }),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(lines(&agent.output()), [json!({"id": "a"})]);
    let failures = lines(&agent.failures());
    assert_eq!(
        failures,
        [
            json!({"id": "b", "attempts": 2, "reason": "validator exited with code 4: b is not wanted"})
        ]
    );
}

#[test]
fn a_missing_required_field_is_named() {
    let agent = Agent::new(
        &json!([{"id": 1}]),
        &json!({
            "command": ["sh", "-c", "cat >/dev/null; echo '{\"output\": \"\"}'"],
            "item_retries": 0,
            "validate": {"required": ["output", "score"]},
        }),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        lines(&agent.failures())[0]["reason"],
        json!("required field \"output\" is empty")
    );
}
