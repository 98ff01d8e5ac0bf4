//! A resumed run's budget: the frozen job's `limits.max_cost` and
//! `limits.max_tokens`, as later raised by `nightshift resume --max-cost /
//! --max-tokens` (each raise is a `budget` event of the journal, so it holds
//! for the sessions after it too).

use shared::job::Job;
use shared::journal::Event;
use shared::rundir::RunDir;

use crate::error::{Result, SupervisorError};
use crate::run::journal::{read_journal, EventLog};

/// What `resume` was asked to set the budget to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetChange {
    pub max_cost: Option<f64>,
    pub max_tokens: Option<u64>,
}

/// Puts into `job` the budget earlier resumes set, then `change` (which is
/// journaled for the resumes after this one).
pub fn apply_budget(run: &RunDir, job: &mut Job, change: BudgetChange) -> Result<()> {
    let journal = read_journal(&run.events())?;
    for entry in &journal.entries {
        if let Event::Budget {
            max_cost,
            max_tokens,
        } = entry.event
        {
            let limits = &mut job.settings.limits;
            limits.max_cost = max_cost.or(limits.max_cost);
            limits.max_tokens = max_tokens.or(limits.max_tokens);
        }
    }
    if change == BudgetChange::default() {
        return Ok(());
    }
    if let Some(cost) = change.max_cost {
        if !cost.is_finite() || cost <= 0.0 {
            return Err(SupervisorError::Unsupported(format!(
                "--max-cost is USD for the whole run, above 0 (not {cost})"
            )));
        }
        if job.settings.prices().iter().any(Option::is_none) {
            return Err(SupervisorError::Unsupported(
                "--max-cost needs the price of every endpoint, and this run's job has no [agent.price]".into(),
            ));
        }
    }
    if change.max_tokens == Some(0) {
        return Err(SupervisorError::Unsupported(
            "--max-tokens is the tokens the whole run may use: above 0".into(),
        ));
    }
    let limits = &mut job.settings.limits;
    limits.max_cost = change.max_cost.or(limits.max_cost);
    limits.max_tokens = change.max_tokens.or(limits.max_tokens);
    let mut events =
        EventLog::open(&run.events()).map_err(SupervisorError::io("cannot open events.jsonl"))?;
    events
        .record(
            None,
            &Event::Budget {
                max_cost: change.max_cost,
                max_tokens: change.max_tokens,
            },
        )
        .map_err(SupervisorError::io("cannot append to events.jsonl"))
}
