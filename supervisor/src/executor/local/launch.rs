//! Starting one agent process: its own session and process group, the agent
//! contract's environment, the job folder as working folder, and its output
//! through a pipe into its bounded log (see `spawn` for how, `agent_log`
//! for the log).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::io;
use std::path::Path;

use shared::plan::AgentPlan;
use shared::rundir::RunDir;

use crate::executor::local::agent_log::{open_pipe, LogPump};
use crate::executor::local::reaper::SPAWN_LOCK;
use crate::executor::local::spawn::{child_environment, spawn, SpawnRequest};

/// What every launch of this run shares.
pub struct Launcher<'a> {
    pub argv: &'a [OsString],
    pub job_dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub run: &'a RunDir,
    pub log_limit: u64,
    /// The rate broker's socket (NIGHTSHIFT_SOCKET).
    pub socket: Option<std::path::PathBuf>,
    /// The thread that copies every agent's output into its log.
    pub logs: LogPump,
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
    pub fn launch(&self, agent: &AgentPlan, attempt: u32) -> io::Result<i32> {
        let (log_reader, log_writer) = open_pipe()?;
        let contract = contract_env(self.run, agent, attempt);
        let socket = self
            .socket
            .as_ref()
            .map(|path| (OsStr::new("NIGHTSHIFT_SOCKET"), path.as_os_str()));
        let env = child_environment(
            self.env
                .iter()
                .map(|(name, value)| (OsStr::new(name), OsStr::new(value)))
                .chain(
                    contract
                        .iter()
                        .map(|(n, v)| (OsStr::new(*n), v.as_os_str())),
                )
                .chain(socket),
        );
        let pid = {
            // glibc reaps a child whose exec failed itself: the reaper must
            // not call waitpid(-1) in that window.
            let _spawning = SPAWN_LOCK
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            spawn(&SpawnRequest {
                argv: self.argv,
                env: &env,
                dir: self.job_dir,
                output: &log_writer,
            })?
        };
        // The agent holds the write end now: ours must go, so the pump sees
        // end-of-file when the agent and its tree are done.
        drop(log_writer);
        self.logs
            .add(log_reader, self.run.agent_log(agent.at), self.log_limit)?;
        Ok(pid)
    }
}
