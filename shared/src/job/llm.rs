//! `[agent.llm]`: the settings of the LLM backends (`backend = "openai"` |
//! `"anthropic"`): the endpoint, the names of the key variables, prompts,
//! request parameters and fallback endpoints. The files it names are read
//! when the job is loaded, so every task file carries their text and a run
//! needs nothing but its directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::settings::Backend;
use super::values::{Count, Deadline, HumanDuration};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// Required; optional here so that its absence gets our own message.
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// The environment variable(s) holding the API key: names, never keys.
    /// None: no key is sent (a local server).
    pub api_key_env: Option<KeyVars>,
    #[serde(default)]
    pub mode: LlmMode,
    /// mode = "batch": how often the provider is asked about the batches
    /// in flight (one timer for all of an agent's batches).
    #[serde(
        default = "default_batch_poll",
        deserialize_with = "super::positive::duration"
    )]
    pub batch_poll: HumanDuration,
    /// mode = "auto": when the items still outstanding go online (a clock
    /// time or a duration from the start of the session); default: the
    /// run's deadline (schedule.deadline / --until).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_deadline: Option<Deadline>,
    pub system: Option<String>,
    pub system_file: Option<PathBuf>,
    /// `{{field}}` and `{{item}}` are filled in per item; default `{{item}}`.
    pub prompt: Option<String>,
    pub prompt_file: Option<PathBuf>,
    pub max_tokens: Option<Count>,
    pub temperature: Option<f64>,
    pub response_format: Option<ResponseFormat>,
    /// A JSON Schema file; once loaded, the schema itself.
    pub schema: Option<Schema>,
    /// Merged into every request body as is.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// anthropic: mark the system prompt for prompt caching.
    #[serde(default)]
    pub cache_prefix: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<FallbackSettings>,
    /// `nightshift plan` and `run` ask this many items (spread over the
    /// input) before the run, to print a likely cost beside the upper
    /// bound from their real output; they are paid, and with `[cache]` the
    /// run reuses their answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_sample: Option<Count>,
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration::from_secs(120)
}

fn default_batch_poll() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// `[[agent.llm.fallback]]`: another endpoint, tried when the one before it
/// keeps failing. Keys left out are those of `[agent.llm]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSettings {
    /// openai or anthropic; default: agent.backend.
    pub backend: Option<Backend>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<KeyVars>,
    pub max_tokens: Option<Count>,
    pub temperature: Option<f64>,
    pub extra: Option<Map<String, Value>>,
    pub request_timeout: Option<HumanDuration>,
    /// This endpoint's price; default: `[agent.price]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<crate::money::Price>,
}

/// `api_key_env = "OPENAI_API_KEY"`, or a list of names used in order: when
/// the server rejects one key, the next is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyVars {
    One(String),
    Many(Vec<String>),
}

impl KeyVars {
    pub fn names(&self) -> &[String] {
        match self {
            Self::One(name) => std::slice::from_ref(name),
            Self::Many(names) => names,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmMode {
    /// One HTTP request per item.
    #[default]
    Online,
    /// Provider batch APIs: each agent attempt sends its remaining items
    /// as one batch, at the batch price.
    Batch,
    /// Batch, but the items still outstanding at the deadline (or
    /// batch_deadline) go online, so that the night ends on time.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseFormat {
    /// record.output = the reply's text.
    Text,
    /// The reply must be a JSON object; its fields go into the record.
    Json,
}

/// `schema = "schema.json"` in the job file; the schema itself once loaded
/// (an inline table is taken as the schema too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Schema {
    File(PathBuf),
    Inline(Map<String, Value>),
}

impl LlmSettings {
    /// Whether replies must be JSON objects (a schema implies it).
    pub fn wants_json(&self) -> bool {
        self.schema.is_some() || self.response_format == Some(ResponseFormat::Json)
    }

    /// The schema, once loaded.
    pub fn schema_value(&self) -> Option<&Map<String, Value>> {
        match &self.schema {
            Some(Schema::Inline(schema)) => Some(schema),
            _ => None,
        }
    }

    /// Every key variable name of every endpoint, in order, without repeats.
    pub fn key_vars(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        let lists = std::iter::once(self.api_key_env.as_ref())
            .chain(self.fallback.iter().map(|f| f.api_key_env.as_ref()))
            .flatten();
        for name in lists.flat_map(KeyVars::names) {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }
}

/// One bad key of `[agent.llm]`, for the loader to locate in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyProblem {
    pub table: String,
    pub key: &'static str,
    pub message: String,
}

fn problem(table: &str, key: &'static str, message: impl Into<String>) -> KeyProblem {
    KeyProblem {
        table: table.to_owned(),
        key,
        message: message.into(),
    }
}

const TABLE: &str = "agent.llm";
const FALLBACK_TABLE: &str = "agent.llm.fallback";

/// The checks of `[agent.llm]` that serde cannot make. `env` is agent.env:
/// a key put there would be copied into the run directory.
pub(crate) fn check(
    backend: Backend,
    llm: Option<&LlmSettings>,
    env_names: &[&String],
) -> Result<(), KeyProblem> {
    let is_llm = matches!(backend, Backend::Openai | Backend::Anthropic);
    let Some(llm) = llm else {
        if is_llm {
            return Err(problem(
                "agent",
                "backend",
                "the openai and anthropic backends need an [agent.llm] table with base_url and model",
            ));
        }
        return Ok(());
    };
    if !is_llm {
        return Err(problem(
            TABLE,
            "",
            "[agent.llm] is for backend = \"openai\" or \"anthropic\"; set agent.backend to one of them, or remove the table",
        ));
    }
    match &llm.base_url {
        None => {
            return Err(problem(
                TABLE,
                "base_url",
                "[agent.llm] needs base_url, like \"https://api.openai.com/v1\"",
            ))
        }
        Some(url) => check_url(TABLE, url)?,
    }
    if llm.model.as_deref().is_none_or(str::is_empty) {
        return Err(problem(
            TABLE,
            "model",
            "[agent.llm] needs model, the model name the server knows",
        ));
    }
    if llm.batch_deadline.is_some() && llm.mode != LlmMode::Auto {
        return Err(problem(
            TABLE,
            "batch_deadline",
            "batch_deadline is when mode = \"auto\" goes online; set mode = \"auto\" or remove it",
        ));
    }
    if llm.mode != LlmMode::Online && !llm.fallback.is_empty() {
        // A batch goes to one provider; where its requests would fall back
        // to is not a question a batch can answer request by request.
        return Err(problem(
            FALLBACK_TABLE,
            "",
            "batch mode (\"batch\", \"auto\") sends every request to the main endpoint; remove the [[agent.llm.fallback]] tables or use mode = \"online\"",
        ));
    }
    if llm.system.is_some() && llm.system_file.is_some() {
        return Err(problem(
            TABLE,
            "system_file",
            "give system or system_file, not both",
        ));
    }
    if llm.prompt.is_some() && llm.prompt_file.is_some() {
        return Err(problem(
            TABLE,
            "prompt_file",
            "give prompt or prompt_file, not both",
        ));
    }
    if llm.schema.is_some() && llm.response_format == Some(ResponseFormat::Text) {
        return Err(problem(
            TABLE,
            "response_format",
            "a schema needs JSON replies; set response_format = \"json\" or leave it out",
        ));
    }
    check_temperature(TABLE, llm.temperature)?;
    check_keys(TABLE, llm.api_key_env.as_ref(), env_names)?;
    for fallback in &llm.fallback {
        if let Some(kind) = fallback.backend {
            if !matches!(kind, Backend::Openai | Backend::Anthropic) {
                return Err(problem(
                    FALLBACK_TABLE,
                    "backend",
                    "a fallback endpoint's backend is \"openai\" or \"anthropic\"",
                ));
            }
        }
        match &fallback.base_url {
            None => {
                return Err(problem(
                    FALLBACK_TABLE,
                    "base_url",
                    "each [[agent.llm.fallback]] needs base_url",
                ))
            }
            Some(url) => check_url(FALLBACK_TABLE, url)?,
        }
        if fallback.model.as_deref().is_some_and(str::is_empty) {
            return Err(problem(
                FALLBACK_TABLE,
                "model",
                "model is empty; leave it out to use agent.llm.model",
            ));
        }
        check_temperature(FALLBACK_TABLE, fallback.temperature)?;
        check_keys(FALLBACK_TABLE, fallback.api_key_env.as_ref(), env_names)?;
    }
    Ok(())
}

fn check_url(table: &str, url: &str) -> Result<(), KeyProblem> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(problem(
            table,
            "base_url",
            format!("{url:?} is not an http:// or https:// address"),
        ))
    }
}

fn check_temperature(table: &str, temperature: Option<f64>) -> Result<(), KeyProblem> {
    match temperature {
        Some(t) if !(t.is_finite() && t >= 0.0) => Err(problem(
            table,
            "temperature",
            format!("{t} is not allowed; expected a number of at least 0"),
        )),
        _ => Ok(()),
    }
}

/// Names must look like environment variable names: a key pasted here by
/// mistake would otherwise be copied into every task file. The message never
/// repeats the value, in case it is a key.
fn check_keys(
    table: &str,
    keys: Option<&KeyVars>,
    env_names: &[&String],
) -> Result<(), KeyProblem> {
    let Some(keys) = keys else {
        return Ok(());
    };
    if keys.names().is_empty() {
        return Err(problem(table, "api_key_env", "the list of key variables is empty; name at least one, or leave api_key_env out for a server without keys"));
    }
    for name in keys.names() {
        if !is_var_name(name) {
            return Err(problem(table, "api_key_env", "api_key_env names an environment variable (letters, digits and '_', like \"OPENAI_API_KEY\"), never the key itself"));
        }
        if env_names.contains(&name) {
            return Err(problem(
                table,
                "api_key_env",
                format!("{name} is set in agent.env, which is copied into the run directory; export it in the environment nightshift runs in instead"),
            ));
        }
    }
    Ok(())
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads system_file, prompt_file and a schema file (relative to `dir`) into
/// the settings, so the task files carry the texts themselves.
pub(crate) fn load_files(llm: &mut LlmSettings, dir: &Path) -> Result<(), KeyProblem> {
    let read = |key: &'static str, path: &Path| {
        std::fs::read_to_string(dir.join(path))
            .map_err(|e| problem(TABLE, key, format!("cannot read {}: {e}", path.display())))
    };
    if let Some(path) = llm.system_file.take() {
        llm.system = Some(read("system_file", &path)?);
    }
    if let Some(path) = llm.prompt_file.take() {
        llm.prompt = Some(read("prompt_file", &path)?);
    }
    let schema = match &llm.schema {
        Some(Schema::File(path)) => {
            let text = read("schema", path)?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(schema)) => schema,
                Ok(_) => {
                    return Err(problem(
                        TABLE,
                        "schema",
                        format!("{} is not a JSON object", path.display()),
                    ))
                }
                Err(e) => {
                    return Err(problem(
                        TABLE,
                        "schema",
                        format!("{} is not valid JSON: {e}", path.display()),
                    ))
                }
            }
        }
        Some(Schema::Inline(schema)) => schema.clone(),
        None => return Ok(()),
    };
    if let Err(e) = jsonschema::validator_for(&Value::Object(schema.clone())) {
        return Err(problem(
            TABLE,
            "schema",
            format!("not a valid JSON Schema: {e}"),
        ));
    }
    llm.schema = Some(Schema::Inline(schema));
    Ok(())
}

#[cfg(test)]
mod tests;
