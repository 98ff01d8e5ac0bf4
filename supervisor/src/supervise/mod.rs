//! The event loop of a run: segments one after another; inside a segment,
//! agents launched while fewer than limits.max_parallel run. Exits, signals and
//! timers all arrive in one loop on one thread, which owns the run's state and
//! never blocks on a single child. Kills (timeout, stall, shutdown) end an
//! agent's whole tree: TERM, agent.kill_grace, KILL. A failed agent is retried
//! on its remaining items after a doubling backoff. Between segments nothing
//! started for the finished segment may live on (see `sweep`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use shared::job::{Deadline, ExecutorKind, Job, JobSettings};
use shared::journal::Event;
use shared::plan::{AgentPlan, AgentRef, Plan, SegmentPlan};
use shared::rundir::RunDir;
use shared::validate::Problem;

use crate::cgroup::CgroupRoot;
use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::events::EventLog;
use crate::file_watch::FileWatch;
use crate::halt::HaltPolicy;
use crate::live_agents::LiveFile;
use crate::memory::MemoryWatch;
use crate::merging;
use crate::proc_table;
use crate::progress::{FileSeen, Progress};
use crate::progress_view::{ProgressView, RunSnapshot};
use crate::rate_server::RateServer;
use crate::reaper::{self, Msg};
use crate::report::AttemptRecord;
use crate::schedule::{deadline_instant, LaunchGate};
use crate::slot::{KillReason, Slot};
use crate::sweep::Leftovers;
use crate::timeouts::PerItemTimes;

mod attempts;
mod slurm_jobs;
mod watch;

use slurm_jobs::SlurmRun;

/// How often a tree being killed is checked for its last process.
const KILL_POLL: Duration = Duration::from_millis(10);

/// Everything a supervisor needs to run (or go on with) a run.
pub struct RunInputs<'a> {
    pub run: &'a RunDir,
    pub job: &'a Job,
    pub plan: &'a Plan,
    pub agent_argv: &'a [OsString],
    pub halt: HaltPolicy,
    /// Agents whose files already hold all their items (resume).
    pub complete: HashSet<AgentRef>,
    /// Launches of each agent so far (resume), so attempt numbers go on.
    pub launches: HashMap<String, u32>,
    /// `--until`: overrides schedule.deadline.
    pub until: Option<Deadline>,
    /// Agent files already read (resume), so progress starts without reading them again.
    pub files_seen: HashMap<AgentRef, FileSeen>,
    /// A resume: live Slurm jobs of the run are adopted, not cancelled.
    pub resumed: bool,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Interrupted,
    Halted,
    /// Stopped at schedule.deadline / --until (after the drain).
    Deadline,
}

pub struct RunResult {
    pub ending: Ending,
    pub attempts: Vec<AttemptRecord>,
    pub problems: Vec<Problem>,
    pub memory: MemoryReport,
}

/// The memory side of a run, for report.json.
#[derive(Debug, serde::Serialize)]
pub struct MemoryReport {
    pub mode: String,
    pub ceiling: Option<u64>,
    pub peak_total: u64,
    pub samples: Vec<crate::memory::MemorySample>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    No,
    /// No new launches; running agents finish (halt soon).
    Draining,
    /// Every tree was sent TERM; each is KILLed at its own hard_at.
    Killing,
}

/// An agent waiting for its retry backoff to pass.
struct Retry<'p> {
    at: Instant,
    agent: &'p AgentPlan,
}

pub struct Supervisor<'a> {
    inputs: RunInputs<'a>,
    console: &'a Console,
    events: EventLog,
    rx: Receiver<Msg>,
    _signals: signal_hook::iterator::Handle,
    max_parallel: usize,
    slots: HashMap<i32, Slot<'a>>,
    leftovers: Leftovers,
    retries: Vec<Retry<'a>>,
    retries_used: HashMap<AgentRef, u32>,
    failed_for_good: usize,
    attempts: Vec<AttemptRecord>,
    per_item: PerItemTimes,
    stop: Stop,
    ending: Ending,
    next_tick: Instant,
    me: i32,
    boot_id: String,
    live: LiveFile,
    live_dirty: bool,
    memory: MemoryWatch,
    cgroups: Option<CgroupRoot>,
    memory_mode: String,
    /// Agents killed to make room, waiting to go back to the queue's front.
    requeued: Vec<&'a AgentPlan>,
    page_size: u64,
    progress: Progress,
    view: ProgressView,
    watch: Option<FileWatch>,
    segment_number: usize,
    gate: LaunchGate,
    rate: Option<RateServer>,
    /// schedule.deadline, and the end of the drain once it has passed.
    deadline: Option<Instant>,
    drain_until: Option<Instant>,
    /// The schedule holds launches until then (warm-up delay, wave, stagger).
    schedule_wake: Option<Instant>,
    /// Sampling ticks so far.
    ticks: u64,
    /// executor = "slurm": agents are batch jobs.
    slurm: Option<SlurmRun>,
}

impl<'a> Supervisor<'a> {
    pub fn new(inputs: RunInputs<'a>, console: &'a Console) -> Result<Self> {
        let (tx, rx) = channel();
        let signals = reaper::start(tx.clone())
            .map_err(SupervisorError::io("cannot install signal handlers"))?;
        let watch = match FileWatch::start(inputs.run.root(), tx) {
            Ok(watch) => Some(watch),
            Err(why) => {
                console.line(&format!("progress: polling agent files ({why})"));
                None
            }
        };
        // Orphaned descendants of agents become our children: reaped by us, and
        // still in view to be counted and killed.
        if let Err(error) = proc_table::become_subreaper() {
            tracing::warn!("cannot become a child subreaper ({error}); daemonised descendants are found by the segment-end scan only");
        }
        let events = EventLog::open(&inputs.run.events())
            .map_err(SupervisorError::io("cannot open events.jsonl"))?;
        let live =
            LiveFile::create(inputs.run).map_err(SupervisorError::io("cannot create live.json"))?;
        let settings = &inputs.job.settings;
        let rate = match RateServer::start(
            inputs.run,
            settings.rate.as_ref(),
            // Slurm runs agents on other nodes: they reach the broker by TCP.
            (settings.executor.kind == ExecutorKind::Slurm)
                .then(|| {
                    settings
                        .executor
                        .broker_host
                        .clone()
                        .unwrap_or_else(RateServer::host_name)
                })
                .as_deref(),
        ) {
            Ok(server) => Some(server),
            Err(error) => {
                tracing::warn!("no rate broker ({error}); agents run without permits");
                console.line(&format!(
                    "rate broker: not available ({error}); agents run without permits"
                ));
                None
            }
        };
        let now = Instant::now();
        let deadline = inputs
            .until
            .or(settings.schedule.deadline)
            .map(|d| deadline_instant(d, now));
        let slurm = (settings.executor.kind == ExecutorKind::Slurm)
            .then(|| SlurmRun::new(inputs.run.root(), settings.executor.poll_interval.get()));
        let (cgroups, memory_mode, memory) = if slurm.is_some() {
            let mode = match settings.agent.memory_limit {
                Some(limit) => {
                    format!("Slurm enforces agent.memory_limit {limit} per job (sbatch --mem)")
                }
                None => "Slurm (no agent.memory_limit: the partition's default memory per job)"
                    .to_owned(),
            };
            if settings.limits.ram_ceiling.is_some() || settings.limits.min_free.is_some() {
                console.line("memory: limits.ram_ceiling and limits.min_free do not apply under Slurm (Slurm places each job by its --mem)");
            }
            console.line(&format!(
                "executor: Slurm (jobs named {}*); {} must be on a filesystem every node shares",
                crate::slurm::job_prefix(inputs.run.root()),
                inputs.run.root().display()
            ));
            if let Some(kind) = crate::slurm::node_local_filesystem(inputs.run.root()) {
                console.line(&format!(
                    "warning: the run directory is on {kind}, which only this machine sees: fine for a one-node cluster, lost work elsewhere"
                ));
            }
            (None, mode, MemoryWatch::for_slurm(settings))
        } else {
            let (cgroups, mode) = crate::memory::choose_mode(settings)?;
            (cgroups, mode, MemoryWatch::new(settings))
        };
        console.line(&format!("memory: {memory_mode}"));
        let max_parallel = inputs
            .job
            .settings
            .limits
            .max_parallel
            .map(|c| c.get())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok(Self {
            console,
            events,
            rx,
            _signals: signals,
            max_parallel,
            slots: HashMap::new(),
            leftovers: Leftovers::default(),
            retries: Vec::new(),
            retries_used: HashMap::new(),
            failed_for_good: 0,
            attempts: Vec::new(),
            per_item: PerItemTimes::default(),
            stop: Stop::No,
            ending: Ending::Completed,
            next_tick: Instant::now(),
            me: i32::try_from(std::process::id()).unwrap_or(0),
            boot_id: proc_table::boot_id(),
            live,
            live_dirty: false,
            memory,
            cgroups,
            memory_mode,
            requeued: Vec::new(),
            page_size: crate::unix::page_size(),
            progress: Progress::resuming(inputs.run, inputs.plan, &inputs.files_seen),
            view: ProgressView::new(
                console,
                inputs.plan.items_total,
                settings.limits.progress_interval.get(),
            ),
            watch,
            segment_number: 0,
            gate: LaunchGate::new(&settings.schedule, now),
            rate,
            deadline,
            drain_until: None,
            schedule_wake: None,
            ticks: 0,
            slurm,
            inputs,
        })
    }

    fn event(&mut self, agent: Option<&str>, event: Event) -> Result<()> {
        tracing::info!("{} {} {event:?}", event.name(), agent.unwrap_or(""));
        self.events
            .record(agent, &event)
            .map_err(SupervisorError::io("cannot append to events.jsonl"))
    }

    fn settings(&self) -> &'a JobSettings {
        &self.inputs.job.settings
    }

    pub fn run(mut self) -> Result<RunResult> {
        let plan = self.inputs.plan;
        let run = self.inputs.run;
        self.event(
            None,
            Event::RunStarted {
                job: plan.job.clone(),
                items: plan.items_total,
                agents: plan.agent_count(),
                segments: plan.segments.len(),
                max_parallel: self.max_parallel,
                supervisor_pid: self.me,
                already_complete: self.inputs.complete.len(),
                memory_mode: self.memory_mode.clone(),
            },
        )?;
        self.find_slurm_jobs()?;
        let mut problems = Vec::new();
        for segment in &plan.segments {
            if self.stop != Stop::No {
                break;
            }
            let todo: Vec<&'a AgentPlan> = segment
                .agents()
                .filter(|a| !self.inputs.complete.contains(&a.at))
                .collect();
            if todo.is_empty() && merging::segment_up_to_date(run, segment) {
                self.console.line(&format!(
                    "segment {}/{}: already complete",
                    segment.number,
                    plan.segments.len()
                ));
                continue;
            }
            self.run_segment(segment, todo)?;
            let names: HashSet<String> = segment.agents().map(|a| a.name.clone()).collect();
            if self.stop != Stop::No {
                self.sweep(&names, KillReason::Shutdown)?;
                break;
            }
            self.sweep(&names, KillReason::SegmentEnd)?;
            let started = Instant::now();
            let (found, stamp) = merging::merge_segment(run, plan, segment).map_err(
                SupervisorError::io(format!("cannot merge segment {}", segment.number)),
            )?;
            let seconds = started.elapsed().as_secs_f64();
            self.event(
                None,
                Event::merged(segment.number, stamp, found.len(), seconds),
            )?;
            for problem in &found {
                self.console.problem(problem);
            }
            problems.extend(found);
            self.event(
                None,
                Event::SegmentDone {
                    segment: segment.number,
                },
            )?;
            self.events
                .sync()
                .map_err(SupervisorError::io("cannot sync events.jsonl"))?;
            self.console.segment_done(segment, plan.segments.len());
            self.refresh_view(Instant::now(), true);
        }
        self.view.finish();
        if let Some(root) = &self.cgroups {
            root.remove();
        }
        Ok(RunResult {
            ending: self.ending,
            memory: MemoryReport {
                mode: self.memory_mode,
                ceiling: self.memory.ceiling(),
                peak_total: self.memory.run_peak_total,
                samples: self.memory.samples().to_vec(),
            },
            attempts: self.attempts,
            problems,
        })
    }

    /// Launches and watches the agents of one segment until every attempt,
    /// retries included, has ended (or a shutdown or halt has ended them).
    fn run_segment(&mut self, segment: &'a SegmentPlan, todo: Vec<&'a AgentPlan>) -> Result<()> {
        self.segment_number = segment.number;
        // A resumed run's jobs still in Slurm's hands are watched, not redone.
        let mut queue = VecDeque::new();
        for agent in todo {
            if !self.adopt_job(agent)? {
                queue.push_back(agent);
            }
        }
        self.gate.start_segment(Instant::now());
        self.console
            .segment_started(segment, self.inputs.plan.segments.len());
        loop {
            let now = Instant::now();
            let (due, waiting): (Vec<Retry<'a>>, Vec<Retry<'a>>) =
                std::mem::take(&mut self.retries)
                    .into_iter()
                    .partition(|r| r.at <= now);
            self.retries = waiting;
            queue.extend(due.into_iter().map(|r| r.agent));
            for agent in self.requeued.drain(..).rev() {
                queue.push_front(agent);
            }
            self.schedule_wake = None;
            while self.stop == Stop::No
                && self.slots.len() < self.max_parallel
                && self.memory.admits(now, self.slots.len())
            {
                // The schedule: warm-up and waves for every launch, the
                // orchestrator stagger for each agent.
                let allowed_at = self.gate.next_launch_at(now);
                if allowed_at > now {
                    self.schedule_wake = Some(allowed_at);
                    break;
                }
                let ready = queue
                    .iter()
                    .position(|a| self.gate.orchestrator_ready(a.at.orchestrator) <= now);
                let Some(index) = ready else {
                    self.schedule_wake = queue
                        .iter()
                        .map(|a| self.gate.orchestrator_ready(a.at.orchestrator))
                        .min();
                    break;
                };
                let Some(agent) = queue.remove(index) else {
                    break;
                };
                self.launch(agent)?;
            }
            // live.json is current before the loop waits for anything.
            self.write_live()?;
            let nothing_left =
                queue.is_empty() && self.retries.is_empty() && self.requeued.is_empty();
            if self.slots.is_empty() && (nothing_left || self.stop != Stop::No) {
                return Ok(());
            }
            let wake = self.next_wake(now);
            match self
                .rx
                .recv_timeout(wake.saturating_duration_since(Instant::now()))
            {
                Ok(message) => self.on_message(message)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(lost_signals()),
            }
            while let Ok(message) = self.rx.try_recv() {
                self.on_message(message)?;
            }
            let now = Instant::now();
            self.on_time(now)?;
            self.refresh_view(now, false);
        }
    }

    /// Redraws the progress display (`segment_end`: the line of a segment's end).
    fn refresh_view(&mut self, now: Instant, segment_end: bool) {
        let snapshot = RunSnapshot {
            progress: &self.progress,
            slots: &self.slots,
            segment: self.segment_number,
            segments: self.inputs.plan.segments.len(),
            failed: self.failed_for_good,
            total_rss: self.slots.values().map(|s| s.rss).sum(),
        };
        if segment_end {
            self.view.segment_done(&snapshot);
        } else {
            self.view.update(&snapshot, now);
        }
    }

    /// The next instant something must be looked at.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = self.next_tick;
        for at in [self.schedule_wake, self.deadline, self.drain_until]
            .into_iter()
            .flatten()
        {
            if at > now {
                wake = wake.min(at);
            }
        }
        for retry in &self.retries {
            wake = wake.min(retry.at);
        }
        if let Some(slurm) = self.slurm.as_ref().filter(|_| !self.slots.is_empty()) {
            wake = wake.min(slurm.next_poll);
        }
        for slot in self.slots.values() {
            match slot.kill {
                None => {
                    if let Some(deadline) = slot.deadline {
                        wake = wake.min(deadline);
                    }
                }
                Some(kill) => {
                    wake = wake.min(now + KILL_POLL);
                    if !kill.hard_sent {
                        wake = wake.min(kill.hard_at);
                    }
                }
            }
        }
        wake
    }
}

fn lost_signals() -> SupervisorError {
    SupervisorError::io("the signal thread stopped")(std::io::Error::other("channel closed"))
}
