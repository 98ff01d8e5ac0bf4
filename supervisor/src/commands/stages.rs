//! The commands that read or redo a run (status, report, merge, validate) on
//! a pipeline's run directory: each stage's directory in turn, as the
//! ordinary run directory it is.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use shared::atomic::copy_atomic;
use shared::exit_codes;
use shared::journal::Journal;
use shared::rundir::RunDir;

use crate::error::{Result, SupervisorError};
use crate::reporting::pipeline_page::StageRow;
use crate::reporting::status::{run_status, RunStatus};
use crate::reporting::timeline::{read_timeline, Timeline};
use crate::run::existing::open_run;
use crate::run::journal::read_journal;
use crate::run::pipeline::stage_dirs;

/// Runs `command` on every stage that has started, after a `stage i/n: NAME`
/// line when `headers` (not between JSON documents or bare ids; stages not
/// started yet are said so). The exit code: the first stage's that is not 0.
pub fn each_stage(
    dir: &Path,
    headers: bool,
    mut command: impl FnMut(&Path) -> Result<i32>,
) -> Result<i32> {
    let stages = stage_dirs(dir)?;
    let mut code = exit_codes::SUCCESS;
    for (index, (name, stage_dir)) in stages.iter().enumerate() {
        if headers {
            println!("stage {}/{}: {name}", index + 1, stages.len());
        }
        if !RunDir::new(stage_dir).plan_json().exists() {
            if headers {
                println!("not started: it starts once stage {index} is done");
            }
            continue;
        }
        let stage_code = command(stage_dir)?;
        if code == exit_codes::SUCCESS {
            code = stage_code;
        }
    }
    Ok(code)
}

/// `nightshift merge` on a pipeline: every stage, then RUN/final.json again
/// from the last stage.
pub fn merge_stages(dir: &Path, mut merge: impl FnMut(&Path) -> Result<i32>) -> Result<i32> {
    let code = each_stage(dir, true, &mut merge)?;
    if let Some((_, last)) = stage_dirs(dir)?.last() {
        let from = RunDir::new(last).final_json();
        if from.exists() {
            let to = RunDir::new(dir).final_json();
            copy_atomic(&from, &to).map_err(SupervisorError::io(format!(
                "cannot copy {} to {}",
                from.display(),
                to.display()
            )))?;
        }
    }
    Ok(code)
}

/// One stage of a pipeline as it stands: None for one not started yet.
struct StageNow {
    name: String,
    dir: PathBuf,
    read: Option<StageRead>,
}

/// A started stage, read from its run directory.
struct StageRead {
    journal: Journal,
    status: RunStatus,
    /// What reached the stage: every item for the first, the records saved
    /// upstream for the others.
    items_in: usize,
}

/// Every stage of the pipeline at `dir`, in chain order, each read once.
fn read_stages(dir: &Path) -> Result<Vec<StageNow>> {
    let mut upstream_done: Option<usize> = None;
    let mut stages = Vec::new();
    for (name, stage_dir) in stage_dirs(dir)? {
        let read = if RunDir::new(&stage_dir).plan_json().exists() {
            let (run, plan) = open_run(&stage_dir)?;
            let journal = read_journal(&run.events())?;
            let status = run_status(&run, &plan, &journal);
            let items_in = upstream_done.unwrap_or(status.items.total);
            upstream_done = Some(status.items.done);
            Some(StageRead {
                journal,
                status,
                items_in,
            })
        } else {
            None
        };
        stages.push(StageNow {
            name,
            dir: stage_dir,
            read,
        });
    }
    Ok(stages)
}

/// `nightshift status DIR --json` on a pipeline: each stage's status under
/// `stages` (with `items.in`: the records its upstream stage has saved so
/// far, all items for the first), and the pipeline's state and items (total:
/// the first stage's items; done: the last stage's; failed: those failed in
/// any stage).
pub fn pipeline_status_json(dir: &Path) -> Result<(Value, i32)> {
    status_of(dir, &read_stages(dir)?)
}

fn status_of(dir: &Path, stages: &[StageNow]) -> Result<(Value, i32)> {
    let mut listed = Vec::new();
    let (mut total, mut done, mut failed) = (None, 0, 0);
    let mut state = "finished";
    let mut code = exit_codes::SUCCESS;
    for (index, stage) in stages.iter().enumerate() {
        let Some(read) = &stage.read else {
            listed.push(json!({"name": stage.name, "state": "waiting"}));
            if state == "finished" {
                state = "interrupted";
            }
            continue;
        };
        let status = &read.status;
        total.get_or_insert(status.items.total);
        failed += status.items.failed;
        if index + 1 == stages.len() {
            done = status.items.done;
        }
        if state == "finished" && status.state != "finished" {
            state = status.state;
        }
        if code == exit_codes::SUCCESS {
            code = crate::commands::status::status_code(
                &read.journal,
                status.supervisor_pid.is_some(),
            );
        }
        let mut value = serde_json::to_value(status)
            .map_err(|e| SupervisorError::io("cannot encode the status")(e.into()))?;
        value["name"] = json!(stage.name);
        value["items"]["in"] = json!(read.items_in);
        listed.push(value);
    }
    let value = json!({
        "state": state,
        "run_dir": dir.display().to_string(),
        "items": {"total": total.unwrap_or(0), "done": done, "failed": failed},
        "stages": listed,
    });
    Ok((value, code))
}

/// `report --html FILE` on a pipeline: FILE itself, every stage on one page
/// (`reporting::pipeline_page`), beside each stage's own page.
pub fn write_pipeline_page(dir: &Path, file: &Path) -> Result<()> {
    let job = crate::run::existing::frozen_job(&RunDir::new(dir))?;
    let stages = read_stages(dir)?;
    let (status, _) = status_of(dir, &stages)?;
    let state = status["state"].as_str().unwrap_or("unknown").to_owned();
    let started: Vec<(&StageNow, &StageRead, String, Timeline)> = stages
        .iter()
        .filter_map(|stage| {
            let read = stage.read.as_ref()?;
            let page = stage_page(file, &stage.dir)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some((stage, read, page, read_timeline(&read.journal)))
        })
        .collect();
    let rows: Vec<StageRow<'_>> = started
        .iter()
        .map(|(stage, read, page, timeline)| StageRow {
            name: &stage.name,
            page,
            status: &read.status,
            timeline,
            items_in: read.items_in,
        })
        .collect();
    let html = crate::reporting::pipeline_page::render(&job.name, &state, &rows);
    shared::atomic::write_bytes_atomic(file, html.as_bytes()).map_err(SupervisorError::io(format!(
        "cannot write {}",
        file.display()
    )))
}

/// `report --html FILE` on a pipeline: one page per stage, FILE's name with
/// `_NAME` before its extension.
pub fn stage_page(file: &Path, stage_dir: &Path) -> PathBuf {
    let stage = stage_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = file
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    file.with_file_name(format!("{stem}_{stage}{extension}"))
}
