//! How a streaming stage gets its items: each of its agents covers a range of
//! the pipeline's items (every stage of a streaming chain is planned over the
//! same items, in the same order, each with its own layout). Once every
//! upstream agent covering that range has finished for good, the agent's
//! task file is written again with the upstream records of its items (a
//! record is the next stage's item); items with no upstream record failed
//! upstream and are left out. Before that, while slots are free, the agent
//! may run on the records there are so far (`available`), and again later.
//!
//! The ids of a range come from the task files of the chain's first stage
//! (the head), which always hold every item: a later stage's task files hold
//! only what reached it.

use std::collections::HashMap;
use std::io;

use serde_json::value::RawValue;

use shared::ids::IdKey;
use shared::plan::{AgentPlan, Plan};
use shared::rundir::RunDir;
use shared::task::TaskFile;
use shared::validate::check_jsonl;

use crate::schedule::stage_link::{StageLink, Upstream};

/// A stage's upstream, as the stage's loop sees it.
pub struct Feed<'a> {
    pub link: &'a StageLink,
    /// The upstream stage's name, for messages.
    pub stage: String,
    pub upstream: &'a RunDir,
    pub upstream_plan: &'a Plan,
    /// The chain's first stage, whose task files hold every id.
    pub head: &'a RunDir,
    pub head_plan: &'a Plan,
    /// (first item, end) of each upstream agent with items, in item order.
    ranges: Vec<(usize, usize)>,
}

/// What a filled task holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    pub items: usize,
    /// Items of the range with no upstream record (failed upstream).
    pub left_out: usize,
}

fn end_of(agent: &AgentPlan) -> usize {
    agent.first_item + agent.items
}

/// Agents of `plan` whose items overlap `first..end`, in item order.
fn overlapping(plan: &Plan, first: usize, end: usize) -> impl Iterator<Item = &AgentPlan> {
    plan.agents()
        .filter(move |a| a.items > 0 && a.first_item < end && end_of(a) > first)
}

impl<'a> Feed<'a> {
    pub fn new(
        link: &'a StageLink,
        stage: String,
        upstream: (&'a RunDir, &'a Plan),
        head: (&'a RunDir, &'a Plan),
    ) -> Self {
        let ranges = upstream
            .1
            .agents()
            .filter(|a| a.items > 0)
            .map(|a| (a.first_item, end_of(a)))
            .collect();
        Self {
            link,
            stage,
            upstream: upstream.0,
            upstream_plan: upstream.1,
            head: head.0,
            head_plan: head.1,
            ranges,
        }
    }

    /// The ranges of the upstream agents covering `agent`'s items.
    fn covering(&self, agent: &AgentPlan) -> impl Iterator<Item = &(usize, usize)> {
        let (first, end) = (agent.first_item, end_of(agent));
        let start = self.ranges.partition_point(|(_, e)| *e <= first);
        self.ranges[start..]
            .iter()
            .take_while(move |(f, _)| *f < end)
    }

    /// Whether every upstream agent covering `agent`'s items is done with them.
    pub fn covers(&self, agent: &AgentPlan, upstream: &Upstream) -> bool {
        upstream.ended == Some(true)
            || self
                .covering(agent)
                .all(|(f, _)| upstream.finished.contains(f))
    }

    /// About how many of `agent`'s items have an upstream record now: the
    /// records of the upstream agents covering its items, each counted at
    /// most over its overlap (an upstream agent's records may lie outside it).
    pub fn available(&self, agent: &AgentPlan, upstream: &Upstream) -> usize {
        let (first, end) = (agent.first_item, end_of(agent));
        self.covering(agent)
            .map(|(f, e)| {
                let overlap = (*e).min(end) - (*f).max(first);
                if upstream.finished.contains(f) {
                    overlap
                } else {
                    upstream.saved.get(f).copied().unwrap_or(0).min(overlap)
                }
            })
            .sum()
    }

    /// Writes `agent`'s task file in `run` with the upstream records of its
    /// items (atomically: the task is whole or as it was).
    pub fn fill_task(&self, run: &RunDir, agent: &AgentPlan, id_field: &str) -> io::Result<Filled> {
        let (first, end) = (agent.first_item, end_of(agent));
        let mut ids: Vec<IdKey> = Vec::with_capacity(agent.items);
        for head_agent in overlapping(self.head_plan, first, end) {
            let all = self.head.agent_ids(head_agent.at)?;
            let from = first.saturating_sub(head_agent.first_item);
            let to = (end - head_agent.first_item).min(all.len());
            ids.extend(all.into_iter().take(to).skip(from));
        }
        let mut records: HashMap<IdKey, Box<RawValue>> = HashMap::with_capacity(ids.len());
        for upstream_agent in overlapping(self.upstream_plan, first, end) {
            let expected = self.upstream.agent_ids(upstream_agent.at)?;
            let path = self.upstream.agent_output(upstream_agent.at);
            let checked = check_jsonl(&path, &expected, id_field, false)?;
            for (index, range) in &checked.records {
                let (Some(id), Ok(text)) = (
                    expected.get(*index),
                    std::str::from_utf8(&checked.bytes[range.clone()]),
                ) else {
                    continue;
                };
                let item = RawValue::from_string(text.to_owned()).map_err(io::Error::other)?;
                records.insert(id.clone(), item);
            }
        }
        let items: Vec<Box<RawValue>> = ids.iter().filter_map(|id| records.remove(id)).collect();
        let filled = Filled {
            items: items.len(),
            left_out: ids.len() - items.len(),
        };
        let path = run.agent_task(agent.at);
        let mut task: TaskFile = serde_json::from_slice(&std::fs::read(&path)?)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        task.items = items;
        let mut bytes = serde_json::to_vec(&task).map_err(io::Error::other)?;
        bytes.push(b'\n');
        shared::atomic::write_bytes_atomic(&path, &bytes)?;
        Ok(filled)
    }
}
