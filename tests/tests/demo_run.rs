//! The demo backend end to end: every input id exactly once, in input order,
//! at every merge level, and the run directory of DESIGN.md.

use nightshift_tests::{json_array_ids, jsonl_ids, launched_pids, Job, JobDir};
use serde_json::Value;

fn demo_job() -> Job {
    Job::new("items.jsonl")
        .name("demo-test")
        .layout(2, 2, 3)
        .demo()
        .item_retries(5)
        .latency("5ms")
        .fail_rate(0.2)
        .max_parallel(4)
        .output("out/final.jsonl", "jsonl")
}

#[test]
fn demo_job_merges_every_id_once_in_order_at_every_level() {
    let job = JobDir::new();
    let ids = job.items(37);
    demo_job().write(job.path());
    let run = job.run_dir();
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(0);
    let first_line = finished.stdout.lines().next().unwrap_or_default();
    let last_line = finished.stdout.lines().last().unwrap_or_default();
    assert!(
        first_line.contains("run"),
        "run directory printed first: {first_line}"
    );
    assert_eq!(
        first_line, last_line,
        "run directory printed first and last"
    );

    let plan: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("plan.json")).expect("plan.json"))
            .expect("plan is JSON");
    let segments = plan["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 2);
    let mut final_order = Vec::new();
    for segment in segments {
        let s = segment["number"].as_u64().expect("segment number");
        let mut segment_order = Vec::new();
        for orchestrator in segment["orchestrators"].as_array().expect("orchestrators") {
            let o = orchestrator["number"]
                .as_u64()
                .expect("orchestrator number");
            let mut orchestrator_order = Vec::new();
            for agent in orchestrator["agents"].as_array().expect("agents") {
                let a = agent["agent"].as_u64().expect("agent number");
                let planned: Vec<String> = agent["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|v| v.as_str().expect("string id").to_owned())
                    .collect();
                assert!(!planned.is_empty(), "no agent without items");
                let dir = run.join(format!("segment_{s:02}/orch_{o:02}"));
                assert!(dir.join(format!("agent_{a:02}.task.json")).is_file());
                assert!(dir.join(format!("agent_{a:02}.log")).is_file());
                let saved = jsonl_ids(&dir.join(format!("agent_{a:02}.jsonl")));
                assert_eq!(saved, planned, "agent file holds its own items, in order");
                orchestrator_order.extend(planned);
            }
            let merged = jsonl_ids(&run.join(format!("segment_{s:02}/orch_{o:02}.jsonl")));
            assert_eq!(merged, orchestrator_order, "orchestrator file");
            segment_order.extend(orchestrator_order);
        }
        let merged = jsonl_ids(&run.join(format!("segment_{s:02}.jsonl")));
        assert_eq!(merged, segment_order, "segment file");
        final_order.extend(segment_order);
    }
    assert_eq!(final_order, ids, "the plan covers the input in order");
    assert_eq!(json_array_ids(&run.join("final.json")), ids, "final.json");
    assert_eq!(
        jsonl_ids(&job.path().join("out/final.jsonl")),
        ids,
        "output.path in jsonl"
    );

    for name in [
        "job.toml",
        "plan.json",
        "events.jsonl",
        "report.json",
        "run.json",
    ] {
        assert!(run.join(name).is_file(), "{name} is written");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).expect("report"))
            .expect("report is JSON");
    assert_eq!(report["state"], "finished");
    assert_eq!(report["items"]["done"], 37);
    assert_eq!(launched_pids(&run).len(), 12, "one process per agent");

    job.nightshift(&["validate", "run"]).expect_code(0);
}

#[test]
fn demo_output_is_identical_across_runs() {
    let job = JobDir::new();
    job.items(25);
    demo_job().write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "first", "-q"])
        .expect_code(0);
    job.nightshift(&["run", "job.toml", "--run-dir", "second", "-q"])
        .expect_code(0);
    let first = std::fs::read(job.path().join("first/final.json")).expect("first final.json");
    let second = std::fs::read(job.path().join("second/final.json")).expect("second final.json");
    assert_eq!(first, second);
}

#[test]
fn a_non_empty_run_directory_is_refused() {
    let job = JobDir::new();
    job.items(3);
    demo_job().write(job.path());
    std::fs::create_dir(job.path().join("run")).expect("mkdir");
    job.write("run/precious.txt", "keep me");
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(2);
    assert!(finished.stderr.contains("not empty"), "{}", finished.stderr);
    assert_eq!(
        std::fs::read_to_string(job.path().join("run/precious.txt")).expect("kept"),
        "keep me"
    );
}

#[test]
fn max_parallel_bounds_the_agents_alive_at_once() {
    let job = JobDir::new();
    job.items(12);
    Job::new("items.jsonl")
        .layout(1, 1, 12)
        .demo()
        .latency("150ms")
        .max_parallel(3)
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);
    // Replay launched/exited events: never more than 3 agents between them.
    let mut alive = 0i32;
    let mut peak = 0;
    for event in nightshift_tests::events(&job.run_dir()) {
        match event["event"].as_str() {
            Some("launched") => alive += 1,
            Some("exited") => alive -= 1,
            _ => {}
        }
        peak = peak.max(alive);
    }
    assert_eq!(peak, 3, "agents ran three at a time");
}

#[test]
fn plan_prints_the_layout_and_json() {
    let job = JobDir::new();
    job.items(37);
    demo_job().write(job.path());
    let text = job.nightshift(&["plan", "job.toml"]);
    text.expect_code(0);
    assert!(
        text.stdout
            .contains("2 segments, 4 orchestrators, 12 agents"),
        "{}",
        text.stdout
    );
    let json = job.nightshift(&["plan", "job.toml", "--json"]);
    json.expect_code(0);
    let plan: Value = serde_json::from_str(&json.stdout).expect("plan --json is JSON");
    assert_eq!(plan["items_total"], 37);
    assert!(!job.run_dir().exists(), "plan starts nothing");
}

#[test]
fn crashing_agents_are_reported_and_the_others_finish() {
    let job = JobDir::new();
    let ids = job.items(30);
    Job::new("items.jsonl")
        .items_per_agent(3)
        .demo()
        .retries(0)
        .latency("0ms")
        .crash_rate(0.15)
        .max_parallel(4)
        .write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(1);
    assert!(
        finished.stderr.contains("crashed (signal 6)"),
        "{}",
        finished.stderr
    );
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(job.run_dir().join("report.json")).expect("report"),
    )
    .expect("report is JSON");
    let attempts = report["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 10, "every agent ran");
    let crashed = attempts
        .iter()
        .filter(|a| a["outcome"] == "crashed")
        .count();
    let succeeded = attempts
        .iter()
        .filter(|a| a["outcome"] == "succeeded")
        .count();
    assert!(crashed > 0 && succeeded > 0, "{attempts:?}");
    // What the crashed agents saved before dying is kept, and the final
    // output holds exactly the saved items, in input order.
    let saved: Vec<String> = json_array_ids(&job.run_dir().join("final.json"));
    let expected: Vec<String> = ids
        .iter()
        .filter(|id| saved.contains(id))
        .cloned()
        .collect();
    assert_eq!(saved, expected);
    assert_eq!(report["items"]["done"].as_u64(), Some(saved.len() as u64));
    assert_eq!(
        report["missing_ids"].as_array().map(Vec::len),
        Some(30 - saved.len())
    );
}

#[test]
fn a_nightshift_without_its_agent_says_how_to_get_it() {
    let job = JobDir::new();
    job.items(3);
    demo_job().write(job.path());
    // A copy of nightshift alone in a folder, with no nightshift-agent on PATH.
    let lonely = job.path().join("bin");
    std::fs::create_dir(&lonely).expect("mkdir");
    let copy = lonely.join("nightshift");
    std::fs::copy(nightshift_tests::binary("nightshift"), &copy).expect("copy nightshift");
    let run = |agent_bin: Option<&std::path::Path>| {
        let mut command = std::process::Command::new(&copy);
        command
            .args(["run", "job.toml", "--run-dir", "run", "-q"])
            .current_dir(job.path())
            .env("PATH", "/usr/bin:/bin")
            .env_remove("NIGHTSHIFT_AGENT_BIN");
        if let Some(agent) = agent_bin {
            command.env("NIGHTSHIFT_AGENT_BIN", agent);
        }
        command.output().expect("run the copy")
    };
    let missing = run(None);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("cannot find nightshift-agent"), "{stderr}");
    assert!(
        stderr.contains("cargo build --release"),
        "says how to get it: {stderr}"
    );
    assert!(!job.run_dir().exists(), "nothing was started");

    let found = run(Some(&nightshift_tests::binary("nightshift-agent")));
    assert_eq!(
        found.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
}
