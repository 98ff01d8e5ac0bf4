//! The key of one answer: SHA-256 over what determines it — the backend
//! kind, the endpoint's base URL and the request body exactly as it is sent
//! (model, rendered messages, max_tokens, temperature, response_format and
//! schema, extra). The API key travels in a header, never in the body, so
//! it never enters the key: a rotated or pooled key reuses every answer.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Bumped when what goes into the hash changes, so old entries stop matching
/// instead of matching wrongly.
const KEY_VERSION: &[u8] = b"nightshift-answer-cache-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key of a request to `base_url` (trailing slash ignored) by the
    /// `backend` ("openai" | "anthropic").
    pub fn of(backend: &str, base_url: &str, body: &Value) -> Self {
        let mut hash = Sha256::new();
        for part in [
            KEY_VERSION,
            backend.as_bytes(),
            base_url.trim_end_matches('/').as_bytes(),
        ] {
            // Length-prefixed: ("ab", "c") and ("a", "bc") differ.
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.update(canonical(body).as_bytes());
        Self(hash.finalize().into())
    }

    /// Lower-case hex, for messages and tests.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// JSON with every object's keys sorted, whatever order the body was built
/// in (serde_json keeps insertion order when its `preserve_order` feature is
/// on anywhere in the build).
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let fields: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
               "max_tokens": 10, "temperature": 0.5, "top_p": 0.9})
    }

    fn key(body: &Value) -> CacheKey {
        CacheKey::of("openai", "http://127.0.0.1:4000/v1", body)
    }

    #[test]
    fn the_same_request_has_the_same_key_in_any_key_order() {
        let reordered = json!({"top_p": 0.9, "temperature": 0.5, "max_tokens": 10,
                               "messages": [{"content": "hi", "role": "user"}], "model": "m"});
        assert_eq!(key(&body()), key(&reordered));
        assert_eq!(
            key(&body()),
            CacheKey::of("openai", "http://127.0.0.1:4000/v1/", &body())
        );
        assert_eq!(key(&body()).hex().len(), 64);
    }

    #[test]
    fn everything_that_determines_the_answer_changes_the_key() {
        let base = key(&body());
        let changed = |edit: fn(&mut Value)| {
            let mut b = body();
            edit(&mut b);
            key(&b)
        };
        assert_ne!(base, changed(|b| b["model"] = json!("other")));
        assert_ne!(base, changed(|b| b["max_tokens"] = json!(11)));
        assert_ne!(base, changed(|b| b["temperature"] = json!(0.7)));
        assert_ne!(base, changed(|b| b["top_p"] = json!(1.0)));
        assert_ne!(
            base,
            changed(|b| b["messages"][0]["content"] = json!("hi!"))
        );
        assert_ne!(
            base,
            changed(|b| b["response_format"] = json!({"type": "json_object"}))
        );
        assert_ne!(
            base,
            CacheKey::of("anthropic", "http://127.0.0.1:4000/v1", &body())
        );
        assert_ne!(
            base,
            CacheKey::of("openai", "http://127.0.0.1:4001/v1", &body())
        );
    }
}
