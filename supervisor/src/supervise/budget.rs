//! The run's budget, as the supervisor sees it: the broker holds it
//! (`rate::spend`) from the session's start, counting what earlier sessions
//! spent; when an agent exits 4 (the broker refused it a permit) nothing more
//! is launched, the agents still running finish what they have in flight and
//! exit 4 in turn, and the run stops with exit code 4, resumable with a
//! larger budget.

use shared::job::JobSettings;
use shared::journal::Event;
use shared::plan::AgentPlan;
use shared::rundir::RunDir;

use crate::error::Result;
use crate::rate::daily::{DailyQuota, DAILY_FILE};
use crate::rate::server::RateServer;
use crate::rate::spend::SpendLimit;
use crate::reporting::failures::last_log_line;
use crate::supervise::{Ending, Stop, Supervisor};
use shared::money::Spend;

/// Hands the broker the run's budgets and what the run spent before this
/// session (`spent`, from its files).
pub(crate) fn hold_budget(rate: &RateServer, run: &RunDir, settings: &JobSettings, spent: Spend) {
    let limits = &settings.limits;
    let daily = DailyQuota::new(settings.rate.as_ref(), Some(run.root().join(DAILY_FILE)));
    let limit = SpendLimit::new(limits.max_cost, limits.max_tokens, spent).with_daily(daily);
    rate.set_budget(limit);
}

impl Supervisor<'_> {
    /// Journals the keys the broker dropped since the last look, each once.
    pub(super) fn journal_rejected_keys(&mut self) -> Result<()> {
        let keys = self
            .rate()
            .map(|rate| rate.newly_rejected())
            .unwrap_or_default();
        for key in keys {
            self.console.line(&format!(
                "key rejected by its server: {key}; going on with the others"
            ));
            self.event(None, Event::KeyRejected { key })?;
        }
        Ok(())
    }

    /// An agent exited with BUDGET_SPENT: no more launches, the running
    /// agents finish their requests in flight (the broker refuses them the
    /// next), and the run ends with exit code 4.
    pub(super) fn budget_spent(&mut self, agent: &AgentPlan) -> Result<()> {
        if matches!(self.ending, Ending::BudgetSpent(_)) || self.stop != Stop::No {
            return Ok(());
        }
        let reason = self
            .rate()
            .and_then(|rate| rate.budget_spent())
            .or_else(|| last_log_line(&self.inputs.run.agent_log(agent.at)))
            .unwrap_or_else(|| "the run's budget is spent".to_owned());
        self.console.line(&format!(
            "budget spent: {reason}; no new agents, the {} running finish their requests in flight",
            self.slots.len()
        ));
        self.event(
            Some(&agent.name),
            Event::BudgetSpent {
                reason: reason.clone(),
            },
        )?;
        self.ending = Ending::BudgetSpent(reason);
        self.stop = Stop::Draining;
        self.scheduler.drop_waiting();
        self.scheduler.drop_retries();
        Ok(())
    }
}
