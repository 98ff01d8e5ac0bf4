//! `[cache]`: where the answer cache of the LLM backends lives (see
//! `crate::answer_cache`). No section, no cache: answers at temperature > 0
//! are samples a user may want fresh.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// The SQLite file; `~/` is the home folder, a relative path is
    /// relative to the job file's folder.
    pub path: PathBuf,
}

impl CacheSettings {
    /// The file itself: `~` expanded, relative paths resolved against
    /// `job_dir`. `home` is $HOME (None: a `~` path stays as written, and
    /// opening it names it).
    pub fn file(&self, job_dir: &Path, home: Option<&Path>) -> PathBuf {
        let tilde = self
            .path
            .strip_prefix("~")
            .ok()
            .zip(home)
            .map(|(rest, home)| home.join(rest));
        match tilde {
            Some(path) => path,
            None => job_dir.join(&self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_is_home_and_relative_is_the_job_folder() {
        let settings = |p: &str| CacheSettings { path: p.into() };
        let home = Some(Path::new("/home/u"));
        let job = Path::new("/jobs/a");
        assert_eq!(
            settings("~/.cache/a.sqlite").file(job, home),
            PathBuf::from("/home/u/.cache/a.sqlite")
        );
        assert_eq!(
            settings("c.sqlite").file(job, home),
            PathBuf::from("/jobs/a/c.sqlite")
        );
        assert_eq!(
            settings("/abs/c.sqlite").file(job, home),
            PathBuf::from("/abs/c.sqlite")
        );
    }
}
