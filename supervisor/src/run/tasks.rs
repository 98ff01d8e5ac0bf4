//! Writing every agent's task file, and plan.json with every agent's ids, when
//! the run directory is created, so a run can be resumed from its directory
//! alone (the input file may change or go). The input is read item by item
//! and each agent's items are written as soon as they are read: nothing holds
//! more than one agent's items.
//!
//! All files are written under temporary names, made durable with one syncfs
//! for the whole batch, then renamed: atomic per file without one fsync each.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::value::RawValue;

use shared::ids::IdKey;
use shared::input::InputFile;
use shared::job::{AgentSettings, JobSettings};
use shared::plan::{write_plan_json, AgentPlan, Plan};
use shared::rundir::RunDir;

/// The shape of shared::task::TaskFile, borrowed instead of owned.
#[derive(Serialize)]
struct TaskRef<'a> {
    agent: &'a str,
    id_field: &'a str,
    items: &'a [Box<RawValue>],
    settings: &'a AgentSettings,
    permits: bool,
}

/// What to do with plan.json while the task files are written.
pub enum PlanFile<'a> {
    /// Write it (a new run).
    Write,
    /// It exists: check that the input still holds these ids, in this order
    /// (task files lost to a crash at the start, written again on resume).
    Check(&'a [IdKey]),
}

pub fn write_tasks(
    run: &RunDir,
    plan: &Plan,
    input: &InputFile,
    job: &JobSettings,
    plan_file: PlanFile<'_>,
) -> io::Result<()> {
    let mut items = input.items_with_ids().map_err(io::Error::other)?;
    let mut renames: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut next_planned = 0;
    let mut write_agent = |agent: &AgentPlan| -> io::Result<Vec<IdKey>> {
        let mut ids = Vec::with_capacity(agent.items);
        let mut raws = Vec::with_capacity(agent.items);
        for _ in 0..agent.items {
            let (id, raw) = items
                .next()
                .ok_or_else(|| io::Error::other("the input holds fewer items than planned"))?
                .map_err(io::Error::other)?;
            ids.push(id);
            raws.push(raw);
        }
        if let PlanFile::Check(planned) = plan_file {
            let expected = planned.get(next_planned..next_planned + ids.len());
            if expected != Some(ids.as_slice()) {
                return Err(io::Error::other(format!(
                    "the input no longer holds the items planned for {}",
                    agent.name
                )));
            }
            next_planned += ids.len();
        }
        let path = run.agent_task(agent.at);
        let temp = path.with_extension("json.tmp");
        let task = TaskRef {
            agent: &agent.name,
            id_field: &input.id_field,
            items: &raws,
            settings: &job.agent,
            permits: job.permits_from_start(),
        };
        let mut writer = BufWriter::new(File::create(&temp)?);
        serde_json::to_writer(&mut writer, &task)?;
        writer.write_all(b"\n")?;
        writer.flush()?;
        renames.push((temp, path));
        Ok(ids)
    };
    let plan_json = match plan_file {
        PlanFile::Write => {
            let path = run.plan_json();
            let temp = path.with_extension("json.tmp");
            let mut out = BufWriter::new(File::create(&temp)?);
            write_plan_json(plan, &mut out, &mut write_agent)?;
            out.flush()?;
            Some((temp, path))
        }
        PlanFile::Check(_) => {
            for agent in plan.agents() {
                write_agent(agent)?;
            }
            None
        }
    };
    if items.next().is_some() {
        return Err(io::Error::other("the input holds more items than planned"));
    }
    renames.extend(plan_json);
    let root = File::open(run.root())?;
    crate::platform::files::sync_filesystem(&root)?;
    for (temp, path) in &renames {
        std::fs::rename(temp, path)?;
    }
    crate::platform::files::sync_filesystem(&root)?;
    Ok(())
}
