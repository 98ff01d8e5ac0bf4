//! What the fault server answers: the OpenAI and Anthropic response shapes
//! (with a `usage` block whose figures the tests know), their error bodies,
//! and the rate-limit headers each API sends.
//!
//! Shapes as the APIs document them: OpenAI's chat completion
//! (`choices[].message.content`, `finish_reason`, `usage.prompt_tokens` with
//! `prompt_tokens_details.cached_tokens`) and `x-ratelimit-*` headers whose
//! resets are durations ("1s", "250ms"); Anthropic's message (`content[]` text
//! blocks, `stop_reason`, `usage.input_tokens` besides
//! `cache_read_input_tokens` and `cache_creation_input_tokens`), its
//! `{"type": "error", ...}` errors and `anthropic-ratelimit-*` headers whose
//! resets are RFC 3339 times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::cache::CacheUse;
use crate::http::Answer;

/// The usage every successful answer reports, so a test can check how the
/// backend normalised it. OpenAI counts cached tokens inside prompt_tokens;
/// Anthropic counts them apart.
pub mod usage {
    pub const OPENAI_PROMPT: u64 = 20;
    pub const OPENAI_CACHED: u64 = 8;
    pub const COMPLETION: u64 = 5;
    pub const ANTHROPIC_INPUT: u64 = 12;
    pub const ANTHROPIC_CACHE_READ: u64 = 8;
    pub const ANTHROPIC_CACHE_WRITE: u64 = 3;
}

/// Which API a request spoke, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    pub fn of_path(path: &str) -> Option<Self> {
        let path = path.split('?').next().unwrap_or_default();
        if path.ends_with("/chat/completions") {
            Some(Self::OpenAi)
        } else if path.ends_with("/messages") {
            Some(Self::Anthropic)
        } else {
            None
        }
    }
}

/// A successful reply. `text` is the assistant's message; `cut`: it stopped
/// at max_tokens (finish_reason "length" / stop_reason "max_tokens").
/// A successful answer; `cache`: the prompt cache's use (Anthropic, `cache`
/// mode) instead of the fixed cache figures.
pub fn success(
    api: Api,
    serial: u64,
    model: &str,
    text: &str,
    cut: bool,
    cache: Option<CacheUse>,
) -> Answer {
    let (cache_write, cache_read) = cache.map_or(
        (usage::ANTHROPIC_CACHE_WRITE, usage::ANTHROPIC_CACHE_READ),
        |cache| (cache.write, cache.read),
    );
    let body = match api {
        Api::OpenAi => json!({
            "id": format!("chatcmpl-fault{serial}"),
            "object": "chat.completion",
            "created": unix_seconds(SystemTime::now()),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": if cut { "length" } else { "stop" },
            }],
            "usage": {
                "prompt_tokens": usage::OPENAI_PROMPT,
                "completion_tokens": usage::COMPLETION,
                "total_tokens": usage::OPENAI_PROMPT + usage::COMPLETION,
                "prompt_tokens_details": {"cached_tokens": usage::OPENAI_CACHED},
            },
        }),
        Api::Anthropic => json!({
            "id": format!("msg_fault{serial}"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": if cut { "max_tokens" } else { "end_turn" },
            "stop_sequence": null,
            "usage": {
                "input_tokens": usage::ANTHROPIC_INPUT,
                "output_tokens": usage::COMPLETION,
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read,
            },
        }),
    };
    let answer = Answer::json(200, &body);
    match api {
        Api::OpenAi => answer,
        Api::Anthropic => answer.with_header("request-id", format!("req_fault{serial}")),
    }
}

/// An error in the API's own error shape. `kind` is OpenAI's `code` /
/// Anthropic's `error.type`.
pub fn error(api: Api, status: u16, kind: &str, message: &str) -> Answer {
    let body = match api {
        Api::OpenAi => json!({
            "error": {"message": message, "type": openai_type(status), "param": null, "code": kind},
        }),
        Api::Anthropic => json!({
            "type": "error",
            "error": {"type": kind, "message": message},
        }),
    };
    Answer::json(status, &body)
}

fn openai_type(status: u16) -> &'static str {
    match status {
        429 => "requests",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

/// The state of one key's request window, for the rate-limit headers.
pub struct Window {
    pub limit: u32,
    pub remaining: u32,
    /// Until the window is full again.
    pub reset: Duration,
}

/// Token limits the headers announce: large, so requests are what binds.
const TOKENS_LIMIT: u64 = 1_000_000;
const TOKENS_PER_REQUEST: u64 = usage::OPENAI_PROMPT + usage::COMPLETION;

/// Adds the API's rate-limit headers for `window` to `answer`.
pub fn with_limits(answer: Answer, api: Api, window: &Window) -> Answer {
    let used = u64::from(window.limit - window.remaining);
    let tokens_remaining = TOKENS_LIMIT.saturating_sub(used * TOKENS_PER_REQUEST);
    match api {
        Api::OpenAi => answer
            .with_header("x-ratelimit-limit-requests", window.limit)
            .with_header("x-ratelimit-remaining-requests", window.remaining)
            .with_header("x-ratelimit-reset-requests", go_duration(window.reset))
            .with_header("x-ratelimit-limit-tokens", TOKENS_LIMIT)
            .with_header("x-ratelimit-remaining-tokens", tokens_remaining)
            .with_header("x-ratelimit-reset-tokens", go_duration(window.reset)),
        Api::Anthropic => {
            let reset = rfc3339(SystemTime::now() + window.reset);
            let mut answer = answer
                .with_header("anthropic-ratelimit-requests-limit", window.limit)
                .with_header("anthropic-ratelimit-requests-remaining", window.remaining)
                .with_header("anthropic-ratelimit-requests-reset", &reset);
            // Anthropic limits input and output tokens apart, and sums them.
            for kind in ["tokens", "input-tokens", "output-tokens"] {
                answer = answer
                    .with_header(&format!("anthropic-ratelimit-{kind}-limit"), TOKENS_LIMIT)
                    .with_header(
                        &format!("anthropic-ratelimit-{kind}-remaining"),
                        tokens_remaining,
                    )
                    .with_header(&format!("anthropic-ratelimit-{kind}-reset"), &reset);
            }
            answer
        }
    }
}

/// A duration the way OpenAI writes its resets: "1s", "6m0s", "250ms".
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let secs = format!("{:.3}", d.as_secs_f64());
        format!("{}s", secs.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `t` as an RFC 3339 UTC time ("2026-01-31T12:00:05Z").
pub fn rfc3339(t: SystemTime) -> String {
    let secs = unix_seconds(t);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01: count in 400-year
/// eras from 0000-03-01, so the leap day falls at the end of each year.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The model a request asked for, echoed as real servers do.
pub fn requested_model(body: &Value) -> &str {
    body["model"].as_str().unwrap_or("fault-model")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations_read_as_the_apis_write_them() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661);
        assert_eq!(rfc3339(leap_day), "2000-02-29T01:01:01Z");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(61)), "1m1s");
    }
}
