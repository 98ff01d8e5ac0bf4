//! The command line (DESIGN.md, "Command line").

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use shared::job::Deadline;

use crate::run::notify::NotifyCommand;
use crate::schedule::halt::HaltPolicy;

#[derive(Debug, Parser)]
#[command(
    name = "nightshift",
    version,
    about = "Supervise long, multi-process generation runs"
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print only the run directory, failures and the summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a run of a job file.
    Run {
        job: PathBuf,
        /// Where the run keeps everything (default: runs/NAME-YYYYMMDD-HHMMSS); must be new or empty.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// When to give up early: never, soon,fail=N, soon,fail=N% or now,fail=N.
        #[arg(long, default_value = "never")]
        halt: HaltPolicy,
        /// Stop launching at this local clock time ("07:00") or after this long ("8h");
        /// running agents get schedule.drain, then stop. Overrides schedule.deadline.
        #[arg(long)]
        until: Option<Deadline>,
        /// Run this command when the run ends, the summary as JSON on stdin; split into
        /// words like a shell would ('notify-send "run over"'). Replaces [notify] command.
        #[arg(long, value_name = "COMMAND")]
        notify: Option<NotifyCommand>,
    },
    /// Go on with a run from what its directory holds.
    Resume {
        dir: PathBuf,
        /// When to give up early: never, soon,fail=N, soon,fail=N% or now,fail=N.
        #[arg(long, default_value = "never")]
        halt: HaltPolicy,
        /// Stop launching at this local clock time ("07:00") or after this long ("8h");
        /// running agents get schedule.drain, then stop. Overrides schedule.deadline.
        #[arg(long)]
        until: Option<Deadline>,
        /// Run this command when the run ends, the summary as JSON on stdin; split into
        /// words like a shell would ('notify-send "run over"'). Replaces [notify] command.
        #[arg(long, value_name = "COMMAND")]
        notify: Option<NotifyCommand>,
    },
    /// Print how a job's items are split into segments, orchestrators and agents.
    Plan {
        job: PathBuf,
        /// The plan as JSON (the shape of RUN/plan.json).
        #[arg(long)]
        json: bool,
    },
    /// What a run is doing or did (live or dead).
    Status {
        dir: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// The run's report; --html writes a self-contained page.
    Report {
        dir: PathBuf,
        /// Write the report as an HTML page here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// For shell agents: wait for a rate-limit permit (or report a backoff / tokens).
    Permit {
        /// Tokens the call is expected to use.
        #[arg(long, default_value_t = 1)]
        tokens: u64,
        /// Report a rate-limit answer: every agent pauses this many seconds (0: rate.backoff).
        #[arg(long)]
        backoff: Option<f64>,
        /// Report the tokens the call actually used (of --tokens estimated).
        #[arg(long)]
        report: Option<u64>,
    },
    /// Check a run directory, one of its files, or any record file.
    Validate {
        path: PathBuf,
        /// The id field, for a file outside a run directory.
        #[arg(long, default_value = "id")]
        id: String,
    },
    /// Redo merges from the saved agent files, without generating anything.
    Merge {
        dir: PathBuf,
        /// Only this segment (then the final output).
        #[arg(long)]
        segment: Option<usize>,
    },
    /// Print a shell's completion script (e.g. `nightshift completions bash > ~/.local/share/bash-completion/completions/nightshift`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page, as roff (e.g. `nightshift man | man -l -`).
    Man,
}
