//! The Slurm executor's side of the world: each agent attempt is one batch job
//! (`sbatch`), its state is read back with `squeue` (and, once it has left the
//! queue, `scontrol show job`, `sacct`, or `sacct -c` for clusters without an
//! accounting database), and kills are `scancel`. Slurm's cgroups end the whole
//! tree of a job; nightshift keeps its own wall-clock and stall checks.
//!
//! Jobs are named `nightshift.<run key>.<agent>`, the run key a hash of the run
//! directory's path, so a supervisor resumed on the same directory finds its
//! jobs by name even if it died between `sbatch` and the `launched` event.

mod batch;
mod commands;
mod executor;
mod state;

pub use batch::{resource_args, Submission, TimeLimit};
pub use commands::{cancel, final_state, our_jobs, submit, test_submission, QueuedJob, SlurmError};
pub use executor::SlurmExecutor;
pub use state::{JobEnd, JobState};

use std::path::Path;

use shared::plan::AgentRef;

/// The prefix of every job name of the run in `root`.
pub fn job_prefix(root: &Path) -> String {
    format!("nightshift.{:08x}.", run_key(root))
}

/// The job name of one agent of the run in `root`.
pub fn job_name(root: &Path, at: AgentRef) -> String {
    format!(
        "{}s{:02}o{:02}a{:02}",
        job_prefix(root),
        at.segment,
        at.orchestrator,
        at.agent
    )
}

/// The agent a job name (of this run's prefix) stands for.
pub fn agent_of(name: &str, prefix: &str) -> Option<AgentRef> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('s')?;
    let (segment, rest) = rest.split_once('o')?;
    let (orchestrator, agent) = rest.split_once('a')?;
    Some(AgentRef {
        segment: segment.parse().ok()?,
        orchestrator: orchestrator.parse().ok()?,
        agent: agent.parse().ok()?,
    })
}

/// The client commands the executor runs.
const COMMANDS: [&str; 4] = ["sbatch", "squeue", "scancel", "scontrol"];

/// Slurm client commands that are not on PATH.
pub fn missing_commands() -> Vec<&'static str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    COMMANDS
        .into_iter()
        .filter(|command| !std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
        .collect()
}

/// The kind of filesystem `path` is on, when it is one that only this machine
/// sees (the nodes must read task files and write agent files there).
pub fn node_local_filesystem(path: &Path) -> Option<&'static str> {
    crate::platform::files::is_tmpfs(path).then_some("tmpfs")
}

/// FNV-1a (32 bits) of the path: stable across builds, unlike std's hasher.
fn run_key(root: &Path) -> u32 {
    let path = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_round_trip() {
        let root = Path::new("/nonexistent/run");
        let at = AgentRef {
            segment: 2,
            orchestrator: 11,
            agent: 3,
        };
        let name = job_name(root, at);
        assert!(name.starts_with("nightshift."));
        assert_eq!(agent_of(&name, &job_prefix(root)), Some(at));
        assert_eq!(agent_of(&name, "nightshift.00000000."), None);
        assert_ne!(
            job_prefix(root),
            job_prefix(Path::new("/nonexistent/other"))
        );
    }
}
