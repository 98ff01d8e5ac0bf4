//! One request as both providers need it, before it is written in either's
//! shape: the model, the rendered prompts and the parameters.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub model: &'a str,
    pub system: Option<&'a str>,
    pub prompt: &'a str,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    /// The reply must be a JSON object.
    pub json: bool,
    pub schema: Option<&'a Map<String, Value>>,
    /// Merged into the body last, so it can set anything.
    pub extra: &'a Map<String, Value>,
    /// anthropic: cache_control on the system prompt.
    pub cache_prefix: bool,
}
