//! What an existing run directory says about its progress, for `resume`: which
//! agents' files already hold all their items, how often each agent was
//! launched, and the dead supervisor's leftover agents, which are ended before
//! anything is launched so that two writers never append to one agent file.
//!
//! Leftovers are ended rather than waited for: a leftover agent may run for
//! hours (its own timeout died with its supervisor), while ending it loses at
//! most the one item it was working on — the rest is in its file.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use shared::plan::{AgentPlan, AgentRef, Plan};
use shared::rundir::RunDir;
use shared::validate::check_jsonl;

use crate::error::{Result, SupervisorError};
use crate::executor::local::sweep::{end_processes, find_leftovers, Agents, Group};
use crate::platform;
use crate::reporting::failures::LISTED_ITEMS;
use crate::reporting::progress::FileSeen;
use crate::run::journal::read_journal;
use crate::run::live::LiveAgents;
use crate::run::tasks::{write_tasks, PlanFile};

pub struct Progress {
    /// Agents with nothing left to try: every item saved or failed for good
    /// (in its failures file; `resume --retry-failed` sets those aside).
    pub complete: HashSet<AgentRef>,
    pub saved: usize,
    /// Items their agents gave up on after every attempt.
    pub failed: usize,
    /// How many items are not in any agent file yet.
    pub missing: usize,
    /// The first `LISTED_ITEMS` of their ids, in input order, when asked for
    /// (`Missing::Ids`): a resume only needs the count.
    pub missing_ids: Vec<shared::ids::IdKey>,
    /// What was read of each agent file, so nobody reads it again.
    pub files: HashMap<AgentRef, FileSeen>,
}

/// Whether a scan lists the missing ids or only counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Count,
    Ids,
}

/// Reads every agent's files, on as many threads as there are cores (a run
/// of a million records is ten thousand files to check before a relaunch).
pub fn scan_progress(run: &RunDir, plan: &Plan, want: Missing) -> Result<Progress> {
    let agents: Vec<&AgentPlan> = plan.agents().collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = agents.len().div_ceil(workers).max(1);
    // Each thread folds its agents as it goes: no more than one agent's ids
    // and the listed missing ids are held at a time.
    let parts: Vec<Result<Progress>> = std::thread::scope(|scope| {
        let handles: Vec<_> = agents
            .chunks(chunk)
            .map(|agents| {
                scope.spawn(move || {
                    let mut part = Progress::empty();
                    for agent in agents {
                        part.add(scan_agent(run, &plan.id_field, agent)?, want);
                    }
                    Ok(part)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(SupervisorError::io("cannot read the agent files")(
                        std::io::Error::other("a reading thread panicked"),
                    ))
                })
            })
            .collect()
    });
    // In plan order, so the missing ids stay in input order.
    let mut progress = Progress::empty();
    for part in parts {
        let part = part?;
        progress.saved += part.saved;
        progress.failed += part.failed;
        progress.complete.extend(part.complete);
        progress.missing += part.missing;
        let room = LISTED_ITEMS.saturating_sub(progress.missing_ids.len());
        progress
            .missing_ids
            .extend(part.missing_ids.into_iter().take(room));
        progress.files.extend(part.files);
    }
    Ok(progress)
}

impl Progress {
    fn empty() -> Self {
        Self {
            complete: HashSet::new(),
            saved: 0,
            failed: 0,
            missing: 0,
            missing_ids: Vec::new(),
            files: HashMap::new(),
        }
    }

    fn add(&mut self, scan: AgentScan, want: Missing) {
        self.saved += scan.saved;
        self.failed += scan.failed;
        if scan.complete {
            self.complete.insert(scan.at);
        }
        self.missing += scan.missing.len();
        if want == Missing::Ids {
            let room = LISTED_ITEMS.saturating_sub(self.missing_ids.len());
            self.missing_ids.extend(scan.missing.into_iter().take(room));
        }
        self.files.insert(scan.at, scan.seen);
    }
}

/// What one agent's files say.
struct AgentScan {
    at: AgentRef,
    saved: usize,
    failed: usize,
    complete: bool,
    missing: Vec<shared::ids::IdKey>,
    seen: FileSeen,
}

fn scan_agent(run: &RunDir, id_field: &str, agent: &AgentPlan) -> Result<AgentScan> {
    let path = run.agent_output(agent.at);
    // One agent's ids at a time, from its task file: the plan keeps counts.
    let ids = run
        .agent_ids(agent.at)
        .map_err(SupervisorError::io(format!(
            "cannot read {}",
            run.agent_task(agent.at).display()
        )))?;
    let checked = check_jsonl(&path, &ids, id_field, false).map_err(SupervisorError::io(
        format!("cannot read {}", path.display()),
    ))?;
    let lines = shared::records::Lines::new(&checked.bytes);
    let seen = FileSeen {
        offset: lines.complete_len() as u64,
        lines: lines.count(),
        spend: crate::reporting::progress::spend_of_lines(&checked.bytes, &lines),
    };
    let failures = shared::failures::read_failures(&run.agent_failures(agent.at));
    let failed = if failures.is_empty() {
        0
    } else {
        let planned: HashSet<&shared::ids::IdKey> = ids.iter().collect();
        let saved_here: HashSet<&shared::ids::IdKey> = checked
            .records
            .iter()
            .filter_map(|(index, _)| ids.get(*index))
            .collect();
        failures
            .into_iter()
            .filter(|(id, _)| planned.contains(id) && !saved_here.contains(id))
            .count()
    };
    let missing = checked
        .problems
        .into_iter()
        .filter_map(|problem| match problem.kind {
            shared::validate::ProblemKind::Missing { ids, .. } => Some(ids),
            _ => None,
        })
        .flatten()
        .collect();
    Ok(AgentScan {
        at: agent.at,
        saved: checked.records.len(),
        failed,
        complete: checked.records.len() + failed >= agent.items,
        missing,
        seen,
    })
}

/// How many times each agent was launched, from events.jsonl.
pub fn launches_so_far(run: &RunDir) -> Result<HashMap<String, u32>> {
    let journal = read_journal(&run.events())?;
    Ok(journal
        .history
        .agents
        .iter()
        .map(|(agent, history)| (agent.clone(), history.launches()))
        .collect())
}

/// Ends every process left by an earlier supervisor of this run: the agents
/// recorded in live.json (matched by pid and start time, same boot only) and
/// anything carrying the run's environment. Returns how many were found.
pub fn end_leftovers(run: &RunDir, grace: Duration) -> Result<usize> {
    let live = LiveAgents::read(run).map_err(SupervisorError::io("cannot read live.json"))?;
    let boot = platform::boot_id();
    let groups: Vec<Group> = live
        .into_iter()
        .filter(|l| l.boot_id == boot)
        .flat_map(|l| l.agents)
        .filter(|a| a.start_ticks > 0)
        .map(|a| Group {
            agent: a.agent,
            pgid: a.pid,
            leader_start: a.start_ticks,
        })
        .collect();
    let found = find_leftovers(run.root(), &Agents::All, &groups);
    let stats: Vec<_> = found.iter().map(|(_, s)| *s).collect();
    end_processes(&stats, grace);
    Ok(stats.len())
}

/// Task files are written when the run starts; a supervisor killed in that
/// moment leaves some missing. They are written again from the input, which
/// must still hold the planned ids.
pub fn restore_missing_tasks(run: &RunDir, plan: &Plan, job: &shared::job::Job) -> Result<()> {
    if plan.agents().all(|a| run.agent_task(a.at).is_file()) {
        return Ok(());
    }
    let input = &job.settings.input;
    let input = shared::input::check_input(&job.resolve(&input.path), input.format, &input.id)?;
    let planned = planned_ids(run)?;
    let check = PlanFile::Check(&planned);
    write_tasks(run, plan, &input, &job.settings, check).map_err(|e| {
        SupervisorError::Unsupported(format!(
            "{}: task files are missing and cannot be written again from the input ({e}); the run cannot be resumed",
            run.root().display()
        ))
    })
}

/// `resume --retry-failed`: every agent's failures file is set aside (renamed
/// `….failures.jsonl.retried-N`, kept for the record), so its items are tried
/// again with fresh attempts. Returns (items, agents) set aside.
pub fn set_failures_aside(run: &RunDir, plan: &Plan) -> Result<(usize, usize)> {
    let (mut items, mut agents) = (0, 0);
    for agent in plan.agents() {
        let path = run.agent_failures(agent.at);
        let failed = shared::failures::read_failures(&path).len();
        if failed == 0 {
            continue;
        }
        let aside = (1..)
            .map(|n| path.with_extension(format!("jsonl.retried-{n}")))
            .find(|candidate| !candidate.exists())
            .unwrap_or_else(|| path.with_extension("jsonl.retried"));
        std::fs::rename(&path, &aside).map_err(SupervisorError::io(format!(
            "cannot set {} aside",
            path.display()
        )))?;
        items += failed;
        agents += 1;
    }
    Ok((items, agents))
}

/// Every planned id, in input order, as plan.json lists them (only for the
/// rare restore of lost task files: the plan in memory keeps counts).
fn planned_ids(run: &RunDir) -> Result<Vec<shared::ids::IdKey>> {
    let unreadable = |e: std::io::Error| {
        SupervisorError::io(format!("cannot read {}", run.plan_json().display()))(e)
    };
    let text = std::fs::read(run.plan_json()).map_err(unreadable)?;
    let plan: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| unreadable(e.into()))?;
    let agents = plan["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["orchestrators"].as_array().into_iter().flatten())
        .flat_map(|o| o["agents"].as_array().into_iter().flatten());
    Ok(agents
        .flat_map(|a| a["ids"].as_array().into_iter().flatten())
        .filter_map(shared::ids::IdKey::from_value)
        .collect())
}
