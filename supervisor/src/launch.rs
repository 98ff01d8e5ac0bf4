//! Starting one agent process: its own session and process group, the agent
//! contract's environment, the job folder as working folder, output to its log.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use shared::plan::AgentPlan;
use shared::rundir::RunDir;

use crate::reaper::SPAWN_LOCK;
use crate::unix::start_in_new_session;

/// What every launch of this run shares.
pub struct Launcher<'a> {
    pub argv: &'a [OsString],
    pub job_dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub run: &'a RunDir,
}

impl Launcher<'_> {
    /// Spawns the agent; returns its pid, which is also its process group id.
    pub fn launch(&self, agent: &AgentPlan, attempt: u32) -> io::Result<i32> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty agent program"))?;
        // Appending: a relaunched agent keeps the earlier attempts' output.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run.agent_log(agent.at))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(self.job_dir)
            .envs(self.env)
            .env("NIGHTSHIFT_TASK", self.run.agent_task(agent.at))
            .env("NIGHTSHIFT_OUTPUT", self.run.agent_output(agent.at))
            .env("NIGHTSHIFT_AGENT", &agent.name)
            .env("NIGHTSHIFT_ATTEMPT", attempt.to_string())
            .env("NIGHTSHIFT_RUN_DIR", self.run.root())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        start_in_new_session(&mut command);
        let child = {
            let _spawning = SPAWN_LOCK
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            command.spawn()?
        };
        // The reaper collects the child with waitpid(-1); the handle is not needed.
        let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
        drop(child);
        Ok(pid)
    }
}
