//! The likely cost of a run, from a small sample (`[agent.llm]
//! estimate_sample = N`): before the run, N items spread over the input are
//! asked for real by one agent process (the job's own agent program, with
//! the agent contract, in a scratch folder), and their answers' output
//! tokens stand for every item's. The sample is paid; with `[cache]` the run
//! reuses its answers.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::value::RawValue;
use serde_json::Value;

use shared::input::InputFile;
use shared::job::Job;

/// What the sample answers used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub answers: usize,
    /// Output tokens of all its answers.
    pub output_tokens: u64,
}

impl Sample {
    /// Output tokens per answer, on average.
    pub fn output_per_item(&self) -> f64 {
        self.output_tokens as f64 / self.answers.max(1) as f64
    }
}

/// A folder removed however the sample ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asks `n` items spread over the input through the job's agent program.
pub fn take_sample(
    job: &Job,
    input: &InputFile,
    agent_argv: &[OsString],
    n: usize,
) -> Result<Sample, String> {
    let count = input.count;
    let n = n.min(count).max(1);
    let wanted: Vec<usize> = (0..n).map(|i| i * count / n).collect();
    let mut items: Vec<Box<RawValue>> = Vec::with_capacity(n);
    let mut next = wanted.iter().peekable();
    for (index, item) in input.items().map_err(|e| e.to_string())?.enumerate() {
        if next.peek() == Some(&&index) {
            next.next();
            items.push(item.map_err(|e| e.to_string())?.1);
        }
        if next.peek().is_none() {
            break;
        }
    }
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "nightshift-sample-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )));
    std::fs::create_dir_all(&scratch.0)
        .map_err(|e| format!("cannot make a scratch folder: {e}"))?;
    let task = serde_json::json!({
        "agent": "sample",
        "id_field": input.id_field,
        "items": items,
        "settings": job.settings.agent,
        "permits": false,
    });
    let task_path = scratch.0.join("task.json");
    std::fs::write(&task_path, task.to_string()).map_err(|e| e.to_string())?;
    let output = scratch.0.join("sample.jsonl");
    run_agent(job, agent_argv, &scratch.0, &task_path, &output)?;
    read_sample(&output)
}

fn run_agent(
    job: &Job,
    argv: &[OsString],
    scratch: &Path,
    task: &Path,
    output: &Path,
) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("no agent program")?;
    let log = std::fs::File::create(scratch.join("sample.log")).map_err(|e| e.to_string())?;
    let (cache_var, cache) = crate::run::answer_cache::agent_var(job);
    let status = Command::new(program)
        .args(args)
        .envs(&job.settings.agent.env)
        .env("NIGHTSHIFT_TASK", task)
        .env("NIGHTSHIFT_OUTPUT", output)
        .env("NIGHTSHIFT_AGENT", "sample")
        .env("NIGHTSHIFT_ATTEMPT", "1")
        .env(shared::broker::RUN_DIR_VAR, scratch)
        .env(cache_var, cache)
        .current_dir(&job.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .map_err(|e| format!("cannot start the agent: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let said = std::fs::read_to_string(scratch.join("sample.log")).unwrap_or_default();
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!("the sample's agent ended with {status}: {last}"))
}

fn read_sample(output: &Path) -> Result<Sample, String> {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    let mut sample = Sample {
        answers: 0,
        output_tokens: 0,
    };
    for record in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if let Some(tokens) = record["usage"]["output_tokens"].as_u64() {
            sample.answers += 1;
            sample.output_tokens += tokens;
        }
    }
    if sample.answers == 0 {
        return Err("no answer of the sample said its usage".into());
    }
    Ok(sample)
}

/// The sample the job asks for (`[agent.llm] estimate_sample` on a priced
/// LLM job), taken now; None when it asks for none.
pub fn sample_if_asked(job: &Job, input: &InputFile) -> Option<Result<Sample, String>> {
    let n = job.settings.agent.llm.as_ref()?.estimate_sample?.get();
    job.settings.agent.price?;
    let argv = match crate::run::setup::resolve_agent(job) {
        Ok(argv) => argv,
        Err(error) => return Some(Err(error.to_string())),
    };
    Some(take_sample(job, input, &argv, n))
}
