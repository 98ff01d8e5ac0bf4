//! Why one LLM request did not give a record, and what the item runner does
//! about each kind: wait and retry without counting (rate limits), take the
//! next key or endpoint (a rejected key), retry after a pause (the server or
//! the network failed), retry at once (a reply that fails its checks), or
//! give up on the item (the server refused the request itself).

use std::time::Duration;

use shared::ids::IdKey;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// A 4xx other than 401, 403 and 429: the request itself is wrong.
    #[error("HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("HTTP {status}: {message}")]
    Server { status: u16, message: String },
    #[error("rate limited: HTTP 429{}", retry_after.map(|s| format!(", retry after {s}s")).unwrap_or_default())]
    RateLimited { retry_after: Option<f64> },
    /// 401/403. Names the variable, never the key (None: no key was sent).
    #[error("{} was rejected by {endpoint} (HTTP {status})", var.as_ref().map_or("a request without an API key".to_owned(), |var| format!("${var}")))]
    KeyRejected {
        var: Option<String>,
        endpoint: String,
        status: u16,
    },
    #[error("no usable API key left for {endpoint} (rejected: {vars})")]
    NoUsableKey { endpoint: String, vars: String },
    #[error("no answer from {endpoint} within request_timeout ({after:?})")]
    Timeout { endpoint: String, after: Duration },
    #[error("the connection to {endpoint} failed: {reason}")]
    Connection { endpoint: String, reason: String },
    #[error("cannot read the answer: {0}")]
    BadBody(String),
    #[error("item {id} has no field \"{field}\", which the prompt uses")]
    MissingField { id: IdKey, field: String },
    #[error("the reply is not a JSON object: {0}")]
    NotJson(String),
    #[error("the reply does not match the schema at {path}: {message}")]
    Schema { path: String, message: String },
}

/// What to do after an error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retry {
    /// Fail the item now: asking again gets the same answer.
    Never,
    /// A counted attempt, retried after a jittered, growing pause.
    AfterPause,
    /// A counted attempt, retried at once (another sample may pass).
    AtOnce,
    /// Not counted: wait for the rate limit (seconds, when the server said).
    RateLimited(Option<f64>),
    /// Not counted: the key in use is gone; take the next key or endpoint.
    KeyRejected,
}

impl LlmError {
    pub fn retry(&self) -> Retry {
        match self {
            Self::Refused { .. } | Self::MissingField { .. } => Retry::Never,
            Self::Server { .. }
            | Self::Timeout { .. }
            | Self::Connection { .. }
            | Self::BadBody(_) => Retry::AfterPause,
            Self::NotJson(_) | Self::Schema { .. } => Retry::AtOnce,
            Self::RateLimited { retry_after } => Retry::RateLimited(*retry_after),
            Self::KeyRejected { .. } | Self::NoUsableKey { .. } => Retry::KeyRejected,
        }
    }
}

/// The pause before counted attempt `attempt + 1` after a server or network
/// failure: 0.5 s doubling per attempt, up to 30 s, each one ±50% at random
/// so that agents that failed together do not come back together.
pub fn pause_before_retry(attempt: u32, jitter: f64) -> Duration {
    let base = (0.5 * 2f64.powi(attempt.saturating_sub(1).min(16) as i32)).min(30.0);
    let factor = 0.5 + jitter.clamp(0.0, 1.0);
    Duration::from_secs_f64(base * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_retry() {
        let refused = LlmError::Refused {
            status: 400,
            message: "bad model".into(),
        };
        assert_eq!(refused.retry(), Retry::Never);
        assert_eq!(refused.to_string(), "HTTP 400: bad model");
        let server = LlmError::Server {
            status: 502,
            message: "gateway".into(),
        };
        assert_eq!(server.retry(), Retry::AfterPause);
        assert_eq!(LlmError::BadBody("x".into()).retry(), Retry::AfterPause);
        assert_eq!(LlmError::NotJson("x".into()).retry(), Retry::AtOnce);
        let limited = LlmError::RateLimited {
            retry_after: Some(2.0),
        };
        assert_eq!(limited.retry(), Retry::RateLimited(Some(2.0)));
        let rejected = LlmError::KeyRejected {
            var: Some("OPENAI_API_KEY".into()),
            endpoint: "http://x/v1".into(),
            status: 401,
        };
        assert_eq!(rejected.retry(), Retry::KeyRejected);
        assert_eq!(
            rejected.to_string(),
            "$OPENAI_API_KEY was rejected by http://x/v1 (HTTP 401)"
        );
        let keyless = LlmError::KeyRejected {
            var: None,
            endpoint: "http://x/v1".into(),
            status: 403,
        };
        assert_eq!(
            keyless.to_string(),
            "a request without an API key was rejected by http://x/v1 (HTTP 403)"
        );
    }

    #[test]
    fn pauses_grow_with_jitter_and_a_cap() {
        assert_eq!(pause_before_retry(1, 0.5), Duration::from_millis(500));
        assert_eq!(pause_before_retry(2, 0.5), Duration::from_secs(1));
        assert_eq!(pause_before_retry(1, 0.0), Duration::from_millis(250));
        assert_eq!(pause_before_retry(1, 1.0), Duration::from_millis(750));
        assert_eq!(pause_before_retry(40, 0.5), Duration::from_secs(30));
        assert_eq!(pause_before_retry(40, 1.0), Duration::from_secs(45));
    }
}
