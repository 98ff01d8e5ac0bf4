//! Value types of the job file that are written as strings: durations ("30s",
//! "20m"), sizes ("2GiB"), relative timeouts ("300%"), deadlines ("07:00"), and
//! bounded numbers. Each one validates itself while it is deserialized, so a bad
//! value is reported by the TOML parser with its line, column and key.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written like "30s", "20m", "1h 30m" or "500ms".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text.trim())
            .map(Self)
            .map_err(|e| {
                format!(
                    "invalid duration {text:?} ({e}); write it like \"30s\", \"20m\" or \"1h 30m\""
                )
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A size in bytes written like "2GiB", "500MiB", "512MB" or "0B" (or a plain
/// number of bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        bytesize::ByteSize::from_str(text.trim())
            .map(|size| Self(size.as_u64()))
            .map_err(|e| {
                format!("invalid size {text:?} ({e}); write it like \"2GiB\" or \"500MiB\"")
            })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

/// agent.timeout: a fixed wall-clock limit, or a percentage of the run's own
/// median time per item (GNU parallel's `--timeout 300%`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AgentTimeout {
    Fixed(HumanDuration),
    PercentOfMedian(f64),
}

impl AgentTimeout {
    /// The limit when it is fixed (a relative one is known only later).
    pub fn fixed(self) -> Option<Duration> {
        match self {
            Self::Fixed(limit) => Some(limit.get()),
            Self::PercentOfMedian(_) => None,
        }
    }
}

impl FromStr for AgentTimeout {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        match trimmed.strip_suffix('%') {
            Some(number) => match number.trim().parse::<f64>() {
                Ok(p) if p.is_finite() && p > 0.0 => Ok(Self::PercentOfMedian(p)),
                _ => Err(format!(
                    "invalid relative timeout {text:?}; write a positive percentage like \"300%\""
                )),
            },
            None => HumanDuration::from_str(trimmed).map(Self::Fixed),
        }
    }
}

impl fmt::Display for AgentTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(d) => d.fmt(f),
            Self::PercentOfMedian(p) => write!(f, "{p}%"),
        }
    }
}

/// schedule.deadline: a local clock time ("07:00") or a duration from the start
/// of the run ("8h").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    ClockTime { hour: u8, minute: u8 },
    After(HumanDuration),
}

impl FromStr for Deadline {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if let Some((h, m)) = trimmed.split_once(':') {
            let hour = h.parse::<u8>().ok().filter(|h| *h < 24);
            let minute = m.parse::<u8>().ok().filter(|v| *v < 60 && m.len() == 2);
            return match (hour, minute) {
                (Some(hour), Some(minute)) => Ok(Self::ClockTime { hour, minute }),
                _ => Err(format!(
                    "invalid clock time {text:?}; write it as HH:MM, like \"07:00\""
                )),
            };
        }
        HumanDuration::from_str(trimmed)
            .map(Self::After)
            .map_err(|_| format!("invalid deadline {text:?}; write a clock time like \"07:00\" or a duration like \"8h\""))
    }
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClockTime { hour, minute } => write!(f, "{hour:02}:{minute:02}"),
            Self::After(d) => d.fmt(f),
        }
    }
}

/// A share between 0 and 1 (fail and crash rates).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
#[serde(transparent)]
pub struct Share(pub f64);

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(de::Error::custom(format!(
                "{value} is not a share; expected a number from 0.0 to 1.0"
            )))
        }
    }
}

/// A count that must be at least one (layout counts, max_parallel, waves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Count(pub usize);

impl Count {
    pub fn get(self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        if value >= 1 {
            usize::try_from(value)
                .map(Self)
                .map_err(|_| de::Error::custom(format!("{value} is too large")))
        } else {
            Err(de::Error::custom(format!(
                "{value} is not allowed; expected a whole number of at least 1"
            )))
        }
    }
}

/// A positive rate (requests or tokens per minute).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct PositiveRate(pub f64);

impl<'de> Deserialize<'de> for PositiveRate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if value.is_finite() && value > 0.0 {
            Ok(Self(value))
        } else {
            Err(de::Error::custom(format!(
                "{value} is not allowed; expected a number above 0"
            )))
        }
    }
}

/// Serde glue shared by the string-written types above: parse with `FromStr`,
/// write with `Display`.
macro_rules! string_serde {
    ($ty:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StrVisitor;
                impl Visitor<'_> for StrVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$ty, E> {
                        text.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(StrVisitor)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

string_serde!(HumanDuration, "a duration string like \"30s\" or \"20m\"");
string_serde!(
    AgentTimeout,
    "a duration like \"20m\" or a percentage like \"300%\""
);
string_serde!(
    Deadline,
    "a clock time like \"07:00\" or a duration like \"8h\""
);

// Sizes also accept a plain number of bytes.
impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"2GiB\" or \"500MiB\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{bytes} is not a size")))
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Exact bytes, so a task file round-trips without rounding.
        serializer.collect_str(&format_args!("{}B", self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_round_trip() {
        let d: HumanDuration = "20m".parse().expect("valid");
        assert_eq!(d.get(), Duration::from_secs(1200));
        assert_eq!(d.to_string().parse::<HumanDuration>(), Ok(d));
        assert!("20 parsecs".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn sizes_parse_binary_units() {
        assert_eq!("2GiB".parse::<ByteSize>(), Ok(ByteSize(2 << 30)));
        assert_eq!("0B".parse::<ByteSize>(), Ok(ByteSize(0)));
        assert!("lots".parse::<ByteSize>().is_err());
    }

    #[test]
    fn timeouts_are_fixed_or_relative() {
        assert_eq!(
            "300%".parse::<AgentTimeout>(),
            Ok(AgentTimeout::PercentOfMedian(300.0))
        );
        assert!(matches!(
            "5m".parse::<AgentTimeout>(),
            Ok(AgentTimeout::Fixed(_))
        ));
        assert!("-5%".parse::<AgentTimeout>().is_err());
    }

    #[test]
    fn deadlines_are_clock_times_or_durations() {
        assert_eq!(
            "07:00".parse::<Deadline>(),
            Ok(Deadline::ClockTime { hour: 7, minute: 0 })
        );
        assert!("25:00".parse::<Deadline>().is_err());
        assert!(matches!("8h".parse::<Deadline>(), Ok(Deadline::After(_))));
    }
}
