//! When to give up on a run early, like GNU parallel's `--halt`:
//! `never` (the default), `soon,fail=N` or `soon,fail=N%` (stop launching, let
//! running agents finish), `now,fail=N` (kill every agent at once). Failures
//! are agents that failed for good (their retries spent); a percentage is of
//! all the run's agents. A halted run is resumable.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltWhen {
    Soon,
    Now,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailLimit {
    Count(usize),
    Percent(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HaltPolicy {
    rule: Option<(HaltWhen, FailLimit)>,
}

impl HaltPolicy {
    /// Whether `failed` of `total` agents trigger the policy, and how.
    pub fn triggered(&self, failed: usize, total: usize) -> Option<HaltWhen> {
        let (when, limit) = self.rule?;
        let reached = match limit {
            FailLimit::Count(n) => failed >= n,
            FailLimit::Percent(p) => total > 0 && failed as f64 * 100.0 >= p * total as f64,
        };
        (failed > 0 && reached).then_some(when)
    }
}

impl FromStr for HaltPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid --halt {text:?}: use never, soon,fail=N, soon,fail=N% or now,fail=N")
        };
        if text == "never" {
            return Ok(Self::default());
        }
        let (when, condition) = text.split_once(',').ok_or_else(bad)?;
        let when = match when {
            "soon" => HaltWhen::Soon,
            "now" => HaltWhen::Now,
            _ => return Err(bad()),
        };
        let value = condition.strip_prefix("fail=").ok_or_else(bad)?;
        let limit = match value.strip_suffix('%') {
            Some(percent) => FailLimit::Percent(
                percent
                    .parse::<f64>()
                    .ok()
                    .filter(|p| *p > 0.0 && *p <= 100.0)
                    .ok_or_else(bad)?,
            ),
            None => FailLimit::Count(
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(bad)?,
            ),
        };
        Ok(Self {
            rule: Some((when, limit)),
        })
    }
}

impl fmt::Display for HaltPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            None => f.write_str("never"),
            Some((when, limit)) => {
                let when = if when == HaltWhen::Soon {
                    "soon"
                } else {
                    "now"
                };
                match limit {
                    FailLimit::Count(n) => write!(f, "{when},fail={n}"),
                    FailLimit::Percent(p) => write!(f, "{when},fail={p}%"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_triggers() {
        let never: HaltPolicy = "never".parse().expect("never");
        assert_eq!(never.triggered(100, 100), None);
        let soon: HaltPolicy = "soon,fail=2".parse().expect("soon");
        assert_eq!(soon.triggered(1, 10), None);
        assert_eq!(soon.triggered(2, 10), Some(HaltWhen::Soon));
        let percent: HaltPolicy = "now,fail=25%".parse().expect("percent");
        assert_eq!(percent.triggered(2, 10), None);
        assert_eq!(percent.triggered(3, 10), Some(HaltWhen::Now));
        assert_eq!(percent.to_string(), "now,fail=25%");
        for bad in [
            "sometimes",
            "soon",
            "soon,fail=0",
            "now,fail=150%",
            "soon,done=3",
        ] {
            assert!(bad.parse::<HaltPolicy>().is_err(), "{bad}");
        }
    }
}
