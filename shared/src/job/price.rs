//! The checks of `[agent.price]`, its fallbacks' prices and the run's
//! budgets (`limits.max_cost`, `limits.max_tokens`) that serde cannot make,
//! and whether a job has a budget the rate broker must hold.

use super::llm::KeyProblem;
use super::settings::JobSettings;
use crate::money::Price;

impl JobSettings {
    /// Whether the run has a budget (`limits.max_cost` / `limits.max_tokens`,
    /// `rate.tokens_per_day` / `rate.requests_per_day`):
    /// then every request of every agent asks the broker for a permit, even
    /// when no rate limit applies, so that the broker can hold the budget.
    pub fn budget_applies(&self) -> bool {
        let daily = self
            .rate
            .as_ref()
            .is_some_and(|r| r.tokens_per_day.is_some() || r.requests_per_day.is_some());
        self.limits.max_cost.is_some() || self.limits.max_tokens.is_some() || daily
    }

    /// The price of every endpoint, main first: `[agent.price]`, a
    /// fallback's own price or else that one.
    pub fn prices(&self) -> Vec<Option<Price>> {
        let main = self.agent.price;
        let fallbacks = self.agent.llm.iter().flat_map(|llm| &llm.fallback);
        std::iter::once(main)
            .chain(fallbacks.map(|f| f.price.or(main)))
            .collect()
    }
}

fn problem(table: &str, key: &'static str, message: String) -> KeyProblem {
    KeyProblem {
        table: table.to_owned(),
        key,
        message,
    }
}

fn check_price(table: &str, price: Option<&Price>) -> Result<(), KeyProblem> {
    match price.and_then(Price::bad_key) {
        Some(key) => Err(problem(
            table,
            key,
            "a price is USD per million tokens: a number, 0 or more".into(),
        )),
        None => Ok(()),
    }
}

pub(crate) fn check(settings: &JobSettings) -> Result<(), KeyProblem> {
    check_price("agent.price", settings.agent.price.as_ref())?;
    let fallbacks = settings.agent.llm.iter().flat_map(|llm| &llm.fallback);
    for fallback in fallbacks {
        check_price("agent.llm.fallback.price", fallback.price.as_ref())?;
    }
    let limits = &settings.limits;
    if let Some(max_cost) = limits.max_cost {
        if !max_cost.is_finite() || max_cost <= 0.0 {
            return Err(problem(
                "limits",
                "max_cost",
                format!("max_cost is USD for the whole run, above 0 (not {max_cost})"),
            ));
        }
        if settings.prices().iter().any(Option::is_none) {
            return Err(problem(
                "limits",
                "max_cost",
                "max_cost needs the price of every endpoint: add [agent.price] (input, output: USD per million tokens)".into(),
            ));
        }
    }
    if limits.max_tokens == Some(0) {
        return Err(problem(
            "limits",
            "max_tokens",
            "max_tokens is the tokens the whole run may use: above 0".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::job::{Job, JobError};
    use std::path::Path;

    fn load(text: &str) -> Result<Job, JobError> {
        Job::from_text(Path::new("/jobs/job.toml"), text.to_owned())
    }

    const LLM: &str = "[input]\npath = \"items.jsonl\"\n[agent]\nbackend = \"openai\"\n[agent.llm]\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n";

    fn refused(text: &str) -> String {
        match load(text) {
            Err(JobError::Invalid(error)) => error.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn prices_and_budgets_are_read() {
        let job = load(&format!(
            "{LLM}[agent.price]\ninput = 0.15\noutput = 0.6\ncached_input = 0.075\n[limits]\nmax_cost = 2.5\nmax_tokens = 1000\n"
        ))
        .expect("a good job");
        let price = job.settings.agent.price.expect("a price");
        assert_eq!(price.cached_input, Some(0.075));
        assert_eq!(job.settings.limits.max_cost, Some(2.5));
        assert!(job.settings.budget_applies());
        assert_eq!(job.settings.prices(), vec![Some(price)]);
    }

    #[test]
    fn bad_prices_and_budgets_name_line_and_key() {
        let negative = refused(&format!("{LLM}[agent.price]\ninput = 1\noutput = -2\n"));
        assert!(
            negative.contains(":10:") && negative.contains("agent.price.output"),
            "{negative}"
        );
        let no_price = refused(&format!("{LLM}[limits]\nmax_cost = 1.0\n"));
        assert!(
            no_price.contains("limits.max_cost") && no_price.contains("[agent.price]"),
            "{no_price}"
        );
        let zero = refused(&format!(
            "{LLM}[agent.price]\ninput = 1\noutput = 2\n[limits]\nmax_cost = 0\n"
        ));
        assert!(zero.contains("limits.max_cost"), "{zero}");
        let unknown = format!(
            "{:?}",
            load(&format!(
                "{LLM}[agent.price]\ninput = 1\noutput = 2\nreasoning = 3\n"
            ))
        );
        assert!(unknown.contains("reasoning"), "{unknown}");
    }
}
