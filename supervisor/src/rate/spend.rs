//! The run's hard budgets, held by the broker for every agent process:
//! `limits.max_cost` (USD) and `limits.max_tokens`, for the whole run,
//! resumed sessions included (a session starts from what the run's files
//! say was spent). A permit reserves its estimate (prompt tokens + max_tokens,
//! at the price); its report settles it with what the call really used. No
//! permit is granted that what is left after the spent and the reserved cannot
//! cover; from the first refusal on every permit is refused, so the run stops
//! (its agents exit 4) rather than trickling on with smaller requests. Spending
//! can go past the budget only by what calls used beyond their estimates.
//! The daily budgets of `[rate]` are held here too (`rate::daily`).
//! Pure logic but for the wall clock the daily window is read on:
//! `rate::broker` drives it.

use std::time::SystemTime;

use shared::money::{dollars, Spend};

use crate::rate::daily::DailyQuota;

#[derive(Debug, Default)]
pub struct SpendLimit {
    max_cost: Option<f64>,
    max_tokens: Option<u64>,
    spent_cost: f64,
    spent_tokens: u64,
    reserved_cost: f64,
    reserved_tokens: u64,
    /// Why permits are refused, once one was.
    exhausted: Option<String>,
    /// `[rate] tokens_per_day` / `requests_per_day`.
    daily: Option<DailyQuota>,
}

impl SpendLimit {
    /// The budgets, and what earlier sessions of the run spent already.
    pub fn new(max_cost: Option<f64>, max_tokens: Option<u64>, spent: Spend) -> Self {
        Self {
            max_cost,
            max_tokens,
            spent_cost: spent.cost.unwrap_or(0.0),
            spent_tokens: spent.usage.total(),
            ..Self::default()
        }
    }

    /// With the daily budgets too.
    pub fn with_daily(mut self, daily: Option<DailyQuota>) -> Self {
        self.daily = daily;
        self
    }

    /// No budget at all.
    pub fn unlimited(&self) -> bool {
        self.max_cost.is_none() && self.max_tokens.is_none() && self.daily.is_none()
    }

    /// Reserves a permit's estimate, or says why the budget cannot cover it.
    pub fn reserve(&mut self, tokens: u64, cost: Option<f64>) -> Result<(), String> {
        if let Some(why) = &self.exhausted {
            return Err(why.clone());
        }
        self.check_totals(tokens, cost)?;
        if let Some(daily) = self.daily.as_mut() {
            if let Err(why) = daily.reserve(tokens, SystemTime::now()) {
                return Err(self.exhaust(why));
            }
        }
        self.reserved_cost += cost.unwrap_or(0.0);
        self.reserved_tokens += tokens;
        Ok(())
    }

    /// limits.max_cost and limits.max_tokens.
    fn check_totals(&mut self, tokens: u64, cost: Option<f64>) -> Result<(), String> {
        let cost = cost.unwrap_or(0.0);
        if let Some(max) = self.max_cost {
            let left = max - self.spent_cost - self.reserved_cost;
            if cost > left {
                return Err(self.exhaust(format!(
                    "the run's budget limits.max_cost = {} is spent: {} spent, {} in flight, and the next request may cost up to {}",
                    dollars(max),
                    dollars(self.spent_cost),
                    dollars(self.reserved_cost),
                    dollars(cost)
                )));
            }
        }
        if let Some(max) = self.max_tokens {
            let used = self.spent_tokens + self.reserved_tokens;
            if used + tokens > max {
                return Err(self.exhaust(format!(
                    "the run's budget limits.max_tokens = {max} is spent: {} used, {} in flight, and the next request may use up to {tokens}",
                    self.spent_tokens, self.reserved_tokens
                )));
            }
        }
        Ok(())
    }

    fn exhaust(&mut self, why: String) -> String {
        self.exhausted = Some(why.clone());
        why
    }

    /// A call granted for `estimated` tokens and `estimated_cost` USD used
    /// `tokens` and cost `cost`.
    pub fn settle(
        &mut self,
        estimated: u64,
        tokens: u64,
        estimated_cost: Option<f64>,
        cost: Option<f64>,
    ) {
        self.reserved_tokens = self.reserved_tokens.saturating_sub(estimated);
        self.reserved_cost = (self.reserved_cost - estimated_cost.unwrap_or(0.0)).max(0.0);
        self.spent_tokens += tokens;
        self.spent_cost += cost.unwrap_or(0.0);
        if let Some(daily) = self.daily.as_mut() {
            daily.settle(estimated, tokens, SystemTime::now());
        }
    }

    /// Why permits are refused, once they are.
    pub fn exhausted(&self) -> Option<&str> {
        self.exhausted.as_deref()
    }

    /// USD and tokens spent in this run so far (earlier sessions included).
    pub fn spent(&self) -> (f64, u64) {
        (self.spent_cost, self.spent_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::money::Usage;

    #[test]
    fn no_permit_starts_that_the_budget_cannot_cover() {
        let mut limit = SpendLimit::new(Some(1.0), None, Spend::default());
        assert!(limit.reserve(10, Some(0.4)).is_ok());
        assert!(limit.reserve(10, Some(0.4)).is_ok());
        // 0.8 reserved: 0.3 more would pass the budget.
        let why = limit.reserve(10, Some(0.3)).expect_err("over budget");
        assert!(why.contains("$1.00"), "{why}");
        limit.settle(10, 5, Some(0.4), Some(0.1));
        assert!(
            limit.reserve(1, Some(0.01)).is_err(),
            "once refused, every later permit is refused"
        );
        assert_eq!(limit.spent(), (0.1, 5));
    }

    #[test]
    fn tokens_and_earlier_sessions_count() {
        let before = Spend {
            usage: Usage {
                input_tokens: 900,
                ..Usage::default()
            },
            cost: Some(0.5),
        };
        let mut limit = SpendLimit::new(None, Some(1000), before);
        assert!(limit.reserve(100, None).is_ok());
        limit.settle(100, 60, None, None);
        assert!(limit.reserve(40, None).is_ok());
        assert!(limit.reserve(1, None).is_err());
        assert!(limit
            .exhausted()
            .is_some_and(|why| why.contains("max_tokens")));
        assert!(SpendLimit::default().unlimited());
    }
}
