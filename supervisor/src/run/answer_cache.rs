//! The answer cache as a run sees it: which file `[cache]` names (none with
//! `--no-cache`), opened once before the run starts so that a cache that
//! cannot work — unwritable, not a database — stops `run` / `resume` with
//! exit code 2 naming the file, instead of every agent failing; and the
//! variable that tells the agents.

use std::path::PathBuf;

use shared::answer_cache::{AnswerCache, CACHE_VAR};
use shared::job::Job;

use crate::error::Result;

/// `--no-cache` drops the job's `[cache]` for this session; otherwise the
/// cache file is opened (created if need be) and checked.
pub fn prepare(job: &mut Job, no_cache: bool) -> Result<()> {
    if no_cache {
        job.settings.cache = None;
    }
    if let Some(file) = cache_file(job) {
        AnswerCache::open(&file)?;
    }
    Ok(())
}

/// The file `[cache] path` names: `~` is $HOME, relative paths are the job
/// file's folder's.
pub fn cache_file(job: &Job) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    job.settings
        .cache
        .as_ref()
        .map(|cache| cache.file(&job.dir, home.as_deref()))
}

/// NIGHTSHIFT_CACHE for the agents: the file, or empty for none (which also
/// hides a value the supervisor's own environment may hold).
pub fn agent_var(job: &Job) -> (String, String) {
    let value = cache_file(job).map_or_else(String::new, |file| {
        // agent.env holds text; a path that is not UTF-8 reaches the agent
        // mangled and fails to open there, naming it.
        file.to_string_lossy().into_owned()
    });
    (CACHE_VAR.to_owned(), value)
}
