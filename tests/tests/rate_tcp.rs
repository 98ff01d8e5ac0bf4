//! The rate broker over TCP, for agents on other hosts (executor = "slurm"):
//! `nightshift permit` with NIGHTSHIFT_SOCKET=tcp:HOST:PORT says hello with
//! NIGHTSHIFT_SECRET first, or finds both in RUN/broker.json; and under a
//! real Slurm, agents take their permits from the supervisor's broker by TCP.
//!
//! The Slurm tests say so and pass where there is no Slurm, unless
//! NIGHTSHIFT_SLURM_TESTS is set (as in tests/tests/slurm.rs).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use nightshift_tests::{
    binary, json_array_ids, slurm_ready, wait_with_deadline, CancelJobs, Finished, Job, JobDir,
};
use serde_json::{json, Value};

/// A broker on a loopback port for one connection: it wants a hello with
/// `secret` first and grants what follows. Returns the lines it was sent.
fn one_connection_broker(secret: &'static str) -> (String, thread::JoinHandle<Vec<Value>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let broker = thread::spawn(move || {
        let mut seen = Vec::new();
        let Ok((stream, _)) = listener.accept() else {
            return seen;
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            line.clear();
            let refuse = seen.is_empty() && request != json!({"op": "hello", "secret": secret});
            seen.push(request);
            let reply: &[u8] = if refuse {
                b"{\"ok\":false,\"error\":\"wrong secret\"}\n"
            } else {
                b"{\"ok\":true,\"waited_ms\":0.1}\n"
            };
            if reader.get_mut().write_all(reply).is_err() || refuse {
                break;
            }
        }
        seen
    });
    (address, broker)
}

/// `nightshift permit --tokens 5` with exactly the given NIGHTSHIFT_ variables.
fn nightshift_permit(job: &JobDir, env: &[(&str, &str)]) -> Finished {
    let mut command = Command::new(binary("nightshift"));
    command
        .args(["permit", "--tokens", "5"])
        .current_dir(job.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "NIGHTSHIFT_SOCKET",
        "NIGHTSHIFT_SECRET",
        "NIGHTSHIFT_RUN_DIR",
        "NIGHTSHIFT_AGENT",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    wait_with_deadline(
        command.spawn().expect("start nightshift"),
        Duration::from_secs(30),
    )
}

#[test]
fn nightshift_permit_over_tcp_says_hello_with_the_secret_first() {
    let job = JobDir::new();
    let (address, broker) = one_connection_broker("s3cret");
    let socket = format!("tcp:{address}");
    nightshift_permit(
        &job,
        &[
            ("NIGHTSHIFT_SOCKET", &socket),
            ("NIGHTSHIFT_SECRET", "s3cret"),
            ("NIGHTSHIFT_AGENT", "seg/agent"),
        ],
    )
    .expect_code(0);
    assert_eq!(
        broker.join().expect("broker thread"),
        [
            json!({"op": "hello", "secret": "s3cret"}),
            json!({"op": "permit", "tokens": 5, "agent": "seg/agent"}),
        ]
    );
}

#[test]
fn nightshift_permit_with_a_wrong_secret_is_refused() {
    let job = JobDir::new();
    let (address, broker) = one_connection_broker("s3cret");
    let socket = format!("tcp:{address}");
    let finished = nightshift_permit(
        &job,
        &[
            ("NIGHTSHIFT_SOCKET", &socket),
            ("NIGHTSHIFT_SECRET", "guess"),
        ],
    );
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("wrong secret"),
        "{}",
        finished.stderr
    );
    let seen = broker.join().expect("broker thread");
    assert_eq!(
        seen.len(),
        1,
        "no request after the refused hello: {seen:?}"
    );
}

#[test]
fn nightshift_permit_finds_a_tcp_broker_in_broker_json() {
    let job = JobDir::new();
    let (address, broker) = one_connection_broker("s3cret");
    std::fs::create_dir(job.run_dir()).expect("run dir");
    std::fs::write(
        job.run_dir().join("broker.json"),
        json!({"tcp": address, "secret": "s3cret"}).to_string(),
    )
    .expect("broker.json");
    let run = job.run_dir().display().to_string();
    // With neither variable, and with the address but not the secret.
    nightshift_permit(&job, &[("NIGHTSHIFT_RUN_DIR", &run)]).expect_code(0);
    assert_eq!(broker.join().expect("broker thread").len(), 2);
    let (address, broker) = one_connection_broker("s3cret");
    std::fs::write(
        job.run_dir().join("broker.json"),
        json!({"tcp": address, "secret": "s3cret"}).to_string(),
    )
    .expect("broker.json");
    let socket = format!("tcp:{address}");
    nightshift_permit(
        &job,
        &[("NIGHTSHIFT_RUN_DIR", &run), ("NIGHTSHIFT_SOCKET", &socket)],
    )
    .expect_code(0);
    assert_eq!(
        broker.join().expect("broker thread")[0],
        json!({"op": "hello", "secret": "s3cret"})
    );
}

/// A budget, and Slurm with `broker_host` when it is given.
fn with_slurm_and_rate(job: Job, broker_host: Option<&str>) -> Job {
    let job = job
        .max_parallel(2)
        .rate("requests_per_minute", 600)
        .rate("burst", 1)
        .executor("kind", "slurm")
        .executor("poll_interval", "200ms");
    match broker_host {
        Some(host) => job.executor("broker_host", host),
        None => job,
    }
}

/// This host's name when it resolves (the broker's default host), else
/// None: scripts/slurm_up.sh gives the node the address 127.0.0.1 only.
fn resolvable_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_owned();
    (name.as_str(), 0)
        .to_socket_addrs()
        .is_ok_and(|mut addresses| addresses.next().is_some())
        .then_some(name)
}

/// Grants logged by the broker.
fn grants(run: &Path) -> usize {
    std::fs::read_to_string(run.join("rate.log"))
        .expect("rate.log")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["op"] == "grant")
        .count()
}

#[test]
fn under_slurm_shell_agents_take_permits_over_tcp() {
    if !slurm_ready() {
        return;
    }
    // The default host, where it can be reached by name.
    let host = resolvable_host_name();
    let job = JobDir::new();
    let ids = job.items(8);
    job.script(
        "agent.sh",
        r#"#!/bin/sh
python3 - <<'PY'
import json, os, subprocess
task = json.load(open(os.environ['NIGHTSHIFT_TASK']))
with open(os.environ['NIGHTSHIFT_OUTPUT'], 'a') as out:
    for item in task['items']:
        subprocess.run([os.environ['NIGHTSHIFT_BIN'], 'permit', '--tokens', '10'], check=True)
        out.write(json.dumps({'id': item['id'], 'socket': os.environ['NIGHTSHIFT_SOCKET'],
                              'secret': len(os.environ.get('NIGHTSHIFT_SECRET', ''))}) + '\n')
        out.flush()
PY
"#,
    );
    let agents = Job::new("items.jsonl")
        .items_per_agent(4)
        .program(["./agent.sh"])
        .env(
            "NIGHTSHIFT_BIN",
            &binary("nightshift").display().to_string(),
        );
    with_slurm_and_rate(agents, host.is_none().then_some("127.0.0.1")).write(job.path());
    let run = job.run_dir();
    let _cancel = CancelJobs(&run);
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
    let records: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(run.join("final.json")).expect("final"))
            .expect("final.json");
    for record in &records {
        let socket = record["socket"].as_str().expect("socket");
        let expected = format!("tcp:{}:", host.as_deref().unwrap_or("127.0.0.1"));
        assert!(socket.starts_with(&expected), "{record}");
        assert_eq!(record["secret"], 32, "{record}");
    }
    assert_eq!(
        grants(&run),
        8,
        "one permit per item, granted by the broker"
    );
    assert!(
        !run.join("broker.json").exists(),
        "broker.json goes when the run ends"
    );
}

#[test]
fn under_slurm_nightshift_agent_takes_permits_over_tcp() {
    if !slurm_ready() {
        return;
    }
    let job = JobDir::new();
    job.items(8);
    let agents = Job::new("items.jsonl")
        .items_per_agent(4)
        .demo()
        .latency("10ms")
        .fail_rate(0.0);
    with_slurm_and_rate(agents, Some("127.0.0.1")).write(job.path());
    let run = job.run_dir();
    let _cancel = CancelJobs(&run);
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    assert_eq!(grants(&run), 8, "one permit per demo call, over TCP");
}
