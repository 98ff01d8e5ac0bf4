//! Failures by item, the unit a person thinks in: every item without a saved
//! record and the one reason it has — what its agent wrote in its failures
//! file (`timeout after 5s`, `HTTP 400: …`, `validation: …`), else what ended
//! the agent's last attempt (`killed: memory 412 MiB > 300 MiB`, `crashed:
//! signal 11`, `exit code 1: <its last log line>`). `status`, report.json,
//! the HTML report and `nightshift failures` all read this one list.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use shared::failures::read_failures;

use crate::reporting::view::size;
use shared::ids::IdKey;
use shared::job::JobSettings;
use shared::journal::{AgentHistory, Journal, KillReason, Outcome};
use shared::plan::Plan;
use shared::records::{record_id, Lines};
use shared::rundir::RunDir;

/// One item without a record, and why.
#[derive(Debug, Clone, Serialize)]
pub struct FailedItem {
    pub id: Value,
    #[serde(skip)]
    pub key: IdKey,
    pub reason: String,
    /// Attempts at the item (as its agent counted them; else its agent's launches).
    pub attempts: u32,
    pub agent: String,
    /// The agent's attempt it failed in (the report's timeline links to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// Which items count: those their agent gave up on, or also every item still
/// missing (a run that is over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Reported,
    Missing,
}

/// What the agent files say beyond progress, read in one pass over them.
#[derive(Debug, Default)]
pub struct ItemReport {
    /// The failed (and, with `Scope::Missing`, every missing) items, in plan
    /// order: the first `limit` of them.
    pub failed: Vec<FailedItem>,
    /// How many there are in all.
    pub total: usize,
    /// All of them counted by the kind of their reason (`by_reason`).
    pub by_reason: BTreeMap<String, usize>,
    /// Saved records whose reply was cut by max_tokens (`"truncated": true`):
    /// kept, but counted, so a person sees how many answers may be incomplete.
    pub truncated: usize,
}

/// How many failed or missing items a report or a status lists one by one; the
/// rest are counted. An interrupted run of ten million items has ten million
/// missing: listing them all would take gigabytes, for a list no one reads.
pub const LISTED_ITEMS: usize = 10_000;

/// Reads every agent file once: which items failed and why (the first
/// `limit` listed, all counted), and how many saved replies were truncated.
pub fn item_report(
    run: &RunDir,
    plan: &Plan,
    journal: &Journal,
    settings: Option<&JobSettings>,
    scope: Scope,
    limit: usize,
) -> ItemReport {
    let mut failed = Vec::new();
    let mut total = 0;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut truncated = 0;
    for agent in plan.agents() {
        let scan = scan_agent_file(run, agent.at, &plan.id_field);
        truncated += scan.truncated;
        let saved = scan.saved;
        let reported: BTreeMap<IdKey, _> = read_failures(&run.agent_failures(agent.at))
            .into_iter()
            .collect();
        let history = journal.history.agents.get(&agent.name);
        let last_attempt = history.and_then(AgentHistory::last).map(|a| a.number);
        let ids = run.agent_ids(agent.at).unwrap_or_default();
        // Why the agent's unreported items are missing: the same for all of
        // them, so found once per agent.
        let mut unreported: Option<String> = None;
        for key in ids.iter().filter(|id| !saved.contains(*id)) {
            let (reason, attempts) = match reported.get(key) {
                Some(line) => (line.reason.as_str(), line.attempts),
                None if scope == Scope::Missing => (
                    unreported
                        .get_or_insert_with(|| attempt_reason(run, agent.at, history, settings))
                        .as_str(),
                    history.map_or(0, AgentHistory::launches),
                ),
                None => continue,
            };
            total += 1;
            if let Some(count) = reasons.get_mut(reason_kind(reason)) {
                *count += 1;
            } else {
                reasons.insert(reason_kind(reason).to_owned(), 1);
            }
            if failed.len() < limit {
                failed.push(FailedItem {
                    id: key.to_value(),
                    key: key.clone(),
                    reason: reason.to_owned(),
                    attempts,
                    agent: agent.name.clone(),
                    attempt: last_attempt,
                });
            }
        }
    }
    ItemReport {
        failed,
        total,
        by_reason: reasons,
        truncated,
    }
}

/// How many items failed for each reason, the reason's first clause being
/// its kind ("command exited with code 1; stdout ends with …" counts under
/// "command exited with code 1").
pub fn by_reason(failed: &[FailedItem]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in failed {
        *counts
            .entry(reason_kind(&item.reason).to_owned())
            .or_default() += 1;
    }
    counts
}

pub fn reason_kind(reason: &str) -> &str {
    reason.split(';').next().unwrap_or(reason).trim()
}

/// The items of `agent` neither saved nor given up on by its agent: what a
/// relaunch would still try (items failed for good are not tried again).
pub fn untried(run: &RunDir, agent: &shared::plan::AgentPlan, id_field: &str) -> usize {
    let saved = scan_agent_file(run, agent.at, id_field).saved;
    let failed: HashSet<IdKey> = read_failures(&run.agent_failures(agent.at))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    match run.agent_ids(agent.at) {
        Ok(ids) => ids
            .iter()
            .filter(|id| !saved.contains(*id) && !failed.contains(*id))
            .count(),
        // Without its task file the agent cannot run at all: all its unsaved items are left.
        Err(_) => agent.items.saturating_sub(saved.len()),
    }
}

/// One agent file, read once: the ids it holds, and its truncated replies.
struct AgentFileScan {
    saved: HashSet<IdKey>,
    truncated: usize,
}

fn scan_agent_file(run: &RunDir, at: shared::plan::AgentRef, id_field: &str) -> AgentFileScan {
    let mut scan = AgentFileScan {
        saved: HashSet::new(),
        truncated: 0,
    };
    let Ok(bytes) = std::fs::read(run.agent_output(at)) else {
        return scan;
    };
    for (_, range) in Lines::new(&bytes).iter() {
        let line = &bytes[range];
        if let Ok(id) = record_id(line, id_field) {
            scan.saved.insert(id);
        }
        // Only lines that mention it are parsed.
        if line.windows(9).any(|w| w == b"truncated")
            && serde_json::from_slice::<Value>(line)
                .is_ok_and(|record| record["truncated"] == Value::Bool(true))
        {
            scan.truncated += 1;
        }
    }
    scan
}

/// Why an item the agent never reported is missing: how its last attempt ended.
fn attempt_reason(
    run: &RunDir,
    at: shared::plan::AgentRef,
    history: Option<&AgentHistory>,
    settings: Option<&JobSettings>,
) -> String {
    let Some(last) = history.and_then(AgentHistory::last) else {
        return match history.and_then(|h| h.launch_error.as_ref()) {
            Some(error) => format!("could not start: {error}"),
            None => "not run".to_owned(),
        };
    };
    let agent = settings.map(|s| &s.agent);
    match last.outcome() {
        Outcome::Killed(KillReason::Memory) => {
            let peak = last.peak_rss.map(size);
            let limit = agent.and_then(|a| a.memory_limit).map(|l| size(l.bytes()));
            match (peak, limit) {
                (Some(peak), Some(limit)) => format!("killed: memory {peak} > {limit}"),
                _ => "killed: memory limit".to_owned(),
            }
        }
        Outcome::Killed(KillReason::Timeout) => match agent.and_then(|a| a.timeout) {
            Some(limit) => format!("killed: agent timeout {limit}"),
            None => "killed: agent timeout".to_owned(),
        },
        Outcome::Killed(KillReason::Stall) => match agent.and_then(|a| a.stall_timeout) {
            Some(limit) => format!("killed: stalled (no record saved for {limit})"),
            None => "killed: stalled".to_owned(),
        },
        Outcome::Killed(KillReason::Shutdown | KillReason::SegmentEnd) => "interrupted".to_owned(),
        Outcome::Killed(KillReason::Deadline) => "stopped at the deadline".to_owned(),
        Outcome::Killed(reason) => format!("killed to make room ({reason})"),
        Outcome::Crashed { signal } => format!("crashed: signal {signal}"),
        Outcome::Failed {
            code: shared::exit_codes::BUDGET_SPENT,
        } => "not tried: the run's budget is spent (resume --max-cost)".to_owned(),
        Outcome::Failed { code } => match last_log_line(&run.agent_log(at)) {
            Some(line) => format!("exit code {code}; its log ends with: {line}"),
            None => format!("exit code {code}"),
        },
        Outcome::Running => "running".to_owned(),
        other => other.to_string(),
    }
}

/// The last non-empty line of an agent's log (where an agent says why it
/// stopped), read from the log's end only.
pub fn last_log_line(log: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 4096;
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
}
