//! Planning: items → segments → orchestrators → agents. Every level is split as
//! evenly as possible, in input order, and no level ever gets more parts than it
//! has things to put in them, so no agent is ever planned with zero items.
//! Explicit counts are spread over every part asked for; a layout derived from
//! items_per_agent fills orchestrators up to `agents` before opening another.

use std::fmt;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::ids::IdKey;
use crate::job::LayoutSettings;

/// Defaults when the job file leaves the layout (partly) open.
pub const DEFAULT_ITEMS_PER_AGENT: usize = 20;
pub const DEFAULT_AGENTS_PER_ORCHESTRATOR: usize = 10;
pub const DEFAULT_ORCHESTRATORS_PER_SEGMENT: usize = 3;

/// Which agent: 1-based segment, orchestrator (within its segment) and agent
/// (within its orchestrator) numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentRef {
    pub segment: usize,
    pub orchestrator: usize,
    pub agent: usize,
}

impl fmt::Display for AgentRef {
    /// The agent's name, e.g. `segment_01/orch_02/agent_03`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment_{:02}/orch_{:02}/agent_{:02}",
            self.segment, self.orchestrator, self.agent
        )
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Plan {
    pub job: String,
    pub id_field: String,
    pub items_total: usize,
    pub segments: Vec<SegmentPlan>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SegmentPlan {
    pub number: usize,
    pub orchestrators: Vec<OrchestratorPlan>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrchestratorPlan {
    pub segment: usize,
    pub number: usize,
    pub agents: Vec<AgentPlan>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AgentPlan {
    pub name: String,
    #[serde(flatten)]
    pub at: AgentRef,
    /// Index of the agent's first item in the input.
    pub first_item: usize,
    /// How many items the agent has. The plan in memory keeps counts only, so
    /// the supervisor's memory grows with agents, not items: the ids are in
    /// plan.json and in the agent's task file (`task::read_task_ids`), read
    /// where one agent's or one merge's ids are needed.
    #[serde(rename = "ids", deserialize_with = "count_ids")]
    pub items: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the input holds no items")]
    NoItems,
    #[error("[layout] segments = {segments}, but the input holds only {items} item(s): a segment needs at least one")]
    MoreSegmentsThanItems { segments: usize, items: usize },
}

impl Plan {
    pub fn agents(&self) -> impl Iterator<Item = &AgentPlan> {
        self.segments
            .iter()
            .flat_map(|s| &s.orchestrators)
            .flat_map(|o| &o.agents)
    }

    pub fn agent_count(&self) -> usize {
        self.agents().count()
    }

    pub fn orchestrator_count(&self) -> usize {
        self.segments.iter().map(|s| s.orchestrators.len()).sum()
    }

    pub fn find(&self, at: AgentRef) -> Option<&AgentPlan> {
        self.segments
            .get(at.segment.checked_sub(1)?)?
            .orchestrators
            .get(at.orchestrator.checked_sub(1)?)?
            .agents
            .get(at.agent.checked_sub(1)?)
    }
}

impl SegmentPlan {
    pub fn agents(&self) -> impl Iterator<Item = &AgentPlan> {
        self.orchestrators.iter().flat_map(|o| &o.agents)
    }

    pub fn item_count(&self) -> usize {
        self.agents().map(|a| a.items).sum()
    }
}

impl OrchestratorPlan {
    pub fn item_count(&self) -> usize {
        self.agents.iter().map(|a| a.items).sum()
    }
}

/// The numbers a layout resolves to before items are dealt out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    segments: usize,
    orchestrators: usize,
    agents: usize,
    total_agents: usize,
    /// Derived layouts fill orchestrators up to `agents` before opening another;
    /// explicit counts spread agents over every orchestrator asked for.
    fill: bool,
}

fn div_ceil(a: usize, b: usize) -> usize {
    a.div_ceil(b.max(1))
}

/// Resolves the layout keys: the three counts, or items_per_agent with the
/// missing count derived (segments first, then agents, then orchestrators).
fn shape(items: usize, layout: &LayoutSettings) -> Shape {
    let given = |c: Option<crate::job::Count>| c.map(|c| c.get());
    let (s, o, a) = (
        given(layout.segments),
        given(layout.orchestrators),
        given(layout.agents),
    );
    if let (Some(segments), Some(orchestrators), Some(agents), None) =
        (s, o, a, layout.items_per_agent)
    {
        return Shape {
            segments,
            orchestrators,
            agents,
            total_agents: items.min(segments * orchestrators * agents),
            fill: false,
        };
    }
    let per_agent = given(layout.items_per_agent).unwrap_or(DEFAULT_ITEMS_PER_AGENT);
    // Segments asked for are honoured: each gets at least one agent, even if
    // that means fewer items per agent than the default.
    let total_agents = div_ceil(items, per_agent).max(s.unwrap_or(0).min(items));
    let (segments, orchestrators, agents) = match (s, o, a) {
        (None, o, a) => {
            let o = o.unwrap_or(DEFAULT_ORCHESTRATORS_PER_SEGMENT);
            let a = a.unwrap_or(DEFAULT_AGENTS_PER_ORCHESTRATOR);
            (div_ceil(total_agents, o * a), o, a)
        }
        (Some(s), o, None) => {
            let o = o.unwrap_or(DEFAULT_ORCHESTRATORS_PER_SEGMENT);
            (s, o, div_ceil(total_agents, s * o))
        }
        (Some(s), None, Some(a)) => (s, div_ceil(total_agents, s * a), a),
        // All three counts with items_per_agent is refused when the job is loaded.
        (Some(s), Some(o), Some(a)) => (s, o, a),
    };
    Shape {
        segments,
        orchestrators,
        agents,
        total_agents: total_agents.min(segments * orchestrators * agents),
        fill: true,
    }
}

/// Splits `n` into at most `parts` non-empty sizes that differ by at most one.
fn balanced(n: usize, parts: usize) -> Vec<usize> {
    let parts = parts.min(n).max(1);
    (0..parts)
        .map(|i| n / parts + usize::from(i < n % parts))
        .collect()
}

/// Builds the plan of a job over its `items` items.
pub fn build_plan(
    job: &str,
    id_field: &str,
    items: usize,
    layout: &LayoutSettings,
) -> Result<Plan, PlanError> {
    if items == 0 {
        return Err(PlanError::NoItems);
    }
    // With only some counts given, segments are a request that must be met
    // (the three counts together are a ceiling, filled as far as items go).
    let all_counts = layout.orchestrators.is_some() && layout.agents.is_some();
    if let Some(segments) = layout
        .segments
        .map(|c| c.get())
        .filter(|s| *s > items && !all_counts)
    {
        return Err(PlanError::MoreSegmentsThanItems { segments, items });
    }
    let shape = shape(items, layout);
    let agent_sizes = balanced(items, shape.total_agents);
    let mut sizes = agent_sizes.into_iter();
    let mut next_item = 0;
    let mut segments = Vec::new();
    for (s_index, seg_agents) in balanced(shape.total_agents, shape.segments)
        .into_iter()
        .enumerate()
    {
        let mut orchestrators = Vec::new();
        let orchestrators_here = if shape.fill {
            div_ceil(seg_agents, shape.agents).min(shape.orchestrators)
        } else {
            shape.orchestrators
        };
        for (o_index, orch_agents) in balanced(seg_agents, orchestrators_here)
            .into_iter()
            .enumerate()
        {
            let mut agents = Vec::new();
            for a_index in 0..orch_agents {
                let size = sizes.next().unwrap_or(0);
                let at = AgentRef {
                    segment: s_index + 1,
                    orchestrator: o_index + 1,
                    agent: a_index + 1,
                };
                agents.push(AgentPlan {
                    name: at.to_string(),
                    at,
                    first_item: next_item,
                    items: size,
                });
                next_item += size;
            }
            orchestrators.push(OrchestratorPlan {
                segment: s_index + 1,
                number: o_index + 1,
                agents,
            });
        }
        segments.push(SegmentPlan {
            number: s_index + 1,
            orchestrators,
        });
    }
    debug_assert_eq!(next_item, items);
    Ok(Plan {
        job: job.to_owned(),
        id_field: id_field.to_owned(),
        items_total: items,
        segments,
    })
}

/// plan.json's `ids` of an agent, read as their count: a million ids would
/// otherwise be a million strings held for the whole run.
fn count_ids<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of ids")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    deserializer.deserialize_seq(Count)
}

/// Writes plan.json: the plan with every agent's ids, which `ids_of` gives
/// one agent at a time (in plan order), so the whole list is never held.
/// Ids are written as the JSON values they are in the input.
pub fn write_plan_json(
    plan: &Plan,
    out: &mut impl Write,
    mut ids_of: impl FnMut(&AgentPlan) -> io::Result<Vec<IdKey>>,
) -> io::Result<()> {
    let text = |s: &str| serde_json::to_string(s).map_err(io::Error::from);
    write!(
        out,
        "{{\n  \"job\": {},\n  \"id_field\": {},\n  \"items_total\": {},\n  \"segments\": [",
        text(&plan.job)?,
        text(&plan.id_field)?,
        plan.items_total
    )?;
    for (s, segment) in plan.segments.iter().enumerate() {
        let comma = if s == 0 { "" } else { "," };
        write!(
            out,
            "{comma}\n    {{\"number\": {}, \"orchestrators\": [",
            segment.number
        )?;
        for (o, orchestrator) in segment.orchestrators.iter().enumerate() {
            let comma = if o == 0 { "" } else { "," };
            write!(
                out,
                "{comma}\n      {{\"segment\": {}, \"number\": {}, \"agents\": [",
                orchestrator.segment, orchestrator.number
            )?;
            for (a, agent) in orchestrator.agents.iter().enumerate() {
                let ids = ids_of(agent)?;
                if ids.len() != agent.items {
                    return Err(io::Error::other(format!(
                        "{}: {} ids for {} planned items",
                        agent.name,
                        ids.len(),
                        agent.items
                    )));
                }
                let comma = if a == 0 { "" } else { "," };
                write!(
                    out,
                    "{comma}\n        {{\"name\": {}, \"segment\": {}, \"orchestrator\": {}, \"agent\": {}, \"first_item\": {}, \"ids\": [",
                    text(&agent.name)?,
                    agent.at.segment,
                    agent.at.orchestrator,
                    agent.at.agent,
                    agent.first_item
                )?;
                for (i, id) in ids.iter().enumerate() {
                    // An IdKey is the id's canonical JSON text already.
                    out.write_all(if i == 0 { b"" } else { b", " })?;
                    out.write_all(id.as_str().as_bytes())?;
                }
                out.write_all(b"]}")?;
            }
            out.write_all(b"\n      ]}")?;
        }
        out.write_all(b"\n    ]}")?;
    }
    out.write_all(b"\n  ]\n}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Count;

    fn layout(
        s: Option<usize>,
        o: Option<usize>,
        a: Option<usize>,
        ipa: Option<usize>,
    ) -> LayoutSettings {
        LayoutSettings {
            segments: s.map(Count),
            orchestrators: o.map(Count),
            agents: a.map(Count),
            items_per_agent: ipa.map(Count),
        }
    }

    fn check_invariants(plan: &Plan, n: usize) {
        let mut next = 0;
        for agent in plan.agents() {
            assert_eq!(agent.first_item, next, "agents follow input order");
            next += agent.items;
        }
        assert_eq!(next, n, "every item exactly once");
        assert_eq!(plan.items_total, n);
        let sizes: Vec<usize> = plan.agents().map(|a| a.items).collect();
        assert!(sizes.iter().all(|s| *s > 0), "no empty agent: {sizes:?}");
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(
            max.zip(min).is_some_and(|(max, min)| max - min <= 1),
            "balanced: {sizes:?}"
        );
    }

    #[test]
    fn explicit_counts_are_honoured_and_balanced() {
        let plan =
            build_plan("j", "id", 1000, &layout(Some(3), Some(3), Some(10), None)).expect("plan");
        assert_eq!(plan.segments.len(), 3);
        assert_eq!(plan.agent_count(), 90);
        check_invariants(&plan, 1000);
    }

    #[test]
    fn too_few_items_never_make_empty_agents() {
        let plan =
            build_plan("j", "id", 7, &layout(Some(3), Some(3), Some(10), None)).expect("plan");
        assert_eq!(plan.agent_count(), 7);
        assert!(plan.segments.iter().all(|s| !s.orchestrators.is_empty()));
        check_invariants(&plan, 7);
    }

    #[test]
    fn defaults_give_twenty_items_per_agent() {
        let plan = build_plan("j", "id", 1000, &LayoutSettings::default()).expect("plan");
        assert_eq!(plan.agent_count(), 50);
        assert_eq!(plan.segments.len(), 2);
        check_invariants(&plan, 1000);
    }

    #[test]
    fn items_per_agent_derives_the_missing_count() {
        let plan =
            build_plan("j", "id", 100, &layout(Some(2), Some(1), None, Some(10))).expect("plan");
        assert_eq!(plan.segments.len(), 2);
        assert_eq!(plan.agent_count(), 10);
        check_invariants(&plan, 100);
    }

    #[test]
    fn derived_layouts_fill_orchestrators_first() {
        let plan = build_plan("j", "id", 10, &layout(None, None, None, Some(4))).expect("plan");
        assert_eq!(plan.orchestrator_count(), 1);
        assert_eq!(plan.agent_count(), 3);
        let plan = build_plan("j", "id", 250, &LayoutSettings::default()).expect("plan");
        let per_orchestrator: Vec<usize> = plan.segments[0]
            .orchestrators
            .iter()
            .map(|o| o.agents.len())
            .collect();
        assert_eq!(per_orchestrator, vec![7, 6]);
        check_invariants(&plan, 250);
    }

    #[test]
    fn plan_json_round_trips() {
        let plan = build_plan("j", "id", 5, &LayoutSettings::default()).expect("plan");
        let mut text = Vec::new();
        write_plan_json(&plan, &mut text, |agent| {
            Ok((agent.first_item + 1..=agent.first_item + agent.items)
                .map(IdKey::from_line_number)
                .collect())
        })
        .expect("write");
        let value: serde_json::Value = serde_json::from_slice(&text).expect("plan.json is JSON");
        assert_eq!(
            value["segments"][0]["orchestrators"][0]["agents"][0]["ids"],
            serde_json::json!([1, 2, 3, 4, 5])
        );
        assert_eq!(serde_json::from_slice::<Plan>(&text).expect("parse"), plan);
        let short = write_plan_json(&plan, &mut Vec::new(), |_| Ok(Vec::new()));
        assert!(short.is_err(), "ids that do not match the plan are refused");
    }
}
