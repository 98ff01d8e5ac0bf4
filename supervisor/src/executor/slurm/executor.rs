//! The Slurm executor: each attempt is submitted as a batch job; job states
//! are read on the poll interval; a resumed run adopts its jobs that are still
//! queued or running; kills are scancel; jobs nobody watches are cancelled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::time::{Duration, Instant};

use shared::job::JobSettings;
use shared::plan::{AgentPlan, AgentRef};
use shared::rundir::RunDir;

use super::{JobEnd, JobState, QueuedJob, Submission, TimeLimit};
use crate::executor::local::reaper::ExitHow;
use crate::executor::{Adopted, AttemptKey, Change, Ended, Executor, Started, Swept, Usage};
use crate::outcome::KillReason;

/// A job no Slurm command knows any more, this many polls in a row, is lost.
const MISSES_BEFORE_LOST: u32 = 3;

/// After a scancel, how soon the job's state is asked again.
const KILL_POLL: Duration = Duration::from_millis(200);

/// One watched job.
struct Job {
    /// The state at the last look.
    state: JobState,
    /// Set once the job is final: Slurm has ended all its processes.
    end: Option<JobEnd>,
}

pub struct SlurmExecutor<'a> {
    run: &'a RunDir,
    settings: &'a JobSettings,
    argv: &'a [OsString],
    job_dir: &'a std::path::Path,
    /// How agents reach the rate broker (TCP, from other nodes).
    broker_env: Vec<(String, OsString)>,
    prefix: String,
    next_poll: Instant,
    jobs: HashMap<u32, Job>,
    /// Jobs of this run found live at the start of a resume, by agent.
    adoptable: HashMap<AgentRef, QueuedJob>,
    /// Polls in a row that did not find each job.
    misses: HashMap<u32, u32>,
}

impl<'a> SlurmExecutor<'a> {
    pub fn new(
        run: &'a RunDir,
        settings: &'a JobSettings,
        argv: &'a [OsString],
        job_dir: &'a std::path::Path,
        broker_env: Vec<(String, OsString)>,
    ) -> Self {
        Self {
            run,
            settings,
            argv,
            job_dir,
            broker_env,
            prefix: super::job_prefix(run.root()),
            next_poll: Instant::now(),
            jobs: HashMap::new(),
            adoptable: HashMap::new(),
            misses: HashMap::new(),
        }
    }

    /// Counts (or clears) polls that did not find job `id`; true once it is lost.
    fn missed(&mut self, id: u32, missed: bool) -> bool {
        if !missed {
            self.misses.remove(&id);
            return false;
        }
        let misses = self.misses.entry(id).or_insert(0);
        *misses += 1;
        *misses >= MISSES_BEFORE_LOST
    }

    /// One job's state at this poll: running once it leaves the queue; ended
    /// once final (or lost).
    fn observe(&mut self, id: u32, queued: Option<&QueuedJob>, changes: &mut Vec<Change>) {
        let key = AttemptKey::Slurm { job_id: id };
        let state = queued.map(|q| q.state);
        if let (Some(state), Some(job)) = (state, self.jobs.get_mut(&id)) {
            if job.state == JobState::Pending && state != JobState::Pending {
                changes.push(Change::Running(key));
            }
            job.state = state;
            if !state.is_final() {
                self.missed(id, false);
                return;
            }
        }
        let end = match super::final_state(id) {
            Some(end) => end,
            None if state.is_none() && self.missed(id, true) => JobEnd {
                state: JobState::Lost,
                code: -1,
                signal: 0,
            },
            None => return,
        };
        self.missed(id, false);
        if let Some(job) = self.jobs.get_mut(&id) {
            job.state = end.state;
            job.end = Some(end);
        }
        let killed_by = match end.state {
            JobState::Timeout => Some(KillReason::Timeout),
            JobState::OutOfMemory => Some(KillReason::Memory),
            _ => None,
        };
        let status = matches!(end.state, JobState::Completed | JobState::Failed);
        changes.push(Change::Ended(Ended {
            key,
            outcome: end.outcome(),
            killed_by,
            code: (status && end.signal == 0).then_some(end.code),
            signal: (status && end.signal != 0).then_some(end.signal),
            state: Some(end.state.as_str()),
        }));
    }
}

impl Executor for SlurmExecutor<'_> {
    /// This run's jobs that Slurm still runs or queues. A resume adopts them
    /// (one writer per agent file, always); a fresh run cancels them (left by
    /// an earlier run in a directory of the same path).
    fn discover(&mut self, resumed: bool) -> Result<(), String> {
        let jobs = super::our_jobs(&self.prefix)
            .map_err(|error| format!("slurm: cannot list this run's jobs: {error}"))?;
        for job in jobs.into_iter().filter(|j| j.state.is_live()) {
            let Some(at) = super::agent_of(&job.name, &self.prefix) else {
                continue;
            };
            if resumed {
                self.adoptable.insert(at, job);
            } else if let Err(error) = super::cancel(job.id, None) {
                tracing::warn!("cannot cancel stale job {}: {error}", job.id);
            }
        }
        Ok(())
    }

    fn adopt(&mut self, agent: &AgentPlan) -> Option<Adopted> {
        let job = self.adoptable.remove(&agent.at)?;
        self.jobs.insert(
            job.id,
            Job {
                state: job.state,
                end: None,
            },
        );
        Some(Adopted {
            key: AttemptKey::Slurm { job_id: job.id },
            state: job.state.as_str(),
            elapsed: job.elapsed,
        })
    }

    fn start(&mut self, agent: &AgentPlan, attempt: u32) -> Result<Started, String> {
        let settings = self.settings;
        let run = self.run;
        let mut env: BTreeMap<String, OsString> = settings
            .agent
            .env
            .iter()
            .map(|(k, v)| (k.clone(), OsString::from(v)))
            .collect();
        let contract = crate::executor::local::launch::contract_env(run, agent, attempt);
        env.extend(contract.map(|(k, v)| (k.to_owned(), v)));
        env.extend(self.broker_env.iter().cloned());
        let name = super::job_name(run.root(), agent.at);
        let script = run.agent_batch_script(agent.at);
        let log = run.agent_log(agent.at);
        let submission = Submission {
            settings: &settings.executor,
            name: &name,
            argv: self.argv,
            env: &env,
            job_dir: self.job_dir,
            script: &script,
            log: &log,
            memory_limit: settings.agent.memory_limit.map(|m| m.bytes()),
            time_limit: TimeLimit::for_agent(settings.agent.timeout),
        };
        let id = super::submit(&submission).map_err(|e| e.to_string())?;
        self.jobs.insert(
            id,
            Job {
                state: JobState::Pending,
                end: None,
            },
        );
        Ok(Started {
            key: AttemptKey::Slurm { job_id: id },
            start_ticks: None,
        })
    }

    /// TERM to every process of the job; a job still pending is cancelled.
    fn soft_kill(&mut self, key: AttemptKey) -> usize {
        let Some((id, job)) = key.job_id().and_then(|id| Some((id, self.jobs.get(&id)?))) else {
            return 0;
        };
        let signal = (job.state != JobState::Pending).then_some("TERM");
        if let Err(error) = super::cancel(id, signal) {
            tracing::warn!("scancel of job {id}: {error}");
        }
        // The job's end is looked for soon, not a poll interval later.
        self.next_poll = self.next_poll.min(Instant::now() + KILL_POLL);
        0
    }

    /// KILL to the job's processes, then the job cancelled outright.
    fn hard_kill(&mut self, key: AttemptKey) {
        let Some(id) = key.job_id() else {
            return;
        };
        for signal in [Some("KILL"), None] {
            if let Err(error) = super::cancel(id, signal) {
                tracing::debug!("scancel of job {id}: {error}");
            }
        }
    }

    fn is_gone(&self, key: AttemptKey) -> bool {
        key.job_id()
            .and_then(|id| self.jobs.get(&id))
            .is_none_or(|job| job.end.is_some())
    }

    fn is_queued(&self, key: AttemptKey) -> bool {
        key.job_id()
            .and_then(|id| self.jobs.get(&id))
            .is_some_and(|job| job.state == JobState::Pending)
    }

    fn reaped(&mut self, _pid: i32, _how: ExitHow) -> Option<Ended> {
        None
    }

    /// Asks Slurm how this run's jobs are doing, once per poll interval.
    fn poll(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        if now < self.next_poll || self.jobs.is_empty() {
            return changes;
        }
        self.next_poll = now + self.settings.executor.poll_interval.get();
        let queued: HashMap<u32, QueuedJob> = match super::our_jobs(&self.prefix) {
            Ok(jobs) => jobs.into_iter().map(|j| (j.id, j)).collect(),
            Err(error) => {
                // Slurm's controller can be briefly unreachable: keep waiting.
                tracing::warn!("squeue: {error}");
                return changes;
            }
        };
        let watched: Vec<u32> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.end.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in watched {
            self.observe(id, queued.get(&id), &mut changes);
        }
        changes
    }

    fn next_poll(&self) -> Option<Instant> {
        (!self.jobs.is_empty()).then_some(self.next_poll)
    }

    fn sample(&mut self, _deep: bool) -> Usage {
        // The trees are on other nodes, in Slurm's cgroups.
        Usage::default()
    }

    fn oom_struck(&self, _key: AttemptKey) -> bool {
        false
    }

    fn writes_elsewhere(&self) -> bool {
        true
    }

    fn release(&mut self, key: AttemptKey) {
        if let Some(id) = key.job_id() {
            self.jobs.remove(&id);
            self.misses.remove(&id);
        }
    }

    /// Slurm's cgroups end each job's tree; what is left to end are jobs of
    /// `agents` that nobody watches.
    fn sweep(&mut self, agents: &HashSet<String>) -> Vec<Swept> {
        let Ok(jobs) = super::our_jobs(&self.prefix) else {
            return Vec::new();
        };
        let mut swept = Vec::new();
        for job in jobs
            .into_iter()
            .filter(|j| j.state.is_live() && !self.jobs.contains_key(&j.id))
        {
            let Some(at) = super::agent_of(&job.name, &self.prefix) else {
                continue;
            };
            let agent = at.to_string();
            if !agents.contains(&agent) {
                continue;
            }
            if let Err(error) = super::cancel(job.id, None) {
                tracing::warn!("cannot cancel job {}: {error}", job.id);
                continue;
            }
            swept.push(Swept {
                agent,
                processes: None,
                job_id: Some(job.id),
            });
        }
        swept
    }

    fn close(&mut self) {}
}
