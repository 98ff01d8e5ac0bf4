//! What the answers' rate-limit headers taught about one key, as rates: each
//! window's limit over the window's length, per dimension (requests, tokens,
//! input tokens, output tokens — Anthropic limits the last two apart).
//!
//! A window's length is not in the headers. It is taken as the usual minute,
//! or longer once a reset further away than that was announced (a limit per
//! day). `reset_seconds` is not used to shorten it: on a rolling window (OpenAI)
//! one used request comes back in limit / 60 s, on a fixed one (LiteLLM,
//! Anthropic) right after its start the reset is nearly the whole window, and
//! the two read alike — guessing the wrong one would pace 100× too fast.
//! Pure logic.

use shared::broker::{LearnedLimits, Window};

/// The length of a window nobody said otherwise about: per-minute limits are
/// what OpenAI, Anthropic and the proxies in front of them announce.
pub const USUAL_WINDOW_SECONDS: f64 = 60.0;

/// The longest window believed: a reset further away than a day is a bad header.
const LONGEST_WINDOW_SECONDS: f64 = 24.0 * 3600.0;

/// The four dimensions a key may be limited in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Requests,
    Tokens,
    InputTokens,
    OutputTokens,
}

impl Dimension {
    pub const ALL: [Self; 4] = [
        Self::Requests,
        Self::Tokens,
        Self::InputTokens,
        Self::OutputTokens,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// This dimension's window in `limits`, when it holds a usable one.
    pub fn window(self, limits: &LearnedLimits) -> Option<Window> {
        let window = match self {
            Self::Requests => limits.requests,
            Self::Tokens => limits.tokens,
            Self::InputTokens => limits.input_tokens,
            Self::OutputTokens => limits.output_tokens,
        }?;
        // A limit of 0 cannot be paced to; a garbled reset counts as none.
        (window.limit > 0).then_some(Window {
            reset_seconds: sane_seconds(window.reset_seconds),
            ..window
        })
    }
}

/// A reset in seconds that a clock can add: not negative, not NaN, at most a day.
pub fn sane_seconds(seconds: f64) -> f64 {
    if seconds.is_finite() && seconds > 0.0 {
        seconds.min(LONGEST_WINDOW_SECONDS)
    } else {
        0.0
    }
}

/// One dimension as learned: its latest limit and the longest reset seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learned {
    pub limit: u64,
    longest_reset: f64,
}

impl Learned {
    /// Folds in a window's announcement (the latest limit wins: a key's tier
    /// may be raised mid-run).
    pub fn update(previous: Option<Self>, window: &Window) -> Self {
        let longest_reset = previous.map_or(0.0, |p| p.longest_reset);
        Self {
            limit: window.limit,
            longest_reset: longest_reset.max(window.reset_seconds),
        }
    }

    pub fn window_seconds(&self) -> f64 {
        self.longest_reset.max(USUAL_WINDOW_SECONDS)
    }

    /// The server's real limit as a steady rate.
    pub fn per_second(&self) -> f64 {
        self.limit as f64 / self.window_seconds()
    }
}

/// The share of a key's tokens that are output, from how much of each window
/// the server says is used (Anthropic counts max_tokens against the output
/// window when a request starts): a permit names only its total, and this
/// splits it. `None` until the server has counted any use.
pub fn output_share(input: &Window, output: &Window) -> Option<f64> {
    let used_input = input.limit.saturating_sub(input.remaining) as f64;
    let used_output = output.limit.saturating_sub(output.remaining) as f64;
    let used = used_input + used_output;
    (used > 0.0).then(|| used_output / used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: u64, remaining: u64, reset_seconds: f64) -> Window {
        Window {
            limit,
            remaining,
            reset_seconds,
        }
    }

    #[test]
    fn a_limit_per_minute_is_a_steady_rate() {
        let learned = Learned::update(None, &window(120, 119, 0.5));
        assert_eq!(learned.per_second(), 2.0);
        // A fixed window's reset is nearly the window: still a minute.
        let learned = Learned::update(Some(learned), &window(120, 119, 59.0));
        assert_eq!(learned.per_second(), 2.0);
    }

    #[test]
    fn a_reset_beyond_a_minute_means_a_longer_window() {
        let learned = Learned::update(None, &window(14_400, 14_000, 7200.0));
        assert_eq!(learned.window_seconds(), 7200.0);
        assert_eq!(learned.per_second(), 2.0);
        let later = Learned::update(Some(learned), &window(14_400, 13_000, 3.0));
        assert_eq!(later.window_seconds(), 7200.0, "the longest reset is kept");
    }

    #[test]
    fn bad_windows_are_not_used() {
        let limits = LearnedLimits {
            requests: Some(window(0, 0, 1.0)),
            tokens: Some(window(1000, 10, f64::NAN)),
            input_tokens: Some(window(1000, 10, 1e12)),
            ..LearnedLimits::default()
        };
        assert_eq!(Dimension::Requests.window(&limits), None);
        let tokens = Dimension::Tokens.window(&limits).expect("usable");
        assert_eq!(tokens.reset_seconds, 0.0);
        let input = Dimension::InputTokens.window(&limits).expect("usable");
        assert_eq!(input.reset_seconds, LONGEST_WINDOW_SECONDS);
        assert_eq!(Dimension::OutputTokens.window(&limits), None);
    }

    #[test]
    fn the_output_share_comes_from_the_windows_use() {
        let input = window(40_000, 37_000, 10.0);
        let output = window(8_000, 7_000, 10.0);
        assert_eq!(output_share(&input, &output), Some(0.25));
        assert_eq!(
            output_share(&window(10, 10, 0.0), &window(10, 10, 0.0)),
            None
        );
    }
}
