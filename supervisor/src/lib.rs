//! The nightshift supervisor: plans a job, runs every agent as its own process
//! group, keeps the run directory, merges and validates. `main.rs` only parses
//! arguments and maps the outcome to an exit code.

pub mod agent_log;
pub mod agent_program;
pub mod cgroup;
pub mod cli;
pub mod commands;
pub mod console;
pub mod error;
pub mod events;
pub mod existing_run;
pub mod file_watch;
pub mod halt;
pub mod launch;
pub mod live_agents;
pub mod logging;
pub mod memory;
pub mod merging;
pub mod proc_table;
pub mod progress;
pub mod progress_view;
pub mod rate;
pub mod rate_server;
pub mod reaper;
pub mod report;
pub mod report_html;
pub mod resume;
pub mod run_lock;
pub mod run_setup;
pub mod schedule;
pub mod session;
pub mod slot;
pub mod slurm;
pub mod status;
pub mod supervise;
pub mod sweep;
pub mod tasks;
pub mod timeline;
pub mod timeouts;
pub mod tree;
mod unix;

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
        } => commands::run::run(&job, run_dir.as_deref(), halt, until, &console),
        Command::Resume { dir, halt, until } => {
            commands::resume::resume(&dir, halt, until, &console)
        }
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
    }
}
