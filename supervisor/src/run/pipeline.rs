//! Pipelines: a job of `[[stage]]`s. RUN holds the pipeline's job.toml and
//! run.json, and one ordinary run directory per stage, `RUN/stage_NAME/`, so
//! everything that works on a run (resume, status, report, merge, validate,
//! failures) works on each stage unchanged. A stage's items are its upstream
//! stage's records: items that failed upstream never enter it. Streaming
//! stages run side by side in one supervisor process (`stage_group`), a
//! stage with `barrier = true` only once the stages before it are done and
//! merged (its items are then RUN/stage_UP/final.json). `limits`, `[rate]`
//! and the budget are shared by all stages: one machine, one broker.
//! RUN/final.json is the last stage's final.json; RUN/report.json sums the
//! stages up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use shared::atomic::{copy_atomic, write_atomic};
use shared::exit_codes;
use shared::input::check_input;
use shared::job::{stage_dir_name, Deadline, InputFormat, Job};
use shared::rundir::{RunDir, RunInfo};

use crate::commands::stages::pipeline_status_json;
use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::run::budget::BudgetChange;
use crate::run::existing::frozen_job;
use crate::run::lock::RunLock;
use crate::run::notify::{ItemCounts, Notifier, NotifyCommand, RunSummary};
use crate::run::setup::{make_run_dir, resolve_agent};
use crate::run::stage_group::{groups, run_group, GroupContext};
use crate::schedule::halt::HaltPolicy;

/// What every stage's session is given (from `run` or `resume`).
pub struct StageOptions<'a> {
    pub halt: HaltPolicy,
    pub until: Option<Deadline>,
    pub notify: Option<&'a NotifyCommand>,
    pub no_cache: bool,
    pub retry_failed: bool,
    pub budget: BudgetChange,
}

/// `nightshift run` on a pipeline: the run directory, then every stage.
pub fn run_pipeline(
    job: &Job,
    dir: &Path,
    options: &StageOptions<'_>,
    console: &Console,
) -> Result<i32> {
    // Every stage's program and keys now: a typo in the last stage must not
    // wait for the first stage's night to be found.
    for index in 0..job.stage_chain().len() {
        let stage_job = job.stage_job(index, None)?;
        stage_job.check_api_keys()?;
        resolve_agent(&stage_job)?;
    }
    make_run_dir(dir)?;
    println!("run directory: {}", dir.display());
    let run = crate::run::existing::run_dir_at(dir)?;
    let info = RunInfo {
        job_file: job.path.clone(),
        job_dir: job.dir.clone(),
        input: job.resolve(&job.settings.input.path),
        stage: None,
        started: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    };
    let info_json = serde_json::to_vec_pretty(&info)
        .map_err(|e| SupervisorError::io("cannot encode run.json")(e.into()))?;
    for (path, bytes) in [
        (run.job_toml(), job.text.as_bytes()),
        (run.run_json(), info_json.as_slice()),
    ] {
        shared::atomic::write_bytes_atomic(&path, bytes).map_err(SupervisorError::io(format!(
            "cannot write {}",
            path.display()
        )))?;
    }
    go_on(&run, job, dir, options, console)
}

/// Whether DIR is a pipeline's run directory (job.toml of `[[stage]]`s, no
/// plan.json of its own).
pub fn is_pipeline_dir(dir: &Path) -> bool {
    let run = RunDir::new(dir);
    !run.plan_json().exists()
        && run.job_toml().exists()
        && frozen_job(&run).is_ok_and(|job| job.is_pipeline())
}

/// The stages of a pipeline's run directory, in order: name and folder
/// (folders not made yet included).
pub fn stage_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let job = frozen_job(&RunDir::new(dir))?;
    Ok(job
        .stage_chain()
        .iter()
        .map(|s| (s.name.clone(), dir.join(stage_dir_name(&s.name))))
        .collect())
}

/// `nightshift resume` on a pipeline: every stage from what it saved.
pub fn resume_pipeline(dir: &Path, options: &StageOptions<'_>, console: &Console) -> Result<i32> {
    println!("run directory: {}", dir.display());
    let run = crate::run::existing::run_dir_at(dir)?;
    let job = frozen_job(&run)?;
    go_on(&run, &job, dir, options, console)
}

/// Every stage, resumed when its directory holds a plan, started otherwise;
/// stages that stream into each other run side by side (`stage_group`).
fn go_on(
    run: &RunDir,
    job: &Job,
    shown: &Path,
    options: &StageOptions<'_>,
    console: &Console,
) -> Result<i32> {
    let _lock = RunLock::acquire(run)?;
    if let Err(error) = crate::logging::attach_run_log(&run.supervisor_log()) {
        tracing::warn!("cannot write {}: {error}", run.supervisor_log().display());
    }
    let started = Instant::now();
    let result = stages(run, job, options, console);
    let status = pipeline_status_json(run.root()).map(|(value, _)| value);
    if let Ok(status) = &status {
        if let Err(error) = write_report(run, status, &result, started) {
            console.line(&format!(
                "cannot write {}: {error}",
                run.report_json().display()
            ));
        }
    }
    // The notify command is told once, for the whole pipeline, however it ended.
    if let Some(notifier) = Notifier::for_run(job, options.notify) {
        notifier.send(run, &summary(run, job, &result, status.ok(), started));
    }
    let code = result?;
    println!("run directory: {}", shown.display());
    Ok(code)
}

fn stages(run: &RunDir, job: &Job, options: &StageOptions<'_>, console: &Console) -> Result<i32> {
    let chain = job.stage_chain();
    // One broker for the whole pipeline: `[rate]` and the budget are shared.
    let broker = crate::supervise::start_broker(run, &job.settings, console);
    let barriers: Vec<bool> = chain.iter().map(|s| s.barrier).collect();
    let mut code = exit_codes::SUCCESS;
    let mut upstream: Option<PathBuf> = None;
    for group in groups(&barriers) {
        if let (Some(upstream), Some(first)) = (&upstream, chain.get(group.start)) {
            let dir = run.root().join(stage_dir_name(&first.name));
            if RunDir::new(&dir).plan_json().exists() {
                warn_if_outgrown(&dir, upstream, &job.settings.input.id, console);
            }
        }
        let last = chain[group.end - 1].name.clone();
        let context = GroupContext {
            job,
            run,
            broker: broker.as_ref(),
            input: upstream.as_deref(),
            options,
        };
        // Stages stop the pipeline in chain order: the first stage that
        // stopped (interrupt, deadline, budget, cannot go on) gives its code;
        // one that ended with failed items lets the others go on (those
        // items are left out) and the pipeline exits 1.
        for stage_code in run_group(&context, group, console)? {
            match stage_code {
                exit_codes::SUCCESS => {}
                exit_codes::INCOMPLETE => code = exit_codes::INCOMPLETE,
                stopped => return Ok(stopped),
            }
        }
        upstream = Some(RunDir::new(run.root().join(stage_dir_name(&last))).final_json());
    }
    if let Some(last) = &upstream {
        copy_atomic(last, &run.final_json()).map_err(SupervisorError::io(format!(
            "cannot copy {} to {}",
            last.display(),
            run.final_json().display()
        )))?;
    }
    Ok(code)
}

/// The exit code a pipeline session ends with.
fn exit_code(result: &Result<i32>) -> i32 {
    result
        .as_ref()
        .map_or_else(SupervisorError::exit_code, |c| *c)
}

/// RUN/report.json: the pipeline as a whole — its state and items, and each
/// stage's status (items in, done, failed) as `status --json` gives it, its
/// agents counted by state (running, done, failed…), and the path of the
/// stage's own report.json, which lists its agents, attempts and memory.
fn write_report(
    run: &RunDir,
    status: &Value,
    result: &Result<i32>,
    started: Instant,
) -> std::io::Result<()> {
    let mut report = status.clone();
    report["exit_code"] = json!(exit_code(result));
    report["duration_seconds"] = json!(started.elapsed().as_secs_f64());
    if let Some(stages) = report["stages"].as_array_mut() {
        for stage in stages {
            if let Some(name) = stage["name"].as_str() {
                let path = format!("{}/report.json", stage_dir_name(name));
                stage["report"] = json!(path);
            }
            // Agents counted by state; the stage's report lists them.
            if let Some(agents) = stage["agents"].as_array() {
                let mut counts = serde_json::Map::new();
                counts.insert("total".into(), json!(agents.len()));
                for state in agents.iter().filter_map(|a| a["state"].as_str()) {
                    let n = counts.get(state).and_then(Value::as_u64).unwrap_or(0);
                    counts.insert(state.to_owned(), json!(n + 1));
                }
                stage["agents"] = Value::Object(counts);
            }
        }
    }
    write_atomic(&run.report_json(), |out| {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        out.write_all(b"\n")
    })
}

/// What the notify command gets: the pipeline's state and items (see
/// `pipeline_status_json`), and the run's directory.
fn summary(
    run: &RunDir,
    job: &Job,
    result: &Result<i32>,
    status: Option<Value>,
    started: Instant,
) -> RunSummary {
    let code = exit_code(result);
    let state = match (result, code) {
        (Err(_), _) => "error",
        (_, exit_codes::SUCCESS) => "finished",
        (_, exit_codes::INCOMPLETE) => "failed",
        (_, exit_codes::DEADLINE) => "deadline",
        (_, exit_codes::BUDGET_SPENT) => "budget",
        (_, exit_codes::CANNOT_GO_ON) => "stopped",
        _ => "interrupted",
    };
    let count = |key: &str| {
        status
            .as_ref()
            .and_then(|s| s["items"][key].as_u64())
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    let total = count("total");
    RunSummary {
        state: state.to_owned(),
        exit_code: code,
        items: ItemCounts {
            total,
            done: count("done"),
            failed: count("failed"),
            missing: total.saturating_sub(count("done")),
        },
        failures: 0,
        duration_seconds: started.elapsed().as_secs_f64(),
        cost: None,
        run_dir: run.root().display().to_string(),
        job: job.name.clone(),
        error: result.as_ref().err().map(ToString::to_string),
    }
}

/// A stage is planned over the records its upstream had when it started; an
/// upstream that gained records since (`resume --retry-failed`) is said, as
/// those items do not reach the planned stage.
fn warn_if_outgrown(dir: &Path, upstream: &Path, id_field: &str, console: &Console) {
    let planned = crate::run::existing::open_run(dir).map(|(_, plan)| plan.items_total);
    let records = check_input(upstream, InputFormat::Json, id_field).map(|input| input.count);
    if let (Ok(planned), Ok(records)) = (planned, records) {
        if records > planned {
            console.line(&format!(
                "note: {} now holds {records} records, but this stage was planned over {planned}: the {} new ones do not enter it (a new run takes them all)",
                upstream.display(),
                records - planned
            ));
        }
    }
}
