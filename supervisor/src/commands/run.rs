//! `nightshift run JOB.toml [--run-dir DIR]`: check, create the run directory,
//! supervise the agents, merge, report. Prints the run directory first and last.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use shared::exit_codes;
use shared::ids::IdKey;
use shared::job::Job;
use shared::plan::Plan;
use shared::rundir::RunDir;
use shared::validate::{check_jsonl, Problem, ProblemKind};

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::events::EventLog;
use crate::merging::merge_final;
use crate::report::{write_report, ReportInput};
use crate::run_setup::{check_job, choose_run_dir, create_run_dir};
use crate::supervise::{Ending, Supervisor};

/// Missing ids listed on screen before the rest are only counted.
const MISSING_SHOWN: usize = 10;

pub fn run(job_path: &Path, run_dir: Option<&Path>, console: &Console) -> Result<i32> {
    let checked = check_job(job_path)?;
    let dir = choose_run_dir(run_dir, &checked.job.name)?;
    println!("run directory: {}", dir.display());
    let run = create_run_dir(&dir, &checked)?;
    let plan = &checked.plan;
    console.line(&format!(
        "{} items → {} segments, {} orchestrators, {} agents",
        plan.items_total,
        plan.segments.len(),
        plan.orchestrator_count(),
        plan.agent_count()
    ));
    let started = Instant::now();
    let result = Supervisor::new(&run, &checked, console)?.run()?;
    let mut problems = result.problems;
    let (state, done, missing_ids, code) = match result.ending {
        Ending::Completed => {
            let (done, missing, found) = finish(&run, &checked.job, plan)?;
            for problem in &found {
                console.problem(problem);
            }
            problems.extend(found);
            let complete = done == plan.items_total && !problems.iter().any(Problem::is_error);
            let (state, code) = if complete {
                ("finished", exit_codes::SUCCESS)
            } else {
                ("failed", exit_codes::INCOMPLETE)
            };
            (state, done, missing, code)
        }
        Ending::Interrupted => {
            let (done, missing) = count_saved(&run, plan)?;
            ("interrupted", done, missing, exit_codes::INTERRUPTED)
        }
    };
    let mut events =
        EventLog::open(&run.events()).map_err(SupervisorError::io("cannot open events.jsonl"))?;
    events
        .record(
            "run-finished",
            None,
            json!({"state": state, "items_done": done, "items_total": plan.items_total, "exit_code": code}),
        )
        .and_then(|()| events.sync())
        .map_err(SupervisorError::io("cannot append to events.jsonl"))?;
    write_report(
        &run,
        &ReportInput {
            state,
            items_total: plan.items_total,
            items_done: done,
            missing_ids: missing_ids.iter().map(ToString::to_string).collect(),
            attempts: &result.attempts,
            problems: &problems,
            seconds: started.elapsed().as_secs_f64(),
        },
    )
    .map_err(SupervisorError::io("cannot write report.json"))?;
    summarise(
        &run,
        &checked.job,
        state,
        done,
        plan.items_total,
        &missing_ids,
        started,
    );
    println!("run directory: {}", dir.display());
    Ok(code)
}

/// The final merge; returns (items in final.json, missing ids, problems).
fn finish(run: &RunDir, job: &Job, plan: &Plan) -> Result<(usize, Vec<IdKey>, Vec<Problem>)> {
    let output = job
        .settings
        .output
        .path
        .as_ref()
        .map(|p| (job.resolve(p), job.settings.output.format));
    let (summary, found) = merge_final(run, plan, output.as_ref().map(|(p, f)| (p.as_path(), *f)))
        .map_err(SupervisorError::io("cannot write the final output"))?;
    let missing = summary
        .problems
        .iter()
        .flat_map(|p| match &p.kind {
            ProblemKind::Missing { ids } => ids.clone(),
            _ => Vec::new(),
        })
        .collect();
    Ok((summary.records, missing, found))
}

/// Items saved in agent files so far (for an interrupted run).
fn count_saved(run: &RunDir, plan: &Plan) -> Result<(usize, Vec<IdKey>)> {
    let mut done = 0;
    let mut missing = Vec::new();
    for agent in plan.agents() {
        let checked = check_jsonl(
            &run.agent_output(agent.at),
            &agent.ids,
            &plan.id_field,
            false,
        )
        .map_err(SupervisorError::io(format!(
            "cannot read {}",
            run.agent_output(agent.at).display()
        )))?;
        done += checked.records.len();
        for problem in checked.problems {
            if let ProblemKind::Missing { ids } = problem.kind {
                missing.extend(ids);
            }
        }
    }
    Ok((done, missing))
}

fn summarise(
    run: &RunDir,
    job: &Job,
    state: &str,
    done: usize,
    total: usize,
    missing: &[IdKey],
    started: Instant,
) {
    println!(
        "{state}: {done} of {total} items in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if !missing.is_empty() {
        let shown: Vec<&str> = missing
            .iter()
            .take(MISSING_SHOWN)
            .map(IdKey::as_str)
            .collect();
        let more = missing.len().saturating_sub(MISSING_SHOWN);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        println!(
            "missing ids: {}{tail} (all listed in report.json)",
            shown.join(", ")
        );
    }
    match state {
        "interrupted" => println!("saved results are kept in {}", run.root().display()),
        _ => {
            println!("final output: {}", run.final_json().display());
            if let Some(path) = &job.settings.output.path {
                println!("also written to: {}", job.resolve(path).display());
            }
        }
    }
}
