//! agent.concurrency with the exec backend: that many item processes run at
//! once inside the one agent (and in its process group), every record is
//! saved exactly once, and the output is the same as one item at a time.

use std::collections::BTreeSet;

use nightshift_tests::{jsonl_ids, launched_pids, JobDir};

const ITEMS: usize = 12;

/// One item: logs `start PID PGID` and `end PID` around its work. With
/// WAIT_FOR_COMPANY set it holds a marker file until another item's marker is
/// there too (at most 3 s), so the first item cannot end before a second has
/// started unless items really run one at a time. The result is the item.
const ITEM_SCRIPT: &str = r#"#!/bin/sh
line=$(cat)
pgid=$(cut -d' ' -f5 /proc/$$/stat)
mkdir -p running
touch "running/$$"
echo "start $$ $pgid" >> "$LOG"
if [ -n "$WAIT_FOR_COMPANY" ]; then
  n=0
  while [ "$(ls running | wc -l)" -lt 2 ] && [ "$n" -lt 30 ]; do sleep 0.1; n=$((n+1)); done
fi
sleep 0.1
echo "end $$" >> "$LOG"
rm -f "running/$$"
printf '%s\n' "$line"
"#;

fn job_text(concurrency: usize, env: &str) -> String {
    format!(
        r#"
[input]
path = "items.jsonl"
[layout]
segments = 1
orchestrators = 1
agents = 1
[agent]
backend = "exec"
command = ["./item.sh"]
concurrency = {concurrency}
env = {env}
item_timeout = "60s"
"#
    )
}

/// The most items the log shows in flight at the same moment, and the
/// process group of each.
fn in_flight(log: &str) -> (usize, BTreeSet<i32>) {
    let (mut now, mut most, mut groups) = (0usize, 0usize, BTreeSet::new());
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["start", _, pgid] => {
                now += 1;
                most = most.max(now);
                groups.insert(pgid.parse().expect("a pgid"));
            }
            ["end", _] => now = now.saturating_sub(1),
            _ => panic!("unexpected log line {line:?}"),
        }
    }
    (most, groups)
}

#[test]
fn four_items_run_at_once_and_the_output_is_as_with_one() {
    let job = JobDir::new();
    let ids = job.items(ITEMS);
    job.script("item.sh", ITEM_SCRIPT);
    job.write(
        "job4.toml",
        &job_text(4, r#"{ LOG = "c4.log", WAIT_FOR_COMPANY = "1" }"#),
    );
    job.write("job1.toml", &job_text(1, r#"{ LOG = "c1.log" }"#));

    job.nightshift(&["run", "job4.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let log = std::fs::read_to_string(job.path().join("c4.log")).expect("c4.log");
    assert_eq!(log.lines().count(), 2 * ITEMS, "{log}");
    let (most, groups) = in_flight(&log);
    assert!(most >= 2, "items ran one at a time:\n{log}");
    assert!(
        most <= 4,
        "more than agent.concurrency items at once:\n{log}"
    );
    // Every item process is in the agent's process group (the agent leads
    // its own), so a kill of the agent's tree reaches them all.
    let agents = launched_pids(&job.run_dir());
    assert_eq!(agents.len(), 1, "one agent, launched once");
    assert_eq!(groups, BTreeSet::from([agents[0]]));

    // Each record saved exactly once in the one agent file, whatever order
    // the items ended in.
    let agent_file = job.run_dir().join("segment_01/orch_01/agent_01.jsonl");
    let mut saved = jsonl_ids(&agent_file);
    assert_eq!(saved.len(), ITEMS, "{saved:?}");
    saved.sort();
    assert_eq!(saved, ids);

    job.nightshift(&["run", "job1.toml", "--run-dir", "run1", "-q"])
        .expect_code(0);
    let log = std::fs::read_to_string(job.path().join("c1.log")).expect("c1.log");
    assert_eq!(in_flight(&log).0, 1, "concurrency 1: one item at a time");
    let final4 = std::fs::read(job.run_dir().join("final.json")).expect("final.json");
    let final1 = std::fs::read(job.path().join("run1/final.json")).expect("final.json");
    assert_eq!(
        String::from_utf8_lossy(&final4),
        String::from_utf8_lossy(&final1)
    );
}

#[test]
fn concurrency_zero_is_refused_naming_the_key() {
    let job = JobDir::new();
    job.items(3);
    job.write("job.toml", &job_text(0, "{}"));
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("key `agent.concurrency`"),
        "{}",
        finished.stderr
    );
    assert!(!job.run_dir().exists(), "nothing was started");
}
