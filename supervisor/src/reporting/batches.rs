//! The provider batches of a run (`agent.llm.mode = "batch"`), as the agents'
//! journals (`agent_NN.batch.jsonl`) tell them: each batch's provider state,
//! its counts and its age, for `status`, the end of a run and `cancel`.

use std::time::SystemTime;

use serde::Serialize;
use shared::batch::{read_batch_lines, summarize};
use shared::plan::{AgentRef, Plan};
use shared::rundir::RunDir;

#[derive(Debug, Clone, Serialize)]
pub struct BatchStatus {
    pub agent: String,
    #[serde(skip)]
    pub at: AgentRef,
    pub batch: String,
    pub provider: String,
    /// The provider's word when last polled ("submitted" before any poll).
    pub state: String,
    pub requests: usize,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub submitted_at: String,
    /// Seconds since it was submitted (None: the time cannot be read).
    pub age_seconds: Option<u64>,
    /// Its results are all saved: nothing of it is left at the provider.
    pub settled: bool,
}

/// Every batch of every agent of the run, in plan order.
pub fn run_batches(run: &RunDir, plan: &Plan) -> Vec<BatchStatus> {
    let now = SystemTime::now();
    let mut found = Vec::new();
    for agent in plan.agents() {
        let lines = read_batch_lines(&run.agent_batches(agent.at));
        for batch in summarize(&lines) {
            let age_seconds = humantime::parse_rfc3339(&batch.submitted_at)
                .ok()
                .and_then(|at| now.duration_since(at).ok())
                .map(|age| age.as_secs());
            found.push(BatchStatus {
                agent: agent.name.clone(),
                at: agent.at,
                batch: batch.batch,
                provider: batch.provider,
                state: batch.state,
                requests: batch.requests.len(),
                total: batch.counts.total,
                succeeded: batch.counts.succeeded,
                failed: batch.counts.failed,
                submitted_at: batch.submitted_at,
                age_seconds,
                settled: batch.settled,
            });
        }
    }
    found
}

/// The lines `status` prints about the batches still at the provider.
pub fn describe(batches: &[BatchStatus]) -> String {
    let open: Vec<&BatchStatus> = batches.iter().filter(|b| !b.settled).collect();
    if batches.is_empty() {
        return String::new();
    }
    let mut text = format!(
        "provider batches: {} submitted, {} still at the provider\n",
        batches.len(),
        open.len()
    );
    for batch in open {
        let age = batch.age_seconds.map_or_else(String::new, |s| {
            format!(
                ", {} old",
                humantime::format_duration(std::time::Duration::from_secs(s))
            )
        });
        text.push_str(&format!(
            "  {}  {} {}  {}: {} of {} done, {} failed{age}\n",
            batch.agent,
            batch.provider,
            batch.batch,
            batch.state,
            batch.succeeded,
            batch.total,
            batch.failed
        ));
    }
    text
}

/// What a run that stops with batches in flight says: they go on at the
/// provider (and are paid for), and how to collect or cancel them.
pub fn left_running(run: &RunDir, plan: &Plan) -> Option<String> {
    let open = run_batches(run, plan)
        .into_iter()
        .filter(|b| !b.settled)
        .count();
    (open > 0).then(|| {
        let dir = run.root().display();
        format!(
            "{open} provider batch(es) left running at the provider: `nightshift resume {dir}` collects their results, `nightshift cancel {dir}` cancels them"
        )
    })
}
