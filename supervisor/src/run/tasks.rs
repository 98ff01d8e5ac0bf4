//! Writing every agent's task file when the run directory is created, so a run
//! can be resumed from its directory alone (the input file may change or go).
//! All files are written under temporary names, made durable with one syncfs
//! for the whole batch, then renamed: atomic per file without one fsync each.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::value::RawValue;

use shared::job::{AgentSettings, JobSettings};
use shared::plan::Plan;
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

pub fn write_all_tasks(
    run: &RunDir,
    plan: &Plan,
    items: &[Box<RawValue>],
    id_field: &str,
    job: &JobSettings,
) -> io::Result<()> {
    let mut renames: Vec<(PathBuf, PathBuf)> = Vec::new();
    for agent in plan.agents() {
        let path = run.agent_task(agent.at);
        let temp = path.with_extension("json.tmp");
        let task = TaskRef {
            agent: &agent.name,
            id_field,
            items: &items[agent.first_item..agent.first_item + agent.items],
            settings: &job.agent,
            permits: job.permits_from_start(),
        };
        let mut writer = BufWriter::new(File::create(&temp)?);
        serde_json::to_writer(&mut writer, &task)?;
        writer.write_all(b"\n")?;
        writer.flush()?;
        renames.push((temp, path));
    }
    let root = File::open(run.root())?;
    crate::platform::files::sync_filesystem(&root)?;
    for (temp, path) in &renames {
        std::fs::rename(temp, path)?;
    }
    crate::platform::files::sync_filesystem(&root)?;
    Ok(())
}
