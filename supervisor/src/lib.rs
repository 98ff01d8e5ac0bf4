//! The nightshift supervisor: plans a job, runs every agent as its own process
//! group, keeps the run directory, merges and validates. `main.rs` only parses
//! arguments and maps the outcome to an exit code.

pub mod cli;
pub mod commands;
pub mod console;
pub mod error;
pub mod executor;
pub mod logging;
pub mod merge;
pub mod outcome;
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
    let console = Console::new(cli.quiet);
    match cli.command {
        Command::Run {
            job,
            run_dir,
            halt,
            until,
            notify,
        } => commands::run::run(
            &job,
            run_dir.as_deref(),
            halt,
            until,
            notify.as_ref(),
            &console,
        ),
        Command::Resume {
            dir,
            halt,
            until,
            notify,
        } => commands::resume::resume(&dir, halt, until, notify.as_ref(), &console),
        Command::Plan { job, json } => commands::plan::plan(&job, json),
        Command::Validate { path, id } => commands::validate::validate(&path, &id, &console),
        Command::Merge { dir, segment } => commands::merge::merge(&dir, segment, &console),
        Command::Status { dir, json } => commands::status::status(&dir, json),
        Command::Permit {
            tokens,
            backoff,
            report,
        } => commands::permit::permit(&commands::permit::PermitRequest {
            tokens,
            backoff,
            report,
        }),
        Command::Report { dir, html } => commands::report::report(&dir, html.as_deref()),
        Command::Completions { shell } => commands::completions::completions(shell),
        Command::Man => commands::man::man(),
    }
}
