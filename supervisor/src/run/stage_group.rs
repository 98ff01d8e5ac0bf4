//! Stages that stream into each other run side by side: one supervisor loop
//! per stage, each a thread of this process, sharing the pipeline's rate
//! broker, its max_parallel and the signal thread. A group is the first
//! stage of the chain, or one with `barrier = true`, and every stage after it
//! up to the next barrier. All stages of a group are planned over the group's
//! items (the first stage's input), each with its own layout; an agent of a
//! later stage starts once the upstream agents covering its items are done
//! (see `stage_feed`).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use shared::exit_codes;
use shared::input::InputError;
use shared::job::{stage_dir_name, Job};
use shared::money::Spend;
use shared::plan::{AgentRef, Plan, PlanError};
use shared::rundir::RunDir;

use crate::commands::resume::take_up;
use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::rate::server::RateServer;
use crate::reporting::cost::run_cost;
use crate::reporting::progress::{FileSeen, Progress};
use crate::run::budget::apply_budget;
use crate::run::existing::{frozen_job, open_run};
use crate::run::lock::RunLock;
use crate::run::pipeline::StageOptions;
use crate::run::session::drive;
use crate::run::setup::{check_loaded, create_run_dir, make_run_dir};
use crate::run::stage_feed::Feed;
use crate::schedule::stage_link::{SharedSlots, StageLink};
use crate::supervise::{RunInputs, StageShare};

/// The groups of a chain of `stages`, in order: a new group starts at the
/// first stage and at each barrier.
pub fn groups(barriers: &[bool]) -> Vec<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    for (index, barrier) in barriers.iter().enumerate() {
        match groups.last_mut() {
            Some(group) if !barrier => group.end = index + 1,
            _ => groups.push(index..index + 1),
        }
    }
    groups
}

/// One stage of a group, ready to run (or with nothing left to do).
struct Stage {
    name: String,
    dir: PathBuf,
    run: RunDir,
    /// None when no item reached the stage (it has no plan).
    plan: Option<Plan>,
    job: Option<Job>,
    agent_argv: Vec<OsString>,
    complete: HashSet<AgentRef>,
    launches: HashMap<String, u32>,
    files_seen: HashMap<AgentRef, FileSeen>,
    resumed: bool,
    /// The exit code of a stage with nothing left to do.
    done: Option<i32>,
    _lock: Option<RunLock>,
}

impl Stage {
    /// A stage with nothing read yet.
    fn new(name: String, dir: &Path, run: RunDir) -> Self {
        Self {
            name,
            dir: dir.to_owned(),
            run,
            plan: None,
            job: None,
            agent_argv: Vec::new(),
            complete: HashSet::new(),
            launches: HashMap::new(),
            files_seen: HashMap::new(),
            resumed: false,
            done: None,
            _lock: None,
        }
    }
}

/// What a group runs with: the pipeline's run directory and broker, and the
/// input of its first stage (None: the job's `[input]`).
pub struct GroupContext<'a> {
    pub job: &'a Job,
    pub run: &'a RunDir,
    pub broker: Option<&'a RateServer>,
    pub input: Option<&'a Path>,
    pub options: &'a StageOptions<'a>,
}

/// Runs the stages `group` of the chain side by side; the exit code of each,
/// in chain order.
pub fn run_group(
    context: &GroupContext<'_>,
    group: Range<usize>,
    console: &Console,
) -> Result<Vec<i32>> {
    let chain = context.job.stage_chain();
    let mut stages = Vec::new();
    for index in group.clone() {
        let name = chain[index].name.clone();
        console.line(&format!("stage {}/{}: {name}", index + 1, chain.len()));
        let dir = context.run.root().join(stage_dir_name(&name));
        let stage = if RunDir::new(&dir).plan_json().exists() {
            reopen(&dir, name, context, console)?
        } else {
            create(&dir, name, index, context, console)?
        };
        stages.push(stage);
    }
    hold_budget(context, &stages);
    let slots = SharedSlots::new(stages.len());
    let links: Vec<StageLink> = stages.iter().map(|_| StageLink::default()).collect();
    let feeds: Vec<Option<Feed<'_>>> = (0..stages.len())
        .map(|k| feed_of(&stages, &links, k))
        .collect();
    let results: Vec<Result<i32>> = std::thread::scope(|scope| {
        let running: Vec<_> = stages
            .iter()
            .enumerate()
            .map(|(k, stage)| {
                let share = StageShare {
                    index: k,
                    slots: &slots,
                    broker: context.broker,
                    feeds: links.get(k),
                    fed_by: feeds[k].as_ref(),
                };
                let link = &links[k];
                let upstream_link = k.checked_sub(1).and_then(|up| links.get(up));
                scope.spawn(move || {
                    let console = &console.for_stage(&stage.name);
                    let result = run_stage(stage, share, context, console);
                    // Its upstream stage no longer waits for it to look.
                    if let Some(upstream_link) = upstream_link {
                        upstream_link.close();
                    }
                    // What waits downstream goes on (or stops) either way.
                    let completed =
                        matches!(result, Ok(exit_codes::SUCCESS | exit_codes::INCOMPLETE));
                    link.stage_ended(completed);
                    result
                })
            })
            .collect();
        running
            .into_iter()
            .map(|thread| {
                thread.join().unwrap_or_else(|_| {
                    Err(SupervisorError::io("a stage's supervisor failed")(
                        std::io::Error::other("its thread panicked"),
                    ))
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

/// The feed of stage `k` of a group: the stage before it, and the group's
/// first stage for the ids. None for the first stage, and for a stage
/// planned over other items (a run directory made by a version of
/// nightshift whose stages ran one after the other: it already holds its
/// items).
fn feed_of<'a>(stages: &'a [Stage], links: &'a [StageLink], k: usize) -> Option<Feed<'a>> {
    let (head, upstream, stage) = (stages.first()?, stages.get(k.checked_sub(1)?)?, &stages[k]);
    let (head_plan, upstream_plan, plan) = (
        head.plan.as_ref()?,
        upstream.plan.as_ref()?,
        stage.plan.as_ref()?,
    );
    if plan.items_total != head_plan.items_total || upstream_plan.items_total != plan.items_total {
        return None;
    }
    Some(Feed::new(
        &links[k - 1],
        upstream.name.clone(),
        (&upstream.run, upstream_plan),
        (&head.run, head_plan),
    ))
}

fn run_stage(
    stage: &Stage,
    share: StageShare<'_>,
    context: &GroupContext<'_>,
    console: &Console,
) -> Result<i32> {
    let (Some(plan), Some(job), None) = (&stage.plan, &stage.job, stage.done) else {
        return Ok(stage.done.unwrap_or(exit_codes::SUCCESS));
    };
    let inputs = RunInputs {
        run: &stage.run,
        job,
        plan,
        agent_argv: &stage.agent_argv,
        halt: context.options.halt,
        until: context.options.until,
        complete: stage.complete.clone(),
        launches: stage.launches.clone(),
        files_seen: stage.files_seen.clone(),
        resumed: stage.resumed,
        stage: Some(share),
    };
    drive(inputs, console, &stage.dir, None)
}

/// The pipeline's budget, held once by its broker for every stage: the
/// limits (shared by all stages) and what every stage spent so far.
fn hold_budget(context: &GroupContext<'_>, stages: &[Stage]) {
    let Some(broker) = context.broker else {
        return;
    };
    let Some(settings) = stages
        .iter()
        .find_map(|s| s.job.as_ref())
        .map(|j| &j.settings)
    else {
        return;
    };
    if !settings.budget_applies() {
        return;
    }
    let mut spent = Spend::default();
    for (name, dir) in crate::run::pipeline::stage_dirs(context.run.root()).unwrap_or_default() {
        if let Ok((run, plan)) = open_run(&dir) {
            spent += run_cost(&run, &plan, &Progress::new(&run, &plan)).total;
        } else {
            tracing::debug!("stage {name}: nothing spent yet");
        }
    }
    crate::supervise::budget::hold_budget(broker, context.run, settings, spent);
}

/// A stage whose directory holds a plan: resumed from what it saved.
fn reopen(
    dir: &Path,
    name: String,
    context: &GroupContext<'_>,
    console: &Console,
) -> Result<Stage> {
    let options = context.options;
    let (run, plan) = open_run(dir)?;
    let lock = RunLock::acquire(&run)?;
    let mut job = frozen_job(&run)?;
    apply_budget(&run, &mut job, options.budget)?;
    crate::run::answer_cache::prepare(&mut job, options.no_cache)?;
    let go_on = take_up(&run, &plan, &job, options.retry_failed, console)?;
    let mut stage = Stage::new(name, dir, run);
    stage.resumed = true;
    stage._lock = Some(lock);
    match go_on {
        Some(go_on) => {
            stage.agent_argv = go_on.agent_argv;
            stage.complete = go_on.progress.complete;
            stage.files_seen = go_on.progress.files;
            stage.launches = go_on.launches;
        }
        None => {
            let failed = crate::run::resume::scan_progress(
                &stage.run,
                &plan,
                crate::run::resume::Missing::Count,
            )
            .map_or(0, |p| p.failed);
            stage.done = Some(if failed > 0 {
                exit_codes::INCOMPLETE
            } else {
                exit_codes::SUCCESS
            });
        }
    }
    stage.plan = Some(plan);
    stage.job = Some(job);
    Ok(stage)
}

/// A stage met for the first time: its run directory, planned over the
/// group's items. One that no item reaches (all failed upstream) gets an
/// empty final.json.
fn create(
    dir: &Path,
    name: String,
    index: usize,
    context: &GroupContext<'_>,
    console: &Console,
) -> Result<Stage> {
    // A setup cut short launched nothing: it is done again whole.
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(SupervisorError::io(format!(
            "cannot clear {}",
            dir.display()
        )))?;
    }
    let stage_job = context.job.stage_job(index, context.input)?;
    let mut stage = Stage::new(name.clone(), dir, RunDir::new(dir));
    let mut checked = match check_loaded(stage_job) {
        Ok(checked) => checked,
        Err(SupervisorError::Input(InputError::Empty { .. }))
        | Err(SupervisorError::Plan(PlanError::NoItems))
            if context.input.is_some() =>
        {
            console.line("no item reached this stage: every one failed upstream");
            make_run_dir(dir)?;
            let empty = stage.run.final_json();
            shared::atomic::write_bytes_atomic(&empty, b"[]\n").map_err(SupervisorError::io(
                format!("cannot write {}", empty.display()),
            ))?;
            stage.done = Some(exit_codes::INCOMPLETE);
            return Ok(stage);
        }
        Err(error) => return Err(error),
    };
    crate::run::answer_cache::prepare(&mut checked.job, context.options.no_cache)?;
    make_run_dir(dir)?;
    let run = create_run_dir(dir, &checked, Some(&name))?;
    stage._lock = Some(RunLock::acquire(&run)?);
    stage.run = run;
    stage.agent_argv = checked.agent_argv;
    stage.plan = Some(checked.plan);
    stage.job = Some(checked.job);
    Ok(stage)
}

#[cfg(test)]
mod tests {
    use super::groups;

    #[test]
    fn a_barrier_starts_a_new_group() {
        assert_eq!(groups(&[false, false, false]), vec![0..3]);
        assert_eq!(groups(&[false, true, false]), vec![0..1, 1..3]);
        assert_eq!(groups(&[true, true]), vec![0..1, 1..2]);
        assert!(groups(&[]).is_empty());
    }
}
