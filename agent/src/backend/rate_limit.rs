//! How an exec command says "the API rate-limited me": exit code 75
//! (EX_TEMPFAIL), or a first stdout line starting with
//! `NIGHTSHIFT_RATE_LIMITED`, optionally followed by ` retry_after=SECONDS`.

use std::fmt;

/// sysexits.h's EX_TEMPFAIL: "temporary failure, try again later".
pub const EXIT_TEMPFAIL: i32 = 75;

pub const MARKER: &str = "NIGHTSHIFT_RATE_LIMITED";

/// One rate-limited answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Seconds the command asked to wait (`retry_after=`), if it said.
    pub retry_after: Option<f64>,
    /// Whether it was said with the marker line (else with exit code 75).
    pub by_marker: bool,
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.by_marker, self.retry_after) {
            (true, Some(seconds)) => write!(f, "{MARKER} retry_after={seconds}"),
            (true, None) => f.write_str(MARKER),
            (false, _) => write!(f, "exit code {EXIT_TEMPFAIL}"),
        }
    }
}

/// Whether a finished command answered "rate limited". The marker wins over
/// the exit code, since only the marker can carry retry_after.
pub fn detect(exit_code: Option<i32>, stdout: &[u8]) -> Option<RateLimit> {
    if let Some(limit) = parse_marker(stdout) {
        return Some(limit);
    }
    (exit_code == Some(EXIT_TEMPFAIL)).then_some(RateLimit {
        retry_after: None,
        by_marker: false,
    })
}

/// Reads the marker from the first line of stdout. A retry_after that is not
/// a finite number of seconds, at least 0, is ignored: the broker's default
/// pause is the safe answer to a value we cannot read.
pub fn parse_marker(stdout: &[u8]) -> Option<RateLimit> {
    let first = stdout.split(|byte| *byte == b'\n').next()?;
    let rest = first.strip_prefix(MARKER.as_bytes())?;
    let rest = String::from_utf8_lossy(rest);
    let retry_after = rest
        .split_whitespace()
        .find_map(|word| word.strip_prefix("retry_after="))
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0);
    Some(RateLimit {
        retry_after,
        by_marker: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(text: &str) -> Option<Option<f64>> {
        parse_marker(text.as_bytes()).map(|limit| limit.retry_after)
    }

    #[test]
    fn marker_with_and_without_retry_after() {
        assert_eq!(marker("NIGHTSHIFT_RATE_LIMITED"), Some(None));
        assert_eq!(marker("NIGHTSHIFT_RATE_LIMITED\n{\"x\":1}"), Some(None));
        assert_eq!(
            marker("NIGHTSHIFT_RATE_LIMITED retry_after=12\n"),
            Some(Some(12.0))
        );
        assert_eq!(
            marker("NIGHTSHIFT_RATE_LIMITED retry_after=2.5\r\n"),
            Some(Some(2.5))
        );
    }

    #[test]
    fn unreadable_retry_after_means_the_default() {
        assert_eq!(
            marker("NIGHTSHIFT_RATE_LIMITED retry_after=soon"),
            Some(None)
        );
        assert_eq!(marker("NIGHTSHIFT_RATE_LIMITED retry_after=-3"), Some(None));
        assert_eq!(
            marker("NIGHTSHIFT_RATE_LIMITED retry_after=inf"),
            Some(None)
        );
    }

    #[test]
    fn only_the_first_line_counts() {
        assert_eq!(marker(""), None);
        assert_eq!(marker("{\"output\": \"x\"}\nNIGHTSHIFT_RATE_LIMITED"), None);
        assert_eq!(marker(" NIGHTSHIFT_RATE_LIMITED"), None);
    }

    #[test]
    fn exit_code_75_is_a_rate_limit_and_the_marker_wins() {
        assert_eq!(
            detect(Some(75), b"busy"),
            Some(RateLimit {
                retry_after: None,
                by_marker: false
            })
        );
        assert_eq!(detect(Some(1), b"busy"), None);
        assert_eq!(detect(Some(0), b"{}"), None);
        let both = detect(Some(75), b"NIGHTSHIFT_RATE_LIMITED retry_after=4").expect("marker");
        assert_eq!(both.retry_after, Some(4.0));
        assert_eq!(both.to_string(), "NIGHTSHIFT_RATE_LIMITED retry_after=4");
    }
}
