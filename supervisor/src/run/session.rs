//! One supervisor session over a run directory, shared by `run` and `resume`:
//! supervise the agents, write the final output, journal the end, write
//! report.json, print the summary, pick the exit code, and tell the notify
//! command.

use std::path::Path;
use std::time::Instant;

use shared::exit_codes;
use shared::ids::IdKey;
use shared::job::Job;
use shared::journal::{Event, RunEnd};
use shared::plan::Plan;
use shared::rundir::RunDir;
use shared::validate::{Problem, ProblemKind};

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::merge::merge_final;
use crate::reporting::cost::{describe, projected, run_cost};
use crate::reporting::failures::{item_report, Scope, LISTED_ITEMS};
use crate::reporting::progress::Progress;
use crate::reporting::report::{write_report, ReportInput};
use crate::run::journal::{read_journal, EventLog};
use crate::run::notify::{self, Notifier, RunSummary};
use crate::run::resume::{scan_progress, Missing};
use crate::supervise::{Ending, RunInputs, Supervisor};

/// Missing ids listed on screen before the rest are only counted.
const MISSING_SHOWN: usize = 10;

/// Runs a session; `shown_dir` is the run directory as the user named it.
/// However it ends — even with an error — the notify command, if any, is
/// told before the run directory is printed last.
pub fn drive(
    inputs: RunInputs<'_>,
    console: &Console,
    shown_dir: &Path,
    notifier: Option<&Notifier>,
) -> Result<i32> {
    let (run, job, plan) = (inputs.run, inputs.job, inputs.plan);
    let started = Instant::now();
    match session(inputs, console, started) {
        Ok((code, summary)) => {
            if let Some(notifier) = notifier {
                notifier.send(run, &summary);
            }
            console.summary(&format!("run directory: {}", shown_dir.display()));
            Ok(code)
        }
        Err(error) => {
            if let Some(notifier) = notifier {
                notifier.send(run, &RunSummary::error(run, job, plan, started, &error));
            }
            Err(error)
        }
    }
}

/// The session itself: its exit code and the summary the notify command gets.
fn session(
    inputs: RunInputs<'_>,
    console: &Console,
    started: Instant,
) -> Result<(i32, RunSummary)> {
    let (run, job, plan) = (inputs.run, inputs.job, inputs.plan);
    let in_pipeline = inputs.stage.is_some();
    let attached = match inputs.stage {
        Some(_) => crate::logging::attach_thread_log(&run.supervisor_log()),
        None => crate::logging::attach_run_log(&run.supervisor_log()),
    };
    if let Err(error) = attached {
        tracing::warn!("cannot write {}: {error}", run.supervisor_log().display());
    }
    tracing::info!(
        "supervisor {} on {} ({} items, {} agents)",
        std::process::id(),
        run.root().display(),
        plan.items_total,
        plan.agent_count()
    );
    console.line(&format!(
        "{} items → {} segments, {} orchestrators, {} agents",
        plan.items_total,
        plan.segments.len(),
        plan.orchestrator_count(),
        plan.agent_count()
    ));
    let result = Supervisor::new(inputs, console)?.run()?;
    let mut problems = result.problems;
    let (end, done, missing) = match &result.ending {
        Ending::Completed => {
            let (done, missing, found) = finish(run, job, plan)?;
            for problem in &found {
                console.problem(problem);
            }
            problems.extend(found);
            let complete = done == plan.items_total && !problems.iter().any(Problem::is_error);
            let end = if complete {
                RunEnd::Finished
            } else {
                RunEnd::Failed
            };
            (end, done, missing)
        }
        stopped => {
            let (done, missing) = saved_so_far(run, plan)?;
            let end = match stopped {
                Ending::CannotGoOn(_) => RunEnd::Stopped,
                Ending::BudgetSpent(_) => RunEnd::Budget,
                Ending::Interrupted => RunEnd::Interrupted,
                Ending::Deadline => RunEnd::Deadline,
                _ => RunEnd::Halted,
            };
            (end, done, missing)
        }
    };
    let code = end.exit_code();
    let state = end.as_str();
    let finished = Event::RunFinished {
        state: end,
        items_done: done,
        items_total: plan.items_total,
        exit_code: code,
    };
    // Every item without a record, and why (after the session: all of them).
    let items = read_journal(&run.events())
        .map(|journal| {
            let settings = Some(&job.settings);
            item_report(run, plan, &journal, settings, Scope::Missing, LISTED_ITEMS)
        })
        .unwrap_or_default();
    let spent = run_cost(run, plan, &Progress::new(run, plan));
    let report = ReportInput {
        state,
        items_total: plan.items_total,
        items_done: done,
        missing_ids: missing.listed.iter().map(IdKey::to_value).collect(),
        failures: &items,
        attempts: &result.attempts,
        problems: &problems,
        seconds: started.elapsed().as_secs_f64(),
        memory: &result.memory,
        spent: &spent,
        plan,
    };
    // The run is over either way: a journal or report that cannot be written
    // (a full disk) is said, and the summary still printed.
    let mut code = code;
    if let Err(error) = close_run(run, &finished, &report) {
        eprintln!("nightshift: {error}");
        if code == exit_codes::SUCCESS || error.exit_code() == exit_codes::CANNOT_GO_ON {
            code = error.exit_code();
        }
    }
    if let Ending::CannotGoOn(reason) = &result.ending {
        console.summary(&format!("cannot go on: {reason}"));
    }
    if let Ending::BudgetSpent(reason) = &result.ending {
        console.summary(&format!("budget spent: {reason}"));
    }
    let projection = projected(&spent.total, done, plan.items_total);
    if let Some(line) = describe(&spent.total.usage, spent.total.cost, projection) {
        console.summary(&line);
    }
    // A stage is resumed with its pipeline.
    let resume_dir = match (in_pipeline, run.root().parent()) {
        (true, Some(pipeline)) => pipeline,
        _ => run.root(),
    };
    let ended = Ended {
        run,
        job,
        state,
        done,
        total: plan.items_total,
        missing: &missing,
        started,
        resume_dir,
    };
    summarise(console, &ended);
    // Ctrl-C, the deadline or the budget stop agents, not their batches.
    if let Some(line) = crate::reporting::batches::left_running(run, plan) {
        console.summary(&line);
    }
    let (items, failures) = notify::count(run, plan, done, missing.count, &result.attempts);
    let summary = RunSummary {
        state: state.to_owned(),
        exit_code: code,
        items,
        failures,
        duration_seconds: started.elapsed().as_secs_f64(),
        cost: spent.total.cost.map(shared::money::round_usd),
        run_dir: run.root().display().to_string(),
        job: job.name.clone(),
        error: None,
    };
    Ok((code, summary))
}

/// The last words of a session: `run-finished` in the journal, and report.json.
fn close_run(run: &RunDir, finished: &Event, report: &ReportInput<'_>) -> Result<()> {
    let mut events =
        EventLog::open(&run.events()).map_err(SupervisorError::io("cannot open events.jsonl"))?;
    events
        .record(None, finished)
        .and_then(|()| events.sync())
        .map_err(SupervisorError::io("cannot append to events.jsonl"))?;
    write_report(run, report).map_err(SupervisorError::io("cannot write report.json"))
}

/// The final merge; returns (items in final.json, missing ids, problems).
fn finish(run: &RunDir, job: &Job, plan: &Plan) -> Result<(usize, MissingIds, Vec<Problem>)> {
    let (summary, found) = merge_final(run, plan, job)
        .map_err(SupervisorError::io("cannot write the final output"))?;
    let mut missing = MissingIds::default();
    for problem in &summary.problems {
        if let ProblemKind::Missing { ids, .. } = &problem.kind {
            missing.count += ids.len();
            let room = LISTED_ITEMS.saturating_sub(missing.listed.len());
            missing.listed.extend(ids.iter().take(room).cloned());
        }
    }
    Ok((summary.records, missing, found))
}

/// Items saved in agent files so far (for a run that stopped early).
fn saved_so_far(run: &RunDir, plan: &Plan) -> Result<(usize, MissingIds)> {
    let progress = scan_progress(run, plan, Missing::Ids)?;
    let missing = MissingIds {
        count: progress.missing,
        listed: progress.missing_ids,
    };
    Ok((progress.saved, missing))
}

/// The items a run ended without: all counted, the first `LISTED_ITEMS` by id.
#[derive(Debug, Default)]
struct MissingIds {
    count: usize,
    listed: Vec<IdKey>,
}

/// What the end-of-session summary says.
struct Ended<'s> {
    run: &'s RunDir,
    job: &'s Job,
    state: &'s str,
    done: usize,
    total: usize,
    missing: &'s MissingIds,
    started: Instant,
    /// Where `resume` is to be run: the pipeline's folder for a stage.
    resume_dir: &'s Path,
}

fn summarise(console: &Console, ended: &Ended<'_>) {
    let Ended {
        run,
        job,
        state,
        done,
        total,
        missing,
        started,
        resume_dir,
    } = *ended;
    // A run that went through every item is "finished", however many failed:
    // the failures are counted, and `nightshift failures` says why.
    let headline = if state == "failed" { "finished" } else { state };
    let percent = crate::reporting::view::percent(done, total);
    // Only a run that went through every item has failed ones; a stopped
    // run's missing items may simply not have been tried yet.
    let failed = match (missing.count == 0, headline) {
        (true, _) => String::new(),
        (false, "finished") => format!(
            ", {} failed — nightshift failures {}",
            missing.count,
            run.root().display()
        ),
        (false, _) => format!(", {} missing", missing.count),
    };
    console.summary(&format!(
        "{headline}: {done} of {total} items ({percent:.0}%){failed} in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    if missing.count > 0 {
        let shown: Vec<String> = missing
            .listed
            .iter()
            .take(MISSING_SHOWN)
            .map(IdKey::plain)
            .collect();
        let more = missing.count.saturating_sub(shown.len());
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let listed = if missing.listed.len() < missing.count {
            format!("the first {} listed in report.json", missing.listed.len())
        } else {
            "all listed in report.json".to_owned()
        };
        console.summary(&format!(
            "missing ids: {}{tail} ({listed})",
            shown.join(", ")
        ));
    }
    match state {
        "interrupted" | "halted" | "deadline" | "stopped" => {
            console.summary(&format!("resumable: nightshift resume {}", resume_dir.display()))
        }
        "budget" => console.summary(&format!(
            "resumable with a larger budget: nightshift resume {} --max-cost USD (or --max-tokens N)",
            resume_dir.display()
        )),
        _ => {
            console.summary(&format!("final output: {}", run.final_json().display()));
            if let Some(path) = &job.settings.output.path {
                console.summary(&format!("also written to: {}", job.resolve(path).display()));
            }
            if state == "failed" {
                console.summary(&format!(
                    "to try the failed items again once their cause is fixed: nightshift resume {} --retry-failed",
                    resume_dir.display()
                ));
            }
        }
    }
}
