//! What a run prints for the person who started it: the run directory, one line
//! per segment, a line per failure, and the summary. `-q` keeps only the run
//! directory, failures and the summary. On a terminal a live display runs
//! below (see `reporting::view`), and every line is printed above it.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressDrawTarget};

use shared::plan::SegmentPlan;
use shared::validate::Problem;

/// Problems printed in full before the rest are summarised.
const PROBLEMS_SHOWN: usize = 20;

pub struct Console {
    pub quiet: bool,
    /// Shared by a pipeline's stages, each a thread.
    problems_shown: AtomicUsize,
    multi: Option<MultiProgress>,
    /// Before every line: `[NAME] ` for a pipeline's stage (its stages run
    /// side by side), nothing otherwise.
    prefix: String,
}

impl Console {
    /// A live display is possible when both stdout and stderr are terminals.
    pub fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5)));
        Self {
            quiet,
            problems_shown: AtomicUsize::new(0),
            multi,
            prefix: String::new(),
        }
    }

    /// The console of one stage of a pipeline: the same terminal and live
    /// display, every line marked with the stage's name.
    pub fn for_stage(&self, name: &str) -> Self {
        Self {
            quiet: self.quiet,
            problems_shown: AtomicUsize::new(0),
            multi: self.multi.clone(),
            prefix: format!("[{name}] "),
        }
    }

    /// What goes before every line (see `for_stage`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The live display's handle, on a terminal.
    pub fn multi(&self) -> Option<MultiProgress> {
        self.multi.clone()
    }

    fn out(&self, text: &str) {
        let text = &format!("{}{text}", self.prefix);
        match &self.multi {
            Some(multi) => multi.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    fn err(&self, text: &str) {
        let text = &format!("{}{text}", self.prefix);
        match &self.multi {
            Some(multi) => multi.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// A failed item: shown even with -q.
    pub fn failure(&self, text: &str) {
        self.err(text);
    }

    /// A line of the summary at a run's end: shown even with -q.
    pub fn summary(&self, text: &str) {
        self.out(text);
    }

    pub fn line(&self, text: &str) {
        if !self.quiet {
            self.out(text);
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
            Some(log) => self.err(&format!("agent {name} {what} (log: {})", log.display())),
            None => self.err(&format!("agent {name} {what}")),
        }
    }

    pub fn problem(&self, problem: &Problem) {
        let shown = self.problems_shown.fetch_add(1, Ordering::Relaxed);
        if shown < PROBLEMS_SHOWN {
            self.err(&problem.to_string());
        } else if shown == PROBLEMS_SHOWN {
            self.err("… more problems are listed in report.json");
        }
    }

    pub fn stopping(&self, grace: Duration) {
        self.err(&format!(
            "stopping: no new agents; running agents get {} to finish (Ctrl-C again to kill them now)",
            humantime::format_duration(grace)
        ));
    }
}
