//! report.json: how each agent attempt went, what is missing, what was found.

use std::io;

use serde::Serialize;
use serde_json::json;

use shared::atomic::write_bytes_atomic;
use shared::rundir::RunDir;
use shared::validate::Problem;

use crate::outcome::Outcome;
use crate::reporting::cost::Cost;

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub agent: String,
    pub attempt: u32,
    pub pid: Option<i32>,
    /// The Slurm job (executor = "slurm"; pid is then None).
    pub job_id: Option<u32>,
    pub launched: String,
    pub seconds: f64,
    /// Peak resident memory of the attempt's whole process tree, bytes.
    pub peak_rss: u64,
    pub outcome: Outcome,
}

#[derive(Serialize)]
struct AttemptJson<'a> {
    agent: &'a str,
    attempt: u32,
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<u32>,
    launched: &'a str,
    seconds: f64,
    peak_rss: u64,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl<'a> From<&'a AttemptRecord> for AttemptJson<'a> {
    fn from(a: &'a AttemptRecord) -> Self {
        let (outcome, code, signal, reason) = match &a.outcome {
            Outcome::Succeeded => ("succeeded", Some(0), None, None),
            Outcome::Failed(code) => ("failed", Some(*code), None, None),
            Outcome::Crashed(signal) => ("crashed", None, Some(*signal), None),
            Outcome::Killed(reason) => ("killed", None, None, Some(reason.as_str().to_owned())),
            Outcome::LaunchFailed(error) => ("launch-failed", None, None, Some(error.clone())),
            Outcome::Slurm(state) => ("slurm", None, None, Some((*state).to_owned())),
        };
        Self {
            agent: &a.agent,
            attempt: a.attempt,
            pid: a.pid,
            job_id: a.job_id,
            launched: &a.launched,
            seconds: a.seconds,
            peak_rss: a.peak_rss,
            outcome,
            code,
            signal,
            reason,
        }
    }
}

/// The facts a report is made from.
pub struct ReportInput<'a> {
    pub state: &'a str,
    pub items_total: usize,
    pub items_done: usize,
    /// The ids as their JSON values ("item-037", not "\"item-037\""): the
    /// first `LISTED_ITEMS` (items.missing counts them all).
    pub missing_ids: Vec<serde_json::Value>,
    /// Items without a record and why, in plan order (the first
    /// `LISTED_ITEMS`, all counted by reason), and truncated replies.
    pub failures: &'a crate::reporting::failures::ItemReport,
    pub attempts: &'a [AttemptRecord],
    pub problems: &'a [Problem],
    pub seconds: f64,
    pub memory: &'a crate::outcome::MemoryReport,
    /// Tokens and USD per agent, segment and run.
    pub spent: &'a crate::reporting::cost::RunCost,
    /// Agent names, for the per-agent costs.
    pub plan: &'a shared::plan::Plan,
}

pub fn write_report(run: &RunDir, input: &ReportInput<'_>) -> io::Result<()> {
    let attempts: Vec<AttemptJson<'_>> = input.attempts.iter().map(AttemptJson::from).collect();
    let total = Cost::from(input.spent.total);
    let agents: Vec<serde_json::Value> = input
        .plan
        .agents()
        .map(|agent| (agent, input.spent.agent(agent.at)))
        .filter(|(_, spend)| !spend.is_zero())
        .map(|(agent, spend)| {
            let cost = Cost::from(spend);
            json!({"agent": agent.name, "usage": cost.usage, "cost": cost.cost})
        })
        .collect();
    let mut report = json!({
        "state": input.state,
        "usage": total.usage,
        "cost": total.cost,
        "cost_by_segment": input.spent.segment_costs(),
        "cost_by_agent": agents,
        "cache": crate::reporting::cache_hits::cache_hits(run, input.plan),
        "seconds": input.seconds,
        "items": {
            "total": input.items_total,
            "done": input.items_done,
            "missing": input.items_total.saturating_sub(input.items_done),
            "truncated": input.failures.truncated,
        },
        "missing_ids": input.missing_ids,
        "failures": input.failures.failed,
        "failures_total": input.failures.total,
        "failures_by_reason": input.failures.by_reason,
        "memory": input.memory,
        "attempts": attempts,
        "problems": input.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    // Batch mode: every provider batch, its last state and counts.
    let batches = crate::reporting::batches::run_batches(run, input.plan);
    if !batches.is_empty() {
        report["batches"] = json!(batches);
    }
    let mut bytes = serde_json::to_vec_pretty(&report)?;
    bytes.push(b'\n');
    write_bytes_atomic(&run.report_json(), &bytes)
}
