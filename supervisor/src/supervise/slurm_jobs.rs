//! The Slurm executor inside the event loop: submitting an attempt as a batch
//! job, reading job states on the poll interval, adopting a resumed run's jobs
//! that are still queued or running, and cancelling jobs nobody watches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::time::{Duration, Instant};

use shared::journal::{Event, Killed, KilledBy};
use shared::plan::{AgentPlan, AgentRef};

use super::Supervisor;
use crate::error::Result;
use crate::slot::{count_lines, KillReason, Placement, SlurmJob};
use crate::slurm::{self, JobEnd, JobState, QueuedJob, Submission, TimeLimit};

/// A job no Slurm command knows any more, this many polls in a row, is lost.
const MISSES_BEFORE_LOST: u32 = 3;

/// What the supervisor keeps about Slurm for a run.
pub struct SlurmRun {
    prefix: String,
    poll_interval: Duration,
    pub(super) next_poll: Instant,
    /// Jobs of this run found live at the start of a resume, by agent.
    adoptable: HashMap<AgentRef, QueuedJob>,
    /// Polls in a row that did not find each job.
    misses: HashMap<u32, u32>,
}

impl SlurmRun {
    pub fn new(root: &std::path::Path, poll_interval: Duration) -> Self {
        Self {
            prefix: slurm::job_prefix(root),
            poll_interval,
            next_poll: Instant::now(),
            adoptable: HashMap::new(),
            misses: HashMap::new(),
        }
    }
}

impl<'a> Supervisor<'a> {
    /// At the start: this run's jobs that Slurm still runs or queues. A resume
    /// adopts them (one writer per agent file, always); a fresh run cancels
    /// them (left by an earlier run in a directory of the same path).
    pub(super) fn find_slurm_jobs(&mut self) -> Result<()> {
        let Some(slurm_run) = self.slurm.as_mut() else {
            return Ok(());
        };
        let jobs = match slurm::our_jobs(&slurm_run.prefix) {
            Ok(jobs) => jobs,
            Err(error) => {
                self.console
                    .line(&format!("slurm: cannot list this run's jobs: {error}"));
                return Ok(());
            }
        };
        let prefix = slurm_run.prefix.clone();
        for job in jobs.into_iter().filter(|j| j.state.is_live()) {
            let Some(at) = slurm::agent_of(&job.name, &prefix) else {
                continue;
            };
            if self.inputs.resumed {
                slurm_run.adoptable.insert(at, job);
            } else if let Err(error) = slurm::cancel(job.id, None) {
                tracing::warn!("cannot cancel stale job {}: {error}", job.id);
            }
        }
        Ok(())
    }

    /// Takes over a job a dead supervisor submitted for `agent`, if there is
    /// one still live; true when the agent is now watched through it.
    pub(super) fn adopt_job(&mut self, agent: &'a AgentPlan) -> Result<bool> {
        let Some(job) = self
            .slurm
            .as_mut()
            .and_then(|s| s.adoptable.remove(&agent.at))
        else {
            return Ok(false);
        };
        let attempt = {
            let launches = self.inputs.launches.entry(agent.name.clone()).or_insert(0);
            // Submitted, but the supervisor died before it could say so.
            if *launches == 0 {
                *launches = 1;
            }
            *launches
        };
        let saved = count_lines(&self.inputs.run.agent_output(agent.at));
        let launched_at =
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let adopted = Event::Adopted {
            job_id: job.id,
            state: job.state.as_str().to_owned(),
            attempt,
            elapsed_seconds: job.elapsed.as_secs(),
        };
        self.event(Some(&agent.name), adopted)?;
        self.console.line(&format!(
            "{}: adopted Slurm job {} ({})",
            agent.name,
            job.id,
            job.state.as_str()
        ));
        let key = slot_key(job.id);
        let placement = Placement::Slurm(SlurmJob {
            id: job.id,
            state: job.state,
            end: None,
        });
        self.insert_slot(agent, attempt, key, placement, saved, launched_at);
        // The job's clock did not stop while nobody watched it.
        let timeout = self.fixed_timeout();
        if let (Some(slot), Some(limit)) = (self.slots.get_mut(&key), timeout) {
            let left = limit.saturating_sub(job.elapsed);
            slot.deadline = Some(Instant::now() + left);
        }
        Ok(true)
    }

    /// Submits one attempt of `agent` as a batch job.
    pub(super) fn submit_job(
        &mut self,
        agent: &AgentPlan,
        attempt: u32,
    ) -> std::result::Result<(i32, Placement), String> {
        let settings = self.settings();
        let run = self.inputs.run;
        let mut env: BTreeMap<String, OsString> = settings
            .agent
            .env
            .iter()
            .map(|(k, v)| (k.clone(), OsString::from(v)))
            .collect();
        let contract = crate::launch::contract_env(run, agent, attempt);
        env.extend(contract.map(|(k, v)| (k.to_owned(), v)));
        if let Some(rate) = &self.rate {
            env.extend(rate.agent_env());
        }
        let name = slurm::job_name(run.root(), agent.at);
        let script = run.agent_batch_script(agent.at);
        let log = run.agent_log(agent.at);
        let submission = Submission {
            settings: &settings.executor,
            name: &name,
            argv: self.inputs.agent_argv,
            env: &env,
            job_dir: &self.inputs.job.dir,
            script: &script,
            log: &log,
            memory_limit: settings.agent.memory_limit.map(|m| m.bytes()),
            time_limit: TimeLimit::for_agent(settings.agent.timeout),
        };
        let id = slurm::submit(&submission).map_err(|e| e.to_string())?;
        let placement = Placement::Slurm(SlurmJob {
            id,
            state: JobState::Pending,
            end: None,
        });
        Ok((slot_key(id), placement))
    }

    /// Asks Slurm how this run's jobs are doing, once per poll interval.
    pub(super) fn poll_slurm(&mut self, now: Instant) -> Result<()> {
        let Some(slurm_run) = self.slurm.as_mut() else {
            return Ok(());
        };
        if now < slurm_run.next_poll || self.slots.is_empty() {
            return Ok(());
        }
        slurm_run.next_poll = now + slurm_run.poll_interval;
        let queued: HashMap<u32, QueuedJob> = match slurm::our_jobs(&slurm_run.prefix) {
            Ok(jobs) => jobs.into_iter().map(|j| (j.id, j)).collect(),
            Err(error) => {
                // Slurm's controller can be briefly unreachable: keep waiting.
                tracing::warn!("squeue: {error}");
                return Ok(());
            }
        };
        let keys: Vec<i32> = self.slots.keys().copied().collect();
        for key in keys {
            self.observe_job(key, queued.get(&slot_id(key)), now)?;
        }
        Ok(())
    }

    /// One job's state at this poll: the clocks start when it starts running;
    /// once final, the attempt ends.
    fn observe_job(&mut self, key: i32, queued: Option<&QueuedJob>, now: Instant) -> Result<()> {
        let timeout = self.fixed_timeout();
        let Some(slot) = self.slots.get_mut(&key) else {
            return Ok(());
        };
        let Placement::Slurm(job) = &mut slot.placement else {
            return Ok(());
        };
        let id = job.id;
        let state = queued.map(|q| q.state);
        if let Some(state) = state {
            if job.state == JobState::Pending && state != JobState::Pending {
                // Waiting in the queue is not running: timeout and stall count
                // from the start.
                slot.started = now;
                slot.last_progress = now;
                slot.deadline = timeout.map(|t| now + t);
            }
            job.state = state;
            if !state.is_final() {
                self.slurm_misses(id, false);
                return Ok(());
            }
        }
        let end = match slurm::final_state(id) {
            Some(end) => end,
            None if state.is_none() && self.slurm_misses(id, true) => JobEnd {
                state: JobState::Lost,
                code: -1,
                signal: 0,
            },
            None => return Ok(()),
        };
        self.slurm_misses(id, false);
        self.job_ended(key, end)
    }

    /// Counts (or clears) polls that did not find job `id`; true once it is lost.
    fn slurm_misses(&mut self, id: u32, missed: bool) -> bool {
        let Some(slurm_run) = self.slurm.as_mut() else {
            return false;
        };
        if !missed {
            slurm_run.misses.remove(&id);
            return false;
        }
        let misses = slurm_run.misses.entry(id).or_insert(0);
        *misses += 1;
        *misses >= MISSES_BEFORE_LOST
    }

    /// The job is final: journal how it ended, and end the attempt.
    fn job_ended(&mut self, key: i32, end: JobEnd) -> Result<()> {
        let Some(slot) = self.slots.get_mut(&key) else {
            return Ok(());
        };
        if let Placement::Slurm(job) = &mut slot.placement {
            job.state = end.state;
            job.end = Some(end);
        }
        let name = slot.agent.name.clone();
        let seconds = slot.started.elapsed().as_secs_f64();
        let ours = slot.kill.is_some();
        let by_slurm = match end.state {
            JobState::Timeout => Some(KillReason::Timeout),
            JobState::OutOfMemory => Some(KillReason::Memory),
            _ => None,
        };
        if let (Some(reason), false) = (by_slurm, ours) {
            self.console.agent_failed(
                &name,
                &format!("Slurm ended its job ({})", end.state.as_str()),
                None,
            );
            let killed = Event::Killed(Killed {
                job_id: Some(slot_id(key)),
                by: Some(KilledBy::Slurm),
                ..Killed::because(reason)
            });
            self.event(Some(&name), killed)?;
        }
        // Only a job that ran to its own end has an exit status worth telling.
        let ran_out = matches!(end.state, JobState::Completed | JobState::Failed);
        let (code, signal) = match (ran_out, end.signal) {
            (false, _) => (None, None),
            (true, 0) => (Some(end.code), None),
            (true, signal) => (None, Some(signal)),
        };
        let exited = Event::Exited {
            pid: None,
            job_id: Some(slot_id(key)),
            state: Some(end.state.as_str().to_owned()),
            code,
            signal,
            seconds,
        };
        self.event(Some(&name), exited)?;
        // A job being killed by nightshift ends in on_time, as local trees do.
        if !ours {
            self.finish(key)?;
        }
        Ok(())
    }

    /// Cancels every live job of this run for the agents `names` that no slot
    /// watches (a segment's end, a shutdown).
    pub(super) fn sweep_slurm(
        &mut self,
        names: &HashSet<String>,
        reason: KillReason,
    ) -> Result<()> {
        let Some(slurm_run) = self.slurm.as_ref() else {
            return Ok(());
        };
        let prefix = slurm_run.prefix.clone();
        let Ok(jobs) = slurm::our_jobs(&prefix) else {
            return Ok(());
        };
        let watched: HashSet<u32> = self
            .slots
            .values()
            .filter_map(|s| s.slurm().map(|j| j.id))
            .collect();
        for job in jobs
            .into_iter()
            .filter(|j| j.state.is_live() && !watched.contains(&j.id))
        {
            let Some(at) = slurm::agent_of(&job.name, &prefix) else {
                continue;
            };
            if !names.contains(&at.to_string()) {
                continue;
            }
            if let Err(error) = slurm::cancel(job.id, None) {
                tracing::warn!("cannot cancel job {}: {error}", job.id);
                continue;
            }
            let cancelled = Event::Killed(Killed {
                job_id: Some(job.id),
                ..Killed::because(reason)
            });
            self.event(Some(&at.to_string()), cancelled)?;
        }
        Ok(())
    }
}

/// Slots are keyed by pid locally and by job id under Slurm (one executor per
/// run, so the two never meet). Job ids fit: Slurm's are below 2^26 by default
/// (MaxJobId) and never above 0x7fff_ffff.
fn slot_key(id: u32) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

fn slot_id(key: i32) -> u32 {
    u32::try_from(key).unwrap_or(0)
}
