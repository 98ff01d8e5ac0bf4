//! Agents' stdout and stderr go to a bounded log; an agent that floods its
//! output, or closes it, stalls neither the supervisor nor the other agents.

use nightshift_tests::{json_array_ids, Job, JobDir};

#[test]
fn a_flooding_agent_gets_a_bounded_log_and_the_run_completes() {
    let job = JobDir::new();
    let ids = job.items(4);
    job.script(
        "flood.sh",
        "#!/bin/sh\nhead -c 20000000 /dev/zero | tr '\\0' x\n\
         python3 -c 'import json,os; t=json.load(open(os.environ[\"NIGHTSHIFT_TASK\"])); f=open(os.environ[\"NIGHTSHIFT_OUTPUT\"],\"a\"); [f.write(json.dumps({\"id\": i[\"id\"]})+\"\\n\") for i in t[\"items\"]]'\n",
    );
    job.script(
        "closer.sh",
        "#!/bin/sh\nexec >&- 2>&-\n\
         python3 -c 'import json,os; t=json.load(open(os.environ[\"NIGHTSHIFT_TASK\"])); f=open(os.environ[\"NIGHTSHIFT_OUTPUT\"],\"a\"); [f.write(json.dumps({\"id\": i[\"id\"]})+\"\\n\") for i in t[\"items\"]]'\n",
    );
    job.script(
        "agent.sh",
        "#!/bin/sh\ncase \"$NIGHTSHIFT_AGENT\" in *agent_01) exec ./flood.sh;; *) exec ./closer.sh;; esac\n",
    );
    Job::new("items.jsonl")
        .layout(1, 1, 2)
        .program(["./agent.sh"])
        .limit("agent_log_limit", "1MiB")
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
    let dir = job.run_dir().join("segment_01/orch_01");
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    assert!(
        size("agent_01.log") <= 1 << 20,
        "log bounded: {}",
        size("agent_01.log")
    );
    assert!(
        size("agent_01.log.1") <= 1 << 20,
        "rotated log bounded: {}",
        size("agent_01.log.1")
    );
    assert!(
        size("agent_01.log") + size("agent_01.log.1") > 512 << 10,
        "the latest output is kept"
    );
}
