//! What a run is doing or did, from its directory alone — live or dead:
//! the plan, the journal (events.jsonl), live.json and the agent files. A run
//! whose supervisor is gone without a "run-finished" is `interrupted`.

use std::collections::HashMap;

use serde::Serialize;

use shared::exit_codes;
use shared::journal::{AgentHistory, Journal, KillReason, Outcome, RunEnd};
use shared::money::Usage;
use shared::plan::Plan;
use shared::rundir::RunDir;

use crate::executor::local::sweep::{find_leftovers, Agents, Group};
use crate::merge::{final_up_to_date, segment_up_to_date};
use crate::reporting::cache_hits::{cache_hits, CacheHits};
use crate::reporting::cost::{projected, run_cost, Cost, SegmentCost};
use crate::reporting::failures::{self, FailedItem, Scope};
use crate::reporting::progress::Progress;
use crate::run::live::LiveAgents;
use crate::run::lock;

#[derive(Debug, Serialize)]
pub struct RunStatus {
    pub state: &'static str,
    pub run_dir: String,
    pub job: String,
    pub supervisor_pid: Option<i32>,
    /// `nightshift control` in force on the live run: paused, and the
    /// concurrency it set (None: the job's limits.max_parallel).
    pub paused: bool,
    pub max_parallel: Option<usize>,
    pub items: ItemCounts,
    /// Tokens and USD spent by the whole run (every session), records and
    /// failure lines; `cost` null when no price is known.
    pub usage: Usage,
    pub cost: Option<f64>,
    /// The cost of the whole run at the cost per saved item so far.
    pub projected_cost: Option<f64>,
    /// The same per segment.
    pub segments: Vec<SegmentCost>,
    /// Records answered from the answer cache, and the USD they saved.
    pub cache: CacheHits,
    /// API keys their servers rejected (the endpoint and the variable).
    pub rejected_keys: Vec<String>,
    /// Failed items by reason, and the last few (while the run is live: the
    /// items agents gave up on; after it: every missing item).
    pub failures: FailureSummary,
    pub agents: Vec<AgentStatus>,
    /// Provider batches (agent.llm.mode = "batch"): state, counts, age.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<crate::reporting::batches::BatchStatus>,
    pub resume: ResumePlan,
}

#[derive(Debug, Serialize)]
pub struct FailureSummary {
    pub by_reason: std::collections::BTreeMap<String, usize>,
    pub last: Vec<FailedItem>,
}

/// How many failed items `status` lists.
const LAST_FAILURES: usize = 5;

#[derive(Debug, Serialize)]
pub struct ItemCounts {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    /// Saved replies cut by max_tokens (LLM backends).
    pub truncated: usize,
}

#[derive(Debug, Serialize)]
pub struct AgentStatus {
    pub name: String,
    /// pending, running, waiting (for a retry or room), done, failed, interrupted
    pub state: &'static str,
    pub done: usize,
    pub total: usize,
    pub pid: Option<i32>,
    /// The Slurm job, under executor = "slurm".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u32>,
    pub rss: Option<u64>,
    pub reason: Option<String>,
    pub attempts: u32,
    pub usage: Usage,
    pub cost: Option<f64>,
}

/// What `nightshift resume` would do now.
#[derive(Debug, Serialize)]
pub struct ResumePlan {
    pub agents_to_run: usize,
    pub segments_to_merge: Vec<usize>,
    pub final_to_write: bool,
    pub leftover_processes: usize,
    pub would_do_nothing: bool,
}

/// The latest attempt was stopped because the run stopped (Ctrl-C, deadline),
/// or said that the run cannot go on (exit code 5) or that its budget is
/// spent (exit code 4): not its items' fault.
fn stopped(history: &AgentHistory) -> bool {
    history.last().is_some_and(|attempt| {
        attempt.kill.is_some_and(KillReason::stops_run)
            || matches!(
                attempt.outcome(),
                Outcome::Failed {
                    code: exit_codes::CANNOT_GO_ON | exit_codes::BUDGET_SPENT
                }
            )
    })
}

fn last_succeeded(history: &AgentHistory) -> bool {
    history
        .last_ended()
        .is_some_and(|a| a.outcome() == Outcome::Succeeded)
}

/// What went wrong with the latest launch, if anything did.
fn last_failure(history: &AgentHistory) -> Option<String> {
    if let Some(error) = &history.launch_error {
        return Some(format!("could not start: {error}"));
    }
    match history.last()?.outcome() {
        Outcome::Running | Outcome::Succeeded => None,
        failed => Some(failed.to_string()),
    }
}

pub fn run_status(run: &RunDir, plan: &Plan, journal: &Journal) -> RunStatus {
    let supervisor = lock::holder(run);
    let alive = supervisor.is_some();
    let history = &journal.history.agents;
    let live = LiveAgents::read(run).ok().flatten().unwrap_or_default();
    let live_by_name: HashMap<&str, _> =
        live.agents.iter().map(|a| (a.agent.as_str(), a)).collect();
    let progress = Progress::new(run, plan);
    let spent = run_cost(run, plan, &progress);
    let mut agents = Vec::new();
    let (mut done_total, mut failed_items, mut to_run) = (0, 0, 0);
    for agent in plan.agents() {
        let done = progress.saved(&run.agent_output(agent.at));
        let total = agent.items;
        done_total += done;
        let past = history.get(&agent.name);
        let failure = past.and_then(last_failure);
        let now_live = live_by_name.get(agent.name.as_str()).filter(|_| alive);
        let state = if done == total {
            "done"
        } else if now_live.is_some() {
            "running"
        } else if past.is_some_and(|h| h.waiting) && alive {
            "waiting"
        } else if past.is_some_and(|h| h.running() || stopped(h)) && !alive {
            "interrupted"
        } else if past.is_some_and(|h| h.launches() > 0 && !last_succeeded(h)) || failure.is_some()
        {
            "failed"
        } else {
            "pending"
        };
        if state == "failed" {
            failed_items += total - done;
        }
        if done < total {
            to_run += 1;
        }
        agents.push(AgentStatus {
            name: agent.name.clone(),
            state,
            done,
            total,
            pid: now_live.filter(|l| l.pid > 0).map(|l| l.pid),
            job_id: now_live.and_then(|l| l.job_id),
            rss: now_live.map(|l| l.rss),
            reason: failure.filter(|_| state != "done"),
            attempts: past.map_or(0, AgentHistory::launches),
            usage: spent.agent(agent.at).usage,
            cost: Cost::from(spent.agent(agent.at)).cost,
        });
    }
    let state = if alive {
        "running"
    } else {
        match journal.history.finished {
            Some(RunEnd::Finished) => "finished",
            Some(RunEnd::Failed | RunEnd::Halted) => "failed",
            // Cannot go on until someone fixes it (a key, the disk); resumable.
            Some(RunEnd::Stopped) => "stopped",
            // Its budget is spent; resumable with a larger one.
            Some(RunEnd::Budget) => "budget",
            // Stopped at its deadline, resumable: the same as an interrupted run.
            _ => "interrupted",
        }
    };
    let leftover_processes = if alive {
        0
    } else {
        let groups: Vec<Group> = live
            .agents
            .iter()
            .filter(|a| a.start_ticks > 0 && live.boot_id == crate::platform::boot_id())
            .map(|a| Group {
                agent: a.agent.clone(),
                pgid: a.pid,
                leader_start: a.start_ticks,
            })
            .collect();
        find_leftovers(run.root(), &Agents::All, &groups).len()
    };
    let segments_to_merge: Vec<usize> = plan
        .segments
        .iter()
        .filter(|s| !segment_up_to_date(run, s))
        .map(|s| s.number)
        .collect();
    let final_to_write = !final_up_to_date(run, plan);
    let scope = if alive {
        Scope::Reported
    } else {
        Scope::Missing
    };
    let job = crate::run::existing::frozen_job(run).ok();
    let items = failures::item_report(
        run,
        plan,
        journal,
        job.as_ref().map(|j| &j.settings),
        scope,
        failures::LISTED_ITEMS,
    );
    let failed = &items.failed;
    RunStatus {
        state,
        run_dir: run.root().display().to_string(),
        job: plan.job.clone(),
        supervisor_pid: supervisor,
        paused: alive && journal.history.paused,
        max_parallel: journal.history.max_parallel.filter(|_| alive),
        items: ItemCounts {
            total: plan.items_total,
            done: done_total,
            failed: failed_items,
            truncated: items.truncated,
        },
        usage: spent.total.usage,
        cost: Cost::from(spent.total).cost,
        projected_cost: projected(&spent.total, done_total, plan.items_total),
        segments: spent.segment_costs(),
        cache: cache_hits(run, plan),
        rejected_keys: journal.history.rejected_keys.clone(),
        failures: FailureSummary {
            by_reason: items.by_reason.clone(),
            last: failed[failed.len().saturating_sub(LAST_FAILURES)..].to_vec(),
        },
        agents,
        batches: crate::reporting::batches::run_batches(run, plan),
        resume: ResumePlan {
            agents_to_run: to_run,
            would_do_nothing: to_run == 0
                && segments_to_merge.is_empty()
                && !final_to_write
                && leftover_processes == 0,
            segments_to_merge,
            final_to_write,
            leftover_processes,
        },
    }
}
