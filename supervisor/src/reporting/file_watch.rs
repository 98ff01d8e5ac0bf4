//! Noticing agent files as they grow: a notify (inotify) watch on the run
//! directory whose callback never blocks — it notes the changed path in a set
//! and wakes the event loop with one message per batch. Where notify cannot
//! work (no inotify, too many watches, a network filesystem whose writes from
//! other machines it would not see), the event loop polls on its tick instead.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::executor::local::reaper::Msg;

pub struct FileWatch {
    _watcher: RecommendedWatcher,
    changed: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Agent files and their failures files (shown as items fail).
fn is_agent_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("agent_") && n.ends_with(".jsonl"))
}

impl FileWatch {
    /// Watches `root`; returns why not when notify cannot.
    pub fn start(root: &Path, tx: Sender<Msg>) -> Result<Self, String> {
        let changed: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let sink = Arc::clone(&changed);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                // Only writes matter; our own reads of agent files raise access
                // events, which must not wake us (they would wake us forever).
                if !(event.kind.is_modify() || event.kind.is_create()) {
                    return;
                }
                let mut set = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let was_empty = set.is_empty();
                set.extend(event.paths.into_iter().filter(|p| is_agent_file(p)));
                if was_empty && !set.is_empty() {
                    // One wake-up per batch; the loop drains the whole set.
                    let _ = tx.send(Msg::FilesChanged);
                }
            })
            .map_err(|e| e.to_string())?;
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
        Ok(Self {
            _watcher: watcher,
            changed,
        })
    }

    /// The agent files changed since the last call.
    pub fn take_changed(&self) -> Vec<PathBuf> {
        let mut set = self
            .changed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        set.drain().collect()
    }
}
