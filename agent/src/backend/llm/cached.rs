//! The LLM backends' side of the answer cache (`shared::answer_cache`):
//! the first attempt at an item looks its request up and, when the answer
//! is there, makes the record of it exactly as of a fresh answer — same
//! reading, same json and schema checks, agent.validate after — marked
//! `"cached": true` with `cost` 0 and the `saved` USD it would have cost.
//! A retry (the cached answer was refused) asks the server, and its answer
//! replaces the cached one. A cache that fails mid-run is only a warning:
//! the request is made, the record is saved all the same.

use serde_json::{Map, Value};
use shared::answer_cache::{AnswerCache, CacheKey};
use shared::money::round_usd;

use super::endpoint::{Endpoint, Provider};
use super::error::LlmError;
use super::reply::Shape;
use super::{anthropic, openai, LlmBackend};
use crate::backend::Call;

/// The key of a request body sent to `endpoint`.
pub fn key(endpoint: &Endpoint, body: &Value) -> CacheKey {
    let kind = match endpoint.provider {
        Provider::OpenAi => "openai",
        Provider::Anthropic => "anthropic",
    };
    CacheKey::of(kind, &endpoint.base_url, body)
}

impl LlmBackend {
    pub fn with_cache(mut self, cache: AnswerCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The record of the cached answer to this call, if there is one and
    /// this is the item's first attempt with `choice`.
    pub(super) fn answer_from_cache(
        &self,
        call: Call<'_>,
        choice: usize,
    ) -> Option<Result<Map<String, Value>, LlmError>> {
        self.cache.as_ref()?;
        if call.item_attempt > 1 {
            return None;
        }
        let endpoint = self.endpoints.get(choice)?;
        // A prompt that cannot be rendered fails in the request path.
        let prompt = self.render(call).ok()?;
        let answer = self.cached_answer(endpoint, &self.body(endpoint, &prompt))?;
        let price = endpoint.price;
        Some(self.cached_record(endpoint, &answer, call.id_field, price.as_ref()))
    }

    /// The cached answer to `body` sent to `endpoint`, if there is one (a
    /// cache that cannot be read is a warning, and the server is asked).
    pub(super) fn cached_answer(&self, endpoint: &Endpoint, body: &Value) -> Option<Value> {
        let cache = self.cache.as_ref()?;
        let key = key(endpoint, body);
        let text = match cache.get(&key) {
            Ok(found) => found?,
            Err(error) => {
                eprintln!("warning: {error}; asking the server instead");
                return None;
            }
        };
        let Ok(answer) = serde_json::from_str::<Value>(&text) else {
            eprintln!(
                "warning: answer cache {}: the answer under {} is not JSON; asking the server instead",
                cache.path().display(),
                key.hex()
            );
            return None;
        };
        Some(answer)
    }

    /// The record of a cached answer, as of a fresh one, with `cost` 0 and
    /// `saved`: what the answer would have cost at `price`.
    pub(super) fn cached_record(
        &self,
        endpoint: &Endpoint,
        answer: &Value,
        id_field: &str,
        price: Option<&shared::money::Price>,
    ) -> Result<Map<String, Value>, LlmError> {
        let reply = match endpoint.provider {
            Provider::OpenAi => openai::parse(answer)?,
            Provider::Anthropic => anthropic::parse(answer)?,
        };
        let usage = reply.usage;
        let shape = Shape {
            json: self.json,
            schema: self.validator.as_ref(),
        };
        let mut record = reply.into_record(&shape, id_field, &endpoint.base_url)?;
        record.insert("cached".into(), Value::Bool(true));
        if let Some(price) = price {
            record.insert("cost".into(), Value::from(0.0));
            record.insert("saved".into(), Value::from(round_usd(price.cost(&usage))));
        }
        Ok(record)
    }

    /// Keeps a fresh answer; a cache that cannot take it is only a warning.
    pub(super) fn store(&self, key: &CacheKey, model: &str, answer: &Value) {
        if let Some(cache) = &self.cache {
            if let Err(error) = cache.put(key, model, &answer.to_string()) {
                eprintln!("warning: {error}; the answer is saved in the run but not cached");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::job::AgentSettings;

    use super::*;

    /// An openai backend of `llm` settings whose key variables all hold `secret`.
    fn backend(llm: Value, secret: &str) -> LlmBackend {
        let settings: AgentSettings =
            serde_json::from_value(json!({"backend": "openai", "llm": llm})).expect("settings");
        LlmBackend::new(&settings, &|_| Some(secret.to_owned())).expect("a backend")
    }

    fn llm() -> Value {
        json!({"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "KEY_A",
               "max_tokens": 10, "temperature": 0.5, "system": "be brief"})
    }

    fn key_of(backend: &LlmBackend, prompt: &str) -> CacheKey {
        let endpoint = &backend.endpoints[0];
        key(endpoint, &backend.body(endpoint, prompt))
    }

    #[test]
    fn the_key_is_what_is_asked_not_who_asks() {
        let base = key_of(&backend(llm(), "sk-one"), "hello");
        let mut other_var = llm();
        other_var["api_key_env"] = json!(["KEY_B", "KEY_C"]);
        assert_eq!(base, key_of(&backend(other_var, "sk-two"), "hello"));
        assert_ne!(base, key_of(&backend(llm(), "sk-one"), "hello!"));
        for (field, value) in [
            ("model", json!("m2")),
            ("max_tokens", json!(11)),
            ("temperature", json!(0.7)),
            ("system", json!("be long")),
            ("extra", json!({"top_p": 0.9})),
            ("response_format", json!("json")),
            ("base_url", json!("http://127.0.0.1:10/v1")),
        ] {
            let mut changed = llm();
            changed[field] = value;
            assert_ne!(
                base,
                key_of(&backend(changed, "sk-one"), "hello"),
                "{field}"
            );
        }
    }
}
