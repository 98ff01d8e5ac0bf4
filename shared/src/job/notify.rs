//! `[notify]`: a program run once when a run ends, for any reason, with the
//! run's summary as JSON on its standard input.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::values::HumanDuration;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// The program and its arguments, like ["notify-send", "nightshift"];
    /// run in the job file's folder.
    #[serde(deserialize_with = "program")]
    pub command: Vec<String>,
    /// How long it may take before its process group is killed.
    #[serde(
        default = "default_notify_timeout",
        deserialize_with = "super::positive::duration"
    )]
    pub timeout: HumanDuration,
}

pub fn default_notify_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// A command list whose first word names a program.
fn program<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let command = Vec::<String>::deserialize(deserializer)?;
    match command.first() {
        Some(first) if !first.trim().is_empty() => Ok(command),
        _ => Err(de::Error::custom(
            "the command is empty; write it like [\"notify-send\", \"nightshift\"]",
        )),
    }
}
