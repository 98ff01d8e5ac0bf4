//! What a run prints for the person who started it: one line per segment, a
//! line per failed agent, and the summary. `-q` keeps only the summary.

use std::path::Path;
use std::time::Duration;

use shared::plan::SegmentPlan;
use shared::validate::Problem;

/// Problems printed in full before the rest are summarised.
const PROBLEMS_SHOWN: usize = 20;

pub struct Console {
    pub quiet: bool,
    problems_shown: std::cell::Cell<usize>,
}

impl Console {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            problems_shown: std::cell::Cell::new(0),
        }
    }

    pub fn line(&self, text: &str) {
        if !self.quiet {
            println!("{text}");
        }
    }

    pub fn segment_started(&self, segment: &SegmentPlan, of: usize) {
        self.line(&format!(
            "segment {}/{of}: {} orchestrators, {} agents, {} items",
            segment.number,
            segment.orchestrators.len(),
            segment.agents().count(),
            segment.item_count()
        ));
    }

    pub fn segment_done(&self, segment: &SegmentPlan, of: usize) {
        self.line(&format!(
            "segment {}/{of}: done, merged into segment_{:02}.jsonl",
            segment.number, segment.number
        ));
    }

    pub fn agent_failed(&self, name: &str, what: &str, log: Option<&Path>) {
        match log {
            Some(log) => eprintln!("agent {name} {what} (log: {})", log.display()),
            None => eprintln!("agent {name} {what}"),
        }
    }

    pub fn problem(&self, problem: &Problem) {
        let shown = self.problems_shown.get();
        if shown < PROBLEMS_SHOWN {
            eprintln!("{problem}");
        } else if shown == PROBLEMS_SHOWN {
            eprintln!("… more problems are listed in report.json");
        }
        self.problems_shown.set(shown + 1);
    }

    pub fn stopping(&self, grace: Duration) {
        eprintln!(
            "stopping: no new agents; running agents get {} to finish (Ctrl-C again to kill them now)",
            humantime::format_duration(grace)
        );
    }
}
