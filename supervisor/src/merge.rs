//! The merge steps of a run, driven by the plan: agent files → orch_NN.jsonl,
//! orchestrator files → segment_NN.jsonl, segment files → final.json (and the
//! job's output.path). Each step checks its inputs; problems come back with
//! file and line, reported once, at the lowest level where they appear. A file
//! an earlier step wrote and stamped is copied instead of parsed again while it
//! is unchanged (see shared::merge).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use shared::ids::IdKey;
use shared::job::{Job, OutputFormat};
use shared::merge::{merge_files, FileStamp, Framing, MergeInput, MergeSummary};
use shared::plan::{AgentPlan, OrchestratorPlan, Plan, SegmentPlan};
use shared::rundir::RunDir;
use shared::validate::{Problem, ProblemKind};

use crate::run::journal::read_journal;

/// Merges the orchestrator files of a segment (in parallel), then the segment
/// file. Returns the problems found and the segment file's stamp.
pub fn merge_segment(
    run: &RunDir,
    plan: &Plan,
    segment: &SegmentPlan,
) -> io::Result<(Vec<Problem>, FileStamp)> {
    let id_field = plan.id_field.as_str();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(segment.orchestrators.len())
        .max(1);
    let chunk = segment.orchestrators.len().div_ceil(workers).max(1);
    let results: Vec<io::Result<Vec<MergeSummary>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = segment
            .orchestrators
            .chunks(chunk)
            .map(|orchestrators| {
                scope.spawn(move || {
                    orchestrators
                        .iter()
                        .map(|orchestrator| merge_orchestrator(run, orchestrator, id_field))
                        .collect::<io::Result<Vec<MergeSummary>>>()
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
    let mut stamps = Vec::new();
    for result in results {
        for summary in result? {
            problems.extend(summary.problems);
            stamps.push(summary.stamp);
        }
    }
    let inputs: Vec<MergeInput<'_>> = segment
        .orchestrators
        .iter()
        .zip(stamps)
        .map(|(o, stamp)| MergeInput {
            path: run.orchestrator_file(segment.number, o.number),
            items: o.item_count(),
            ids: Box::new(move || ids_of(run, o.agents.iter())),
            stamp,
        })
        .collect();
    let summary = merge_files(
        &inputs,
        id_field,
        &run.segment_file(segment.number),
        Framing::Jsonl,
    )?;
    let stamp = summary.stamp.unwrap_or(FileStamp {
        bytes: 0,
        modified_ns: 0,
        records: 0,
    });
    problems.extend(new_problems(&summary));
    Ok((problems, stamp))
}

/// The ids of some agents' items, in plan order, from their task files.
pub fn ids_of<'p>(
    run: &RunDir,
    agents: impl Iterator<Item = &'p AgentPlan>,
) -> io::Result<Vec<IdKey>> {
    let mut ids = Vec::new();
    for agent in agents {
        ids.extend(run.agent_ids(agent.at)?);
    }
    Ok(ids)
}

/// Agent files → orch_NN.jsonl. Agent files are always checked record by record.
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
            items: a.items,
            ids: Box::new(move || run.agent_ids(a.at)),
            stamp: None,
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
/// Segment files are trusted as their "merged" events in events.jsonl stamped them.
pub fn merge_final(
    run: &RunDir,
    plan: &Plan,
    job: &Job,
) -> io::Result<(MergeSummary, Vec<Problem>)> {
    let output = job
        .settings
        .output
        .path
        .as_ref()
        .map(|p| (job.resolve(p), job.settings.output.format));
    let stamps = segment_stamps(run)?;
    let inputs: Vec<MergeInput<'_>> = plan
        .segments
        .iter()
        .map(|s| MergeInput {
            path: run.segment_file(s.number),
            items: s.item_count(),
            ids: Box::new(move || ids_of(run, s.agents())),
            stamp: stamps.get(&s.number).copied(),
        })
        .collect();
    let summary = merge_files(
        &inputs,
        &plan.id_field,
        &run.final_json(),
        Framing::JsonArray,
    )?;
    if let Some((path, format)) = &output {
        let (path, format) = (path.as_path(), *format);
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
    let problems = new_problems(&summary);
    Ok((summary, problems))
}

/// Problems a higher-level merge finds that the level below did not already
/// report: ids missing from a merged file were reported where they went missing.
fn new_problems(summary: &MergeSummary) -> Vec<Problem> {
    summary
        .problems
        .iter()
        .filter(|p| !matches!(p.kind, ProblemKind::Missing { .. }))
        .cloned()
        .collect()
}

/// The stamp of each segment file, from the last "merged" event of each
/// segment in events.jsonl.
pub fn segment_stamps(run: &RunDir) -> io::Result<HashMap<usize, FileStamp>> {
    Ok(read_journal(&run.events())?.history.segment_stamps)
}

/// A merged file is up to date when it exists and is newer than every one of
/// its inputs (which all exist): merging again would write the same bytes.
fn up_to_date(output: &Path, inputs: &[PathBuf]) -> bool {
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
    let orchestrator_files: Vec<PathBuf> = segment
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
                let agents: Vec<PathBuf> =
                    o.agents.iter().map(|a| run.agent_output(a.at)).collect();
                up_to_date(file, &agents)
            });
    orchestrators_fresh && up_to_date(&run.segment_file(segment.number), &orchestrator_files)
}

/// final.json is newer than every segment file (and they are all up to date).
pub fn final_up_to_date(run: &RunDir, plan: &Plan) -> bool {
    let segment_files: Vec<PathBuf> = plan
        .segments
        .iter()
        .map(|s| run.segment_file(s.number))
        .collect();
    plan.segments.iter().all(|s| segment_up_to_date(run, s))
        && up_to_date(&run.final_json(), &segment_files)
}
