//! `nightshift plan JOB.toml [--json]`: the plan of a job; nothing is started.

use std::collections::HashMap;
use std::path::Path;

use shared::ids::IdKey;
use shared::plan::{write_plan_json, Plan};

use crate::error::{Result, SupervisorError};
use crate::reporting::estimate::estimate_line;
use crate::reporting::sample::sample_if_asked;
use crate::run::setup::{plan_loaded, PlannedJob};

pub fn plan(job_path: &Path, as_json: bool) -> Result<i32> {
    let job = shared::job::Job::load(job_path)?;
    if !job.is_pipeline() {
        return show(plan_loaded(job)?, as_json);
    }
    // Every stage planned over the first stage's items: an upper bound for
    // the later stages, whose items are the records that reach them.
    for (index, stage) in job.stage_chain().iter().enumerate() {
        if !as_json {
            println!("stage {}: {}", index + 1, stage.name);
        }
        show(plan_loaded(job.stage_job(index, None)?)?, as_json)?;
    }
    Ok(shared::exit_codes::SUCCESS)
}

fn show(planned: PlannedJob, as_json: bool) -> Result<i32> {
    if as_json {
        let mut ids = planned
            .input
            .items_with_ids()?
            .map(|item| item.map(|(id, _)| id));
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        write_plan_json(&planned.plan, &mut out, |agent| {
            ids.by_ref()
                .take(agent.items)
                .collect::<std::result::Result<Vec<IdKey>, _>>()
                .map_err(std::io::Error::other)
        })
        .and_then(|()| std::io::Write::flush(&mut out))
        .map_err(SupervisorError::io("cannot write the plan"))?;
    } else {
        println!(
            "job {}: {} items from {} (id field `{}`)",
            planned.job.name,
            planned.plan.items_total,
            planned.input.path.display(),
            planned.plan.id_field
        );
        print!(
            "{}",
            describe(&planned.plan, &ends_of_orchestrators(&planned)?)
        );
        let sample = sample_if_asked(&planned.job, &planned.input);
        let settings = &planned.job.settings;
        if let Some(line) = estimate_line(settings, &planned.input, sample.as_ref()) {
            println!("{line}");
        }
    }
    Ok(shared::exit_codes::SUCCESS)
}

/// A readable plan: totals, then one line per segment and per orchestrator.
pub fn describe(plan: &Plan, ids: &HashMap<usize, IdKey>) -> String {
    let sizes: Vec<usize> = plan.agents().map(|a| a.items).collect();
    let (min, max) = (
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0),
    );
    let per_agent = if min == max {
        format!("{min}")
    } else {
        format!("{min}–{max}")
    };
    let mut text = format!(
        "{} segments, {} orchestrators, {} agents, {per_agent} items per agent\n",
        plan.segments.len(),
        plan.orchestrator_count(),
        plan.agent_count()
    );
    for segment in &plan.segments {
        text.push_str(&format!(
            "segment_{:02}: {} orchestrators, {} agents, {} items\n",
            segment.number,
            segment.orchestrators.len(),
            segment.agents().count(),
            segment.item_count()
        ));
        for orchestrator in &segment.orchestrators {
            let first = orchestrator
                .agents
                .first()
                .and_then(|a| ids.get(&a.first_item))
                .map(IdKey::as_str);
            let last = orchestrator
                .agents
                .last()
                .and_then(|a| ids.get(&(a.first_item + a.items).checked_sub(1)?))
                .map(IdKey::as_str);
            text.push_str(&format!(
                "  orch_{:02}: {} agents, {} items, ids {} … {}\n",
                orchestrator.number,
                orchestrator.agents.len(),
                orchestrator.item_count(),
                first.unwrap_or("?"),
                last.unwrap_or("?")
            ));
        }
    }
    text
}

/// The first and last id of every orchestrator, by item index: one more pass
/// over the input, keeping only these.
fn ends_of_orchestrators(planned: &PlannedJob) -> Result<HashMap<usize, IdKey>> {
    let mut wanted = std::collections::HashSet::new();
    for orchestrator in planned.plan.segments.iter().flat_map(|s| &s.orchestrators) {
        if let (Some(first), Some(last)) = (orchestrator.agents.first(), orchestrator.agents.last())
        {
            wanted.insert(first.first_item);
            wanted.insert((last.first_item + last.items).saturating_sub(1));
        }
    }
    let mut found = HashMap::new();
    for (index, item) in planned.input.items_with_ids()?.enumerate() {
        if wanted.contains(&index) {
            found.insert(index, item?.0);
        }
    }
    Ok(found)
}
