//! Pipelines: `[[stage]]` entries instead of `[agent]`. The stages must form a
//! chain (one first stage, each stage at most one upstream and one downstream).
//! Every stage runs as an ordinary one-stage job derived from the pipeline's
//! text, so all code reading `job.settings.agent` works per stage unchanged.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::load::{locate_in_stage, Job, JobError, JobFileError};
use super::settings::{AgentSettings, LayoutSettings};

/// One `[[stage]]` of a pipeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageSettings {
    pub name: String,
    /// The stage whose records are this stage's items.
    pub after: Option<String>,
    /// Wait for the whole upstream stage (always so today: see the README).
    #[serde(default)]
    pub barrier: bool,
    #[serde(default)]
    pub layout: LayoutSettings,
    #[serde(default)]
    pub agent: AgentSettings,
}

/// The directory of a stage inside the run directory.
pub fn stage_dir_name(stage: &str) -> String {
    format!("stage_{stage}")
}

impl Job {
    /// Whether the job is a pipeline of `[[stage]]`s.
    pub fn is_pipeline(&self) -> bool {
        !self.settings.stages.is_empty()
    }

    /// The stages in the order they run (checked to be a chain at load).
    pub fn stage_chain(&self) -> Vec<&StageSettings> {
        let stages = &self.settings.stages;
        let mut chain: Vec<&StageSettings> = stages
            .iter()
            .find(|s| s.after.is_none())
            .into_iter()
            .collect();
        while let Some(last) = chain.last() {
            match stages
                .iter()
                .find(|s| s.after.as_deref() == Some(&last.name))
            {
                Some(next) if chain.len() <= stages.len() => chain.push(next),
                _ => break,
            }
        }
        chain
    }

    /// Stage `index` of the chain as a one-stage job: the pipeline's shared
    /// tables, the stage's `agent` and `layout`, and as input the upstream
    /// stage's final.json (`upstream`; the first stage keeps `[input]`). Only
    /// the last stage keeps `output.path`.
    pub fn stage_job(&self, index: usize, upstream: Option<&Path>) -> Result<Job, JobError> {
        let chain = self.stage_chain();
        let Some(stage) = chain.get(index) else {
            let message = format!("the job has {} stage(s), not {}", chain.len(), index + 1);
            return Err(JobError::Invalid(Box::new(
                self.error_at(0, "stage", &message),
            )));
        };
        let mut table: toml::Table = self
            .text
            .parse()
            .map_err(|e| JobError::Invalid(Box::new(self.error_at(0, "", &format!("{e}")))))?;
        let stage_table = stage_table(&table, &stage.name).unwrap_or_default();
        table.remove("stage");
        table.remove("notify");
        table.insert(
            "name".into(),
            format!("{}-{}", self.name, stage.name).into(),
        );
        for key in ["agent", "layout"] {
            if let Some(value) = stage_table.get(key) {
                table.insert(key.into(), value.clone());
            }
        }
        if let Some(upstream) = upstream {
            let mut input = toml::Table::new();
            input.insert("path".into(), upstream.display().to_string().into());
            input.insert("format".into(), "json".into());
            input.insert("id".into(), self.settings.input.id.clone().into());
            table.insert("input".into(), input.into());
        }
        if index + 1 < chain.len() {
            table.remove("output");
        }
        let text = toml::to_string(&table)
            .map_err(|e| JobError::Invalid(Box::new(self.error_at(0, "", &format!("{e}")))))?;
        let stage_index = self
            .settings
            .stages
            .iter()
            .position(|s| s.name == stage.name)
            .unwrap_or(0);
        Job::from_text(&self.path, text).map_err(|error| match error {
            // Point at the user's file, not at the derived text.
            JobError::Invalid(e) => {
                let dotted = e.key.clone().unwrap_or_default();
                let (table, key) = match dotted.split_once('.') {
                    Some((table, key)) => (format!("stage.{table}"), key.to_owned()),
                    None => ("stage".to_owned(), dotted.clone()),
                };
                let message = format!("stage {:?}: {}", stage.name, e.message);
                JobError::Invalid(Box::new(locate_in_stage(
                    &self.path,
                    &self.text,
                    stage_index,
                    &table,
                    &key,
                    message,
                )))
            }
            other => other,
        })
    }

    fn error_at(&self, stage: usize, table: &str, message: &str) -> JobFileError {
        locate_in_stage(&self.path, &self.text, stage, table, "", message.to_owned())
    }
}

fn stage_table(table: &toml::Table, name: &str) -> Option<toml::Table> {
    table
        .get("stage")?
        .as_array()?
        .iter()
        .filter_map(|s| s.as_table())
        .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))
        .cloned()
}

/// The checks of a pipeline: no `[agent]`/`[layout]` beside the stages,
/// unique names, `after` naming a stage, a chain without cycles; then every
/// stage as its own job.
pub(super) fn check(job: &Job) -> Result<(), JobError> {
    let invalid = |stage: usize, table: &str, key: &str, message: String| {
        JobError::Invalid(Box::new(locate_in_stage(
            &job.path, &job.text, stage, table, key, message,
        )))
    };
    let raw: toml::Table = job.text.parse().unwrap_or_default();
    for table in ["agent", "layout"] {
        if raw.contains_key(table) {
            return Err(JobError::Invalid(Box::new(super::load::locate_table(
                &job.path,
                &job.text,
                table,
                format!("a job has either [{table}] or [[stage]]s, not both: put it in [stage.{table}] of each stage"),
            ))));
        }
    }
    let stages = &job.settings.stages;
    for (index, stage) in stages.iter().enumerate() {
        let name = &stage.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                index,
                "stage",
                "name",
                format!("{name:?} cannot name a stage folder; use letters, digits, '-' and '_'"),
            ));
        }
        if stages[..index].iter().any(|s| &s.name == name) {
            return Err(invalid(
                index,
                "stage",
                "name",
                format!("two stages are named {name:?}; stage names must differ"),
            ));
        }
    }
    for (index, stage) in stages.iter().enumerate() {
        if let Some(after) = &stage.after {
            if !stages.iter().any(|s| &s.name == after) {
                return Err(invalid(
                    index,
                    "stage",
                    "after",
                    format!(
                        "stage {:?} comes after {after:?}, but no stage is named {after:?}",
                        stage.name
                    ),
                ));
            }
            if after == &stage.name {
                return Err(invalid(
                    index,
                    "stage",
                    "after",
                    format!("stage {:?} comes after itself: a cycle", stage.name),
                ));
            }
            let downstream = stages
                .iter()
                .filter(|s| s.after.as_ref() == Some(after))
                .count();
            if downstream > 1 {
                return Err(invalid(index, "stage", "after", format!("two stages come after {after:?}; a pipeline is a chain today (each stage has at most one downstream)")));
            }
        }
    }
    let first: Vec<usize> = (0..stages.len())
        .filter(|i| stages[*i].after.is_none())
        .collect();
    match first.as_slice() {
        [] => return Err(invalid(0, "stage", "after", "every stage comes after another: a cycle (the first stage has no `after`)".into())),
        [_] => {}
        [_, second, ..] => return Err(invalid(*second, "stage", "name", format!("stages {:?} and {:?} both have no `after`; a pipeline is a chain with one first stage", stages[first[0]].name, stages[*second].name))),
    }
    let chain = job.stage_chain();
    if chain.len() < stages.len() {
        let stuck = stages
            .iter()
            .position(|s| !chain.iter().any(|c| c.name == s.name))
            .unwrap_or(0);
        return Err(invalid(
            stuck,
            "stage",
            "after",
            format!(
                "stage {:?} is part of a cycle: following `after` never reaches the first stage",
                stages[stuck].name
            ),
        ));
    }
    for index in 0..chain.len() {
        let upstream = (index > 0).then(|| Path::new("upstream.json"));
        job.stage_job(index, upstream)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "stages_tests.rs"]
mod tests;
