//! Failed items on the console as they fail: the new lines of each agent's
//! failures file, one console line per item (`item-037 failed: timeout after
//! 5s (segment_01/orch_02/agent_03)`), at most a few per window when many fail
//! at once, the rest counted in one line that points at `nightshift failures`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shared::failures::read_failures;

use crate::console::Console;

/// Item lines shown per window; more are counted, not shown.
const SHOWN_PER_WINDOW: usize = 5;
const WINDOW: Duration = Duration::from_secs(10);

/// The agent a file beside its records belongs to:
/// RUN/segment_01/orch_02/agent_03.failures.jsonl → segment_01/orch_02/agent_03.
pub fn agent_of(run: &Path, path: &Path, suffix: &str) -> String {
    path.strip_prefix(run)
        .unwrap_or(path)
        .to_string_lossy()
        .trim_end_matches(suffix)
        .to_owned()
}

pub struct FailureFeed {
    run: PathBuf,
    /// Lines of each failures file already shown (or counted).
    seen: HashMap<PathBuf, usize>,
    window_start: Option<Instant>,
    shown: usize,
    held_back: usize,
}

impl FailureFeed {
    pub fn new(run: &Path) -> Self {
        Self {
            run: run.to_path_buf(),
            seen: HashMap::new(),
            window_start: None,
            shown: 0,
            held_back: 0,
        }
    }

    /// Whether `path` is an agent's failures file.
    pub fn is_failures_file(path: &Path) -> bool {
        path.to_string_lossy().ends_with(".failures.jsonl")
    }

    /// Shows the items newly written to the failures file `path`.
    pub fn update(&mut self, console: &Console, path: &Path, now: Instant) {
        let agent = agent_of(&self.run, path, ".failures.jsonl");
        let failures = read_failures(path);
        let seen = self.seen.entry(path.to_path_buf()).or_insert(0);
        let new = failures.get(*seen..).unwrap_or_default();
        *seen = failures.len();
        for (key, line) in new {
            self.roll(console, now);
            if self.shown < SHOWN_PER_WINDOW {
                self.shown += 1;
                console.failure(&format!(
                    "{} failed: {} ({agent})",
                    key.plain(),
                    line.reason
                ));
            } else {
                self.held_back += 1;
            }
        }
    }

    /// Starts a new window when the last one is over, saying how many items
    /// failed unseen in it.
    pub fn roll(&mut self, console: &Console, now: Instant) {
        if self
            .window_start
            .is_some_and(|start| now.duration_since(start) < WINDOW)
        {
            return;
        }
        self.flush(console);
        self.window_start = Some(now);
        self.shown = 0;
    }

    /// Says how many failures were held back (at the end of a window or run).
    pub fn flush(&mut self, console: &Console) {
        if self.held_back > 0 {
            console.failure(&format!(
                "… and {} more item(s) failed — nightshift failures {}",
                self.held_back,
                self.run.display()
            ));
            self.held_back = 0;
        }
    }
}
