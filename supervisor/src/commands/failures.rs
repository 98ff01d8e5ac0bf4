//! `nightshift failures RUN [--json] [--reason TEXT] [--ids]`: the items that
//! failed (and, once the run is over, every item still missing) with their
//! reasons; `--ids` prints only the ids, one per line, for a script.

use std::path::Path;

use shared::exit_codes;

use crate::error::{Result, SupervisorError};
use crate::reporting::failures::{by_reason, item_report, FailedItem, Scope};
use crate::run::existing::{frozen_job, open_run};
use crate::run::journal::read_journal;
use crate::run::lock;

pub struct FailuresRequest<'a> {
    pub dir: &'a Path,
    pub json: bool,
    /// Only the items whose reason contains this text.
    pub reason: Option<&'a str>,
    pub ids: bool,
}

pub fn failures(request: &FailuresRequest<'_>) -> Result<i32> {
    if crate::run::pipeline::is_pipeline_dir(request.dir) {
        // Each stage's failed items, under the stage's name.
        return crate::commands::stages::each_stage(
            request.dir,
            !request.json && !request.ids,
            |stage| {
                failures(&FailuresRequest {
                    dir: stage,
                    json: request.json,
                    reason: request.reason,
                    ids: request.ids,
                })
            },
        );
    }
    let (run, plan) = open_run(request.dir)?;
    let journal = read_journal(&run.events())?;
    let job = frozen_job(&run).ok();
    // While a supervisor works, a missing item may still come: only the items
    // their agents gave up on count; after it, every missing item does.
    let scope = if lock::holder(&run).is_some() {
        Scope::Reported
    } else {
        Scope::Missing
    };
    let mut failed = item_report(
        &run,
        &plan,
        &journal,
        job.as_ref().map(|j| &j.settings),
        scope,
        usize::MAX,
    )
    .failed;
    if let Some(text) = request.reason {
        failed.retain(|item| item.reason.contains(text));
    }
    if request.ids {
        for item in &failed {
            println!("{}", item.key.plain());
        }
    } else if request.json {
        let text = serde_json::to_string_pretty(&failed)
            .map_err(|e| SupervisorError::io("cannot encode the failures")(e.into()))?;
        println!("{text}");
    } else {
        print!("{}", describe(&failed));
    }
    Ok(exit_codes::SUCCESS)
}

/// Grouped by reason, the largest group first.
fn describe(failed: &[FailedItem]) -> String {
    if failed.is_empty() {
        return "no failed items\n".to_owned();
    }
    let mut groups: Vec<(String, usize)> = by_reason(failed).into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut text = format!("{} failed item(s)\n", failed.len());
    for (kind, count) in groups {
        text.push_str(&format!("\n{kind} ({count}):\n"));
        for item in failed
            .iter()
            .filter(|i| crate::reporting::failures::reason_kind(&i.reason) == kind)
        {
            text.push_str(&format!(
                "  {}  {} (attempts {}, {})\n",
                item.key.plain(),
                item.reason,
                item.attempts,
                item.agent
            ));
        }
    }
    text
}
