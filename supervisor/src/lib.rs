//! The nightshift supervisor: plans a job, runs every agent as its own process
//! group, keeps the run directory, merges and validates. `main.rs` only parses
//! arguments and maps the outcome to an exit code.

pub mod bounded_log;
pub mod cli;
pub mod commands;
pub mod console;
pub mod control;
pub mod error;
pub mod executor;
pub mod logging;
pub mod merge;
pub mod outcome;
pub mod platform;
pub mod rate;
pub mod reporting;
pub mod run;
pub mod schedule;
pub mod supervise;
pub mod watchdog;

use cli::{Cli, Command};
use console::Console;
use error::Result;

/// Runs one command; returns its exit code.
pub fn execute(cli: Cli) -> Result<i32> {
    // Before any process or memory call: an unknown NIGHTSHIFT_PLATFORM stops
    // every command (exit code 2), not just those that watch processes.
    platform::select()?;
    let console = Console::new(cli.quiet);
    match cli.command {
        Command::Run {
            job,
            run_dir,
            halt,
            until,
            notify,
            no_cache,
        } => commands::run::run(
            &job,
            run_dir.as_deref(),
            halt,
            until,
            notify.as_ref(),
            no_cache,
            &console,
        ),
        Command::Resume {
            dir,
            halt,
            until,
            notify,
            retry_failed,
            max_cost,
            max_tokens,
            no_cache,
        } => commands::resume::resume(
            &commands::resume::ResumeRequest {
                dir: &dir,
                halt,
                until,
                notify: notify.as_ref(),
                retry_failed,
                budget: crate::run::budget::BudgetChange {
                    max_cost,
                    max_tokens,
                },
                no_cache,
            },
            &console,
        ),
        Command::Cache { action } => commands::cache::cache(&action),
        Command::Plan { job, json } => commands::plan::plan(&job, json),
        Command::Validate { path, id } => commands::validate::validate(&path, &id, &console),
        Command::Merge { dir, segment } => commands::merge::merge(&dir, segment, &console),
        Command::Status { dir, json } => commands::status::status(&dir, json),
        Command::Cancel { dir } => commands::cancel::cancel(&dir),
        Command::Permit {
            tokens,
            backoff,
            report,
            key,
            learned_requests,
            learned_tokens,
            learned_input_tokens,
            learned_output_tokens,
        } => commands::permit::permit(&commands::permit::PermitRequest {
            tokens,
            backoff,
            report,
            key,
            learned: shared::broker::LearnedLimits {
                requests: learned_requests,
                tokens: learned_tokens,
                input_tokens: learned_input_tokens,
                output_tokens: learned_output_tokens,
            },
        }),
        Command::Report { dir, html, json } => {
            commands::report::report(&dir, html.as_deref(), json)
        }
        Command::Failures {
            dir,
            json,
            reason,
            ids,
        } => commands::failures::failures(&commands::failures::FailuresRequest {
            dir: &dir,
            json,
            reason: reason.as_deref(),
            ids,
        }),
        Command::Control {
            dir,
            max_parallel,
            pause,
            resume_launching,
            stop: _,
        } => {
            use shared::control::ControlAction;
            let action = match (max_parallel, pause, resume_launching) {
                (Some(n), _, _) => ControlAction::MaxParallel {
                    n: usize::try_from(n).unwrap_or(usize::MAX),
                },
                (None, true, _) => ControlAction::Pause,
                (None, false, true) => ControlAction::Continue,
                // The argument group makes --stop the one left.
                (None, false, false) => ControlAction::Stop,
            };
            commands::control::control(&dir, action)
        }
        Command::Completions { shell } => commands::completions::completions(shell),
        Command::Man => commands::man::man(),
    }
}
