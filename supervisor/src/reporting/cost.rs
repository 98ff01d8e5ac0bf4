//! What a run spent, from its directory alone: the `usage` and `cost` of
//! every saved record (read with the progress count) and of every failure
//! line (answers that were paid for and refused), summed per agent, per
//! segment and for the run; and the cost of the whole run projected from
//! the cost per item so far.

use serde::Serialize;

use shared::money::{dollars, Spend, Usage};
use shared::plan::{AgentRef, Plan};
use shared::records::Lines;
use shared::rundir::RunDir;

use crate::reporting::progress::{spend_of_lines, Progress};

/// Tokens and USD (None: no price was known), as status --json and
/// report.json carry them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cost {
    pub usage: Usage,
    pub cost: Option<f64>,
}

impl From<Spend> for Cost {
    fn from(spend: Spend) -> Self {
        Self {
            usage: spend.usage,
            cost: spend.cost.map(shared::money::round_usd),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentCost {
    pub segment: usize,
    #[serde(flatten)]
    pub spent: Cost,
}

/// A run's spending, summed three ways.
#[derive(Debug, Clone, Default)]
pub struct RunCost {
    pub total: Spend,
    pub segments: Vec<(usize, Spend)>,
    pub agents: Vec<(AgentRef, Spend)>,
}

impl RunCost {
    pub fn agent(&self, at: AgentRef) -> Spend {
        self.agents
            .iter()
            .find(|(agent, _)| *agent == at)
            .map_or_else(Spend::default, |(_, spend)| *spend)
    }

    pub fn segment_costs(&self) -> Vec<SegmentCost> {
        self.segments
            .iter()
            .map(|(segment, spend)| SegmentCost {
                segment: *segment,
                spent: Cost::from(*spend),
            })
            .collect()
    }
}

/// What the failure lines of one agent's failures file say was spent.
pub fn failures_spend(run: &RunDir, at: AgentRef) -> Spend {
    match std::fs::read(run.agent_failures(at)) {
        Ok(bytes) => spend_of_lines(&bytes, &Lines::new(&bytes)),
        Err(_) => Spend::default(),
    }
}

/// Every agent's records (as `progress` read them) and failure lines.
pub fn run_cost(run: &RunDir, plan: &Plan, progress: &Progress) -> RunCost {
    let mut cost = RunCost::default();
    for segment in &plan.segments {
        let mut in_segment = Spend::default();
        for orchestrator in &segment.orchestrators {
            for agent in &orchestrator.agents {
                let mut spend = progress.spend(&run.agent_output(agent.at));
                spend += failures_spend(run, agent.at);
                in_segment += spend;
                cost.agents.push((agent.at, spend));
            }
        }
        cost.total += in_segment;
        cost.segments.push((segment.number, in_segment));
    }
    cost
}

/// The USD the whole run would cost at the cost per saved item so far.
pub fn projected(spent: &Spend, done: usize, total: usize) -> Option<f64> {
    let cost = spent.cost?;
    (done > 0).then(|| cost / done as f64 * total as f64)
}

/// "spent $0.42 of limits.max_cost $1.00 (projected $1.20 for the whole
/// run); tokens: 1200 in, 300 out, 900 cached, 0 cache writes"; None when
/// nothing was spent.
pub fn describe(usage: &Usage, cost: Option<f64>, projected: Option<f64>) -> Option<String> {
    if usage.is_zero() && cost.is_none() {
        return None;
    }
    let money = match (cost, projected) {
        (Some(cost), Some(projected)) => format!(
            "spent {} (projected {} for the whole run); ",
            dollars(cost),
            dollars(projected)
        ),
        (Some(cost), None) => format!("spent {}; ", dollars(cost)),
        _ => String::new(),
    };
    Some(format!(
        "{money}tokens: {} in, {} out, {} cached, {} cache writes",
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens
    ))
}

/// The HTML report's "Tokens and money" section: the run's line and a
/// row per segment; nothing when nothing was spent.
pub fn html_section(
    usage: &Usage,
    cost: Option<f64>,
    projected: Option<f64>,
    segments: &[SegmentCost],
) -> String {
    let Some(line) = describe(usage, cost, projected) else {
        return String::new();
    };
    let mut html = format!("<h2>Tokens and money</h2>\n<p>{line}</p>\n<table><tr><th>segment</th><th>input</th><th>output</th><th>cached input</th><th>cache writes</th><th>USD</th></tr>\n");
    for segment in segments {
        let u = &segment.spent.usage;
        let usd = segment.spent.cost.map_or_else(|| "–".to_owned(), dollars);
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{usd}</td></tr>\n",
            segment.segment,
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            u.cache_write_tokens
        ));
    }
    html.push_str("</table>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projection_scales_the_cost_per_item() {
        let spent = Spend {
            usage: Usage::default(),
            cost: Some(2.0),
        };
        assert_eq!(projected(&spent, 10, 50), Some(10.0));
        assert_eq!(projected(&spent, 0, 50), None);
        assert_eq!(projected(&Spend::default(), 10, 50), None);
        let usage = Usage {
            input_tokens: 5,
            ..Usage::default()
        };
        assert_eq!(
            describe(&usage, Some(2.0), Some(10.0)).as_deref(),
            Some("spent $2.00 (projected $10.00 for the whole run); tokens: 5 in, 0 out, 0 cached, 0 cache writes")
        );
        assert_eq!(describe(&Usage::default(), None, None), None);
    }
}
