//! Everything before the first launch: load and check the job, read the input,
//! plan, find the agent program, and create the run directory with its frozen
//! job.toml, run.json, plan.json and every agent's task file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use shared::atomic::write_bytes_atomic;
use shared::input::{check_input, InputError, InputFile};
use shared::job::{Backend, ExecutorKind, Job};
use shared::plan::{build_plan, Plan};
use shared::rundir::{RunDir, RunInfo};

use crate::error::{Result, SupervisorError};
use crate::run::agent_program;
use crate::run::tasks::{write_tasks, PlanFile};

/// A job that passed every check, with its items and plan.
pub struct CheckedJob {
    pub job: Job,
    pub input: InputFile,
    pub plan: Plan,
    pub agent_argv: Vec<OsString>,
}

/// A loaded job's input and plan; nothing is written.
pub fn plan_loaded(job: Job) -> Result<PlannedJob> {
    let settings = &job.settings;
    let input_path = job.resolve(&settings.input.path);
    let input =
        check_input(&input_path, settings.input.format, &settings.input.id).map_err(|error| {
            match error {
                InputError::Read { path, source }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    SupervisorError::InputMissing {
                        job: job.path.clone(),
                        path,
                    }
                }
                other => other.into(),
            }
        })?;
    let plan = build_plan(&job.name, &settings.input.id, input.count, &settings.layout)?;
    Ok(PlannedJob { job, input, plan })
}

/// A job with its items and plan (enough for `nightshift plan`).
pub struct PlannedJob {
    pub job: Job,
    pub input: InputFile,
    pub plan: Plan,
}

/// Checks everything needed to launch a loaded job: its input, its plan, and
/// the programs the agents will run.
pub fn check_loaded(job: Job) -> Result<CheckedJob> {
    let PlannedJob { job, input, plan } = plan_loaded(job)?;
    // An unset API key variable would fail every request: stop before the run exists.
    job.check_api_keys()?;
    let agent_argv = resolve_agent(&job)?;
    Ok(CheckedJob {
        job,
        input,
        plan,
        agent_argv,
    })
}

/// The agent program's argv, and a check that the exec backend's command
/// exists, so a typo is a usage error and not a thousand failed items.
pub fn resolve_agent(job: &Job) -> Result<Vec<OsString>> {
    if job.settings.executor.kind == ExecutorKind::Slurm {
        let missing = crate::executor::slurm::missing_commands();
        if !missing.is_empty() {
            return Err(SupervisorError::Unsupported(format!(
                "{}: executor.kind = \"slurm\" needs Slurm's client commands on PATH; not found: {}",
                job.path.display(),
                missing.join(", ")
            )));
        }
        check_slurm_resources(job)?;
    }
    let agent = &job.settings.agent;
    let agent_argv = agent_program::resolve(agent.program.as_deref(), &job.dir)?;
    if agent.program.is_none() && agent.backend == Backend::Exec {
        let commands = agent.command.as_ref().map(|c| c.list()).unwrap_or_default();
        for first in commands.iter().filter_map(|c| c.first()) {
            if agent_program::find_program(first, &job.dir).is_none() {
                return Err(SupervisorError::AgentProgram(format!(
                    "{}: agent.command {first:?} was not found (relative paths start from {}, bare names are looked up on PATH)",
                    job.path.display(),
                    job.dir.display()
                )));
            }
        }
    }
    Ok(agent_argv)
}

/// The run directory to use: the one given (which must be new or empty), or
/// `runs/NAME-YYYYMMDD-HHMMSS` under the current folder.
pub fn choose_run_dir(given: Option<&Path>, job_name: &str) -> Result<PathBuf> {
    let chosen = match given {
        Some(dir) => dir.to_owned(),
        None => {
            let base = PathBuf::from("runs").join(format!(
                "{job_name}-{}",
                crate::executor::local::unix::local_timestamp()
            ));
            let mut candidate = base.clone();
            let mut n = 2;
            while candidate.exists() {
                candidate = PathBuf::from(format!("{}-{n}", base.display()));
                n += 1;
            }
            candidate
        }
    };
    let non_empty = std::fs::read_dir(&chosen).is_ok_and(|mut entries| entries.next().is_some());
    if non_empty {
        return Err(SupervisorError::RunDirNotEmpty(chosen));
    }
    Ok(chosen)
}

/// Makes the run directory and checks that it can be written, before it is
/// announced: one that cannot be is a usage error, said once.
pub fn make_run_dir(dir: &Path) -> Result<()> {
    let unusable = |error| SupervisorError::RunDirUnusable(dir.to_owned(), error);
    std::fs::create_dir_all(dir).map_err(unusable)?;
    let probe = dir.join(".nightshift-write-check");
    std::fs::write(&probe, b"").map_err(unusable)?;
    std::fs::remove_file(&probe).map_err(unusable)
}

/// Creates the run directory and writes job.toml, run.json and plan.json;
/// `stage`: the pipeline stage the directory holds.
pub fn create_run_dir(dir: &Path, checked: &CheckedJob, stage: Option<&str>) -> Result<RunDir> {
    let absolute = std::path::absolute(dir).map_err(SupervisorError::io(format!(
        "cannot resolve {}",
        dir.display()
    )))?;
    std::fs::create_dir_all(&absolute).map_err(SupervisorError::io(format!(
        "cannot create run directory {}",
        dir.display()
    )))?;
    let run = RunDir::new(absolute);
    let write = |path: PathBuf, bytes: &[u8]| {
        write_bytes_atomic(&path, bytes).map_err(SupervisorError::io(format!(
            "cannot write {}",
            path.display()
        )))
    };
    write(run.job_toml(), checked.job.text.as_bytes())?;
    let info = RunInfo {
        job_file: checked.job.path.clone(),
        job_dir: checked.job.dir.clone(),
        input: checked.input.path.clone(),
        stage: stage.map(str::to_owned),
        started: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    };
    write(run.run_json(), &to_json(&info)?)?;
    for segment in &checked.plan.segments {
        for orchestrator in &segment.orchestrators {
            let folder = run.orchestrator_dir(segment.number, orchestrator.number);
            std::fs::create_dir_all(&folder).map_err(SupervisorError::io(format!(
                "cannot create {}",
                folder.display()
            )))?;
        }
    }
    write_tasks(
        &run,
        &checked.plan,
        &checked.input,
        &checked.job.settings,
        PlanFile::Write,
    )
    .map_err(SupervisorError::io(
        "cannot write plan.json and the agents' task files",
    ))?;
    Ok(run)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| SupervisorError::io("cannot encode JSON")(e.into()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// `sbatch --test-only` with the job's partition, account, extra arguments
/// and limits: a cluster that would refuse every agent is a usage error now,
/// not a night of failed submissions.
fn check_slurm_resources(job: &Job) -> Result<()> {
    let settings = &job.settings;
    let resources = crate::executor::slurm::resource_args(
        &settings.executor,
        settings.agent.memory_limit.map(|m| m.bytes()),
        crate::executor::slurm::TimeLimit::for_agent(settings.agent.timeout),
    );
    crate::executor::slurm::test_submission(resources).map_err(|error| {
        SupervisorError::Unsupported(format!(
            "{}: [executor] Slurm would not accept the agents' jobs: {error}",
            job.path.display()
        ))
    })
}
