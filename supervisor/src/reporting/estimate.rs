//! The estimated cost of a whole LLM run, before anything is spent
//! (`nightshift plan`, and the line `run` prints at its start): every item's
//! prompt rendered and counted (about four characters a token, the system
//! prompt included), its output at most max_tokens, at the main endpoint's
//! price. With `cache_prefix` the system prompt is written to the cache once
//! and read from it by every later request.

use serde_json::Value;

use shared::input::InputFile;
use shared::job::JobSettings;
use shared::money::{dollars, Price, Usage};
use shared::prompt::Template;

use crate::reporting::sample::Sample;

/// The output a request may be given when the job sets no max_tokens (the
/// agent reserves as much per permit).
const DEFAULT_MAX_TOKENS: u64 = 1024;

/// The tokens a run's requests may use at most, and their price.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub items: usize,
    /// Tokens at most, split as the price splits them.
    pub usage: Usage,
    pub cost: f64,
}

impl Estimate {
    /// "estimated cost: at most $23.93 for 668 items (1,234,567 prompt
    /// tokens, 534,400 output tokens at most)".
    pub fn line(&self) -> String {
        let u = &self.usage;
        let cached = if u.cached_input_tokens + u.cache_write_tokens > 0 {
            format!(
                ", {} of them read from the prompt cache and {} written to it",
                u.cached_input_tokens, u.cache_write_tokens
            )
        } else {
            String::new()
        };
        format!(
            "estimated cost: at most {} for {} items ({} prompt tokens{cached}, {} output tokens at most)",
            dollars(self.cost),
            self.items,
            u.input_tokens + u.cached_input_tokens + u.cache_write_tokens,
            u.output_tokens
        )
    }
}

/// The line `plan` and `run` print: the estimate, the likely cost when a
/// sample was asked (`reporting::sample`), and the budget beside it.
pub fn estimate_line(
    settings: &JobSettings,
    input: &InputFile,
    sample: Option<&Result<Sample, String>>,
) -> Option<String> {
    let estimate = estimate(settings, input)?;
    let mut line = estimate.line();
    match sample {
        Some(Ok(sample)) => line.push_str(&likely(settings, &estimate, sample)),
        Some(Err(why)) => line.push_str(&format!("; likely cost not known: {why}")),
        None => {}
    }
    if let Some(max_cost) = settings.limits.max_cost {
        line.push_str(&format!("; budget limits.max_cost = {}", dollars(max_cost)));
        if estimate.cost > max_cost {
            line.push_str(" (the run may stop with exit code 4 before its end)");
        }
    }
    Some(line)
}

/// "; likely $4.10 (output from 20 sample answers: 83 tokens each on
/// average)": the estimate with every item's output at the sample's mean.
fn likely(settings: &JobSettings, estimate: &Estimate, sample: &Sample) -> String {
    let Some(price) = price_of(settings) else {
        return String::new();
    };
    let usage = Usage {
        output_tokens: (sample.output_per_item() * estimate.items as f64).round() as u64,
        ..estimate.usage
    };
    format!(
        "; likely {} (output from {} sample answers: {:.0} tokens each on average)",
        dollars(price.cost(&usage)),
        sample.answers,
        sample.output_per_item()
    )
}

/// The price the run's requests pay: the batch share in batch mode.
fn price_of(settings: &JobSettings) -> Option<Price> {
    let llm = settings.agent.llm.as_ref()?;
    let price: Price = settings.agent.price?;
    Some(match llm.mode {
        shared::job::LlmMode::Batch => price.batched(),
        _ => price,
    })
}

/// Characters to tokens, as the agent's permits count them.
fn tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// The estimate of an LLM job with a price; None for other jobs.
/// (One more pass over the input, item by item.)
pub fn estimate(settings: &JobSettings, input: &InputFile) -> Option<Estimate> {
    let llm = settings.agent.llm.as_ref()?;
    // Batched requests pay the batch share of the price.
    let price = price_of(settings)?;
    let template = Template::parse(llm.prompt.as_deref().unwrap_or("{{item}}")).ok()?;
    let system = tokens(llm.system.as_ref().map_or(0, String::len));
    let max_output = llm
        .max_tokens
        .map_or(DEFAULT_MAX_TOKENS, |n| n.get() as u64);
    let mut usage = Usage::default();
    for (index, read) in input.items().ok()?.enumerate() {
        let (_, raw) = read.ok()?;
        let item: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        let prompt = template.render(&item).map_or(0, |text| text.len());
        usage.input_tokens += tokens(prompt);
        match (llm.cache_prefix, index) {
            (false, _) => usage.input_tokens += system,
            (true, 0) => usage.cache_write_tokens += system,
            (true, _) => usage.cached_input_tokens += system,
        }
        usage.output_tokens += max_output;
    }
    Some(Estimate {
        items: input.count,
        cost: price.cost(&usage),
        usage,
    })
}
