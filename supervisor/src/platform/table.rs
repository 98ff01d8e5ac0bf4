//! The process table as one pass sees it. Under Linux every question is read
//! from /proc when asked (nothing is copied: the sampling hot path stays as
//! cheap as reading the files it needs); under the portable implementation the
//! whole list is read once, when the table is taken, because finding a
//! process's children there means looking at every process's parent (or, for
//! the sampling pass, only the processes it already knows: `of_known`).

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
        match current() {
            #[cfg(target_os = "linux")]
            Implementation::Linux => Self { inner: Inner::Live },
            _ => Self::snapshot(portable::snapshot()),
        }
    }

    /// The table as of now, for a pass that only needs the processes it
    /// already knows (`known`, asked only under the portable implementation).
    /// Under Linux it is [`Self::now`]: every question is read when asked, new
    /// children included. Under the portable implementation only the known
    /// processes are read (sysinfo reads three files per process on Linux:
    /// listing the whole machine at every sample is what costs): a process
    /// missing from `known` is not in the table, so children that are not
    /// known yet are not found; a pass that must find them takes [`Self::now`].
    pub fn of_known(known: impl FnOnce() -> Vec<i32>) -> Self {
        match current() {
            #[cfg(target_os = "linux")]
            Implementation::Linux => Self::now(),
            _ => Self::snapshot(portable::some(&known())),
        }
    }

    fn snapshot(mut entries: Vec<portable::Entry>) -> Self {
        entries.sort_unstable_by_key(|e| e.pid);
        entries.dedup_by_key(|e| e.pid);
        let mut children: Vec<(i32, i32)> = entries.iter().map(|e| (e.ppid, e.pid)).collect();
        children.sort_unstable();
        Self {
            inner: Inner::Snapshot { entries, children },
        }
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
