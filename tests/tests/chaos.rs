//! Chaos: SIGKILL the supervisor at random moments of a multi-segment run
//! (sometimes its agents too, tearing an agent file's last line), resume after
//! each, and SIGKILL random agents of a run: the final output is byte-identical
//! to an uninterrupted run's. The seed is printed so a failure can be replayed
//! (NIGHTSHIFT_CHAOS_SEED).

use std::io::Write;
use std::time::{Duration, Instant};

use nightshift_tests::{launched_pids, run_processes, wait_with_deadline, Job, JobDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn chaos_job() -> Job {
    Job::new("items.jsonl")
        .layout(3, 2, 2)
        .demo()
        .kill_grace("300ms")
        .retries(5)
        .retry_backoff("50ms")
        .latency("25ms")
        .max_parallel(3)
        .sample_interval("100ms")
}

/// A small deterministic generator (xorshift64*), seeded per test run.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let seed = std::env::var("NIGHTSHIFT_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("chaos seed: {seed} (set NIGHTSHIFT_CHAOS_SEED={seed} to replay)");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn reference_output() -> Vec<u8> {
    let job = JobDir::new();
    job.items(60);
    chaos_job().write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    std::fs::read(job.run_dir().join("final.json")).expect("reference final.json")
}

fn live_agent_pids(run: &std::path::Path) -> Vec<i32> {
    let Ok(text) = std::fs::read_to_string(run.join("live.json")) else {
        return Vec::new();
    };
    let live: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    live["agents"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .filter_map(|a| a["pid"].as_i64().and_then(|p| i32::try_from(p).ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Appends half a record, without its newline, to some agent file.
fn tear_an_agent_file(run: &std::path::Path, dice: &mut Dice) {
    let mut files = Vec::new();
    for segment in 1..=3 {
        for orchestrator in 1..=2 {
            for agent in 1..=2 {
                let path = run.join(format!(
                    "segment_{segment:02}/orch_{orchestrator:02}/agent_{agent:02}.jsonl"
                ));
                if path.is_file() {
                    files.push(path);
                }
            }
        }
    }
    if files.is_empty() {
        return;
    }
    let path = &files[dice.below(files.len() as u64) as usize];
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open agent file");
    file.write_all(b"{\"id\": \"item-0").expect("tear");
}

#[test]
fn killing_the_supervisor_at_random_moments_loses_nothing() {
    let reference = reference_output();
    let mut dice = Dice::new();
    let job = JobDir::new();
    job.items(60);
    chaos_job().write(job.path());
    let run = job.run_dir();
    let mut first = true;
    for round in 0..6 {
        let args: Vec<&str> = if first {
            vec!["run", "job.toml", "--run-dir", "run", "-q"]
        } else {
            vec!["resume", "run", "-q"]
        };
        first = false;
        let child = job.spawn_nightshift(&args);
        let delay = Duration::from_millis(100 + dice.below(700));
        std::thread::sleep(delay);
        let supervisor = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let _ = kill(supervisor, Signal::SIGKILL);
        let _ = wait_with_deadline(child, Duration::from_secs(30));
        if dice.below(2) == 0 {
            let agents = live_agent_pids(&run);
            for pid in &agents {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            nightshift_tests::wait_until(Duration::from_secs(10), || {
                agents.iter().all(|p| !nightshift_tests::alive(*p))
            });
            tear_an_agent_file(&run, &mut dice);
            eprintln!("round {round}: killed after {delay:?}, agents too, tore a file");
        } else {
            eprintln!("round {round}: killed the supervisor after {delay:?}");
        }
    }
    let mut last = None;
    for _ in 0..5 {
        let finished = job.nightshift(&["resume", "run", "-q"]);
        let done = finished.code == Some(0);
        last = Some(finished);
        if done {
            break;
        }
    }
    last.expect("resumed").expect_code(0);
    assert_eq!(
        std::fs::read(run.join("final.json")).expect("final.json"),
        reference,
        "final.json is byte-identical to the uninterrupted run's"
    );
    job.nightshift(&["validate", "run"]).expect_code(0);
    assert!(
        run_processes(&run).is_empty(),
        "nothing of the run is left running"
    );
}

#[test]
fn killing_random_agents_is_repaired_by_retries() {
    let reference = reference_output();
    let mut dice = Dice::new();
    let job = JobDir::new();
    job.items(60);
    chaos_job().write(job.path());
    let run = job.run_dir();
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run", "-q"]);
    let started = Instant::now();
    let mut killed = 0;
    let running = || {
        !nightshift_tests::events(&run)
            .iter()
            .any(|e| e["event"] == "run-finished")
    };
    while killed < 5 && started.elapsed() < Duration::from_secs(20) && running() {
        std::thread::sleep(Duration::from_millis(50 + dice.below(200)));
        let live = live_agent_pids(&run);
        if live.is_empty() {
            continue;
        }
        let victim = live[dice.below(live.len() as u64) as usize];
        if kill(Pid::from_raw(victim), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    let finished = wait_with_deadline(child, Duration::from_secs(60));
    finished.expect_code(0);
    assert!(killed > 0, "the test killed agents");
    assert!(
        launched_pids(&run).len() > 12,
        "killed agents were launched again"
    );
    assert_eq!(
        std::fs::read(run.join("final.json")).expect("final.json"),
        reference
    );
}
