//! Hard memory limits from the kernel: where the machine lets us create memory
//! cgroups (v2, or the v1 memory controller), every agent gets its own, with
//! agent.memory_limit as its limit. A cgroup also keeps every descendant of
//! the agent, however it daemonises, so its member list completes the process
//! tree. Everything here is best effort: what cannot be set up falls back to
//! sampling, and the supervisor says which mode is in force.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    V1,
    V2,
}

/// This run's cgroup, under the supervisor's own: `nightshift-PID`.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
    flavor: Flavor,
}

/// One agent attempt's cgroup.
#[derive(Debug)]
pub struct AgentCgroup {
    dir: PathBuf,
    flavor: Flavor,
}

/// Where the supervisor's memory cgroup lives, and which flavour it is.
fn own_memory_cgroup() -> Option<(PathBuf, Flavor)> {
    let membership = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    // v1 first: a line "N:memory:/path" (controllers may be combined).
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            let (mount, root) = mount_of(&mountinfo, |fstype, options| {
                fstype == "cgroup" && options.split(',').any(|o| o == "memory")
            })?;
            return Some((join_below(&mount, &root, path), Flavor::V1));
        }
    }
    let path = membership.lines().find_map(|l| l.strip_prefix("0::"))?;
    let (mount, root) = mount_of(&mountinfo, |fstype, _| fstype == "cgroup2")?;
    Some((join_below(&mount, &root, path), Flavor::V2))
}

/// (mount point, mount root) of the first mount that `wanted(fstype, super options)`.
fn mount_of(mountinfo: &str, wanted: impl Fn(&str, &str) -> bool) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (mount_part, fs_part) = line.split_once(" - ")?;
        let mount_fields: Vec<&str> = mount_part.split_whitespace().collect();
        let fs_fields: Vec<&str> = fs_part.split_whitespace().collect();
        let (fstype, options) = (fs_fields.first()?, fs_fields.get(2).copied().unwrap_or(""));
        if !wanted(fstype, options) {
            return None;
        }
        Some((
            PathBuf::from(mount_fields.get(4)?),
            mount_fields.get(3)?.to_string(),
        ))
    })
}

fn join_below(mount: &Path, root: &str, path: &str) -> PathBuf {
    let relative = path
        .strip_prefix(root)
        .unwrap_or(path)
        .trim_start_matches('/');
    mount.join(relative)
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    fs::write(path, text).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl CgroupRoot {
    /// Creates this run's cgroup, or says why memory cgroups are not available.
    pub fn create() -> Result<Self, String> {
        if super::current() != super::Implementation::Linux {
            return Err(format!(
                "the {} platform implementation has no memory cgroups",
                super::current().name()
            ));
        }
        let (parent, flavor) =
            own_memory_cgroup().ok_or("no memory cgroup in /proc/self/cgroup")?;
        let dir = parent.join(format!("nightshift-{}", std::process::id()));
        fs::create_dir(&dir)
            .map_err(|e| format!("cannot create a cgroup under {}: {e}", parent.display()))?;
        let root = Self { dir, flavor };
        if flavor == Flavor::V2 {
            // Children need the memory controller enabled on the way down.
            let enable = |d: &Path| write_file(&d.join("cgroup.subtree_control"), "+memory");
            let has_memory = |d: &Path| {
                fs::read_to_string(d.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
            };
            if !has_memory(&root.dir) {
                let _ = enable(&parent);
            }
            if let Err(e) = enable(&root.dir) {
                root.remove();
                return Err(format!("cannot enable the memory controller: {e}"));
            }
        }
        // A probe: a child with a limit must be possible.
        let probe = root.agent_group("probe", Some(1 << 30)).map_err(|e| {
            root.remove();
            format!("cannot set a memory limit: {e}")
        })?;
        probe.remove();
        Ok(root)
    }

    pub fn describe(&self) -> String {
        let flavor = if self.flavor == Flavor::V1 {
            "cgroup v1 memory controller"
        } else {
            "cgroup v2"
        };
        format!("{flavor}, {}", self.dir.display())
    }

    /// A cgroup for one agent attempt, with its memory limit.
    pub fn agent_group(&self, name: &str, limit: Option<u64>) -> io::Result<AgentCgroup> {
        let dir = self.dir.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let group = AgentCgroup {
            dir,
            flavor: self.flavor,
        };
        if let Some(limit) = limit {
            let file = if self.flavor == Flavor::V1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            if let Err(e) = write_file(&group.dir.join(file), &limit.to_string()) {
                group.remove();
                return Err(e);
            }
        }
        Ok(group)
    }

    /// Removes the run's cgroup and whatever agent cgroups are empty.
    pub fn remove(&self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

impl AgentCgroup {
    /// Moves process `pid` into this cgroup. The executor calls it the
    /// moment posix_spawn returns, which is after the exec (spawn resumes
    /// the parent then) and before the agent's program has done more than
    /// load: what it starts later is born inside.
    pub fn join(&self, pid: i32) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// Every process in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many times the kernel's OOM killer struck inside this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.flavor == Flavor::V1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Removes the cgroup once it is empty (it fails while processes remain).
    pub fn remove(&self) {
        let _ = fs::remove_dir(&self.dir);
    }
}
