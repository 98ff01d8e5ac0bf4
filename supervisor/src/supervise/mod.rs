//! The event loop of a run: segments one after another; inside a segment,
//! agents launched while fewer than limits.max_parallel run. Exits, signals and
//! timers all arrive in one loop on one thread, which owns the run's state and
//! never blocks on a single child. Kills (timeout, stall, shutdown) end an
//! agent's whole tree: TERM, agent.kill_grace, KILL. A failed agent is retried
//! on its remaining items after a doubling backoff. Between segments nothing
//! started for the finished segment may live on (see each executor's `sweep`). The loop drives an `Executor` and does not
//! know which one.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::time::{Duration, Instant};

use shared::job::{Deadline, ExecutorKind, Job, JobSettings};
use shared::journal::Event;
use shared::plan::{AgentPlan, AgentRef, Plan};
use shared::rundir::RunDir;
use shared::validate::Problem;

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::executor::{self, AttemptKey, Executor};
use crate::outcome::MemoryReport;
use crate::platform;
use crate::rate::server::RateServer;
use crate::reporting::batch_feed::BatchFeed;
use crate::reporting::cost::run_cost;
use crate::reporting::failure_feed::FailureFeed;
use crate::reporting::progress::{FileSeen, Progress};
use crate::reporting::report::AttemptRecord;
use crate::reporting::view::ProgressView;
use crate::run::journal::EventLog;
use crate::run::live::LiveFile;
use crate::run::stage_feed::Feed;
use crate::schedule::gate::deadline_instant;
use crate::schedule::halt::HaltPolicy;
use crate::schedule::scheduler::Scheduler;
use crate::schedule::stage_link::{SharedSlots, StageLink, Upstream};
use crate::supervise::slot::Slot;
use crate::watchdog::checks::Watchdog;
use crate::watchdog::disk::DiskWatch;
use messages::Messages;

mod attempts;
pub(crate) mod budget;
mod launching;
mod messages;
mod segments;
pub mod slot;
mod upstream;
mod watch;

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
    /// A stage of a pipeline whose stages run side by side.
    pub stage: Option<StageShare<'a>>,
}

/// What a stage shares with the other stages of its pipeline, which run at
/// the same time in other threads of this process.
#[derive(Clone, Copy)]
pub struct StageShare<'a> {
    /// The stage's place in its group of stages running together.
    pub index: usize,
    /// limits.max_parallel, counted over every stage.
    pub slots: &'a SharedSlots,
    /// The pipeline's one rate broker (limits and budget shared by all).
    pub broker: Option<&'a RateServer>,
    /// Where this stage says which of its agents are done (a stage after it
    /// streams their records).
    pub feeds: Option<&'a StageLink>,
    /// Where this stage's items come from, agent by agent.
    pub fed_by: Option<&'a Feed<'a>>,
}

/// How the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Interrupted,
    Halted,
    /// Stopped at schedule.deadline / --until (after the drain).
    Deadline,
    /// An agent said the run cannot go on (exit code 5); the reason it gave.
    CannotGoOn(String),
    /// The run's budget is spent (exit code 4); the broker's reason.
    BudgetSpent(String),
}

pub struct RunResult {
    pub ending: Ending,
    pub attempts: Vec<AttemptRecord>,
    pub problems: Vec<Problem>,
    pub memory: MemoryReport,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    No,
    /// No new launches; running agents finish (halt soon).
    Draining,
    /// Every tree was sent TERM; each is KILLed at its own hard_at.
    Killing,
}

pub struct Supervisor<'a> {
    inputs: RunInputs<'a>,
    console: &'a Console,
    events: EventLog,
    messages: Messages,
    executor: Box<dyn Executor + 'a>,
    scheduler: Scheduler<'a>,
    watchdog: Watchdog,
    slots: HashMap<AttemptKey, Slot<'a>>,
    failed_for_good: usize,
    attempts: Vec<AttemptRecord>,
    stop: Stop,
    ending: Ending,
    me: i32,
    boot_id: String,
    live: LiveFile,
    live_dirty: bool,
    memory_mode: String,
    progress: Progress,
    /// Failed items on the console as they fail.
    failure_feed: FailureFeed,
    /// Provider batches on the console as they change (batch mode).
    batch_feed: BatchFeed,
    view: ProgressView,
    segment_number: usize,
    /// Agents ask it for permits; a pause holds them. A pipeline's stages
    /// share one (`shared_rate`) instead of each starting its own.
    rate: Option<RateServer>,
    shared_rate: Option<&'a RateServer>,
    /// Agents of a streaming stage waiting for their upstream agents.
    waiting: Vec<&'a AgentPlan>,
    /// The upstream stage as last seen.
    upstream: Upstream,
    /// Agents running (or queued) on part of their items, and for each
    /// agent tried so: the items its last task held, and the upstream
    /// records counted for it then.
    partial: HashSet<AgentRef>,
    tried: HashMap<AgentRef, (usize, usize)>,
    /// `nightshift control --pause`: nothing is launched until --continue.
    paused: bool,
    /// schedule.deadline, and the end of the drain once it has passed.
    deadline: Option<Instant>,
    drain_until: Option<Instant>,
}

impl<'a> Supervisor<'a> {
    pub fn new(mut inputs: RunInputs<'a>, console: &'a Console) -> Result<Self> {
        let messages = Messages::start(inputs.run, console)?;
        let events = EventLog::open(&inputs.run.events())
            .map_err(SupervisorError::io("cannot open events.jsonl"))?;
        let live =
            LiveFile::create(inputs.run).map_err(SupervisorError::io("cannot create live.json"))?;
        let settings = &inputs.job.settings;
        let shared_rate = inputs.stage.and_then(|s| s.broker);
        let rate = match shared_rate {
            Some(_) => None,
            None => start_broker(inputs.run, settings, console),
        };
        if let Some(stage) = inputs.stage {
            stage.slots.listen(stage.index, messages.tx.clone());
            if let Some(feed) = stage.fed_by {
                feed.link.listen(messages.tx.clone());
            }
            if let Some(link) = stage.feeds {
                link.listen_upstream(messages.tx.clone());
            }
        }
        let setup = executor::for_run(
            inputs.run,
            inputs.job,
            inputs.agent_argv,
            shared_rate.or(rate.as_ref()),
            inputs.until,
            console,
        )?;
        console.line(&platform::current().describe());
        console.line(&format!("memory: {}", setup.memory_mode));
        let now = Instant::now();
        let max_parallel = settings
            .limits
            .max_parallel
            .map(|c| c.get())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let launches = std::mem::take(&mut inputs.launches);
        let progress = Progress::resuming(inputs.run, inputs.plan, &inputs.files_seen);
        // A pipeline's broker holds the whole pipeline's budget (see `pipeline`).
        if let (Some(rate), true) = (&rate, settings.budget_applies()) {
            let before = run_cost(inputs.run, inputs.plan, &progress).total;
            budget::hold_budget(rate, inputs.run, settings, before);
        }
        Ok(Self {
            console,
            events,
            messages,
            executor: setup.executor,
            scheduler: Scheduler::new(&settings.schedule, max_parallel, launches, now),
            watchdog: Watchdog::new(
                settings,
                setup.memory,
                DiskWatch::new(inputs.run.root(), settings.limits.min_disk.bytes()),
                now,
            ),
            slots: HashMap::new(),
            failed_for_good: 0,
            attempts: Vec::new(),
            stop: Stop::No,
            ending: Ending::Completed,
            me: i32::try_from(std::process::id()).unwrap_or(0),
            boot_id: platform::boot_id(),
            live,
            live_dirty: false,
            memory_mode: setup.memory_mode,
            progress,
            failure_feed: FailureFeed::new(inputs.run.root()),
            batch_feed: BatchFeed::new(inputs.run.root()),
            view: ProgressView::new(
                console,
                inputs.plan.items_total,
                settings.limits.progress_interval.get(),
            ),
            segment_number: 0,
            rate,
            shared_rate,
            waiting: Vec::new(),
            upstream: Upstream::default(),
            partial: HashSet::new(),
            tried: HashMap::new(),
            paused: false,
            deadline: inputs
                .until
                .or(settings.schedule.deadline)
                .map(|d| deadline_instant(d, now)),
            drain_until: None,
            inputs,
        })
    }

    fn event(&mut self, agent: Option<&str>, event: Event) -> Result<()> {
        tracing::info!("{} {} {event:?}", event.name(), agent.unwrap_or(""));
        self.events
            .record(agent, &event)
            .map_err(SupervisorError::io("cannot append to events.jsonl"))
    }

    /// The broker the run's agents ask (the pipeline's, or this run's own).
    fn rate(&self) -> Option<&RateServer> {
        self.shared_rate.or(self.rate.as_ref())
    }

    fn settings(&self) -> &'a JobSettings {
        &self.inputs.job.settings
    }
}

/// The rate broker every agent of the run asks for permits; a run goes on
/// without one (agents then take no permits) when it cannot start.
pub(crate) fn start_broker(
    run: &RunDir,
    settings: &JobSettings,
    console: &Console,
) -> Option<RateServer> {
    // Slurm runs agents on other nodes: they reach the broker by TCP.
    let tcp_host = (settings.executor.kind == ExecutorKind::Slurm).then(|| {
        settings
            .executor
            .broker_host
            .clone()
            .unwrap_or_else(RateServer::host_name)
    });
    let log_limit = settings.limits.agent_log_limit.bytes();
    match RateServer::start(run, settings.rate.as_ref(), tcp_host.as_deref(), log_limit) {
        Ok(server) => Some(server),
        Err(error) => {
            tracing::warn!("no rate broker ({error}); agents run without permits");
            console.line(&format!(
                "rate broker: not available ({error}); agents run without permits"
            ));
            None
        }
    }
}
