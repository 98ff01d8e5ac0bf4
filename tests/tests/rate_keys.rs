//! The rate broker paces each API key apart, to the limits learned for it,
//! with no `[rate]` in the job: shell agents drive the real supervisor's
//! broker with `nightshift permit --key` (and `--learned-requests`, what an
//! LLM backend reports from an answer's headers), and the broker's own
//! RUN/rate.log says when each permit was granted.

use std::path::Path;

use nightshift_tests::{binary, json_array_ids, Job, JobDir};
use serde_json::Value;

const KEY_A: &str = "http://a.test/v1 A_KEY";
const KEY_B: &str = "http://b.test/v1 B_KEY";

/// RUN/rate.log's lines with this op.
fn logged(run: &Path, op: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("rate.log")).expect("rate.log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["op"] == op)
        .collect()
}

/// Grant times (seconds) of one key, in order.
fn grants(run: &Path, key: &str) -> Vec<f64> {
    let mut times: Vec<f64> = logged(run, "grant")
        .iter()
        .filter(|e| e["key"] == key)
        .filter_map(|e| e["t"].as_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// A shell agent: first what MODE says (learned limits, a backoff), then a
/// keyed permit per item — in mode "backoff" the agents of items 5–8 and
/// 13–16 use key B, the others A; otherwise all use A.
fn keyed_agent(job: &JobDir) {
    job.script(
        "agent.sh",
        r#"#!/bin/sh
python3 - <<'PY'
import json, os, subprocess, time
A, B = 'http://a.test/v1 A_KEY', 'http://b.test/v1 B_KEY'
def permit(*args):
    subprocess.run([os.environ['NIGHTSHIFT_BIN'], 'permit', *args], check=True)
task = json.load(open(os.environ['NIGHTSHIFT_TASK']))
ids = [item['id'] for item in task['items']]
mode = os.environ['MODE']
if mode == 'pace':
    permit('--key', A, '--learned-requests', '300,299,0.2')
elif mode == 'hold':
    permit('--key', A, '--learned-requests', '600,0,1.5')
elif mode == 'backoff':
    for key in (A, B):
        permit('--key', key, '--learned-requests', '6000,5999,0.01')
    if 'item-001' in ids:
        permit('--key', A, '--backoff', '2')
    else:
        time.sleep(1)  # the backoff comes first
agent_b = mode == 'backoff' and (int(ids[0].split('-')[1]) - 1) // 4 % 2 == 1
with open(os.environ['NIGHTSHIFT_OUTPUT'], 'a') as out:
    for item in ids:
        permit('--key', B if agent_b else A, '--tokens', '10')
        out.write(json.dumps({'id': item}) + '\n')
        out.flush()
PY
"#,
    );
}

/// 20 items, 5 agents at once, no [rate].
fn run(mode: &str) -> JobDir {
    let job = JobDir::new();
    let ids = job.items(20);
    keyed_agent(&job);
    Job::new("items.jsonl")
        .items_per_agent(4)
        .program(["./agent.sh"])
        .env(
            "NIGHTSHIFT_BIN",
            &binary("nightshift").display().to_string(),
        )
        .env("MODE", mode)
        .max_parallel(5)
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
    job
}

#[test]
fn a_learned_limit_paces_its_key_without_rate() {
    let job = run("pace");
    let times = grants(&job.run_dir(), KEY_A);
    assert_eq!(times.len(), 20, "every permit names its key");
    // 300 a minute: 5 a second, after a bucket of two seconds' worth.
    for i in 0..times.len() {
        for j in i..times.len() {
            let granted = (j - i + 1) as f64;
            let allowed = 10.0 + (times[j] - times[i]) * 5.0 + 1e-3;
            assert!(
                granted <= allowed,
                "{granted} grants in {:.3}s: {times:?}",
                times[j] - times[i]
            );
        }
    }
    assert!(
        times[19] - times[0] >= 1.8,
        "10 permits past the bucket take 2 s at 5/s: {times:?}"
    );
    let learned = logged(&job.run_dir(), "learned");
    assert_eq!(learned[0]["key"], KEY_A);
    assert_eq!(learned[0]["requests_per_minute"], 300.0);
}

#[test]
fn nothing_remaining_holds_the_key_until_the_reset() {
    let job = run("hold");
    let holds = logged(&job.run_dir(), "hold");
    let first = holds[0]["t"].as_f64().expect("t");
    assert_eq!(holds[0]["seconds"], 1.5);
    let times = grants(&job.run_dir(), KEY_A);
    assert_eq!(times.len(), 20);
    assert!(
        times[0] >= first + 1.5 - 1e-3,
        "held until the reset at {first} + 1.5 s: {times:?}"
    );
}

#[test]
fn a_backoff_pauses_its_key_and_not_another() {
    let job = run("backoff");
    let backoffs = logged(&job.run_dir(), "backoff");
    assert_eq!(backoffs.len(), 1);
    assert_eq!(backoffs[0]["key"], KEY_A);
    assert_eq!(backoffs[0]["seconds"], 2.0);
    let at = backoffs[0]["t"].as_f64().expect("t");
    let (a, b) = (grants(&job.run_dir(), KEY_A), grants(&job.run_dir(), KEY_B));
    assert_eq!((a.len(), b.len()), (12, 8));
    assert!(
        a.iter().all(|t| *t >= at + 2.0 - 1e-3),
        "key A waits out its pause at {at}: {a:?}"
    );
    assert!(
        b.iter().any(|t| *t > at && *t < at + 2.0),
        "key B goes on meanwhile, from {at}: {b:?}"
    );
    assert!(logged(&job.run_dir(), "grant")
        .iter()
        .all(|g| g.get("key").is_some()));
}
