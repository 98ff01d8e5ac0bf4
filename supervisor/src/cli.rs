//! The command line (DESIGN.md, "Command line").

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use shared::broker::Window;
use shared::job::Deadline;

use crate::commands::permit::parse_window;
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
        /// Neither read nor fill the answer cache ([cache]) in this session: every request is made.
        #[arg(long)]
        no_cache: bool,
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
        /// Try the items that failed every attempt again (once their cause is fixed);
        /// without it they stay failed and only untried items run.
        #[arg(long)]
        retry_failed: bool,
        /// Raise (or set) the run's budget, limits.max_cost: USD for the whole run,
        /// earlier sessions included. Holds for later resumes too.
        #[arg(long, value_name = "USD")]
        max_cost: Option<f64>,
        /// Raise (or set) limits.max_tokens: tokens for the whole run.
        #[arg(long, value_name = "N")]
        max_tokens: Option<u64>,
        /// Neither read nor fill the answer cache ([cache]) in this session: every request is made.
        #[arg(long)]
        no_cache: bool,
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
    /// Cancel a stopped run's provider batches still running (mode = "batch").
    Cancel { dir: PathBuf },
    /// The items that failed (or are missing) and why.
    Failures {
        dir: PathBuf,
        /// As JSON: [{"id", "reason", "attempts", "agent", "attempt"}, …].
        #[arg(long, conflicts_with = "ids")]
        json: bool,
        /// Only the items whose reason contains TEXT.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Only the ids, one per line (strings without quotes), for a script.
        #[arg(long)]
        ids: bool,
    },
    /// Change a live run from another terminal: concurrency, pause, continue, stop.
    #[command(group(clap::ArgGroup::new("change").required(true)))]
    Control {
        dir: PathBuf,
        /// Run at most N agents at once from now on (lowering lets running agents finish).
        #[arg(long, value_name = "N", group = "change", value_parser = clap::value_parser!(u64).range(1..))]
        max_parallel: Option<u64>,
        /// Launch nothing and hold rate-limit permits; running agents finish their current items.
        #[arg(long, group = "change")]
        pause: bool,
        /// Undo --pause.
        #[arg(long = "continue", group = "change")]
        resume_launching: bool,
        /// Graceful drain: no new agents, running ones finish; the run ends resumable.
        #[arg(long, group = "change")]
        stop: bool,
    },
    /// The run's report; --html writes a self-contained page.
    Report {
        dir: PathBuf,
        /// Write the report as an HTML page here (and print only where it went).
        #[arg(long, conflicts_with = "json")]
        html: Option<PathBuf>,
        /// Print report.json (with the live status while the run goes).
        #[arg(long)]
        json: bool,
    },
    /// For shell agents: wait for a rate-limit permit (or report a backoff, tokens
    /// or learned limits). Exits 4 when the run's budget is spent: stop too.
    Permit {
        /// Tokens the call is expected to use.
        #[arg(long, default_value_t = 1)]
        tokens: u64,
        /// Report a rate-limit answer: every agent pauses this many seconds (0: rate.backoff);
        /// with --key only that key's permits pause (0: a backoff that grows).
        #[arg(long)]
        backoff: Option<f64>,
        /// Report the tokens the call actually used (of --tokens estimated).
        #[arg(long)]
        report: Option<u64>,
        /// The API key the call uses, as "BASE_URL ENV_VAR" (never the key itself):
        /// each key is paced apart, to the limits learned for it, and a backoff
        /// pauses only its key (a growing one when SECONDS is 0).
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
        /// With --key, instead of a permit: what an answer's headers said of its
        /// requests window, e.g. 120,119,0.5 (x-ratelimit-*-requests).
        #[arg(long, value_name = "LIMIT,REMAINING,RESET_SECONDS", requires = "key",
              conflicts_with_all = ["backoff", "report"], value_parser = parse_window)]
        learned_requests: Option<Window>,
        /// The same for its tokens window.
        #[arg(long, value_name = "LIMIT,REMAINING,RESET_SECONDS", requires = "key",
              conflicts_with_all = ["backoff", "report"], value_parser = parse_window)]
        learned_tokens: Option<Window>,
        /// The same for an input tokens window (servers that limit input and output apart).
        #[arg(long, value_name = "LIMIT,REMAINING,RESET_SECONDS", requires = "key",
              conflicts_with_all = ["backoff", "report"], value_parser = parse_window)]
        learned_input_tokens: Option<Window>,
        /// The same for an output tokens window.
        #[arg(long, value_name = "LIMIT,REMAINING,RESET_SECONDS", requires = "key",
              conflicts_with_all = ["backoff", "report"], value_parser = parse_window)]
        learned_output_tokens: Option<Window>,
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
    /// The answer cache of the LLM backends ([cache]): what it holds, or prune it.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Print a shell's completion script (e.g. `nightshift completions bash > ~/.local/share/bash-completion/completions/nightshift`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page, as roff (e.g. `nightshift man | man -l -`).
    Man,
}

/// `nightshift cache …`. The cache is --path FILE, else the [cache] path of
/// --job JOB.toml, else ~/.cache/nightshift/answers.sqlite.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Entries, size on disk and hits, per model.
    Stats {
        #[command(flatten)]
        which: CacheWhich,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the answers saved longer ago than --older-than, or all of them.
    #[command(group(clap::ArgGroup::new("what").required(true)))]
    Prune {
        #[command(flatten)]
        which: CacheWhich,
        /// Remove answers saved longer ago than this, e.g. 30d or 12h.
        #[arg(long, value_name = "D", group = "what")]
        older_than: Option<shared::job::HumanDuration>,
        /// Remove every answer.
        #[arg(long, group = "what")]
        all: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CacheWhich {
    /// The cache file.
    #[arg(long, value_name = "FILE", conflicts_with = "job")]
    pub path: Option<PathBuf>,
    /// The cache named by this job file's [cache] path.
    #[arg(long, value_name = "JOB.toml")]
    pub job: Option<PathBuf>,
}
