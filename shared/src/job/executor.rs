//! `[executor]`: where agents run. `local` runs them as child processes of the
//! supervisor; `slurm` submits each agent attempt as a Slurm batch job.

use serde::{Deserialize, Serialize};

use super::values::HumanDuration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSettings {
    #[serde(default)]
    pub kind: ExecutorKind,
    /// `sbatch --partition` (Slurm only).
    pub partition: Option<String>,
    /// `sbatch --account` (Slurm only).
    pub account: Option<String>,
    /// More `sbatch` arguments, one per element, e.g. ["--qos=low"].
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    /// How often job states are asked of Slurm (squeue).
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "super::positive::duration"
    )]
    pub poll_interval: HumanDuration,
    /// The host name or address nodes use to reach the supervisor's rate
    /// broker over TCP (default: this host's name).
    pub broker_host: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(2))
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            kind: ExecutorKind::Local,
            partition: None,
            account: None,
            sbatch_args: Vec::new(),
            poll_interval: default_poll_interval(),
            broker_host: None,
        }
    }
}
