//! The batch job of one agent attempt: a small shell script in the run
//! directory that sets the agent contract's environment and execs the agent,
//! and the `sbatch` arguments that carry its limits (memory_limit → --mem,
//! timeout → --time) and the job's Slurm settings.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use shared::job::{AgentTimeout, ExecutorSettings};

/// Slurm's time limit for a job: whole minutes, at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimit(pub u64);

impl TimeLimit {
    /// The limit that covers `timeout`, rounded up to a whole minute. Slurm
    /// checks limits about every 30 s, so nightshift's own clock ends the job
    /// first; this one is the backstop for a supervisor that is gone.
    pub fn covering(timeout: Duration) -> Self {
        Self(timeout.as_secs().div_ceil(60).max(1))
    }

    /// The limit for agent.timeout; none for a relative timeout, unknown
    /// when the job is submitted.
    pub fn for_agent(timeout: Option<AgentTimeout>) -> Option<Self> {
        timeout.and_then(AgentTimeout::fixed).map(Self::covering)
    }
}

/// Everything one submission needs.
pub struct Submission<'a> {
    pub settings: &'a ExecutorSettings,
    pub name: &'a str,
    pub argv: &'a [OsString],
    pub env: &'a BTreeMap<String, OsString>,
    pub job_dir: &'a Path,
    pub script: &'a Path,
    pub log: &'a Path,
    pub memory_limit: Option<u64>,
    pub time_limit: Option<TimeLimit>,
}

impl Submission<'_> {
    /// Writes the batch script (mode 0700: it may carry the broker's secret).
    pub fn write_script(&self) -> io::Result<()> {
        let mut text =
            b"#!/bin/sh\n# Written by nightshift: one agent attempt as a Slurm batch job.\n"
                .to_vec();
        for (key, value) in self.env {
            text.extend_from_slice(format!("export {key}=").as_bytes());
            text.extend_from_slice(&shell_quote(value.as_bytes()));
            text.push(b'\n');
        }
        text.extend_from_slice(b"exec");
        for arg in self.argv {
            text.push(b' ');
            text.extend_from_slice(&shell_quote(arg.as_bytes()));
        }
        text.push(b'\n');
        let mut file = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o700)
            .open(self.script)?;
        // `mode` applies to a new file only; a script left by an earlier
        // attempt is made private too.
        file.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        io::Write::write_all(&mut file, &text)
    }

    /// sbatch's arguments, the script last.
    pub fn sbatch_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--parsable".into(),
            format!("--job-name={}", self.name).into(),
            // nightshift retries on the remaining items itself: a job Slurm
            // requeued would be a second writer of the same agent file.
            "--no-requeue".into(),
            "--open-mode=append".into(),
        ];
        let mut with_path = |flag: &str, path: &Path| {
            let mut arg = OsString::from(flag);
            arg.push(path.as_os_str());
            args.push(arg);
        };
        with_path("--output=", self.log);
        with_path("--chdir=", self.job_dir);
        args.extend(resource_args(
            self.settings,
            self.memory_limit,
            self.time_limit,
        ));
        args.push(self.script.as_os_str().to_owned());
        args
    }
}

/// The arguments that say what a job may use and where it goes: its limits
/// and the job file's Slurm settings.
pub fn resource_args(
    settings: &ExecutorSettings,
    memory_limit: Option<u64>,
    time_limit: Option<TimeLimit>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(bytes) = memory_limit {
        args.push(format!("--mem={}M", bytes.div_ceil(1 << 20).max(1)).into());
    }
    if let Some(TimeLimit(minutes)) = time_limit {
        args.push(format!("--time={minutes}").into());
    }
    if let Some(partition) = &settings.partition {
        args.push(format!("--partition={partition}").into());
    }
    if let Some(account) = &settings.account {
        args.push(format!("--account={account}").into());
    }
    args.extend(settings.sbatch_args.iter().map(OsString::from));
    args
}

/// `bytes` in single quotes for sh: a quote inside becomes '\''.
fn shell_quote(bytes: &[u8]) -> Vec<u8> {
    let mut quoted = vec![b'\''];
    for &byte in bytes {
        if byte == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_round_up_to_whole_minutes() {
        assert_eq!(TimeLimit::covering(Duration::from_secs(3)), TimeLimit(1));
        assert_eq!(TimeLimit::covering(Duration::from_secs(60)), TimeLimit(1));
        assert_eq!(TimeLimit::covering(Duration::from_secs(61)), TimeLimit(2));
    }

    #[test]
    fn quotes_survive_the_shell() {
        let quoted = shell_quote(b"it's $HOME");
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(OsString::from(format!(
                "printf %s {}",
                String::from_utf8_lossy(&quoted)
            )))
            .output()
            .expect("sh runs");
        assert_eq!(output.stdout, b"it's $HOME");
    }
}
