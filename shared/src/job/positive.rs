//! Durations that must be above zero: the intervals the supervisor's loop
//! waits on (zero would make it spin) and the agents' timeouts (zero would end
//! every agent at once). They keep their plain types; the check runs while the
//! field is deserialized (`#[serde(deserialize_with = ...)]`), so a refused
//! value is reported by the TOML parser with its line, column and key.

use serde::de::{self, Deserialize, Deserializer};

use super::values::{AgentTimeout, HumanDuration};

/// A duration above zero.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<HumanDuration, D::Error> {
    above_zero(HumanDuration::deserialize(deserializer)?)
}

/// An optional duration that, when given, is above zero.
pub fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<HumanDuration>, D::Error> {
    Option::<HumanDuration>::deserialize(deserializer)?
        .map(above_zero)
        .transpose()
}

/// An optional agent timeout that, when fixed, is above zero (a relative one
/// already refuses 0%).
pub fn optional_timeout<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<AgentTimeout>, D::Error> {
    match Option::<AgentTimeout>::deserialize(deserializer)? {
        Some(AgentTimeout::Fixed(limit)) => above_zero(limit).map(|l| Some(AgentTimeout::Fixed(l))),
        other => Ok(other),
    }
}

fn above_zero<E: de::Error>(value: HumanDuration) -> Result<HumanDuration, E> {
    if value.get().is_zero() {
        Err(E::custom(format!(
            "\"{value}\" is not allowed: a zero duration here would make the supervisor spin or end everything at once; give one above zero like \"500ms\", or leave the key out for its default"
        )))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        #[serde(default, deserialize_with = "optional_duration")]
        every: Option<HumanDuration>,
        #[serde(default, deserialize_with = "optional_timeout")]
        timeout: Option<AgentTimeout>,
    }

    fn parse(text: &str) -> Result<Sample, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn zero_is_refused_and_the_rest_passes() {
        assert!(parse("every = \"0s\"").is_err());
        assert!(parse("timeout = \"0ms\"").is_err());
        assert!(parse("timeout = \"0%\"").is_err());
        let sample = parse("every = \"1ms\"\ntimeout = \"300%\"").expect("valid");
        assert_eq!(sample.every, Some(HumanDuration::from_millis(1)));
        assert_eq!(sample.timeout, Some(AgentTimeout::PercentOfMedian(300.0)));
        assert!(parse("").expect("absent keys are fine").every.is_none());
    }
}
