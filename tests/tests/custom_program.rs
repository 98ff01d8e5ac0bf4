//! agent.program: any program that honours the agent contract can be an
//! agent, and what it writes is validated like any agent file.

use nightshift_tests::{json_array_ids, Job, JobDir, PYTHON_AGENT_PRELUDE};

/// A contract-honouring agent in Python (after the prelude that reads the
/// task and the saved ids): appends one line per item.
const PYTHON_AGENT_BODY: &str = r#"
with open(out_path, "a") as out:
    for item in task["items"]:
        if item[field] in done:
            continue
        record = {field: item[field], "words": len(item["prompt"].split()),
                  "agent": os.environ["NIGHTSHIFT_AGENT"], "mode": os.environ.get("MODE")}
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())
"#;

fn job(program: &str) -> Job {
    Job::new("items.jsonl")
        .items_per_agent(4)
        .program([program])
        .env("MODE", "custom")
        .max_parallel(3)
}

#[test]
fn a_custom_program_produces_the_final_output() {
    let job_dir = JobDir::new();
    let ids = job_dir.items(10);
    job_dir.script(
        "agent.py",
        &format!("{PYTHON_AGENT_PRELUDE}{PYTHON_AGENT_BODY}"),
    );
    job("./agent.py").write(job_dir.path());
    job_dir
        .nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let final_json = job_dir.run_dir().join("final.json");
    assert_eq!(json_array_ids(&final_json), ids);
    let text = std::fs::read_to_string(&final_json).expect("final.json");
    assert!(
        text.contains("\"mode\": \"custom\""),
        "agent.env reaches the program: {text}"
    );
    assert!(
        text.contains("segment_01/orch_01/agent_03\""),
        "NIGHTSHIFT_AGENT is set: {text}"
    );
}

#[test]
fn an_agent_writing_a_non_json_line_fails_the_run_naming_file_and_line() {
    let job_dir = JobDir::new();
    job_dir.items(6);
    job_dir.script(
        "sloppy.sh",
        "#!/bin/sh\n\
         # writes one good record, then a line that is not JSON\n\
         python3 -c 'import json,os; t=json.load(open(os.environ[\"NIGHTSHIFT_TASK\"])); print(json.dumps({\"id\": t[\"items\"][0][\"id\"]}))' >> \"$NIGHTSHIFT_OUTPUT\"\n\
         echo 'this is not json' >> \"$NIGHTSHIFT_OUTPUT\"\n",
    );
    job("./sloppy.sh").write(job_dir.path());
    let finished = job_dir.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(1);
    assert!(
        finished
            .stderr
            .contains("segment_01/orch_01/agent_01.jsonl:2: invalid record: not valid JSON"),
        "{}",
        finished.stderr
    );
    let validate = job_dir.nightshift(&["validate", "run"]);
    validate.expect_code(1);
    assert!(
        validate.stderr.contains("agent_01.jsonl:2"),
        "{}",
        validate.stderr
    );
}
