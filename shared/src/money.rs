//! Tokens and money: `[agent.price]` (USD per million tokens), the
//! normalised usage of an LLM answer, and what it cost. `input_tokens`
//! counts only input neither read from nor written to a prompt cache, so
//! cost = input × price.input + output × price.output + cached_input ×
//! price.cached_input + cache_write × price.cache_write (DESIGN.md, "LLM
//! backends"). Records and failure lines carry `usage` and `cost`; status,
//! the progress display and the reports sum them with `Spend`.

use std::ops::AddAssign;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `[agent.price]` / `[agent.llm.fallback.price]`: USD per million tokens.
/// `cached_input` and `cache_write` default to `input` (a price never
/// below the real one: budgets stay safe).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// Provider batch APIs (`agent.llm.mode = "batch"`): the share of these
    /// prices a batched request costs (default 0.5: half price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<f64>,
}

/// The discount factor of a batched request when `[agent.price] batch` is
/// not set: both OpenAI and Anthropic charge half.
pub const DEFAULT_BATCH_FACTOR: f64 = 0.5;

impl Price {
    /// This price as a batched request pays it: every kind of token at
    /// `batch` (default half) of its online price.
    pub fn batched(&self) -> Self {
        let factor = self.batch.unwrap_or(DEFAULT_BATCH_FACTOR);
        Self {
            input: self.input * factor,
            output: self.output * factor,
            cached_input: Some(self.cached_input.unwrap_or(self.input) * factor),
            cache_write: Some(self.cache_write.unwrap_or(self.input) * factor),
            batch: None,
        }
    }

    /// USD for `usage` at this price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let per_token = |tokens: u64, per_million: f64| tokens as f64 * per_million / 1e6;
        per_token(usage.input_tokens, self.input)
            + per_token(usage.output_tokens, self.output)
            + per_token(
                usage.cached_input_tokens,
                self.cached_input.unwrap_or(self.input),
            )
            + per_token(
                usage.cache_write_tokens,
                self.cache_write.unwrap_or(self.input),
            )
    }

    /// USD a request may cost at most: its prompt tokens all uncached (or
    /// written to the cache, when that is dearer) and `max_output` out.
    pub fn estimate(&self, prompt_tokens: u64, max_output: u64) -> f64 {
        let input = self.input.max(self.cache_write.unwrap_or(self.input));
        (prompt_tokens as f64 * input + max_output as f64 * self.output) / 1e6
    }

    /// The first price that is not a finite number ≥ 0, by its key.
    pub fn bad_key(&self) -> Option<&'static str> {
        let fields = [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
            ("batch", self.batch),
        ];
        fields
            .into_iter()
            .find(|(_, value)| value.is_some_and(|v| !v.is_finite() || v < 0.0))
            .map(|(key, _)| key)
    }
}

/// The tokens of one answer (or of several, summed), normalised across
/// providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cached_input_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Every token the server counted.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cached_input_tokens + self.cache_write_tokens
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    pub fn to_json(self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
    }
}

/// What was spent: tokens, and USD where a price was known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    pub usage: Usage,
    /// None: no request had a price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl Spend {
    /// One answer's spend: its usage, priced when there is a price.
    pub fn of(usage: Usage, price: Option<&Price>) -> Self {
        Self {
            usage,
            cost: price.map(|price| price.cost(&usage)),
        }
    }

    /// The `usage` and `cost` a record or failure line carries (either
    /// may be missing: a program's own records). A record answered from
    /// the answer cache (`"cached": true`) keeps its answer's usage, but
    /// used no tokens: it spent nothing.
    pub fn from_record(record: &Map<String, Value>) -> Self {
        let cached = record.get("cached") == Some(&Value::Bool(true));
        let usage = record
            .get("usage")
            .filter(|_| !cached)
            .and_then(|usage| Usage::deserialize(usage).ok())
            .unwrap_or_default();
        let cost = record
            .get("cost")
            .and_then(Value::as_f64)
            .filter(|cost| cost.is_finite());
        Self { usage, cost }
    }

    /// `from_record` on one JSON line; nothing for a line that is not an object.
    pub fn from_line(line: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Fields {
            #[serde(default)]
            usage: Option<Usage>,
            #[serde(default)]
            cost: Option<f64>,
            #[serde(default)]
            cached: bool,
        }
        match serde_json::from_slice::<Fields>(line) {
            Ok(fields) => Self {
                usage: fields.usage.filter(|_| !fields.cached).unwrap_or_default(),
                cost: fields.cost.filter(|cost| cost.is_finite()),
            },
            Err(_) => Self::default(),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.usage.is_zero() && self.cost.is_none()
    }

    /// Writes `usage` and (when known) `cost` into a record or failure line.
    pub fn stamp(&self, record: &mut Map<String, Value>) {
        record.insert("usage".into(), self.usage.to_json());
        if let Some(cost) = self.cost {
            record.insert("cost".into(), Value::from(round_usd(cost)));
        }
    }

    /// `{"usage": {…}, "cost": USD}` for status --json and report.json
    /// (`cost` null when no price was known).
    pub fn to_json(self) -> Value {
        serde_json::json!({
            "usage": self.usage.to_json(),
            "cost": self.cost.map(round_usd),
        })
    }
}

impl AddAssign for Spend {
    fn add_assign(&mut self, other: Self) {
        self.usage += other.usage;
        self.cost = match (self.cost, other.cost) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }
}

/// USD kept to a nano-dollar: sums stay exact enough, lines stay short.
pub fn round_usd(usd: f64) -> f64 {
    (usd * 1e9).round() / 1e9
}

/// "$1.23" (or "$0.0042" below a cent).
pub fn dollars(usd: f64) -> String {
    if usd != 0.0 && usd.abs() < 0.01 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usage() -> Usage {
        Usage {
            input_tokens: 1_000_000,
            output_tokens: 2_000_000,
            cached_input_tokens: 4_000_000,
            cache_write_tokens: 8_000_000,
        }
    }

    #[test]
    fn cost_is_each_kind_of_token_at_its_price() {
        let price = Price {
            input: 1.0,
            output: 10.0,
            cached_input: Some(0.1),
            cache_write: Some(1.25),
            batch: None,
        };
        let cost = price.cost(&usage());
        assert!((cost - (1.0 + 20.0 + 0.4 + 10.0)).abs() < 1e-9, "{cost}");
        let plain = Price {
            input: 1.0,
            output: 10.0,
            cached_input: None,
            cache_write: None,
            batch: None,
        };
        assert!((plain.cost(&usage()) - (1.0 + 20.0 + 4.0 + 8.0)).abs() < 1e-9);
        assert!((price.estimate(1_000_000, 100_000) - (1.25 + 1.0)).abs() < 1e-9);
    }

    #[test]
    fn bad_prices_are_named() {
        let price = Price {
            input: 1.0,
            output: -1.0,
            cached_input: Some(f64::NAN),
            cache_write: None,
            batch: None,
        };
        assert_eq!(price.bad_key(), Some("output"));
    }

    #[test]
    fn a_batched_request_costs_the_batch_share_of_every_price() {
        let price = Price {
            input: 1.0,
            output: 10.0,
            cached_input: Some(0.1),
            cache_write: None,
            batch: None,
        };
        let half = price.batched().cost(&usage());
        assert!((half - price.cost(&usage()) / 2.0).abs() < 1e-9, "{half}");
        let quarter = Price {
            batch: Some(0.25),
            ..price
        };
        let cost = quarter.batched().cost(&usage());
        assert!((cost - price.cost(&usage()) / 4.0).abs() < 1e-9, "{cost}");
        let negative = Price {
            batch: Some(-0.5),
            ..price
        };
        assert_eq!(negative.bad_key(), Some("batch"));
    }

    #[test]
    fn spends_sum_and_travel_in_records() {
        let price = Price {
            input: 1.0,
            output: 1.0,
            cached_input: None,
            cache_write: None,
            batch: None,
        };
        let mut total = Spend::default();
        total += Spend::of(usage(), None);
        assert_eq!(total.cost, None);
        total += Spend::of(usage(), Some(&price));
        assert_eq!(total.usage.total(), 2 * usage().total());
        assert_eq!(total.cost, Some(15.0));
        let mut record = Map::new();
        total.stamp(&mut record);
        assert_eq!(Spend::from_record(&record), total);
        let line = serde_json::to_vec(&Value::Object(record)).expect("json");
        assert_eq!(Spend::from_line(&line), total);
        assert_eq!(Spend::from_line(b"not json"), Spend::default());
        assert_eq!(
            Spend::from_line(br#"{"id": 1, "output": "x"}"#),
            Spend::default()
        );
        assert_eq!(total.to_json()["cost"], json!(15.0));
        assert_eq!(dollars(23.931), "$23.93");
        assert_eq!(dollars(0.00123), "$0.0012");
    }

    #[test]
    fn a_cached_answer_spent_nothing() {
        let line = br#"{"id": 1, "usage": {"input_tokens": 5, "output_tokens": 7}, "cost": 0.0, "cached": true, "saved": 0.2}"#;
        let nothing = Spend {
            usage: Usage::default(),
            cost: Some(0.0),
        };
        assert_eq!(Spend::from_line(line), nothing);
        let record: Map<String, Value> = serde_json::from_slice(line).expect("an object");
        assert_eq!(Spend::from_record(&record), nothing);
    }
}
