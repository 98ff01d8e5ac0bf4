//! `nightshift validate DIR|FILE`: coverage, duplicates and JSON of a run
//! directory (every level), of one of its files, or of any record file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use shared::exit_codes;
use shared::ids::IdKey;
use shared::input::json_array_elements;
use shared::plan::Plan;
use shared::records::{record_id, Lines};
use shared::rundir::RunDir;
use shared::validate::{check_json_array, check_jsonl, Problem, ProblemKind};

use crate::console::Console;
use crate::error::{Result, SupervisorError};
use crate::merge::ids_of;
use crate::run::existing::open_run;

pub fn validate(path: &Path, id_field: &str, console: &Console) -> Result<i32> {
    if crate::run::pipeline::is_pipeline_dir(path) {
        return crate::commands::stages::each_stage(path, true, |stage| {
            validate_run(stage, console)
        });
    }
    if path.is_dir() {
        return validate_run(path, console);
    }
    if !path.exists() {
        return Err(SupervisorError::Unsupported(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let absolute = std::path::absolute(path).map_err(SupervisorError::io(format!(
        "cannot resolve {}",
        path.display()
    )))?;
    // A file inside a run directory is checked against the ids its level must hold.
    for dir in absolute.ancestors().skip(1).take(3) {
        if dir.join("plan.json").is_file() {
            let (run, plan) = open_run(dir)?;
            if let Some(problems) = check_run_file(&run, &plan, &absolute)? {
                return Ok(conclude(&problems, console));
            }
        }
    }
    let problems = check_standalone(&absolute, id_field)?;
    Ok(conclude(&problems, console))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SupervisorError {
    SupervisorError::io(format!("cannot read {}", path.display()))
}

fn conclude(problems: &[Problem], console: &Console) -> i32 {
    for problem in problems {
        console.problem(problem);
    }
    let errors = problems.iter().filter(|p| p.is_error()).count();
    if errors == 0 {
        println!("valid");
        exit_codes::SUCCESS
    } else {
        println!("{errors} problem(s)");
        exit_codes::INCOMPLETE
    }
}

/// Every level of a run: agent files, then the merged files that exist.
fn validate_run(dir: &Path, console: &Console) -> Result<i32> {
    let (run, plan) = open_run(dir)?;
    let id_field = plan.id_field.as_str();
    let mut problems = Vec::new();
    let mut saved = 0;
    for agent in plan.agents() {
        let path = run.agent_output(agent.at);
        let ids = run
            .agent_ids(agent.at)
            .map_err(io_error(&run.agent_task(agent.at)))?;
        let checked = check_jsonl(&path, &ids, id_field, false).map_err(io_error(&path))?;
        saved += checked.records.len();
        problems.extend(checked.problems);
    }
    println!("agent files: {saved} of {} items saved", plan.items_total);
    let mut merged_files = 0;
    for segment in &plan.segments {
        for orchestrator in &segment.orchestrators {
            let path = run.orchestrator_file(segment.number, orchestrator.number);
            if path.exists() {
                let ids = ids_of(&run, orchestrator.agents.iter()).map_err(io_error(&path))?;
                problems.extend(
                    check_jsonl(&path, &ids, id_field, true)
                        .map_err(io_error(&path))?
                        .problems,
                );
                merged_files += 1;
            }
        }
        let path = run.segment_file(segment.number);
        if path.exists() {
            let ids = ids_of(&run, segment.agents()).map_err(io_error(&path))?;
            problems.extend(
                check_jsonl(&path, &ids, id_field, true)
                    .map_err(io_error(&path))?
                    .problems,
            );
            merged_files += 1;
        }
    }
    println!("merged files checked: {merged_files}");
    let final_path = run.final_json();
    if final_path.exists() {
        let all = ids_of(&run, plan.agents()).map_err(io_error(&final_path))?;
        problems
            .extend(check_json_array(&final_path, &all, id_field).map_err(io_error(&final_path))?);
    } else {
        problems.push(Problem {
            path: final_path,
            line: None,
            kind: ProblemKind::Unreadable(
                "not written yet (the run has not finished; `nightshift merge` writes it)".into(),
            ),
        });
    }
    Ok(conclude(&problems, console))
}

/// Checks a file of a run against its level; None when the file is not one
/// of the run's record files.
fn check_run_file(run: &RunDir, plan: &Plan, path: &Path) -> Result<Option<Vec<Problem>>> {
    let id_field = plan.id_field.as_str();
    if path == run.final_json() {
        let all = ids_of(run, plan.agents()).map_err(io_error(path))?;
        return Ok(Some(
            check_json_array(path, &all, id_field).map_err(io_error(path))?,
        ));
    }
    let mut expected: Option<(Vec<IdKey>, bool)> = None;
    for segment in &plan.segments {
        if path == run.segment_file(segment.number) {
            expected = Some((ids_of(run, segment.agents()).map_err(io_error(path))?, true));
        }
        for orchestrator in &segment.orchestrators {
            if path == run.orchestrator_file(segment.number, orchestrator.number) {
                let ids = ids_of(run, orchestrator.agents.iter()).map_err(io_error(path))?;
                expected = Some((ids, true));
            }
            for agent in &orchestrator.agents {
                if path == run.agent_output(agent.at) {
                    let ids = run.agent_ids(agent.at).map_err(io_error(path))?;
                    expected = Some((ids, false));
                }
            }
        }
    }
    match expected {
        Some((ids, ordered)) => Ok(Some(
            check_jsonl(path, &ids, id_field, ordered)
                .map_err(io_error(path))?
                .problems,
        )),
        None => Ok(None),
    }
}

/// A record file outside any run: valid JSON objects, each with a unique id.
fn check_standalone(path: &Path, id_field: &str) -> Result<Vec<Problem>> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let problem = |line: Option<usize>, kind| Problem {
        path: PathBuf::from(path),
        line,
        kind,
    };
    let mut problems = Vec::new();
    let mut first_line: HashMap<IdKey, usize> = HashMap::new();
    let mut note = |id: IdKey, line: usize, problems: &mut Vec<Problem>| {
        if let Some(first) = first_line.get(&id) {
            problems.push(problem(
                Some(line),
                ProblemKind::Duplicate {
                    id,
                    first_line: *first,
                },
            ));
        } else {
            first_line.insert(id, line);
        }
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        match json_array_elements(path, &bytes) {
            Ok(elements) => {
                for (line, value) in elements {
                    match record_id(value.get().as_bytes(), id_field) {
                        Ok(id) => note(id, line, &mut problems),
                        Err(e) => problems.push(problem(Some(line), ProblemKind::Invalid(e))),
                    }
                }
            }
            Err(e) => problems.push(problem(None, ProblemKind::Unreadable(e.to_string()))),
        }
    } else {
        let lines = Lines::new(&bytes);
        for (line, range) in lines.iter() {
            match record_id(&bytes[range], id_field) {
                Ok(id) => note(id, line, &mut problems),
                Err(e) => problems.push(problem(Some(line), ProblemKind::Invalid(e))),
            }
        }
        if !lines.torn.is_empty() {
            problems.push(problem(
                Some(lines.torn_line_number()),
                ProblemKind::TornLine,
            ));
        }
    }
    println!("{}: {} records", path.display(), first_line.len());
    Ok(problems)
}
