//! The merge steps of a run, driven by the plan: agent files → orch_NN.jsonl,
//! orchestrator files → segment_NN.jsonl, segment files → final.json (and the
//! job's output.path). Each step checks its inputs; problems come back with
//! file and line, reported once, at the lowest level where they appear.

use std::io;
use std::path::Path;

use shared::ids::IdKey;
use shared::job::OutputFormat;
use shared::merge::{merge_files, Framing, MergeInput, MergeSummary};
use shared::plan::{OrchestratorPlan, Plan, SegmentPlan};
use shared::rundir::RunDir;
use shared::validate::{Problem, ProblemKind};

/// Merges the orchestrator files of a segment (in parallel), then the segment file.
pub fn merge_segment(run: &RunDir, plan: &Plan, segment: &SegmentPlan) -> io::Result<Vec<Problem>> {
    let id_field = plan.id_field.as_str();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(segment.orchestrators.len())
        .max(1);
    let chunk = segment.orchestrators.len().div_ceil(workers);
    let results: Vec<io::Result<Vec<Problem>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = segment
            .orchestrators
            .chunks(chunk.max(1))
            .map(|orchestrators| {
                scope.spawn(move || {
                    let mut problems = Vec::new();
                    for orchestrator in orchestrators {
                        problems.extend(merge_orchestrator(run, orchestrator, id_field)?.problems);
                    }
                    Ok(problems)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("merge thread panicked")))
            })
            .collect()
    });
    let mut problems = Vec::new();
    for result in results {
        problems.extend(result?);
    }
    let ids: Vec<Vec<IdKey>> = segment.orchestrators.iter().map(orchestrator_ids).collect();
    let inputs: Vec<MergeInput<'_>> = segment
        .orchestrators
        .iter()
        .zip(&ids)
        .map(|(o, ids)| MergeInput {
            path: run.orchestrator_file(segment.number, o.number),
            ids,
        })
        .collect();
    let summary = merge_files(
        &inputs,
        id_field,
        &run.segment_file(segment.number),
        Framing::Jsonl,
    )?;
    problems.extend(new_problems(summary));
    Ok(problems)
}

fn orchestrator_ids(orchestrator: &OrchestratorPlan) -> Vec<IdKey> {
    orchestrator
        .agents
        .iter()
        .flat_map(|a| a.ids.iter().cloned())
        .collect()
}

/// Agent files → orch_NN.jsonl.
pub fn merge_orchestrator(
    run: &RunDir,
    orchestrator: &OrchestratorPlan,
    id_field: &str,
) -> io::Result<MergeSummary> {
    let inputs: Vec<MergeInput<'_>> = orchestrator
        .agents
        .iter()
        .map(|a| MergeInput {
            path: run.agent_output(a.at),
            ids: &a.ids,
        })
        .collect();
    merge_files(
        &inputs,
        id_field,
        &run.orchestrator_file(orchestrator.segment, orchestrator.number),
        Framing::Jsonl,
    )
}

/// Segment files → final.json (a JSON array), and the job's output.path.
pub fn merge_final(
    run: &RunDir,
    plan: &Plan,
    output: Option<(&Path, OutputFormat)>,
) -> io::Result<(MergeSummary, Vec<Problem>)> {
    let ids: Vec<Vec<IdKey>> = plan
        .segments
        .iter()
        .map(|s| s.ids().cloned().collect())
        .collect();
    let inputs: Vec<MergeInput<'_>> = plan
        .segments
        .iter()
        .zip(&ids)
        .map(|(s, ids)| MergeInput {
            path: run.segment_file(s.number),
            ids,
        })
        .collect();
    let summary = merge_files(
        &inputs,
        &plan.id_field,
        &run.final_json(),
        Framing::JsonArray,
    )?;
    if let Some((path, format)) = output {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        match format {
            OutputFormat::Json => shared::atomic::copy_atomic(&run.final_json(), path)?,
            OutputFormat::Jsonl => {
                merge_files(&inputs, &plan.id_field, path, Framing::Jsonl)?;
            }
        }
    }
    let problems = new_problems_ref(&summary);
    Ok((summary, problems))
}

/// Problems a higher-level merge finds that the level below did not already
/// report: ids missing from a merged file were reported where they went missing.
fn new_problems(summary: MergeSummary) -> Vec<Problem> {
    summary
        .problems
        .into_iter()
        .filter(|p| {
            !matches!(
                p.kind,
                ProblemKind::Missing { .. } | ProblemKind::MissingFile
            )
        })
        .collect()
}

fn new_problems_ref(summary: &MergeSummary) -> Vec<Problem> {
    new_problems(MergeSummary {
        records: summary.records,
        problems: summary.problems.clone(),
    })
}

/// A merged file is up to date when it exists and is newer than every one of
/// its inputs (which all exist): merging again would write the same bytes.
fn up_to_date(output: &Path, inputs: &[std::path::PathBuf]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(merged_at) = modified(output) else {
        return false;
    };
    inputs
        .iter()
        .all(|input| modified(input).is_some_and(|at| at <= merged_at))
}

/// The segment file and its orchestrator files are newer than their inputs.
pub fn segment_up_to_date(run: &RunDir, segment: &SegmentPlan) -> bool {
    let orchestrator_files: Vec<std::path::PathBuf> = segment
        .orchestrators
        .iter()
        .map(|o| run.orchestrator_file(segment.number, o.number))
        .collect();
    let orchestrators_fresh =
        segment
            .orchestrators
            .iter()
            .zip(&orchestrator_files)
            .all(|(o, file)| {
                let agents: Vec<std::path::PathBuf> =
                    o.agents.iter().map(|a| run.agent_output(a.at)).collect();
                up_to_date(file, &agents)
            });
    orchestrators_fresh && up_to_date(&run.segment_file(segment.number), &orchestrator_files)
}

/// final.json is newer than every segment file (and they are all up to date).
pub fn final_up_to_date(run: &RunDir, plan: &Plan) -> bool {
    let segment_files: Vec<std::path::PathBuf> = plan
        .segments
        .iter()
        .map(|s| run.segment_file(s.number))
        .collect();
    plan.segments.iter().all(|s| segment_up_to_date(run, s))
        && up_to_date(&run.final_json(), &segment_files)
}
