//! What an answer's headers say about the server's rate limits: the windows
//! of `x-ratelimit-*` (OpenAI and most compatible servers: resets written
//! as durations like "6m0s") and `anthropic-ratelimit-*` (resets written as
//! RFC 3339 times), and how long a 429 asks to wait (`retry-after-ms`,
//! `retry-after` in seconds or as an HTTP date).

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use shared::broker::{LearnedLimits, Window};

/// A window whose reset time the server did not give is taken to be a
/// minute long: the usual size of per-minute limits.
const DEFAULT_RESET_SECONDS: f64 = 60.0;

/// The limits one answer announced (empty when it announced none).
pub fn learned_limits(headers: &HeaderMap, now: SystemTime) -> LearnedLimits {
    let openai = |what: &str| {
        window(
            headers,
            &format!("x-ratelimit-limit-{what}"),
            &format!("x-ratelimit-remaining-{what}"),
            &format!("x-ratelimit-reset-{what}"),
            |text| parse_duration(text).map(|d| d.as_secs_f64()),
        )
    };
    let anthropic = |what: &str| {
        window(
            headers,
            &format!("anthropic-ratelimit-{what}-limit"),
            &format!("anthropic-ratelimit-{what}-remaining"),
            &format!("anthropic-ratelimit-{what}-reset"),
            |text| seconds_until_rfc3339(text, now),
        )
    };
    LearnedLimits {
        requests: anthropic("requests").or_else(|| openai("requests")),
        tokens: anthropic("tokens").or_else(|| openai("tokens")),
        input_tokens: anthropic("input-tokens"),
        output_tokens: anthropic("output-tokens"),
    }
}

fn window(
    headers: &HeaderMap,
    limit: &str,
    remaining: &str,
    reset: &str,
    parse_reset: impl Fn(&str) -> Option<f64>,
) -> Option<Window> {
    let number = |name: &str| text(headers, name).and_then(|t| t.parse::<u64>().ok());
    let limit = number(limit)?;
    let remaining = number(remaining).unwrap_or(limit);
    let reset_seconds = text(headers, reset)
        .and_then(parse_reset)
        .unwrap_or(DEFAULT_RESET_SECONDS);
    Some(Window {
        limit,
        remaining,
        reset_seconds,
    })
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// Seconds a rate-limit answer asks to wait: `retry-after-ms` first (the
/// finer one), else `retry-after` as seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<f64> {
    if let Some(ms) = text(headers, "retry-after-ms").and_then(|t| t.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(ms / 1000.0);
        }
    }
    let value = text(headers, "retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then_some(seconds);
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(seconds_between(now, when))
}

/// Go-style durations as OpenAI writes them: "1s", "6m0s", "20ms",
/// "1h2m3.5s", "0.5s".
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

fn seconds_until_rfc3339(text: &str, now: SystemTime) -> Option<f64> {
    let when = humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(text))
        .ok()?;
    Some(seconds_between(now, when))
}

/// Seconds from `now` to `when`; 0 when it has passed.
fn seconds_between(now: SystemTime, when: SystemTime) -> f64 {
    when.duration_since(now)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_str(value).expect("value"),
                )
            })
            .collect()
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).expect("a time")
    }

    #[test]
    fn go_durations() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs_f64());
        assert_eq!(secs("1s"), Some(1.0));
        assert_eq!(secs("6m0s"), Some(360.0));
        assert_eq!(secs("20ms"), Some(0.02));
        assert_eq!(secs("1h2m3.5s"), Some(3723.5));
        assert_eq!(secs("0.5s"), Some(0.5));
        assert_eq!(secs(""), None);
        assert_eq!(secs("5 parsecs"), None);
        assert_eq!(secs("12"), None);
    }

    #[test]
    fn openai_windows() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "29000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let limits = learned_limits(&h, SystemTime::now());
        let requests = limits.requests.expect("requests");
        assert_eq!((requests.limit, requests.remaining), (500, 499));
        assert!((requests.reset_seconds - 0.12).abs() < 1e-9);
        assert_eq!(limits.tokens.expect("tokens").reset_seconds, 360.0);
        assert!(limits.input_tokens.is_none());
    }

    #[test]
    fn anthropic_windows_reset_at_a_time() {
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:30Z"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "39000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-01-01T00:00:01.500Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "8000"),
            ("anthropic-ratelimit-output-tokens-remaining", "8000"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-12-31T23:59:00Z",
            ),
        ]);
        let limits = learned_limits(&h, at("2026-01-01T00:00:00Z"));
        let requests = limits.requests.expect("requests");
        assert_eq!((requests.limit, requests.remaining), (50, 0));
        assert_eq!(requests.reset_seconds, 30.0);
        assert_eq!(limits.input_tokens.expect("input").reset_seconds, 1.5);
        // A reset in the past is now.
        assert_eq!(limits.output_tokens.expect("output").reset_seconds, 0.0);
        assert!(limits.tokens.is_none());
    }

    #[test]
    fn a_limit_without_reset_is_a_minute_and_no_headers_is_nothing() {
        let h = headers(&[("x-ratelimit-limit-requests", "120")]);
        let requests = learned_limits(&h, SystemTime::now())
            .requests
            .expect("requests");
        assert_eq!((requests.remaining, requests.reset_seconds), (120, 60.0));
        assert!(learned_limits(&HeaderMap::new(), SystemTime::now()).is_empty());
    }

    #[test]
    fn retry_after_in_ms_seconds_or_a_date() {
        let now = at("2026-01-01T00:00:00Z");
        let wait = |pairs: &[(&str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(wait(&[("retry-after", "7")]), Some(7.0));
        assert_eq!(
            wait(&[("retry-after-ms", "250"), ("retry-after", "7")]),
            Some(0.25)
        );
        assert_eq!(
            wait(&[("retry-after", "Thu, 01 Jan 2026 00:00:20 GMT")]),
            Some(20.0)
        );
        assert_eq!(wait(&[("retry-after", "soon")]), None);
        assert_eq!(wait(&[("retry-after", "-3")]), None);
        assert_eq!(wait(&[]), None);
    }
}
