//! Starting one agent process: its own session and process group, the agent
//! contract's environment, the job folder as working folder, and its output
//! through a pipe into its bounded log.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use shared::plan::AgentPlan;
use shared::rundir::RunDir;

use crate::executor::local::agent_log::{open_pipe, spawn_log_thread};
use crate::executor::local::reaper::SPAWN_LOCK;
use crate::executor::local::unix::start_in_new_session;

/// What every launch of this run shares.
pub struct Launcher<'a> {
    pub argv: &'a [OsString],
    pub job_dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub run: &'a RunDir,
    pub log_limit: u64,
    /// The rate broker's socket (NIGHTSHIFT_SOCKET).
    pub socket: Option<std::path::PathBuf>,
}

/// The agent contract's environment for one attempt (any executor).
pub fn contract_env(
    run: &RunDir,
    agent: &AgentPlan,
    attempt: u32,
) -> [(&'static str, OsString); 5] {
    [
        ("NIGHTSHIFT_TASK", run.agent_task(agent.at).into_os_string()),
        (
            "NIGHTSHIFT_OUTPUT",
            run.agent_output(agent.at).into_os_string(),
        ),
        ("NIGHTSHIFT_AGENT", agent.name.clone().into()),
        ("NIGHTSHIFT_ATTEMPT", attempt.to_string().into()),
        ("NIGHTSHIFT_RUN_DIR", run.root().as_os_str().to_owned()),
    ]
}

impl Launcher<'_> {
    /// Spawns the agent; returns its pid, which is also its process group id.
    /// With `cgroup`, the agent joins that cgroup before it runs anything.
    pub fn launch(
        &self,
        agent: &AgentPlan,
        attempt: u32,
        cgroup: Option<&std::ffi::CStr>,
    ) -> io::Result<i32> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty agent program"))?;
        let (log_reader, log_writer) = open_pipe()?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(self.job_dir)
            .envs(self.env)
            .envs(contract_env(self.run, agent, attempt))
            .stdin(Stdio::null())
            .stdout(log_writer.try_clone()?)
            .stderr(log_writer);
        if let Some(socket) = &self.socket {
            command.env("NIGHTSHIFT_SOCKET", socket);
        }
        start_in_new_session(&mut command, cgroup.map(std::ffi::CStr::to_owned));
        let child = {
            let _spawning = SPAWN_LOCK
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            command.spawn()?
        };
        // `command` still holds the pipe's write end: drop it, so the log
        // thread sees end-of-file when the agent and its tree are done.
        drop(command);
        // Appending: a relaunched agent keeps the earlier attempts' output.
        spawn_log_thread(log_reader, self.run.agent_log(agent.at), self.log_limit)?;
        // The reaper collects the child with waitpid(-1); the handle is not needed.
        let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
        drop(child);
        Ok(pid)
    }
}
