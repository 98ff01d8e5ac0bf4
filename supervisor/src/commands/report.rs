//! `nightshift report DIR [--html FILE]`: the run's report — on screen, and as
//! a self-contained HTML page with --html. Works on a live or a dead run: the
//! timeline comes from events.jsonl, memory and missing ids from report.json
//! once the run has written it.

use std::path::Path;

use serde_json::Value;

use shared::exit_codes;

use crate::error::{Result, SupervisorError};
use crate::reporting::html::render;
use crate::reporting::status::run_status;
use crate::reporting::timeline::read_timeline;
use crate::reporting::view::{short_duration, size};
use crate::run::existing::open_run;
use crate::run::journal::read_journal;

pub fn report(dir: &Path, html: Option<&Path>, as_json: bool) -> Result<i32> {
    if crate::run::pipeline::is_pipeline_dir(dir) {
        let code = crate::commands::stages::each_stage(dir, !as_json, |stage| {
            let page = html.map(|file| crate::commands::stages::stage_page(file, stage));
            report(stage, page.as_deref(), as_json)
        })?;
        if let Some(file) = html {
            crate::commands::stages::write_pipeline_page(dir, file)?;
            println!("pipeline page: {}", file.display());
        }
        return Ok(code);
    }
    let (run, plan) = open_run(dir)?;
    let journal = read_journal(&run.events())?;
    let status = run_status(&run, &plan, &journal);
    let timeline = read_timeline(&journal);
    let report: Option<Value> = std::fs::read(run.report_json())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if let Some(path) = html {
        let page = render(&plan, &status, &timeline, report.as_ref());
        shared::atomic::write_bytes_atomic(path, page.as_bytes()).map_err(SupervisorError::io(
            format!("cannot write {}", path.display()),
        ))?;
        println!("report page: {}", path.display());
        return Ok(exit_codes::SUCCESS);
    }
    if as_json {
        // report.json once the run has written it; while it runs, the status.
        let value = match report {
            Some(report) => report,
            None => serde_json::to_value(&status)
                .map_err(|e| SupervisorError::io("cannot encode the status")(e.into()))?,
        };
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| SupervisorError::io("cannot encode the report")(e.into()))?;
        println!("{text}");
        return Ok(exit_codes::SUCCESS);
    }
    println!("{}: {}", status.run_dir, status.state);
    println!(
        "items: {} of {} done, {} failed",
        status.items.done, status.items.total, status.items.failed
    );
    if let (Some(first), Some(last)) = (timeline.first, timeline.last) {
        let span = last.duration_since(first).unwrap_or_default();
        println!("time: {} from first to last event", short_duration(span));
    }
    let mut outcomes: Vec<(String, usize)> = Vec::new();
    for bar in &timeline.bars {
        match outcomes.iter_mut().find(|(o, _)| *o == bar.outcome) {
            Some((_, n)) => *n += 1,
            None => outcomes.push((bar.outcome.clone(), 1)),
        }
    }
    let outcomes: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
    println!(
        "attempts: {} ({})",
        timeline.bars.len(),
        outcomes.join(", ")
    );
    if let Some(memory) = report.as_ref().map(|r| &r["memory"]) {
        if let Some(peak) = memory["peak_total"].as_u64() {
            println!(
                "memory: peak total {} ({})",
                size(peak),
                memory["mode"].as_str().unwrap_or("")
            );
        }
    }
    for bar in timeline
        .bars
        .iter()
        .filter(|b| !matches!(b.outcome.as_str(), "succeeded" | "running"))
    {
        println!("  {} attempt {}: {}", bar.agent, bar.attempt, bar.detail);
    }
    Ok(exit_codes::SUCCESS)
}
