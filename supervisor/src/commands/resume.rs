//! `nightshift resume DIR [--halt POLICY]`: go on with a run from its directory
//! alone. The rules, in order:
//! 1. Only one supervisor per run (RUN/supervisor.lock).
//! 2. The frozen RUN/job.toml is used; a changed original job file is reported.
//! 3. Leftover processes of a dead supervisor are ended before any launch.
//! 4. Agents whose file holds all their items are not run again; the others
//!    run on their remaining items (the agent skips what is saved).
//! 5. Merges whose output is newer than all their inputs are not redone.
//! 6. A run that is already complete says so and exits 0.

use std::path::Path;

use shared::exit_codes;
use shared::job::{Deadline, ExecutorKind};
use shared::journal::Event;

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::merge::final_up_to_date;
use crate::run::existing::{frozen_job, open_run};
use crate::run::journal::EventLog;
use crate::run::lock::RunLock;
use crate::run::resume::{end_leftovers, launches_so_far, restore_missing_tasks, scan_progress};
use crate::run::session::drive;
use crate::run::setup::resolve_agent;
use crate::schedule::halt::HaltPolicy;
use crate::supervise::RunInputs;

pub fn resume(
    dir: &Path,
    halt: HaltPolicy,
    until: Option<Deadline>,
    console: &Console,
) -> Result<i32> {
    let (run, plan) = open_run(dir)?;
    println!("run directory: {}", dir.display());
    let _lock = RunLock::acquire(&run)?;
    let job = frozen_job(&run)?;
    if let Ok(current) = std::fs::read_to_string(&job.path) {
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
    let agent_argv = resolve_agent(&job)?;
    restore_missing_tasks(&run, &plan, &job)?;
    let mut events =
        EventLog::open(&run.events()).map_err(SupervisorError::io("cannot open events.jsonl"))?;
    // Under Slurm the previous supervisor's agents are jobs, adopted once the
    // run goes on (their processes may even run on this machine, as on a
    // one-node cluster: they are not leftovers).
    let ended = if job.settings.executor.kind == ExecutorKind::Slurm {
        0
    } else {
        end_leftovers(&run, job.settings.agent.kill_grace.get())?
    };
    if ended > 0 {
        println!("ended {ended} leftover process(es) of the previous supervisor");
    }
    let progress = scan_progress(&run, &plan)?;
    let resumed = Event::Resumed {
        leftovers_ended: ended,
        items_saved: progress.saved,
        agents_complete: progress.complete.len(),
    };
    events
        .record(None, &resumed)
        .map_err(SupervisorError::io("cannot append to events.jsonl"))?;
    drop(events);
    if progress.complete.len() == plan.agent_count() && final_up_to_date(&run, &plan) {
        println!(
            "already finished: all {} items are in {}",
            plan.items_total,
            run.final_json().display()
        );
        println!("run directory: {}", dir.display());
        return Ok(exit_codes::SUCCESS);
    }
    console.line(&format!(
        "resuming: {} of {} items saved, {} of {} agents complete",
        progress.saved,
        plan.items_total,
        progress.complete.len(),
        plan.agent_count()
    ));
    let inputs = RunInputs {
        run: &run,
        job: &job,
        plan: &plan,
        agent_argv: &agent_argv,
        halt,
        until,
        complete: progress.complete,
        launches: launches_so_far(&run)?,
        files_seen: progress.files,
        resumed: true,
    };
    drive(inputs, console, dir)
}
