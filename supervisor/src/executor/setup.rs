//! Choosing and building the executor of a run (executor.kind), with the
//! memory enforcement that goes with it: cgroups and sampling on this
//! machine, Slurm's --mem on a cluster.

use std::ffi::OsString;

use shared::job::{Deadline, ExecutorKind, Job, JobSettings, LlmMode};
use shared::rundir::RunDir;

use super::local::agent_log::LogPump;
use super::local::launch::Launcher;
use super::local::LocalExecutor;
use super::slurm::{self, SlurmExecutor};
use super::Executor;
use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::rate::server::RateServer;
use crate::run::answer_cache;
use crate::watchdog::memory::{self, MemoryWatch};

/// An executor ready to start attempts, and how memory is watched under it.
pub struct ExecutorSetup<'a> {
    pub executor: Box<dyn Executor + 'a>,
    pub memory: MemoryWatch,
    /// How memory is enforced, in words (console, journal, report).
    pub memory_mode: String,
}

/// The executor the job asks for. Says on the console what it means for the
/// run (where Slurm needs the run directory, which memory limits hold).
pub fn for_run<'a>(
    run: &'a RunDir,
    job: &'a Job,
    agent_argv: &'a [OsString],
    rate: Option<&RateServer>,
    until: Option<Deadline>,
    console: &Console,
) -> Result<ExecutorSetup<'a>> {
    let settings = &job.settings;
    let online_at = batch_online_at(settings, until);
    let grace = settings.agent.kill_grace.get();
    if settings.executor.kind == ExecutorKind::Slurm {
        let memory_mode = match settings.agent.memory_limit {
            Some(limit) => {
                format!("Slurm enforces agent.memory_limit {limit} per job (sbatch --mem)")
            }
            None => {
                "Slurm (no agent.memory_limit: the partition's default memory per job)".to_owned()
            }
        };
        if settings.limits.ram_ceiling.is_some() || settings.limits.min_free.is_some() {
            console.line("memory: limits.ram_ceiling and limits.min_free do not apply under Slurm (Slurm places each job by its --mem)");
        }
        console.line(&format!(
            "executor: Slurm (jobs named {}*); {} must be on a filesystem every node shares",
            slurm::job_prefix(run.root()),
            run.root().display()
        ));
        if let Some(kind) = slurm::node_local_filesystem(run.root()) {
            console.line(&format!(
                "warning: the run directory is on {kind}, which only this machine sees: fine for a one-node cluster, lost work elsewhere"
            ));
        }
        let mut broker_env = rate.map(RateServer::agent_env).unwrap_or_default();
        let (var, file) = answer_cache::agent_var(job);
        broker_env.push((var, file.into()));
        broker_env.extend(online_at.map(|(k, v)| (k.to_owned(), v.into())));
        let executor = SlurmExecutor::new(run, settings, agent_argv, &job.dir, broker_env);
        return Ok(ExecutorSetup {
            executor: Box::new(executor),
            memory: MemoryWatch::for_slurm(settings),
            memory_mode,
        });
    }
    let (cgroups, memory_mode) = memory::choose_mode(settings)?;
    let memory = MemoryWatch::new(settings);
    let logs =
        LogPump::start().map_err(SupervisorError::io("cannot start the agent log thread"))?;
    let mut agent_env = settings.agent.env.clone();
    agent_env.extend([answer_cache::agent_var(job)]);
    agent_env.extend(online_at.map(|(k, v)| (k.to_owned(), v)));
    let launcher = Launcher::new(
        agent_argv,
        &job.dir,
        run,
        &agent_env,
        rate.map(RateServer::path),
        settings.limits.agent_log_limit.bytes(),
        logs,
    );
    let executor = LocalExecutor::new(launcher, cgroups, memory.per_agent_limit(), grace);
    Ok(ExecutorSetup {
        executor: Box::new(executor),
        memory,
        memory_mode,
    })
}

/// mode = "auto": when the agents send their outstanding items online —
/// agent.llm.batch_deadline, else the run's deadline (--until or
/// schedule.deadline), counted from now like the supervisor's own — as the
/// variable that tells them (milliseconds since the Unix epoch).
fn batch_online_at(
    settings: &JobSettings,
    until: Option<Deadline>,
) -> Option<(&'static str, String)> {
    let llm = settings
        .agent
        .llm
        .as_ref()
        .filter(|l| l.mode == LlmMode::Auto)?;
    let deadline = llm
        .batch_deadline
        .or(until)
        .or(settings.schedule.deadline)?;
    let now = std::time::Instant::now();
    let after = crate::schedule::gate::deadline_instant(deadline, now) - now;
    let at = std::time::SystemTime::now() + after;
    let millis = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Some((shared::batch::ONLINE_AT_VAR, millis.to_string()))
}
