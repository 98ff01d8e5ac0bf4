//! Opening a run directory that already exists (validate, merge, and later
//! resume and status): its plan, and its frozen job with paths resolved against
//! the original job folder.

use std::path::Path;

use shared::job::Job;
use shared::plan::Plan;
use shared::rundir::{RunDir, RunInfo};

use crate::error::{Result, SupervisorError};

/// The run directory at `dir`, by its absolute path.
pub fn run_dir_at(dir: &Path) -> Result<RunDir> {
    let root = std::path::absolute(dir).map_err(SupervisorError::io(format!(
        "cannot resolve {}",
        dir.display()
    )))?;
    Ok(RunDir::new(root))
}

pub fn open_run(dir: &Path) -> Result<(RunDir, Plan)> {
    let run = run_dir_at(dir)?;
    let text = match std::fs::read(run.plan_json()) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SupervisorError::NotARunDir(dir.to_owned()))
        }
        Err(e) => {
            return Err(SupervisorError::io(format!(
                "cannot read {}",
                run.plan_json().display()
            ))(e))
        }
    };
    let plan = serde_json::from_slice(&text).map_err(|e| {
        SupervisorError::io(format!("cannot read {}", run.plan_json().display()))(e.into())
    })?;
    Ok((run, plan))
}

/// The job as it was launched (RUN/job.toml), read as if it still sat in its
/// original folder so relative paths mean what they meant.
pub fn frozen_job(run: &RunDir) -> Result<Job> {
    let info = run_info(run)?;
    let text = std::fs::read_to_string(run.job_toml()).map_err(SupervisorError::io(format!(
        "cannot read {}",
        run.job_toml().display()
    )))?;
    Ok(Job::from_text(&info.job_file, text)?)
}

/// RUN/run.json: where the job came from.
pub fn run_info(run: &RunDir) -> Result<RunInfo> {
    let info_text = std::fs::read(run.run_json()).map_err(SupervisorError::io(format!(
        "cannot read {}",
        run.run_json().display()
    )))?;
    let info: RunInfo = serde_json::from_slice(&info_text).map_err(|e| {
        SupervisorError::io(format!("cannot read {}", run.run_json().display()))(e.into())
    })?;
    Ok(info)
}
