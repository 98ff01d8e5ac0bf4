//! The API key variables a job names: every one must be set before a run
//! starts or goes on, so that a missing key stops `run` and `resume` at once
//! (exit 2) instead of failing the first request of every agent.

use std::ffi::OsString;

use super::load::{Job, JobError};

impl Job {
    /// The API key variables the job names that are unset or empty, looked
    /// up through `lookup` (the environment, in practice).
    pub fn missing_api_keys(&self, lookup: impl Fn(&str) -> Option<OsString>) -> Vec<String> {
        let Some(llm) = &self.settings.agent.llm else {
            return Vec::new();
        };
        llm.key_vars()
            .into_iter()
            .filter(|name| lookup(name).is_none_or(|value| value.is_empty()))
            .map(str::to_owned)
            .collect()
    }

    /// Refuses a job whose key variables are not all set, so a run stops
    /// before anything starts rather than at its first request.
    pub fn check_api_keys(&self) -> Result<(), JobError> {
        let vars = self.missing_api_keys(|name| std::env::var_os(name));
        if vars.is_empty() {
            Ok(())
        } else {
            Err(JobError::MissingApiKeys {
                path: self.path.clone(),
                vars,
            })
        }
    }
}
