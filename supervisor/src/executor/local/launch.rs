//! Starting one agent process: its own session and process group, the agent
//! contract's environment, the job folder as working folder, and its output
//! through a pipe into its bounded log (see `spawn` for how, `agent_log`
//! for the log).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::Path;

use shared::broker::{RUN_DIR_VAR, SOCKET_VAR};
use shared::plan::AgentPlan;
use shared::rundir::RunDir;

use crate::executor::local::agent_log::{open_pipe, LogPump};
use crate::executor::local::reaper::SPAWN_LOCK;
use crate::executor::local::spawn::{spawn, SpawnRequest};

/// What every launch of this run shares.
pub struct Launcher<'a> {
    pub argv: &'a [OsString],
    pub job_dir: &'a Path,
    pub run: &'a RunDir,
    pub log_limit: u64,
    /// The thread that copies every agent's output into its log.
    pub logs: LogPump,
    /// Every agent's environment but the contract's per-attempt variables:
    /// the supervisor's own, agent.env over it, and NIGHTSHIFT_SOCKET.
    base_env: BTreeMap<OsString, OsString>,
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
        (RUN_DIR_VAR, run.root().as_os_str().to_owned()),
    ]
}

impl<'a> Launcher<'a> {
    /// `env`: the job's agent.env; `socket`: the rate broker's, if any.
    pub fn new(
        argv: &'a [OsString],
        job_dir: &'a Path,
        run: &'a RunDir,
        env: &BTreeMap<String, String>,
        socket: Option<&Path>,
        log_limit: u64,
        logs: LogPump,
    ) -> Self {
        let mut base_env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        base_env.extend(env.iter().map(|(n, v)| (n.into(), v.into())));
        if let Some(socket) = socket {
            base_env.insert(SOCKET_VAR.into(), socket.into());
        }
        Self {
            argv,
            job_dir,
            run,
            log_limit,
            logs,
            base_env,
        }
    }

    /// Spawns the agent; returns its pid, which is also its process group id.
    pub fn launch(&self, agent: &AgentPlan, attempt: u32) -> io::Result<i32> {
        let (log_reader, log_writer) = open_pipe()?;
        let mut env = self.base_env.clone();
        env.extend(
            contract_env(self.run, agent, attempt)
                .into_iter()
                .map(|(name, value)| (OsString::from(name), value)),
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
