//! `nightshift status DIR [--json]`: what a run is doing or did, from another
//! terminal, on a live or a dead run.

use std::path::Path;

use shared::exit_codes;
use shared::journal::{Journal, RunEnd};

use crate::commands::stages;
use crate::error::{Result, SupervisorError};
use crate::reporting::status::{run_status, RunStatus};
use crate::reporting::view::size;
use crate::run::existing::open_run;
use crate::run::journal::read_journal;

/// Agents listed by name in the text form before the rest are counted.
const LISTED: usize = 20;

pub fn status(dir: &Path, as_json: bool) -> Result<i32> {
    if crate::run::pipeline::is_pipeline_dir(dir) {
        if !as_json {
            return stages::each_stage(dir, true, |stage| status(stage, false));
        }
        let (value, code) = stages::pipeline_status_json(dir)?;
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| SupervisorError::io("cannot encode the status")(e.into()))?;
        println!("{text}");
        return Ok(code);
    }
    let (run, plan) = open_run(dir)?;
    let journal = read_journal(&run.events())?;
    let status = run_status(&run, &plan, &journal);
    if as_json {
        let text = serde_json::to_string_pretty(&status)
            .map_err(|e| SupervisorError::io("cannot encode the status")(e.into()))?;
        println!("{text}");
    } else {
        print!("{}", describe(&status));
    }
    Ok(status_code(&journal, status.supervisor_pid.is_some()))
}

/// What `status` exits with, so a script can test a run: 0 live or finished
/// complete, 1 finished with failures (or halted), and the codes `run` gives
/// for its stops: 3 deadline, 5 cannot go on, 130 interrupted (a supervisor
/// that died without a word counts as interrupted).
pub fn status_code(journal: &Journal, alive: bool) -> i32 {
    if alive {
        return exit_codes::SUCCESS;
    }
    journal
        .history
        .finished
        .unwrap_or(RunEnd::Interrupted)
        .exit_code()
}

fn describe(s: &RunStatus) -> String {
    let mut text = String::new();
    let who = s
        .supervisor_pid
        .map_or_else(String::new, |pid| format!(" (supervisor pid {pid})"));
    text.push_str(&format!("{}: {}{who}\n", s.run_dir, s.state));
    if s.paused {
        text.push_str("paused by nightshift control: nothing is launched (--continue to go on)\n");
    }
    if let Some(n) = s.max_parallel {
        text.push_str(&format!("max-parallel {n} (set by nightshift control)\n"));
    }
    let percent = crate::reporting::view::percent(s.items.done, s.items.total);
    text.push_str(&format!(
        "items: {} of {} done ({percent:.0}%), {} failed\n",
        s.items.done, s.items.total, s.items.failed
    ));
    if let Some(spent) = crate::reporting::cost::describe(&s.usage, s.cost, s.projected_cost) {
        text.push_str(&format!("{spent}\n"));
    }
    if let Some(line) = s.cache.describe() {
        text.push_str(&format!("{line}\n"));
    }
    if !s.rejected_keys.is_empty() {
        text.push_str(&format!(
            "keys rejected by their servers (dropped): {}\n",
            s.rejected_keys.join(", ")
        ));
    }
    if s.items.truncated > 0 {
        text.push_str(&format!(
            "truncated: {} saved repl(ies) cut by max_tokens (kept; raise agent.llm.max_tokens to get them whole)\n",
            s.items.truncated
        ));
    }
    if !s.failures.by_reason.is_empty() {
        let mut reasons: Vec<(&String, &usize)> = s.failures.by_reason.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        let listed: Vec<String> = reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        text.push_str(&format!(
            "failures: {} — nightshift failures {}\n",
            listed.join(", "),
            s.run_dir
        ));
    }
    text.push_str(&crate::reporting::batches::describe(&s.batches));
    let count = |state: &str| s.agents.iter().filter(|a| a.state == state).count();
    text.push_str(&format!(
        "agents: {} running, {} waiting, {} done, {} failed, {} interrupted, {} pending\n",
        count("running"),
        count("waiting"),
        count("done"),
        count("failed"),
        count("interrupted"),
        count("pending")
    ));
    for (title, state) in [
        ("running", "running"),
        ("failed", "failed"),
        ("interrupted", "interrupted"),
    ] {
        let listed: Vec<_> = s.agents.iter().filter(|a| a.state == state).collect();
        if listed.is_empty() {
            continue;
        }
        text.push_str(&format!("{title}:\n"));
        for agent in listed.iter().take(LISTED) {
            let pid = match (agent.pid, agent.job_id) {
                (_, Some(job)) => format!("  job {job}"),
                (Some(pid), None) => format!("  pid {pid}"),
                (None, None) => String::new(),
            };
            let rss = agent
                .rss
                .map_or_else(String::new, |r| format!("  {}", size(r)));
            let reason = agent
                .reason
                .as_deref()
                .map_or_else(String::new, |r| format!("  {r}"));
            text.push_str(&format!(
                "  {}  {}/{}{rss}{pid}{reason}\n",
                agent.name, agent.done, agent.total
            ));
        }
        if listed.len() > LISTED {
            text.push_str(&format!("  … and {} more\n", listed.len() - LISTED));
        }
    }
    let r = &s.resume;
    if s.state != "running" {
        if r.would_do_nothing {
            text.push_str("resume would do nothing: the run is complete\n");
        } else {
            let mut steps = Vec::new();
            if r.leftover_processes > 0 {
                steps.push(format!("end {} leftover process(es)", r.leftover_processes));
            }
            if r.agents_to_run > 0 {
                steps.push(format!(
                    "run {} agent(s) on their remaining items",
                    r.agents_to_run
                ));
            }
            if !r.segments_to_merge.is_empty() {
                steps.push(format!("merge {} segment(s)", r.segments_to_merge.len()));
            }
            if r.final_to_write {
                steps.push("write the final output".to_owned());
            }
            text.push_str(&format!(
                "`nightshift resume {}` would: {}\n",
                s.run_dir,
                steps.join(", ")
            ));
        }
    }
    text
}
