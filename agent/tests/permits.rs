//! nightshift-agent against a fake rate broker (a Unix socket served from a
//! thread): one permit before every backend call, token estimates, usage
//! reports, backoff after rate-limit answers that do not use up item_retries.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

use common::{line_count, lines, stderr, Agent};
use serde_json::{json, Value};

/// What the fake broker saw.
struct Seen {
    /// Each request, with `calls_before`: the backend calls made when it came.
    requests: Vec<Value>,
    connections: usize,
}

struct Broker {
    path: PathBuf,
    thread: JoinHandle<Seen>,
}

impl Broker {
    /// Serves connections one after the other until a `{"op":"stop"}`.
    /// `calls` is the file the test's command appends a line to per call.
    fn start(dir: &Path, calls: PathBuf) -> Self {
        let path = dir.join("broker.sock");
        let listener = UnixListener::bind(&path).expect("bind the broker socket");
        let thread = thread::spawn(move || {
            let mut seen = Seen {
                requests: Vec::new(),
                connections: 0,
            };
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                seen.connections += 1;
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    let mut request: Value = serde_json::from_str(&line).expect("JSON request");
                    line.clear();
                    let reply = match request["op"].as_str() {
                        Some("stop") => {
                            seen.connections -= 1;
                            return seen;
                        }
                        Some("permit") => json!({"ok": true, "waited_ms": 0.0}),
                        Some("backoff") => json!({"ok": true, "paused_ms": 30000.0}),
                        _ => json!({"ok": true}),
                    };
                    request["calls_before"] = json!(common::line_count(&calls));
                    // A quiet report gets no reply, as from the real broker.
                    let quiet = request["quiet"] == true;
                    seen.requests.push(request);
                    if !quiet {
                        let _ = writeln!(reader.get_mut(), "{reply}");
                    }
                }
            }
            seen
        });
        Self { path, thread }
    }

    fn stop(self) -> Seen {
        let mut stream = UnixStream::connect(&self.path).expect("connect to stop the broker");
        writeln!(stream, "{}", json!({"op": "stop"})).expect("send stop");
        self.thread.join().expect("broker thread")
    }
}

const AGENT_NAME: &str = "segment_01/orch_01/agent_01";

#[test]
fn one_permit_before_each_call_reports_and_free_rate_limited_retries() {
    // Call 1 exits 75, call 2 prints the marker, call 3 fails, call 4 works.
    let script = "echo call >> calls.log; n=$(wc -l < calls.log); cat >/dev/null; \
        case $n in \
          1) exit 75;; \
          2) echo 'NIGHTSHIFT_RATE_LIMITED retry_after=7'; echo '{\"output\": \"x\"}';; \
          3) echo nope; exit 3;; \
          *) echo '{\"output\": \"fine\", \"usage\": {\"total_tokens\": 42}}';; \
        esac";
    let item = json!({"id": "a", "text": "hello world"});
    // {"id":"a","text":"hello world"}: 31 characters, 8 tokens.
    let estimate = 8;
    assert_eq!(serde_json::to_string(&item).expect("JSON").len(), 31);
    let agent = Agent::new(
        &json!([item]),
        &json!({"command": ["sh", "-c", script], "item_retries": 1}),
    )
    .taking_permits();
    let broker = Broker::start(agent.dir.path(), agent.path("calls.log"));
    let output = agent.run_with_socket(&broker.path);
    let seen = broker.stop();

    // Two rate-limited calls were free: one failed attempt and one good
    // one fit in item_retries = 1.
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(line_count(&agent.path("calls.log")), 4);
    assert_eq!(seen.connections, 1, "one connection for the agent's life");
    let permit = |calls_before: usize| json!({"op": "permit", "tokens": estimate, "agent": AGENT_NAME, "calls_before": calls_before});
    assert_eq!(
        seen.requests,
        [
            permit(0),
            json!({"op": "backoff", "seconds": 0, "agent": AGENT_NAME, "calls_before": 1}),
            permit(1),
            json!({"op": "backoff", "seconds": 7, "agent": AGENT_NAME, "calls_before": 2}),
            permit(2),
            permit(3),
            json!({"op": "report", "tokens": 42, "estimated": estimate, "agent": AGENT_NAME, "quiet": true, "calls_before": 4}),
        ]
    );
    assert_eq!(
        lines(&agent.output()),
        [json!({"id": "a", "output": "fine", "usage": {"total_tokens": 42}})]
    );
    let log = stderr(&output);
    assert!(log.contains("rate limited (exit code 75)"), "{log}");
    assert!(
        log.contains("NIGHTSHIFT_RATE_LIMITED retry_after=7"),
        "{log}"
    );
}

#[test]
fn without_limits_calls_take_permits_only_after_a_rate_limit_answer() {
    // Call 1 works, call 2 is rate limited, calls 3 and 4 work.
    let script = "echo call >> calls.log; n=$(wc -l < calls.log); cat >/dev/null; \
        case $n in \
          2) echo 'NIGHTSHIFT_RATE_LIMITED retry_after=1'; echo '{}';; \
          *) echo '{\"output\": \"fine\", \"usage\": {\"total_tokens\": 5}}';; \
        esac";
    let items = json!([{"id": "a"}, {"id": "b"}, {"id": "c"}]);
    let agent = Agent::new(&items, &json!({"command": ["sh", "-c", script]}));
    let broker = Broker::start(agent.dir.path(), agent.path("calls.log"));
    let output = agent.run_with_socket(&broker.path);
    let seen = broker.stop();

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(line_count(&agent.path("calls.log")), 4);
    // {"id":"b"} is 10 characters: 3 tokens.
    let permit = |calls_before: usize| json!({"op": "permit", "tokens": 3, "agent": AGENT_NAME, "calls_before": calls_before});
    let report = |calls_before: usize| json!({"op": "report", "tokens": 5, "estimated": 3, "agent": AGENT_NAME, "quiet": true, "calls_before": calls_before});
    // Nothing for call 1; from the rate-limit answer on, a permit per call.
    assert_eq!(
        seen.requests,
        [
            json!({"op": "backoff", "seconds": 1, "agent": AGENT_NAME, "calls_before": 2}),
            permit(2),
            report(3),
            permit(3),
            report(4),
        ]
    );
}

#[test]
fn rate_limited_more_than_20_times_is_a_counted_failure() {
    let script = "echo call >> calls.log; cat >/dev/null; exit 75";
    let agent = Agent::new(
        &json!([{"id": 1}]),
        &json!({"command": ["sh", "-c", script], "item_retries": 0}),
    )
    .taking_permits();
    let broker = Broker::start(agent.dir.path(), agent.path("calls.log"));
    let output = agent.run_with_socket(&broker.path);
    let seen = broker.stop();

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    // 20 free retries after the first answer, then the one counted attempt fails.
    assert_eq!(line_count(&agent.path("calls.log")), 21);
    let ops: Vec<&str> = seen
        .requests
        .iter()
        .filter_map(|request| request["op"].as_str())
        .collect();
    assert_eq!(ops.iter().filter(|op| **op == "permit").count(), 21);
    assert_eq!(ops.iter().filter(|op| **op == "backoff").count(), 21);
    let failures = lines(&agent.failures());
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["reason"], json!("rate limited 20 times"));
    assert_eq!(failures[0]["attempts"], json!(1));
}

#[test]
fn demo_takes_a_permit_per_call_and_its_records_do_not_change() {
    let items: Vec<Value> = (1..=3).map(|n| json!({"id": n})).collect();
    let settings = json!({"backend": "demo", "demo": {"latency": "0ms"}});
    let with_broker = Agent::new(&json!(items), &settings).taking_permits();
    let broker = Broker::start(with_broker.dir.path(), with_broker.path("none.log"));
    let output = with_broker.run_with_socket(&broker.path);
    let seen = broker.stop();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let tokens: Vec<&Value> = seen.requests.iter().map(|r| &r["tokens"]).collect();
    // {"id":1} is 8 characters: 2 tokens each; demo records carry no usage.
    assert_eq!(tokens, [&json!(2), &json!(2), &json!(2)]);
    assert!(seen.requests.iter().all(|r| r["op"] == "permit"));

    let alone = Agent::new(&json!(items), &settings);
    let output = alone.run();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(with_broker.output()).expect("output with a broker"),
        std::fs::read(alone.output()).expect("output without one")
    );

    // A job without limits: the broker is there, and hears nothing.
    let unlimited = Agent::new(&json!(items), &settings);
    let broker = Broker::start(unlimited.dir.path(), unlimited.path("none.log"));
    let output = unlimited.run_with_socket(&broker.path);
    let seen = broker.stop();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(seen.requests, Vec::<Value>::new());
    assert_eq!(seen.connections, 0);
    assert_eq!(
        std::fs::read(unlimited.output()).expect("output without limits"),
        std::fs::read(alone.output()).expect("output without a broker")
    );
}

#[test]
fn an_unreachable_broker_is_a_warning_not_a_failure() {
    let agent = Agent::new(
        &json!([{"id": 1}, {"id": 2}]),
        &json!({"command": ["sh", "-c", "read line; printf '%s' \"$line\""]}),
    )
    .taking_permits();
    let output = agent.run_with_socket(&agent.path("no-broker.sock"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(lines(&agent.output()), [json!({"id": 1}), json!({"id": 2})]);
    let log = stderr(&output);
    assert_eq!(
        log.matches("going on without rate-limit permits").count(),
        1,
        "{log}"
    );
}

#[test]
fn without_a_broker_a_rate_limited_command_waits_retry_after_itself() {
    let script = "echo call >> calls.log; n=$(wc -l < calls.log); cat >/dev/null; \
        if [ $n -lt 3 ]; then echo 'NIGHTSHIFT_RATE_LIMITED retry_after=0.05'; \
        else echo '{\"output\": \"ok\"}'; fi";
    let agent = Agent::new(
        &json!([{"id": 1}]),
        &json!({"command": ["sh", "-c", script], "item_retries": 0}),
    );
    let output = agent.run();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(line_count(&agent.path("calls.log")), 3);
    assert_eq!(lines(&agent.output()), [json!({"id": 1, "output": "ok"})]);
    assert!(
        stderr(&output).contains("waited 50ms"),
        "{}",
        stderr(&output)
    );
}
