//! `nightshift cancel DIR`: cancels a run's provider batches still running
//! (agent.llm.mode = "batch"), e.g. after Ctrl-C, the deadline or a budget
//! stop left them running at the provider. Each agent with such a batch is
//! run once as `nightshift-agent --cancel-batches`: the agent has the HTTP
//! client, the endpoint and the key (from this environment, as for resume),
//! and journals the provider's answer. A resume afterwards saves what the
//! batches finished and sends the rest again.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::error::{Result, SupervisorError};
use crate::executor::local::launch::contract_env;
use crate::reporting::batches::run_batches;
use crate::run::agent_program;
use crate::run::existing::{frozen_job, open_run};
use crate::run::lock;

pub fn cancel(dir: &Path) -> Result<i32> {
    let (run, plan) = open_run(dir)?;
    // A live run's agents would take the cancelled requests for failed ones
    // and send them again.
    if let Some(pid) = lock::holder(&run) {
        return Err(SupervisorError::Busy(dir.to_owned(), pid.to_string()));
    }
    let open: BTreeSet<_> = run_batches(&run, &plan)
        .into_iter()
        .filter(|b| !b.settled)
        .map(|b| b.at)
        .collect();
    if open.is_empty() {
        println!("no provider batch of {} is still running", dir.display());
        return Ok(0);
    }
    let job = frozen_job(&run)?;
    let argv = agent_program::resolve(None, &job.dir)?;
    let Some((program, args)) = argv.split_first() else {
        return Err(SupervisorError::AgentProgram(
            "no agent program to cancel the batches with".into(),
        ));
    };
    let mut failed = 0;
    for agent in plan.agents().filter(|a| open.contains(&a.at)) {
        let status = Command::new(program)
            .args(args)
            .arg("--cancel-batches")
            .envs(contract_env(&run, agent, 1))
            .current_dir(&job.dir)
            .status()
            .map_err(SupervisorError::io(format!(
                "cannot run {} for {}",
                program.to_string_lossy(),
                agent.name
            )))?;
        if !status.success() {
            failed += 1;
        }
    }
    let dir = dir.display();
    if failed > 0 {
        println!("{failed} of {} agent(s) could not cancel every batch (see above); `nightshift cancel {dir}` tries again", open.len());
        return Ok(shared::exit_codes::INCOMPLETE);
    }
    println!(
        "cancelled the provider batches of {} agent(s); `nightshift resume {dir}` saves what they finished and sends the rest again",
        open.len()
    );
    Ok(0)
}
