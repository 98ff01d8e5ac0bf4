//! `nightshift run JOB.toml [--run-dir DIR] [--halt POLICY] [--notify COMMAND]`:
//! check, create the run directory, then one supervisor session. Prints the
//! run directory first and last.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use shared::job::Deadline;

use crate::console::Console;
use crate::error::Result;
use crate::reporting::estimate::estimate_line;
use crate::reporting::sample::sample_if_asked;
use crate::run::budget::BudgetChange;
use crate::run::lock::RunLock;
use crate::run::notify::{Notifier, NotifyCommand};
use crate::run::pipeline::{run_pipeline, StageOptions};
use crate::run::session::drive;
use crate::run::setup::{check_loaded, choose_run_dir, create_run_dir, make_run_dir, CheckedJob};
use crate::schedule::halt::HaltPolicy;
use crate::supervise::RunInputs;

pub fn run(
    job_path: &Path,
    run_dir: Option<&Path>,
    halt: HaltPolicy,
    until: Option<Deadline>,
    notify: Option<&NotifyCommand>,
    no_cache: bool,
    console: &Console,
) -> Result<i32> {
    let job = shared::job::Job::load(job_path)?;
    if job.is_pipeline() {
        let dir = choose_run_dir(run_dir, &job.name)?;
        let options = StageOptions {
            halt,
            until,
            notify,
            no_cache,
            retry_failed: false,
            budget: BudgetChange::default(),
        };
        return run_pipeline(&job, &dir, &options, console);
    }
    let mut checked = check_loaded(job)?;
    crate::run::answer_cache::prepare(&mut checked.job, no_cache)?;
    let dir = choose_run_dir(run_dir, &checked.job.name)?;
    make_run_dir(&dir)?;
    println!("run directory: {}", dir.display());
    let sample = sample_if_asked(&checked.job, &checked.input);
    if let Some(line) = estimate_line(&checked.job.settings, &checked.input, sample.as_ref()) {
        println!("{line}");
    }
    let run = create_run_dir(&dir, &checked, None)?;
    let _lock = RunLock::acquire(&run)?;
    let CheckedJob {
        job,
        plan,
        agent_argv,
        ..
    } = checked;
    let inputs = RunInputs {
        run: &run,
        job: &job,
        plan: &plan,
        agent_argv: &agent_argv,
        halt,
        until,
        complete: HashSet::new(),
        launches: HashMap::new(),
        files_seen: HashMap::new(),
        resumed: false,
        stage: None,
    };
    let notifier = Notifier::for_run(&job, notify);
    drive(inputs, console, &dir, notifier.as_ref())
}
