//! The run directory's layout: where every file of a run lives. Nothing else
//! builds these paths, so the layout of DESIGN.md is fixed in one place.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::AgentRef;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Frozen copy of the job file as launched.
    pub fn job_toml(&self) -> PathBuf {
        self.root.join("job.toml")
    }

    /// Where the job came from (its folder is the agents' working folder).
    pub fn run_json(&self) -> PathBuf {
        self.root.join("run.json")
    }

    pub fn plan_json(&self) -> PathBuf {
        self.root.join("plan.json")
    }

    pub fn events(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }

    pub fn final_json(&self) -> PathBuf {
        self.root.join("final.json")
    }

    pub fn report_json(&self) -> PathBuf {
        self.root.join("report.json")
    }

    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("supervisor.log")
    }

    pub fn segment_dir(&self, segment: usize) -> PathBuf {
        self.root.join(format!("segment_{segment:02}"))
    }

    pub fn orchestrator_dir(&self, segment: usize, orchestrator: usize) -> PathBuf {
        self.segment_dir(segment)
            .join(format!("orch_{orchestrator:02}"))
    }

    /// The merged file of one segment.
    pub fn segment_file(&self, segment: usize) -> PathBuf {
        self.root.join(format!("segment_{segment:02}.jsonl"))
    }

    /// The merged file of one orchestrator.
    pub fn orchestrator_file(&self, segment: usize, orchestrator: usize) -> PathBuf {
        self.segment_dir(segment)
            .join(format!("orch_{orchestrator:02}.jsonl"))
    }

    fn agent_path(&self, at: AgentRef, extension: &str) -> PathBuf {
        self.orchestrator_dir(at.segment, at.orchestrator)
            .join(format!("agent_{:02}.{extension}", at.agent))
    }

    pub fn agent_task(&self, at: AgentRef) -> PathBuf {
        self.agent_path(at, "task.json")
    }

    /// The agent's results, appended progressively.
    /// The ids of an agent's items, in input order, from its task file.
    pub fn agent_ids(&self, at: AgentRef) -> std::io::Result<Vec<crate::ids::IdKey>> {
        crate::task::read_task_ids(&self.agent_task(at))
    }

    pub fn agent_output(&self, at: AgentRef) -> PathBuf {
        self.agent_path(at, "jsonl")
    }

    /// The batch script of the agent's Slurm job (executor = "slurm").
    pub fn agent_batch_script(&self, at: AgentRef) -> PathBuf {
        self.agent_path(at, "sbatch")
    }

    pub fn agent_log(&self, at: AgentRef) -> PathBuf {
        self.agent_path(at, "log")
    }

    /// The agent's provider batches, in batch mode (see `crate::batch`).
    pub fn agent_batches(&self, at: AgentRef) -> PathBuf {
        crate::batch::batch_path(&self.agent_output(at))
    }

    /// Why the agent's failed items failed (see `crate::failures`).
    pub fn agent_failures(&self, at: AgentRef) -> PathBuf {
        crate::failures::failures_path(&self.agent_output(at))
    }
}

/// A file beside an agent file, named after it: `agent_01.jsonl` with
/// `kind` "failures" → `agent_01.failures.jsonl` (any other name gets the
/// suffix appended).
pub fn beside_agent_file(output: &Path, kind: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    output.with_file_name(format!("{stem}.{kind}.jsonl"))
}

/// run.json: facts about the run that the frozen job.toml cannot carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// The job file the run was started from (absolute).
    pub job_file: PathBuf,
    /// Its folder: relative paths in the job resolve here; agents run here.
    pub job_dir: PathBuf,
    /// The input file that was read (absolute).
    pub input: PathBuf,
    /// The pipeline stage this directory holds (RUN/stage_NAME); its job.toml
    /// is derived from the pipeline's job file, so it never equals that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    pub started: String,
}
