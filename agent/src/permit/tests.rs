//! The permit client against small brokers run in a thread.

use super::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::thread;

/// Serves `connections` connections in turn; each answers `per_connection`
/// requests with `{"ok":true,…}` and then hangs up. Returns the requests seen.
fn broker(
    listener: UnixListener,
    connections: usize,
    per_connection: usize,
) -> thread::JoinHandle<Vec<Value>> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..connections {
            let Ok((stream, _)) = listener.accept() else {
                break;
            };
            let mut reader = BufReader::new(stream);
            for _ in 0..per_connection {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let quiet = request["quiet"] == true;
                seen.push(request);
                // A quiet report gets no reply, as from the real broker.
                if quiet {
                    continue;
                }
                let _ = reader
                    .get_mut()
                    .write_all(b"{\"ok\":true,\"waited_ms\":1.5,\"paused_ms\":30000}\n");
            }
        }
        seen
    })
}

#[test]
fn tokens_are_estimated_from_the_item_json() {
    assert_eq!(estimate_tokens(&json!({})), 1);
    // {"id":1} is 8 characters: 2 tokens; one more character rounds up.
    assert_eq!(estimate_tokens(&json!({"id": 1})), 2);
    assert_eq!(estimate_tokens(&json!({"id": 12})), 3);
}

#[test]
fn used_tokens_come_from_usage_or_tokens() {
    let record = |value: Value| match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    assert_eq!(
        used_tokens(&record(json!({"usage": {"total_tokens": 42}, "tokens": 7}))),
        Some(42)
    );
    assert_eq!(used_tokens(&record(json!({"tokens": 7}))), Some(7));
    assert_eq!(used_tokens(&record(json!({"tokens": 7.2}))), Some(8));
    assert_eq!(used_tokens(&record(json!({"tokens": "7"}))), None);
    assert_eq!(used_tokens(&record(json!({"tokens": -1}))), None);
    assert_eq!(used_tokens(&record(json!({"output": "x"}))), None);
}

#[test]
fn no_socket_means_no_permits() {
    let mut permits = Permits::new(None, "a", PermitPolicy::Always);
    assert!(!permits.is_on());
    assert_eq!(permits.permit(10), None);
    assert_eq!(permits.backoff(0.0), None);
}

#[test]
fn an_unreachable_broker_turns_permits_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut permits = Permits::new(
        Some(dir.path().join("none.sock")),
        "a",
        PermitPolicy::Always,
    );
    assert_eq!(permits.permit(10), None);
    assert!(!permits.is_on());
}

#[test]
fn requests_share_one_connection_and_a_lost_one_is_reopened_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broker.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    // The first connection reads three requests (the last a quiet report,
    // with no reply), then hangs up.
    let seen = broker(listener, 2, 3);
    let mut permits = Permits::new(Some(path), "seg/agent", PermitPolicy::Always);
    assert_eq!(permits.permit(3), Some(1.5));
    assert_eq!(permits.backoff(2.5), Some(30000.0));
    permits.report(40, 3);
    assert!(permits.is_on());
    // Sent on the dead connection, then again on a new one.
    assert_eq!(permits.backoff(0.0), Some(30000.0));
    drop(permits);
    let seen = seen.join().expect("broker thread");
    assert_eq!(
        seen,
        [
            json!({"op": "permit", "tokens": 3, "agent": "seg/agent"}),
            json!({"op": "backoff", "seconds": 2.5, "agent": "seg/agent"}),
            json!({"op": "report", "tokens": 40, "estimated": 3, "agent": "seg/agent", "quiet": true}),
            json!({"op": "backoff", "seconds": 0, "agent": "seg/agent"}),
        ]
    );
}

#[test]
fn a_refusal_is_not_a_grant_but_keeps_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broker.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let server = thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = reader
                .get_mut()
                .write_all(b"{\"ok\":false,\"error\":\"no\"}\n");
            line.clear();
        }
    });
    let mut permits = Permits::new(Some(path), "a", PermitPolicy::Always);
    assert_eq!(permits.permit(1), None);
    assert!(permits.is_on());
    assert_eq!(permits.permit(1), None);
    drop(permits);
    server.join().expect("broker thread");
}

#[test]
fn probing_stops_asking_when_the_server_announces_no_limit_until_one_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broker.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let seen = broker(listener, 1, 3);
    let mut permits = Permits::new(Some(path), "a", PermitPolicy::Probe);
    // The first call of an LLM agent asks: its server's limits are unknown.
    assert_eq!(permits.permit(3), Some(1.5));
    // Its answer announced none (a local server): the next calls do not ask.
    permits.no_limit_announced();
    assert_eq!(permits.permit(3), None);
    assert_eq!(permits.permit(3), None);
    // A rate-limit answer: every call asks again, whatever answers say after.
    assert_eq!(permits.backoff(1.0), Some(30000.0));
    permits.no_limit_announced();
    assert_eq!(permits.permit(4), Some(1.5));
    drop(permits);
    let ops: Vec<Value> = seen
        .join()
        .expect("broker thread")
        .iter()
        .map(|request| request["op"].clone())
        .collect();
    assert_eq!(ops, [json!("permit"), json!("backoff"), json!("permit")]);
}

#[test]
fn on_limit_asks_nothing_until_a_limit_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broker.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let seen = broker(listener, 1, 2);
    let mut permits = Permits::new(Some(path), "a", PermitPolicy::OnLimit);
    assert_eq!(permits.permit(3), None);
    assert_eq!(permits.backoff(1.0), Some(30000.0));
    assert_eq!(permits.permit(3), Some(1.5));
    drop(permits);
    assert_eq!(seen.join().expect("broker thread").len(), 2);
}
