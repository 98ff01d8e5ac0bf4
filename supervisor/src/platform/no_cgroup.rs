//! Memory cgroups where there are none (every OS but Linux): the same API as
//! the Linux module, with nothing behind it. `CgroupRoot::create` says why,
//! and the types cannot be made, so the code that would use one is
//! unreachable and the run enforces memory by sampling alone.

use std::io;

/// A run's cgroup: never made here.
#[derive(Debug)]
pub enum CgroupRoot {}

/// An agent attempt's cgroup: never made here.
#[derive(Debug)]
pub enum AgentCgroup {}

impl CgroupRoot {
    pub fn create() -> Result<Self, String> {
        Err("memory cgroups exist only on Linux".to_owned())
    }

    pub fn describe(&self) -> String {
        match *self {}
    }

    pub fn agent_group(&self, _name: &str, _limit: Option<u64>) -> io::Result<AgentCgroup> {
        match *self {}
    }

    pub fn remove(&self) {
        match *self {}
    }
}

impl AgentCgroup {
    pub fn join(&self, _pid: i32) -> io::Result<()> {
        match *self {}
    }

    pub fn pids(&self) -> Vec<i32> {
        match *self {}
    }

    pub fn oom_kills(&self) -> u64 {
        match *self {}
    }

    pub fn remove(&self) {
        match *self {}
    }
}
