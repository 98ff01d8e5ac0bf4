//! Pipelines: a job of `[[stage]]`s. RUN holds the pipeline's job.toml and
//! run.json, and one ordinary run directory per stage, `RUN/stage_NAME/`, so
//! everything that works on a run (resume, status, report, merge, validate,
//! failures) works on each stage unchanged. A stage's items are its upstream
//! stage's records (RUN/stage_UP/final.json): items that failed upstream
//! never enter it. Stages run one after the other in one supervisor process,
//! so `limits`, `[rate]` and the machine are shared by construction.
//! RUN/final.json is the last stage's final.json.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use shared::atomic::copy_atomic;
use shared::exit_codes;
use shared::input::{check_input, InputError};
use shared::job::{stage_dir_name, Deadline, InputFormat, Job};
use shared::plan::PlanError;
use shared::rundir::{RunDir, RunInfo};

use crate::commands::resume::{resume, ResumeRequest};
use crate::commands::stages::pipeline_status_json;
use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::run::budget::BudgetChange;
use crate::run::existing::frozen_job;
use crate::run::lock::RunLock;
use crate::run::notify::{ItemCounts, Notifier, NotifyCommand, RunSummary};
use crate::run::session::drive;
use crate::run::setup::{check_loaded, create_run_dir, make_run_dir, resolve_agent};
use crate::schedule::halt::HaltPolicy;
use crate::supervise::RunInputs;

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

/// Every stage in turn: resumed when its directory holds a plan, started
/// from its upstream's records otherwise. A stage that stops the run
/// (interrupt, deadline, budget, cannot go on) stops the pipeline with its
/// exit code; one that ends with failed items lets the others go on (those
/// items are left out) and the pipeline exits 1.
fn go_on(
    run: &RunDir,
    job: &Job,
    shown: &Path,
    options: &StageOptions<'_>,
    console: &Console,
) -> Result<i32> {
    let _lock = RunLock::acquire(run)?;
    let started = Instant::now();
    let result = stages(run, job, options, console);
    // The notify command is told once, for the whole pipeline, however it ended.
    if let Some(notifier) = Notifier::for_run(job, options.notify) {
        notifier.send(run, &summary(run, job, &result, started));
    }
    let code = result?;
    println!("run directory: {}", shown.display());
    Ok(code)
}

fn stages(run: &RunDir, job: &Job, options: &StageOptions<'_>, console: &Console) -> Result<i32> {
    let chain = job.stage_chain();
    let mut code = exit_codes::SUCCESS;
    let mut upstream: Option<PathBuf> = None;
    for (index, stage) in chain.iter().enumerate() {
        let dir = run.root().join(stage_dir_name(&stage.name));
        let stage_run = RunDir::new(&dir);
        console.line(&format!(
            "stage {}/{}: {}",
            index + 1,
            chain.len(),
            stage.name
        ));
        let stage_code = if stage_run.plan_json().exists() {
            if let Some(upstream) = &upstream {
                warn_if_outgrown(&dir, upstream, &job.settings.input.id, console);
            }
            resume(&resume_request(&dir, options), console)?
        } else {
            // A setup cut short launched nothing: it is done again whole.
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(SupervisorError::io(format!(
                    "cannot clear {}",
                    dir.display()
                )))?;
            }
            start_stage(job, index, upstream.as_deref(), &dir, options, console)?
        };
        match stage_code {
            exit_codes::SUCCESS => {}
            exit_codes::INCOMPLETE => code = exit_codes::INCOMPLETE,
            stopped => return Ok(stopped),
        }
        upstream = Some(stage_run.final_json());
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

/// What the notify command gets: the pipeline's state and items (see
/// `pipeline_status_json`), and the run's directory.
fn summary(run: &RunDir, job: &Job, result: &Result<i32>, started: Instant) -> RunSummary {
    let code = result
        .as_ref()
        .map_or_else(SupervisorError::exit_code, |c| *c);
    let state = match (result, code) {
        (Err(_), _) => "error",
        (_, exit_codes::SUCCESS) => "finished",
        (_, exit_codes::INCOMPLETE) => "failed",
        (_, exit_codes::DEADLINE) => "deadline",
        (_, exit_codes::BUDGET_SPENT) => "budget",
        (_, exit_codes::CANNOT_GO_ON) => "stopped",
        _ => "interrupted",
    };
    let status = pipeline_status_json(run.root()).map(|(value, _)| value);
    let count = |key: &str| {
        status
            .as_ref()
            .ok()
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

fn resume_request<'a>(dir: &'a Path, options: &StageOptions<'a>) -> ResumeRequest<'a> {
    ResumeRequest {
        dir,
        halt: options.halt,
        until: options.until,
        // Told once at the pipeline's end, not at each stage's.
        notify: None,
        retry_failed: options.retry_failed,
        budget: options.budget,
        no_cache: options.no_cache,
    }
}

/// Creates stage `index`'s run directory and runs its first session. A stage
/// that no item reaches (all failed upstream) gets an empty final.json.
fn start_stage(
    job: &Job,
    index: usize,
    upstream: Option<&Path>,
    dir: &Path,
    options: &StageOptions<'_>,
    console: &Console,
) -> Result<i32> {
    let stage_job = job.stage_job(index, upstream)?;
    let stage_name = job.stage_chain()[index].name.clone();
    let mut checked = match check_loaded(stage_job) {
        Ok(checked) => checked,
        Err(SupervisorError::Input(InputError::Empty { .. }))
        | Err(SupervisorError::Plan(PlanError::NoItems))
            if upstream.is_some() =>
        {
            console.line("no item reached this stage: every one failed upstream");
            make_run_dir(dir)?;
            let empty = RunDir::new(dir).final_json();
            return shared::atomic::write_bytes_atomic(&empty, b"[]\n")
                .map(|()| exit_codes::INCOMPLETE)
                .map_err(SupervisorError::io(format!(
                    "cannot write {}",
                    empty.display()
                )));
        }
        Err(error) => return Err(error),
    };
    crate::run::answer_cache::prepare(&mut checked.job, options.no_cache)?;
    make_run_dir(dir)?;
    let run = create_run_dir(dir, &checked, Some(&stage_name))?;
    let _lock = RunLock::acquire(&run)?;
    let inputs = RunInputs {
        run: &run,
        job: &checked.job,
        plan: &checked.plan,
        agent_argv: &checked.agent_argv,
        halt: options.halt,
        until: options.until,
        complete: HashSet::new(),
        launches: HashMap::new(),
        files_seen: HashMap::new(),
        resumed: false,
    };
    drive(inputs, console, dir, None)
}
