//! `nightshift run JOB.toml [--run-dir DIR] [--halt POLICY]`: check, create the
//! run directory, then one supervisor session. Prints the run directory first
//! and last.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::console::Console;
use crate::error::Result;
use crate::halt::HaltPolicy;
use crate::run_lock::RunLock;
use crate::run_setup::{check_job, choose_run_dir, create_run_dir};
use crate::session::drive;
use crate::supervise::RunInputs;

pub fn run(
    job_path: &Path,
    run_dir: Option<&Path>,
    halt: HaltPolicy,
    console: &Console,
) -> Result<i32> {
    let checked = check_job(job_path)?;
    let dir = choose_run_dir(run_dir, &checked.job.name)?;
    println!("run directory: {}", dir.display());
    let run = create_run_dir(&dir, &checked)?;
    let _lock = RunLock::acquire(&run)?;
    let inputs = RunInputs {
        run: &run,
        job: &checked.job,
        plan: &checked.plan,
        agent_argv: &checked.agent_argv,
        halt,
        complete: HashSet::new(),
        launches: HashMap::new(),
    };
    drive(inputs, console, &dir)
}
