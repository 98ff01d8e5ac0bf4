//! `nightshift cache stats|prune`: the answer cache seen from outside a run.
//! Neither command creates a cache: a file that does not exist is an error
//! (exit 2) naming it.

use std::path::PathBuf;

use shared::answer_cache::{AnswerCache, CacheStats};
use shared::job::{ByteSize, Job};

use crate::cli::{CacheAction, CacheWhich};
use crate::error::{Result, SupervisorError};

/// The cache file when neither --path nor --job names one: DESIGN's default.
const DEFAULT_CACHE: &str = "~/.cache/nightshift/answers.sqlite";

pub fn cache(action: &CacheAction) -> Result<i32> {
    match action {
        CacheAction::Stats { which, json } => {
            let stats = open(which)?.stats()?;
            if *json {
                let text = serde_json::to_string_pretty(&stats)
                    .map_err(|e| SupervisorError::Unsupported(e.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", describe(&stats));
            }
        }
        CacheAction::Prune {
            which,
            older_than,
            all,
        } => {
            let cache = open(which)?;
            let older_than = if *all {
                None
            } else {
                older_than.map(|d| d.get())
            };
            let removed = cache.prune(older_than)?;
            let size = cache.stats()?.bytes;
            println!(
                "{}: removed {removed} answer{}; {} on disk",
                cache.path().display(),
                if removed == 1 { "" } else { "s" },
                ByteSize(size)
            );
        }
    }
    Ok(0)
}

/// The cache `which` names, which must exist.
fn open(which: &CacheWhich) -> Result<AnswerCache> {
    let file = match (&which.path, &which.job) {
        (Some(path), _) => path.clone(),
        (None, Some(job_path)) => {
            let job = Job::load(job_path)?;
            crate::run::answer_cache::cache_file(&job).ok_or_else(|| {
                SupervisorError::Unsupported(format!(
                    "{}: the job has no [cache] section",
                    job_path.display()
                ))
            })?
        }
        (None, None) => {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            shared::job::CacheSettings {
                path: DEFAULT_CACHE.into(),
            }
            .file(std::path::Path::new("."), home.as_deref())
        }
    };
    if !file.is_file() {
        return Err(SupervisorError::Unsupported(format!(
            "answer cache {}: no such file (a run of a job with [cache] creates it)",
            file.display()
        )));
    }
    Ok(AnswerCache::open(&file)?)
}

fn describe(stats: &CacheStats) -> String {
    let mut text = format!(
        "{}: {} answer{}, {} on disk, {} hit{}\n",
        stats.path.display(),
        stats.entries,
        if stats.entries == 1 { "" } else { "s" },
        ByteSize(stats.bytes),
        stats.hits,
        if stats.hits == 1 { "" } else { "s" },
    );
    for model in &stats.models {
        text.push_str(&format!(
            "  {}: {} answers, {} hits\n",
            model.model, model.entries, model.hits
        ));
    }
    text
}
