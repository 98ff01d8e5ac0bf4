//! Memory of a run: per-agent limits, the run's RAM ceiling, and the machine's
//! free-memory floor. The supervisor samples every agent's tree (see `tree`)
//! each limits.sample_interval and tells this module the totals; this module
//! decides whether a new agent may start (admission) and whether one must go.
//!
//! Admission: an agent is launched only when the current total plus the
//! expected size of one agent stays under limits.ram_ceiling, and the machine's
//! available memory minus that size stays above limits.min_free. The expected
//! size is agent.memory_estimate, else the largest peak seen in this run; while
//! nothing has been seen, agents start one at a time, ADMIT_WAIT_SAMPLES samples
//! apart. Agents launched since the last sample count with their expected size.
//! Once an agent had to be killed to make room, its size is the least any agent
//! is expected to need (an estimate that proved too small is not trusted again).
//! With no agent running, one is always admitted (a run never deadlocks).

use std::time::{Duration, Instant};

use serde::Serialize;

use shared::job::{JobSettings, MemoryEnforcement};

use crate::error::{Result, SupervisorError};
use crate::outcome::KillReason;
use crate::platform::cgroup::CgroupRoot;

/// Samples to wait after a launch while no agent size is known.
const ADMIT_WAIT_SAMPLES: u32 = 3;
/// Memory samples kept for the report; past this, every other one is dropped
/// and the spacing doubles.
const SAMPLES_KEPT: usize = 2000;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MemorySample {
    /// Seconds since the supervisor started.
    pub t: f64,
    /// All agents' trees together, bytes.
    pub total: u64,
    /// The machine's MemAvailable, bytes.
    pub available: Option<u64>,
}

/// Why an agent must make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    Ceiling,
    MinFree,
}

impl Pressure {
    pub fn reason(self) -> KillReason {
        match self {
            Self::Ceiling => KillReason::Ceiling,
            Self::MinFree => KillReason::MinFree,
        }
    }
}

pub struct MemoryWatch {
    per_agent: Option<u64>,
    estimate: Option<u64>,
    ceiling: Option<u64>,
    min_free: Option<u64>,
    sample_interval: Duration,
    started: Instant,
    /// The same moment on the wall clock, for the report.
    started_at: std::time::SystemTime,
    largest_peak: u64,
    /// The size of an agent that had to be killed to make room: from then on
    /// no agent is expected to be smaller, whatever memory_estimate said.
    proven_size: u64,
    reserved: u64,
    last_launch: Option<Instant>,
    total: u64,
    available: Option<u64>,
    pub run_peak_total: u64,
    samples: Vec<MemorySample>,
    stride: usize,
    since_kept: usize,
}

impl MemoryWatch {
    pub fn new(settings: &JobSettings) -> Self {
        Self {
            per_agent: settings.agent.memory_limit.map(|s| s.bytes()),
            estimate: settings.agent.memory_estimate.map(|s| s.bytes()),
            ceiling: settings.limits.ram_ceiling.map(|s| s.bytes()),
            min_free: settings.limits.min_free.map(|s| s.bytes()),
            sample_interval: settings.limits.sample_interval.get(),
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            largest_peak: 0,
            proven_size: 0,
            reserved: 0,
            last_launch: None,
            total: 0,
            available: None,
            run_peak_total: 0,
            samples: Vec::new(),
            stride: 1,
            since_kept: 0,
        }
    }

    /// Under Slurm: nothing to sample or admit here. Slurm places each job by
    /// its --mem (agent.memory_limit) and enforces it with its cgroups; the
    /// run's ceiling and free-memory floor are per-node matters for Slurm.
    pub fn for_slurm(settings: &JobSettings) -> Self {
        let mut watch = Self::new(settings);
        watch.per_agent = None;
        watch.estimate = None;
        watch.ceiling = None;
        watch.min_free = None;
        watch
    }

    pub fn per_agent_limit(&self) -> Option<u64> {
        self.per_agent
    }

    /// The expected size of one more agent, once known.
    pub fn expected(&self) -> Option<u64> {
        let known = self
            .estimate
            .or((self.largest_peak > 0).then_some(self.largest_peak));
        match known {
            Some(size) => Some(size.max(self.proven_size)),
            None => (self.proven_size > 0).then_some(self.proven_size),
        }
    }

    /// An agent of this size had to be killed to make room.
    pub fn note_eviction(&mut self, size: u64) {
        self.proven_size = self.proven_size.max(size);
    }

    fn guarded(&self) -> bool {
        self.ceiling.is_some() || self.min_free.is_some()
    }

    /// May another agent start now?
    pub fn admits(&self, now: Instant, running: usize) -> bool {
        if running == 0 || !self.guarded() {
            return true;
        }
        let Some(expected) = self.expected() else {
            return self.last_launch.is_none_or(|at| {
                now.duration_since(at) >= self.sample_interval * ADMIT_WAIT_SAMPLES
            });
        };
        let projected = self.total + self.reserved + expected;
        let under_ceiling = self.ceiling.is_none_or(|ceiling| projected <= ceiling);
        let above_floor = match (self.min_free, self.available) {
            (Some(floor), Some(available)) => {
                available.saturating_sub(self.reserved + expected) >= floor
            }
            _ => true,
        };
        under_ceiling && above_floor
    }

    pub fn note_launch(&mut self, now: Instant) {
        self.reserved += self.expected().unwrap_or(0);
        self.last_launch = Some(now);
    }

    pub fn note_peak(&mut self, peak: u64) {
        self.largest_peak = self.largest_peak.max(peak);
    }

    /// Takes a sample: the trees' total and the machine's available memory.
    pub fn sample(&mut self, now: Instant, total: u64, available: Option<u64>) {
        self.total = total;
        self.available = available;
        self.reserved = 0;
        self.run_peak_total = self.run_peak_total.max(total);
        self.since_kept += 1;
        if self.since_kept >= self.stride {
            self.since_kept = 0;
            self.samples.push(MemorySample {
                t: now.duration_since(self.started).as_secs_f64(),
                total,
                available,
            });
            if self.samples.len() >= SAMPLES_KEPT {
                let mut index = 0;
                self.samples.retain(|_| {
                    index += 1;
                    index % 2 == 1
                });
                self.stride *= 2;
            }
        }
    }

    /// Whether the last sample crossed the ceiling or the floor.
    pub fn pressure(&self) -> Option<Pressure> {
        if self.ceiling.is_some_and(|ceiling| self.total > ceiling) {
            return Some(Pressure::Ceiling);
        }
        match (self.min_free, self.available) {
            (Some(floor), Some(available)) if available < floor => Some(Pressure::MinFree),
            _ => None,
        }
    }

    pub fn samples(&self) -> &[MemorySample] {
        &self.samples
    }

    /// When sampling started, on the wall clock.
    pub fn started_at(&self) -> std::time::SystemTime {
        self.started_at
    }

    pub fn ceiling(&self) -> Option<u64> {
        self.ceiling
    }
}

/// Which memory enforcement is in force, and how to say it.
pub fn choose_mode(settings: &JobSettings) -> Result<(Option<CgroupRoot>, String)> {
    let every = humantime::format_duration(settings.limits.sample_interval.get());
    let sampling = |why: &str| format!("sampling every {every} ({why})");
    let Some(limit) = settings.agent.memory_limit else {
        return Ok((None, sampling("no agent.memory_limit")));
    };
    match settings.limits.memory_enforcement {
        MemoryEnforcement::Sampling => Ok((None, sampling("limits.memory_enforcement = \"sampling\""))),
        MemoryEnforcement::Auto => match CgroupRoot::create() {
            Ok(root) => {
                let text = format!("hard limit of {limit} per agent by {}, and sampling every {every}", root.describe());
                Ok((Some(root), text))
            }
            Err(why) => Ok((None, sampling(&format!("no memory cgroups: {why}")))),
        },
        MemoryEnforcement::Cgroup => match CgroupRoot::create() {
            Ok(root) => {
                let text = format!("hard limit of {limit} per agent by {}, and sampling every {every}", root.describe());
                Ok((Some(root), text))
            }
            Err(why) => Err(SupervisorError::Unsupported(format!(
                "limits.memory_enforcement = \"cgroup\", but memory cgroups are not available here: {why}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::job::{ByteSize, HumanDuration};

    fn watch(ceiling: u64, estimate: Option<u64>) -> MemoryWatch {
        let mut settings: JobSettings =
            toml::from_str("[input]\npath = \"x\"\n").expect("settings");
        settings.limits.ram_ceiling = Some(ByteSize(ceiling));
        settings.agent.memory_estimate = estimate.map(ByteSize);
        settings.limits.sample_interval = HumanDuration::from_millis(100);
        MemoryWatch::new(&settings)
    }

    #[test]
    fn without_a_known_size_agents_start_one_at_a_time() {
        let mut w = watch(1000, None);
        let t0 = Instant::now();
        assert!(w.admits(t0, 0));
        w.note_launch(t0);
        assert!(!w.admits(t0 + Duration::from_millis(100), 1));
        assert!(w.admits(t0 + Duration::from_millis(300), 1));
    }

    #[test]
    fn the_largest_peak_sizes_admission() {
        let mut w = watch(1000, None);
        let now = Instant::now();
        w.note_peak(400);
        w.sample(now, 400, None);
        assert!(w.admits(now, 1), "400 + 400 fits under 1000");
        w.note_launch(now);
        assert!(
            !w.admits(now, 2),
            "the launch is reserved until the next sample"
        );
        w.sample(now, 1100, None);
        assert_eq!(w.pressure(), Some(Pressure::Ceiling));
    }

    #[test]
    fn the_free_memory_floor_holds_launches_and_reports_pressure() {
        let mut settings: JobSettings =
            toml::from_str("[input]\npath = \"x\"\n").expect("settings");
        settings.limits.min_free = Some(ByteSize(1000));
        settings.agent.memory_estimate = Some(ByteSize(300));
        let mut w = MemoryWatch::new(&settings);
        let now = Instant::now();
        w.sample(now, 0, Some(1500));
        assert!(
            w.admits(now, 1),
            "1500 available - 300 keeps the 1000 floor"
        );
        w.sample(now, 0, Some(1200));
        assert!(!w.admits(now, 1), "1200 - 300 would go under the floor");
        assert_eq!(w.pressure(), None);
        w.sample(now, 0, Some(900));
        assert_eq!(w.pressure(), Some(Pressure::MinFree));
        assert_eq!(Pressure::MinFree.reason(), KillReason::MinFree);
    }

    #[test]
    fn an_eviction_raises_the_expected_size_over_a_small_estimate() {
        let mut w = watch(1000, Some(10));
        w.note_eviction(400);
        assert_eq!(w.expected(), Some(400));
    }

    #[test]
    fn an_estimate_is_used_before_any_peak() {
        let mut w = watch(1000, Some(600));
        let now = Instant::now();
        assert!(w.admits(now, 1), "0 + 600 fits under 1000");
        w.note_launch(now);
        assert!(!w.admits(now, 2), "600 reserved + 600 does not");
    }
}
