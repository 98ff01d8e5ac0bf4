//! The LLM backends, `openai` and `anthropic`: one HTTP request per item
//! attempt, built from the job's prompts, sent to the endpoint in use with
//! its key in use, and the answer turned into a record or a failure whose
//! kind tells the item runner what to do next.
//!
//! A call is a future: agent.concurrency of them are in flight at once on
//! the agent core's event loop, over kept-alive connections of that loop
//! (`clients`). The batch APIs use the backend's own runtime and clients.

mod anthropic;
pub mod batch;
mod cached;
mod clients;
mod endpoint;
mod error;
mod headers;
mod http;
mod openai;
mod reply;
mod request;

pub use error::{pause_before_retry, LlmError, Retry};

use std::time::SystemTime;

use serde_json::{Map, Value};
use shared::answer_cache::{AnswerCache, CACHE_VAR};
use shared::broker::prefix_id;
use shared::job::{AgentSettings, Backend as BackendKind, LlmSettings};
use shared::money::Spend;

use super::{AttemptError, Backend, Call, CallFuture, Meter};
use crate::setup::SetupError;
use endpoint::{Endpoint, Provider};
use http::Verdict;
use reply::Shape;
use request::Request;
use shared::prompt::Template;

/// The output budget a permit reserves when the job sets no max_tokens.
const DEFAULT_OUTPUT_ESTIMATE: u64 = 1024;

pub struct LlmBackend {
    /// The batch APIs' runtime (online requests run on the agent core's
    /// event loop).
    runtime: tokio::runtime::Runtime,
    /// This backend's name among the clients of a worker thread.
    owner: u64,
    /// The main endpoint, then the fallbacks: the choices of the runner.
    endpoints: Vec<Endpoint>,
    system: Option<String>,
    prompt: Template,
    json: bool,
    schema: Option<Map<String, Value>>,
    validator: Option<jsonschema::Validator>,
    cache_prefix: bool,
    /// The answer cache (`[cache]`, unless --no-cache).
    cache: Option<AnswerCache>,
}

impl LlmBackend {
    /// Checks the settings and reads every key variable through `lookup`.
    pub fn new(
        settings: &AgentSettings,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SetupError> {
        let llm: &LlmSettings = settings.llm.as_ref().ok_or_else(|| {
            SetupError::Llm(
                "the openai and anthropic backends need agent.llm (base_url, model)".into(),
            )
        })?;
        let mut endpoints =
            vec![
                Endpoint::new(settings.backend, llm, None, settings.price, lookup)
                    .map_err(SetupError::Llm)?,
            ];
        for fallback in &llm.fallback {
            endpoints.push(
                Endpoint::new(
                    settings.backend,
                    llm,
                    Some(fallback),
                    settings.price,
                    lookup,
                )
                .map_err(SetupError::Llm)?,
            );
        }
        let prompt = Template::parse(llm.prompt.as_deref().unwrap_or("{{item}}"))
            .map_err(|e| SetupError::Llm(format!("agent.llm.prompt: {e}")))?;
        let schema = llm.schema_value().cloned();
        let validator = match &schema {
            Some(schema) => Some(
                jsonschema::validator_for(&Value::Object(schema.clone()))
                    .map_err(|e| SetupError::Llm(format!("agent.llm.schema: {e}")))?,
            ),
            None => None,
        };
        let runtime = crate::core::pool::event_loop().map_err(SetupError::Llm)?;
        Ok(Self {
            runtime,
            owner: clients::owner(),
            endpoints,
            system: llm.system.clone(),
            prompt,
            json: llm.wants_json(),
            schema,
            validator,
            cache_prefix: llm.cache_prefix,
            cache: None,
        })
    }

    fn request<'a>(&'a self, endpoint: &'a Endpoint, prompt: &'a str) -> Request<'a> {
        Request {
            model: &endpoint.model,
            system: self.system.as_deref(),
            prompt,
            max_tokens: endpoint.max_tokens,
            temperature: endpoint.temperature,
            json: self.json,
            schema: self.schema.as_ref(),
            extra: &endpoint.extra,
            cache_prefix: self.cache_prefix,
        }
    }

    /// The request body exactly as it is sent: what the answer cache keys.
    fn body(&self, endpoint: &Endpoint, prompt: &str) -> Value {
        let request = self.request(endpoint, prompt);
        match endpoint.provider {
            Provider::OpenAi => openai::body(&request),
            Provider::Anthropic => anthropic::body(&request),
        }
    }

    fn render(&self, call: Call<'_>) -> Result<String, LlmError> {
        self.prompt
            .render(call.item)
            .map_err(|field| LlmError::MissingField {
                id: call.id.clone(),
                field,
            })
    }

    fn endpoint(&self, choice: usize) -> Result<&Endpoint, AttemptError> {
        self.endpoints.get(choice).ok_or(AttemptError::Lost)
    }

    /// One request with the key in use: what the runner gets back, and
    /// what the answer told `meter`.
    async fn send(
        &self,
        call: Call<'_>,
        choice: usize,
        meter: &mut Meter,
    ) -> Result<Map<String, Value>, LlmError> {
        let endpoint = self
            .endpoints
            .get(choice)
            .ok_or_else(|| LlmError::NoUsableKey {
                endpoint: String::new(),
                vars: String::new(),
            })?;
        let prompt = self.render(call)?;
        let Some((index, key)) = endpoint.key_for(meter.key.as_deref()) else {
            return Err(LlmError::NoUsableKey {
                endpoint: endpoint.base_url.clone(),
                vars: endpoint.rejected_vars(),
            });
        };
        meter.key = Some(key.id.clone());
        let body = self.body(endpoint, &prompt);
        let cache_key = self.cache.as_ref().map(|_| cached::key(endpoint, &body));
        let bytes = serde_json::to_vec(&body).map_err(|e| LlmError::BadBody(e.to_string()))?;
        let sent = clients::post(
            self.owner,
            choice,
            endpoint,
            endpoint.auth_headers(key),
            bytes,
        )
        .await;
        let answer = sent.map_err(|error| endpoint.no_answer(error))?;
        let now = SystemTime::now();
        let learned = headers::learned_limits(&answer.headers, now);
        if !learned.is_empty() {
            meter.learned = Some(learned);
        }
        let status = answer.status.as_u16();
        match http::verdict(answer.status, &answer.body, endpoint.secret(key)) {
            Verdict::Answered(value) => {
                let reply = match endpoint.provider {
                    Provider::OpenAi => openai::parse(&value)?,
                    Provider::Anthropic => anthropic::parse(&value)?,
                };
                meter.used_tokens = Some(reply.usage.total());
                meter.spend = Some(Spend::of(reply.usage, endpoint.price.as_ref()));
                let shape = Shape {
                    json: self.json,
                    schema: self.validator.as_ref(),
                };
                let record = reply.into_record(&shape, call.id_field, &endpoint.base_url)?;
                // Only an answer that made a record is kept: one that is
                // not even the JSON asked for would be refused every time.
                if let Some(cache_key) = cache_key {
                    self.store(&cache_key, &endpoint.model, &value);
                }
                Ok(record)
            }
            Verdict::RateLimited => Err(LlmError::RateLimited {
                retry_after: headers::retry_after(&answer.headers, now),
            }),
            Verdict::KeyRejected => {
                endpoint.reject(index);
                Err(LlmError::KeyRejected {
                    var: key.var.clone(),
                    endpoint: endpoint.base_url.clone(),
                    status,
                })
            }
            Verdict::Refused(message) => Err(LlmError::Refused { status, message }),
            Verdict::ServerError(message) => Err(LlmError::Server { status, message }),
            Verdict::Unreadable(reason) => Err(LlmError::BadBody(reason)),
        }
    }
}

impl LlmBackend {
    /// The tokens of a call's prompt (system prompt included: characters /
    /// 4) and the most output it may be given.
    fn estimate_parts(&self, call: Call<'_>, choice: usize) -> (u64, u64) {
        let prompt = self.render(call).map(|p| p.len()).unwrap_or(0);
        let system = self.system.as_ref().map_or(0, String::len);
        let output = self
            .endpoints
            .get(choice)
            .and_then(|e| e.max_tokens)
            .map_or(DEFAULT_OUTPUT_ESTIMATE, u64::from);
        (((prompt + system) as u64).div_ceil(4), output)
    }
}

impl Backend for LlmBackend {
    fn choices(&self) -> usize {
        self.endpoints.len()
    }

    fn label(&self, choice: usize) -> String {
        self.endpoints
            .get(choice)
            .map(Endpoint::label)
            .unwrap_or_default()
    }

    /// Records name their endpoint themselves.
    fn marks_producer(&self) -> bool {
        false
    }

    fn permit_key(&self, choice: usize) -> Option<String> {
        let endpoint = self.endpoints.get(choice)?;
        endpoint.key().map(|(_, key)| key.id.clone())
    }

    fn permit_keys(&self, choice: usize) -> Vec<String> {
        self.endpoints
            .get(choice)
            .map(Endpoint::usable_ids)
            .unwrap_or_default()
    }

    fn usable(&self, choice: usize) -> bool {
        self.endpoints
            .get(choice)
            .is_some_and(|endpoint| endpoint.key().is_some())
    }

    /// The prompt's characters / 4, plus the output it may be given.
    fn estimate(&self, call: Call<'_>, choice: usize) -> u64 {
        let (prompt, output) = self.estimate_parts(call, choice);
        prompt + output
    }

    fn settles_permits(&self) -> bool {
        true
    }

    /// With cache_prefix, the system prompt of the endpoint's model.
    fn cache_prefix(&self, choice: usize) -> Option<String> {
        let system = self.system.as_deref().filter(|_| self.cache_prefix)?;
        let endpoint = self.endpoints.get(choice)?;
        Some(prefix_id(&endpoint.base_url, &endpoint.model, system))
    }

    /// The estimate's prompt and output at the endpoint's price.
    fn estimate_cost(&self, call: Call<'_>, choice: usize) -> Option<f64> {
        let price = self.endpoints.get(choice)?.price?;
        let (prompt, output) = self.estimate_parts(call, choice);
        Some(price.estimate(prompt, output))
    }

    fn cached(
        &self,
        call: Call<'_>,
        choice: usize,
    ) -> Option<Result<Map<String, Value>, AttemptError>> {
        self.answer_from_cache(call, choice)
            .map(|found| found.map_err(AttemptError::from))
    }

    fn call<'a>(&'a self, call: Call<'a>, choice: usize, meter: &'a mut Meter) -> CallFuture<'a> {
        Box::pin(async move {
            self.endpoint(choice)?;
            Ok(self.send(call, choice, meter).await?)
        })
    }

    /// A request only waits on its socket.
    fn holds_thread(&self) -> bool {
        false
    }
}

/// The backend of agent.backend = "openai" | "anthropic", keys read from
/// the process environment.
pub fn from_settings(settings: &AgentSettings) -> Result<LlmBackend, SetupError> {
    debug_assert!(matches!(
        settings.backend,
        BackendKind::Openai | BackendKind::Anthropic
    ));
    let backend = LlmBackend::new(settings, &|name| std::env::var(name).ok())?;
    // An empty value is as good as none (the supervisor sets none for
    // --no-cache).
    match std::env::var_os(CACHE_VAR).filter(|path| !path.is_empty()) {
        Some(path) => {
            let cache = AnswerCache::open(std::path::Path::new(&path))
                .map_err(|e| SetupError::Llm(e.to_string()))?;
            Ok(backend.with_cache(cache))
        }
        None => Ok(backend),
    }
}
