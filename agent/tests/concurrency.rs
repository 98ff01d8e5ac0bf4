//! agent.concurrency in the built agent: several items in flight still save
//! every record once, keep the demo backend's records and crashes, and share
//! the sticky switch to a fallback command.

mod common;

use common::{line_count, lines, stderr, Agent};
use serde_json::{json, Value};

fn items(n: usize) -> Value {
    (0..n)
        .map(|i| json!({"id": i, "text": format!("item {i}")}))
        .collect()
}

/// The agent file's records, ordered by id (they are saved as they finish).
fn records_by_id(agent: &Agent) -> Vec<Value> {
    let mut records = lines(&agent.output());
    records.sort_by_key(|record| record["id"].as_u64());
    records
}

#[test]
fn demo_saves_every_item_once_with_the_records_of_one_at_a_time() {
    let demo = json!({"latency": "20ms", "fail_rate": 0.2});
    let one = Agent::new(&items(24), &json!({"backend": "demo", "demo": demo}));
    let four = Agent::new(
        &items(24),
        &json!({"backend": "demo", "demo": demo, "concurrency": 4}),
    );
    let (out_one, out_four) = (one.run(), four.run());
    assert_eq!(out_one.status.code(), out_four.status.code());
    let records = records_by_id(&four);
    let ids: Vec<u64> = records.iter().filter_map(|r| r["id"].as_u64()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "each record once: {}", stderr(&out_four));
    assert_eq!(records, records_by_id(&one));
    assert_eq!(lines(&four.failures()).len(), lines(&one.failures()).len());
}

#[test]
fn a_demo_crash_still_aborts_the_agent() {
    let agent = Agent::new(
        &items(8),
        &json!({"backend": "demo", "concurrency": 4,
                "demo": {"latency": "0ms", "crash_rate": 1.0}}),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), None, "killed by SIGABRT");
    assert!(stderr(&output).contains("demo crash at item"));
    assert!(lines(&agent.output()).is_empty());
}

#[test]
fn workers_share_the_switch_to_the_next_command() {
    let first = json!(["sh", "-c", "echo call >> one.log; cat >/dev/null; exit 1"]);
    let second = json!(["sh", "-c", "read line; printf '%s' \"$line\""]);
    let agent = Agent::new(
        &items(9),
        &json!({"command": [first, second], "item_retries": 0, "concurrency": 3}),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Only the items in flight before the first switch tried the first command.
    let tried = line_count(&agent.path("one.log"));
    assert!(
        (1..=3).contains(&tried),
        "{tried} calls of the first command"
    );
    let records = records_by_id(&agent);
    assert_eq!(records.len(), 9);
    assert!(records
        .iter()
        .all(|r| r["produced_by"] == json!("sh -c read line; printf '%s' \"$line\"")));
}
