//! `nightshift resume DIR [--halt POLICY] [--notify COMMAND]`: go on with a
//! run from its directory alone. The rules, in order:
//! 1. Only one supervisor per run (RUN/supervisor.lock).
//! 2. The frozen RUN/job.toml is used; a changed original job file is reported.
//! 3. Leftover processes of a dead supervisor are ended before any launch.
//! 4. Agents whose file holds all their items are not run again; the others
//!    run on their remaining items (the agent skips what is saved).
//! 5. Merges whose output is newer than all their inputs are not redone.
//! 6. A run that is already complete says so and exits 0.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use shared::job::{Deadline, ExecutorKind, Job};
use shared::journal::{Event, RunEnd};
use shared::plan::Plan;
use shared::rundir::RunDir;

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::merge::final_up_to_date;
use crate::run::budget::{apply_budget, BudgetChange};
use crate::run::existing::{frozen_job, open_run, run_info};
use crate::run::journal::EventLog;
use crate::run::lock::RunLock;
use crate::run::notify::{ItemCounts, Notifier, NotifyCommand, RunSummary};
use crate::run::resume::{
    end_leftovers, launches_so_far, restore_missing_tasks, scan_progress, set_failures_aside,
    Missing, Progress,
};
use crate::run::session::drive;
use crate::run::setup::resolve_agent;
use crate::schedule::halt::HaltPolicy;
use crate::supervise::RunInputs;

pub struct ResumeRequest<'a> {
    pub dir: &'a Path,
    pub halt: HaltPolicy,
    pub until: Option<Deadline>,
    pub notify: Option<&'a NotifyCommand>,
    /// Items that failed every attempt are tried again.
    pub retry_failed: bool,
    /// --max-cost / --max-tokens.
    pub budget: BudgetChange,
    /// --no-cache: this session neither reads nor fills the answer cache.
    pub no_cache: bool,
}

pub fn resume(request: &ResumeRequest<'_>, console: &Console) -> Result<i32> {
    let ResumeRequest {
        dir,
        halt,
        until,
        notify,
        retry_failed,
        budget,
        no_cache,
    } = *request;
    if crate::run::pipeline::is_pipeline_dir(dir) {
        let options = crate::run::pipeline::StageOptions {
            halt,
            until,
            notify,
            no_cache,
            retry_failed,
            budget,
        };
        return crate::run::pipeline::resume_pipeline(dir, &options, console);
    }
    let started = Instant::now();
    let (run, plan) = open_run(dir)?;
    println!("run directory: {}", dir.display());
    let _lock = RunLock::acquire(&run)?;
    let mut job = frozen_job(&run)?;
    apply_budget(&run, &mut job, budget)?;
    crate::run::answer_cache::prepare(&mut job, no_cache)?;
    let notifier = Notifier::for_run(&job, notify);
    let taken_up = take_up(&run, &plan, &job, retry_failed, console);
    // From here the run has started: whatever ends it, the notify command is told.
    let go_on = match taken_up {
        Ok(Some(go_on)) => go_on,
        Ok(None) => {
            let failed = scan_progress(&run, &plan, Missing::Count).map_or(0, |p| p.failed);
            if let Some(notifier) = &notifier {
                notifier.send(&run, &already_finished(&run, &job, &plan, started, failed));
            }
            println!("run directory: {}", dir.display());
            let state = if failed > 0 {
                RunEnd::Failed
            } else {
                RunEnd::Finished
            };
            return Ok(state.exit_code());
        }
        Err(error) => {
            if let Some(notifier) = &notifier {
                notifier.send(&run, &RunSummary::error(&run, &job, &plan, started, &error));
            }
            return Err(error);
        }
    };
    let inputs = RunInputs {
        run: &run,
        job: &job,
        plan: &plan,
        agent_argv: &go_on.agent_argv,
        halt,
        until,
        complete: go_on.progress.complete,
        launches: go_on.launches,
        files_seen: go_on.progress.files,
        resumed: true,
        stage: None,
    };
    drive(inputs, console, dir, notifier.as_ref())
}

/// What a resumed run goes on with.
pub struct GoOn {
    pub agent_argv: Vec<OsString>,
    pub progress: Progress,
    /// Launches of each agent so far, so attempt numbers go on.
    pub launches: HashMap<String, u32>,
}

/// Rules 2 to 6, said on the console, and the launches so far. None when
/// the run is already finished.
pub fn take_up(
    run: &RunDir,
    plan: &Plan,
    job: &Job,
    retry_failed: bool,
    console: &Console,
) -> Result<Option<GoOn>> {
    let Some((agent_argv, progress)) = take_over(run, plan, job, retry_failed)? else {
        return Ok(None);
    };
    console.line(&format!(
        "resuming: {} of {} items saved, {} of {} agents complete",
        progress.saved,
        plan.items_total,
        progress.complete.len(),
        plan.agent_count()
    ));
    let launches = launches_so_far(run)?;
    Ok(Some(GoOn {
        agent_argv,
        progress,
        launches,
    }))
}

/// Rules 2 to 6: the agent program, the task files, the leftovers, what is
/// saved. None when the run is already finished.
fn take_over(
    run: &RunDir,
    plan: &Plan,
    job: &Job,
    retry_failed: bool,
) -> Result<Option<(Vec<OsString>, Progress)>> {
    // A pipeline stage's job.toml is derived from the job file: never equal.
    let stage = run_info(run).ok().and_then(|info| info.stage);
    if let (Ok(current), None) = (std::fs::read_to_string(&job.path), stage) {
        if current != job.text {
            println!(
                "note: {} has changed since this run started; resume uses the run's frozen copy {}",
                job.path.display(),
                run.job_toml().display()
            );
        }
    }
    // As for run: no launch while a key variable is unset.
    job.check_api_keys()?;
    let agent_argv = resolve_agent(job)?;
    restore_missing_tasks(run, plan, job)?;
    let mut events =
        EventLog::open(&run.events()).map_err(SupervisorError::io("cannot open events.jsonl"))?;
    // Under Slurm the previous supervisor's agents are jobs, adopted once the
    // run goes on (their processes may even run on this machine, as on a
    // one-node cluster: they are not leftovers).
    let ended = if job.settings.executor.kind == ExecutorKind::Slurm {
        0
    } else {
        end_leftovers(run, job.settings.agent.kill_grace.get())?
    };
    if ended > 0 {
        println!("ended {ended} leftover process(es) of the previous supervisor");
    }
    if retry_failed {
        let (items, agents) = set_failures_aside(run, plan)?;
        println!("--retry-failed: {items} failed item(s) of {agents} agent(s) will be tried again");
    }
    let progress = scan_progress(run, plan, Missing::Count)?;
    let resumed = Event::Resumed {
        leftovers_ended: ended,
        items_saved: progress.saved,
        agents_complete: progress.complete.len(),
    };
    events
        .record(None, &resumed)
        .map_err(SupervisorError::io("cannot append to events.jsonl"))?;
    drop(events);
    if progress.complete.len() == plan.agent_count() && final_up_to_date(run, plan) {
        if progress.failed > 0 {
            // Left as it is: its failed items would only fail again until
            // their cause is fixed.
            println!(
                "already finished: {} of {} items are in {}, {} failed — nightshift failures {}; to try them again once fixed: nightshift resume {} --retry-failed",
                progress.saved,
                plan.items_total,
                run.final_json().display(),
                progress.failed,
                run.root().display(),
                run.root().display()
            );
        } else {
            println!(
                "already finished: all {} items are in {}",
                plan.items_total,
                run.final_json().display()
            );
        }
        return Ok(None);
    }
    Ok(Some((agent_argv, progress)))
}

/// The summary of a resume that found nothing left to do.
fn already_finished(
    run: &RunDir,
    job: &Job,
    plan: &Plan,
    started: Instant,
    failed: usize,
) -> RunSummary {
    let state = if failed > 0 {
        RunEnd::Failed
    } else {
        RunEnd::Finished
    };
    RunSummary {
        state: state.as_str().to_owned(),
        exit_code: state.exit_code(),
        items: ItemCounts {
            total: plan.items_total,
            done: plan.items_total - failed,
            failed,
            missing: failed,
        },
        failures: 0,
        duration_seconds: started.elapsed().as_secs_f64(),
        cost: None,
        run_dir: run.root().display().to_string(),
        job: job.name.clone(),
        error: None,
    }
}
