//! The process table as one pass sees it. Under Linux every question is read
//! from /proc when asked (nothing is copied: the sampling hot path stays as
//! cheap as reading the files it needs); under the portable implementation the
//! whole list is read once, when the table is taken, because finding a
//! process's children there means looking at every process's parent.

#[cfg(target_os = "linux")]
use super::Implementation;
use super::{current, portable, ProcStat};

pub struct ProcessTable {
    inner: Inner,
}

enum Inner {
    #[cfg(target_os = "linux")]
    Live,
    Snapshot {
        /// Sorted by pid.
        entries: Vec<portable::Entry>,
        /// (parent, child), sorted.
        children: Vec<(i32, i32)>,
    },
}

impl ProcessTable {
    /// The table as of now.
    pub fn now() -> Self {
        let inner = match current() {
            #[cfg(target_os = "linux")]
            Implementation::Linux => Inner::Live,
            _ => {
                let mut entries = portable::snapshot();
                entries.sort_unstable_by_key(|e| e.pid);
                let mut children: Vec<(i32, i32)> =
                    entries.iter().map(|e| (e.ppid, e.pid)).collect();
                children.sort_unstable();
                Inner::Snapshot { entries, children }
            }
        };
        Self { inner }
    }

    pub fn stat(&self, pid: i32) -> Option<ProcStat> {
        match &self.inner {
            #[cfg(target_os = "linux")]
            Inner::Live => super::linux::stat(pid),
            Inner::Snapshot { entries, .. } => entries
                .binary_search_by_key(&pid, |e| e.pid)
                .ok()
                .map(|at| entries[at].stat()),
        }
    }

    /// Appends the children of `parent` (a stat read from this table) to `into`.
    pub fn push_children(&self, parent: &ProcStat, into: &mut Vec<i32>) {
        match &self.inner {
            #[cfg(target_os = "linux")]
            Inner::Live => {
                // The stat just read says how many threads to look under.
                if parent.threads <= 1 {
                    into.extend(super::linux::thread_children(parent.pid, parent.pid));
                } else {
                    into.extend(super::linux::children(parent.pid));
                }
            }
            Inner::Snapshot { children, .. } => {
                let from = children.partition_point(|(p, _)| *p < parent.pid);
                into.extend(
                    children[from..]
                        .iter()
                        .take_while(|(p, _)| *p == parent.pid)
                        .map(|(_, child)| *child),
                );
            }
        }
    }

    /// The children of this process (the supervisor): agents, and the orphans
    /// it adopted as subreaper.
    pub fn own_children(&self, me: i32) -> Vec<i32> {
        match &self.inner {
            // Orphans are re-parented to the subreaper's main thread (the
            // thread that also starts every agent), so its list is the one to read.
            #[cfg(target_os = "linux")]
            Inner::Live => super::linux::thread_children(me, me),
            Inner::Snapshot { .. } => {
                let mut found = Vec::new();
                if let Some(stat) = self.stat(me) {
                    self.push_children(&stat, &mut found);
                }
                found
            }
        }
    }

    /// Every pid in the table.
    pub fn pids(&self) -> Vec<i32> {
        match &self.inner {
            #[cfg(target_os = "linux")]
            Inner::Live => super::linux::all_pids(),
            Inner::Snapshot { entries, .. } => entries.iter().map(|e| e.pid).collect(),
        }
    }
}
