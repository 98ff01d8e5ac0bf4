//! One endpoint of `[agent.llm]` (the main one or a fallback): provider,
//! address, model, parameters, its HTTP client, and its keys — read from
//! the environment once, a pool the broker chooses from per request (the
//! first one without a broker), a rejected one dropped for every worker at
//! once. Key values live only here, in memory; everything that is
//! printed or sent to the broker names the variable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use shared::broker::key_id;
use shared::job::{Backend as BackendKind, FallbackSettings, LlmSettings};
use shared::money::Price;

use super::http::SendError;
use super::{anthropic, openai, LlmError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
}

/// One API key: the variable that held it, and the broker's name for it.
pub struct Key {
    /// None: a server without keys (no auth header is sent).
    pub var: Option<String>,
    secret: Option<String>,
    /// `shared::broker::key_id`, or the base URL when there is no key.
    pub id: String,
}

pub struct Endpoint {
    pub provider: Provider,
    /// Without a trailing slash: it is also the record's `endpoint`.
    pub base_url: String,
    pub url: String,
    /// `url` parsed once (None: it does not parse, and each request says so).
    pub parsed_url: Option<reqwest::Url>,
    pub model: String,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub extra: Map<String, Value>,
    pub timeout: Duration,
    /// USD per million tokens: the fallback's own, else `[agent.price]`.
    pub price: Option<Price>,
    pub client: reqwest::Client,
    keys: Vec<Key>,
    /// Per key: the server rejected it (401/403).
    rejected: Vec<AtomicBool>,
}

impl Endpoint {
    /// The main endpoint (`fallback` None) or a fallback, its keys read
    /// through `lookup`. Err: the message for an unusable setting.
    pub fn new(
        kind: BackendKind,
        llm: &LlmSettings,
        fallback: Option<&FallbackSettings>,
        main_price: Option<Price>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let provider = match fallback.and_then(|f| f.backend).unwrap_or(kind) {
            BackendKind::Anthropic => Provider::Anthropic,
            BackendKind::Openai => Provider::OpenAi,
            other => return Err(format!("backend {other:?} is not an LLM backend")),
        };
        let base_url = fallback
            .and_then(|f| f.base_url.as_deref())
            .or(llm.base_url.as_deref())
            .ok_or("agent.llm.base_url is not set")?
            .trim_end_matches('/')
            .to_owned();
        let model = fallback
            .and_then(|f| f.model.clone())
            .or_else(|| llm.model.clone())
            .ok_or("agent.llm.model is not set")?;
        let vars = match fallback {
            Some(f) => f.api_key_env.as_ref(),
            None => llm.api_key_env.as_ref(),
        };
        let keys = match vars {
            None => vec![Key {
                var: None,
                secret: None,
                id: base_url.clone(),
            }],
            Some(vars) => vars
                .names()
                .iter()
                .map(|var| match lookup(var).filter(|v| !v.is_empty()) {
                    // The value itself is never quoted: it is a key.
                    Some(secret) if HeaderValue::from_str(&secret).is_err() => Err(format!(
                        "the value of ${var} cannot be sent in an HTTP header (a line break or other control character?)"
                    )),
                    Some(secret) => Ok(Key {
                        var: Some(var.clone()),
                        secret: Some(secret),
                        id: key_id(&base_url, var),
                    }),
                    None => Err(format!(
                        "${var} (agent.llm.api_key_env for {base_url}) is not set in the agent's environment"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let timeout = fallback
            .and_then(|f| f.request_timeout)
            .unwrap_or(llm.request_timeout)
            .get();
        let client = super::http::client(timeout)
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        let path = match provider {
            Provider::OpenAi => openai::PATH,
            Provider::Anthropic => anthropic::PATH,
        };
        let url = format!("{base_url}{path}");
        Ok(Self {
            provider,
            parsed_url: reqwest::Url::parse(&url).ok(),
            url,
            base_url,
            model,
            max_tokens: fallback
                .and_then(|f| f.max_tokens)
                .or(llm.max_tokens)
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            temperature: fallback.and_then(|f| f.temperature).or(llm.temperature),
            extra: fallback
                .and_then(|f| f.extra.clone())
                .unwrap_or_else(|| llm.extra.clone()),
            timeout,
            price: fallback.and_then(|f| f.price).or(main_price),
            client,
            rejected: keys.iter().map(|_| AtomicBool::new(false)).collect(),
            keys,
        })
    }

    /// The first key not rejected and its place in the list; None when all
    /// were rejected.
    pub fn key(&self) -> Option<(usize, &Key)> {
        self.key_for(None)
    }

    /// The key named `id` (as the broker chose it) when it is still usable,
    /// else the first usable one.
    pub fn key_for(&self, id: Option<&str>) -> Option<(usize, &Key)> {
        let mut usable = self
            .keys
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.is_rejected(*index));
        let first = usable.clone().next();
        match id {
            Some(id) => usable.find(|(_, key)| key.id == id).or(first),
            None => first,
        }
    }

    /// The broker's names of the keys still usable: the pool it chooses from.
    pub fn usable_ids(&self) -> Vec<String> {
        self.keys
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.is_rejected(*index))
            .map(|(_, key)| key.id.clone())
            .collect()
    }

    fn is_rejected(&self, index: usize) -> bool {
        self.rejected
            .get(index)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// Drops key `index` for every worker (the others stay).
    pub fn reject(&self, index: usize) {
        if let Some(flag) = self.rejected.get(index) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// The rejected keys' variables, for messages.
    pub fn rejected_vars(&self) -> String {
        let names: Vec<String> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(index, _)| self.is_rejected(*index))
            .map(|(_, key)| match &key.var {
                Some(var) => format!("${var}"),
                None => "no key".to_owned(),
            })
            .collect();
        names.join(", ")
    }

    /// The headers that carry the key, marked sensitive so that no debug
    /// output of the client shows them.
    pub fn auth_headers(&self, key: &Key) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::new();
        let secret_header = |text: String| {
            HeaderValue::from_str(&text).ok().map(|mut value| {
                value.set_sensitive(true);
                value
            })
        };
        match self.provider {
            Provider::OpenAi => {
                if let Some(value) = key
                    .secret
                    .as_ref()
                    .and_then(|s| secret_header(format!("Bearer {s}")))
                {
                    headers.push((reqwest::header::AUTHORIZATION, value));
                }
            }
            Provider::Anthropic => {
                if let Some(value) = key.secret.clone().and_then(secret_header) {
                    headers.push((HeaderName::from_static("x-api-key"), value));
                }
                headers.push((
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(anthropic::VERSION),
                ));
            }
        }
        headers
    }

    /// The error of a request that got no answer from this endpoint.
    pub fn no_answer(&self, error: SendError) -> LlmError {
        match error {
            SendError::Timeout => LlmError::Timeout {
                endpoint: self.base_url.clone(),
                after: self.timeout,
            },
            SendError::Connection(reason) => LlmError::Connection {
                endpoint: self.base_url.clone(),
                reason,
            },
        }
    }

    pub fn secret<'k>(&self, key: &'k Key) -> Option<&'k str> {
        key.secret.as_deref()
    }

    /// "openai http://host/v1 (model)": for messages and the switch.
    pub fn label(&self) -> String {
        let provider = match self.provider {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        };
        format!("{provider} {} ({})", self.base_url, self.model)
    }
}
