//! `nightshift merge DIR [--segment N]`: redo merges from the saved agent files
//! without generating anything.

use std::path::Path;

use shared::exit_codes;
use shared::journal::Event;
use shared::validate::Problem;

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::merge::{merge_final, merge_segment};
use crate::run::existing::{frozen_job, open_run};
use crate::run::journal::EventLog;
use crate::run::lock::RunLock;

pub fn merge(dir: &Path, only_segment: Option<usize>, console: &Console) -> Result<i32> {
    if crate::run::pipeline::is_pipeline_dir(dir) {
        return crate::commands::stages::merge_stages(dir, |stage| {
            merge(stage, only_segment, console)
        });
    }
    let (run, plan) = open_run(dir)?;
    let job = frozen_job(&run)?;
    let segments: Vec<_> = match only_segment {
        Some(n) => {
            let segment = plan
                .segments
                .iter()
                .find(|s| s.number == n)
                .ok_or_else(|| {
                    SupervisorError::Unsupported(format!(
                        "the run has segments 1 to {}; there is no segment {n}",
                        plan.segments.len()
                    ))
                })?;
            vec![segment]
        }
        None => plan.segments.iter().collect(),
    };
    let mut problems: Vec<Problem> = Vec::new();
    let _lock = RunLock::acquire(&run)?;
    let mut events =
        EventLog::open(&run.events()).map_err(SupervisorError::io("cannot open events.jsonl"))?;
    for segment in segments {
        let started = std::time::Instant::now();
        let (found, stamp) = merge_segment(&run, &plan, segment).map_err(SupervisorError::io(
            format!("cannot merge segment {}", segment.number),
        ))?;
        let seconds = started.elapsed().as_secs_f64();
        let merged = Event::merged(segment.number, stamp, found.len(), seconds);
        events
            .record(None, &merged)
            .map_err(SupervisorError::io("cannot append to events.jsonl"))?;
        console.line(&format!(
            "merged segment_{:02}.jsonl ({} problems)",
            segment.number,
            found.len()
        ));
        problems.extend(found);
    }
    let (summary, found) = merge_final(&run, &plan, &job)
        .map_err(SupervisorError::io("cannot write the final output"))?;
    problems.extend(found);
    for problem in &problems {
        console.problem(problem);
    }
    println!(
        "final.json: {} of {} items{}",
        summary.records,
        plan.items_total,
        if summary.missing() > 0 {
            format!(", {} missing", summary.missing())
        } else {
            String::new()
        }
    );
    let complete = summary.records == plan.items_total && !problems.iter().any(Problem::is_error);
    Ok(if complete {
        exit_codes::SUCCESS
    } else {
        exit_codes::INCOMPLETE
    })
}
