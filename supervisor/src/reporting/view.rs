//! Showing progress while a run goes. On a terminal: a live display (indicatif)
//! with an overall bar (items done of total and %, rate, ETA), one line per
//! running agent (name, attempt, items done of its total, the item it is on,
//! tree RSS, elapsed) — never taller than the terminal: the busiest agents,
//! then "+N more running, M waiting to retry" — agents waiting for a retry
//! with their countdown, and failures printed above it as they happen. Not on a terminal (nohup, CI, a log file):
//! one plain line every limits.progress_interval, and one at each segment's end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::console::Console;
use crate::executor::AttemptKey;
use crate::reporting::progress::Progress;
use crate::schedule::scheduler::Scheduler;
use crate::supervise::slot::Slot;
use shared::ids::IdKey;
use shared::money::dollars;
use shared::plan::AgentPlan;
use shared::rundir::RunDir;

/// Lines the display keeps for itself beyond agent lines: the overall bar,
/// the "+N more" line, and room for the lines printed above it.
const RESERVED_ROWS: usize = 4;

/// The display is redrawn at most this often.
const REDRAW: Duration = Duration::from_millis(200);

pub struct RunSnapshot<'s, 'p> {
    pub run: &'s RunDir,
    pub progress: &'s Progress,
    pub slots: &'s HashMap<AttemptKey, Slot<'p>>,
    pub segment: usize,
    pub segments: usize,
    pub failed: usize,
    pub total_rss: u64,
    /// Agents waiting for a retry, and when each starts again (read only
    /// when the live display is drawn).
    pub scheduler: &'s Scheduler<'p>,
}

pub enum ProgressView {
    Bars(Bars),
    /// A line every `every`, after `prefix` (a pipeline stage's name).
    Plain {
        every: Duration,
        next: Instant,
        prefix: String,
    },
    Silent,
}

pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    /// The agents on screen, each with its ids (read from its task file when
    /// it comes on screen, for the id of the item it works on): ids are held
    /// for the few agents shown, never for the whole run.
    agents: HashMap<AttemptKey, (ProgressBar, Vec<IdKey>)>,
    /// "+N more running, M waiting to retry", and the waiting agents.
    more: ProgressBar,
    last_draw: Option<Instant>,
}

impl ProgressView {
    pub fn new(console: &Console, total: usize, every: Duration) -> Self {
        if console.quiet {
            return Self::Silent;
        }
        match console.multi() {
            Some(multi) => {
                let overall = multi.add(ProgressBar::new(total as u64));
                overall.set_prefix(console.prefix().to_owned());
                overall.set_style(
                    ProgressStyle::with_template(
                        "{prefix}{bar:40.cyan/blue} {pos}/{len} items ({percent}%) {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                let more = multi.add(ProgressBar::new_spinner());
                more.set_style(line_style());
                Self::Bars(Bars {
                    multi,
                    overall,
                    agents: HashMap::new(),
                    more,
                    last_draw: None,
                })
            }
            None => Self::Plain {
                every,
                next: Instant::now() + every,
                prefix: console.prefix().to_owned(),
            },
        }
    }

    /// Brings the display up to date (cheap when nothing is due).
    pub fn update(&mut self, snapshot: &RunSnapshot<'_, '_>, now: Instant) {
        match self {
            Self::Silent => {}
            Self::Plain {
                every,
                next,
                prefix,
            } => {
                if now >= *next {
                    println!("{prefix}{}", plain_line(snapshot));
                    *next = now + *every;
                }
            }
            Self::Bars(bars) => {
                if bars
                    .last_draw
                    .is_some_and(|at| now.duration_since(at) < REDRAW)
                {
                    return;
                }
                bars.last_draw = Some(now);
                bars.draw(snapshot);
            }
        }
    }

    /// A plain line at a segment's end (the bars show it by themselves).
    pub fn segment_done(&mut self, snapshot: &RunSnapshot<'_, '_>) {
        if let Self::Plain { prefix, .. } = self {
            println!("{prefix}{}", plain_line(snapshot));
        }
    }

    pub fn finish(&mut self) {
        if let Self::Bars(bars) = self {
            for (bar, _) in bars.agents.values() {
                bar.finish_and_clear();
            }
            bars.more.finish_and_clear();
            bars.overall.finish_and_clear();
            let _ = bars.multi.clear();
        }
    }
}

impl Bars {
    fn draw(&mut self, snapshot: &RunSnapshot<'_, '_>) {
        let (rate, eta) = snapshot.progress.rate_and_eta();
        self.overall.set_position(snapshot.progress.done() as u64);
        self.overall.set_message(format!(
            "· {rate:.1}/s · ETA {} · segment {}/{} · {} running · {} failed · {}{}",
            eta.map_or_else(|| "?".to_owned(), short_duration),
            snapshot.segment,
            snapshot.segments,
            snapshot.slots.len(),
            snapshot.failed,
            size(snapshot.total_rss),
            money(snapshot.progress)
        ));
        // Never taller than the terminal (read each time: it may be resized).
        let rows = console::Term::stderr()
            .size_checked()
            .map_or(24, |(rows, _)| usize::from(rows));
        let room = rows.saturating_sub(RESERVED_ROWS).max(1);
        // The busiest first: the most items done in the least time.
        let mut keys: Vec<&AttemptKey> = snapshot.slots.keys().collect();
        keys.sort_by(|a, b| {
            let pace = |key: &AttemptKey| {
                snapshot.slots.get(key).map_or(0.0, |s| {
                    s.done.saturating_sub(s.saved_at_launch) as f64
                        / s.started.elapsed().as_secs_f64().max(1.0)
                })
            };
            pace(b).total_cmp(&pace(a)).then_with(|| {
                let name = |key: &AttemptKey| snapshot.slots.get(key).map(|s| s.agent.name.clone());
                name(a).cmp(&name(b))
            })
        });
        let (shown, hidden) = keys.split_at(room.min(keys.len()));
        self.agents.retain(|key, (bar, _)| {
            let keep = shown.contains(&key);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        for key in shown {
            let Some(slot) = snapshot.slots.get(*key) else {
                continue;
            };
            let multi = &self.multi;
            let more = &self.more;
            let (bar, ids) = self.agents.entry(**key).or_insert_with(|| {
                let bar = multi.insert_before(more, ProgressBar::new_spinner());
                bar.set_style(line_style());
                (
                    bar,
                    snapshot.run.agent_ids(slot.agent.at).unwrap_or_default(),
                )
            });
            bar.set_message(agent_line(slot, ids));
        }
        self.more.set_message(more_line(
            hidden.len(),
            &snapshot.scheduler.waiting().collect::<Vec<_>>(),
        ));
    }
}

fn line_style() -> ProgressStyle {
    ProgressStyle::with_template("  {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// `segment_01/orch_02/agent_03 #2  5/20  item-045  153 MiB  1m02s`
fn agent_line(slot: &Slot<'_>, ids: &[IdKey]) -> String {
    let state = match slot.kill {
        Some(kill) => format!(" · stopping ({})", kill.reason),
        None => String::new(),
    };
    // The next item without a record is the one it works on (one at a time;
    // with agent.concurrency it is the first of those in flight).
    let current = ids
        .get(slot.done)
        .map(|id| format!("  {}", id.plain()))
        .unwrap_or_default();
    format!(
        "{} #{}  {}/{}{current}  {}  {}{state}",
        slot.agent.name,
        slot.attempt,
        slot.done,
        slot.agent.items,
        size(slot.rss),
        short_duration(slot.started.elapsed())
    )
}

/// "+N more running, M waiting to retry", then the waiting agents with the
/// time left before their retry.
fn more_line(hidden: usize, waiting: &[(&AgentPlan, Instant)]) -> String {
    let mut parts = Vec::new();
    if hidden > 0 {
        parts.push(format!("+{hidden} more running"));
    }
    if !waiting.is_empty() {
        parts.push(format!("{} waiting to retry", waiting.len()));
    }
    let mut line = parts.join(", ");
    let now = Instant::now();
    for (agent, at) in waiting.iter().take(3) {
        line.push_str(&format!(
            "{}{} retries in {}",
            if line.is_empty() { "" } else { " · " },
            agent.name,
            short_duration(at.saturating_duration_since(now))
        ));
    }
    line
}

fn plain_line(s: &RunSnapshot<'_, '_>) -> String {
    let (rate, eta) = s.progress.rate_and_eta();
    let (h, m, sec) = {
        let (_, _, _, h, m, sec) = crate::executor::local::unix::local_time_now();
        (h, m, sec)
    };
    let done = s.progress.done();
    let percent = percent(done, s.progress.total);
    format!(
        "[{h:02}:{m:02}:{sec:02}] {done}/{} items ({percent:.0}%) · {rate:.1}/s · ETA {} · segment {}/{} · {} running · {} failed · {}{}",
        s.progress.total,
        eta.map_or_else(|| "?".to_owned(), short_duration),
        s.segment,
        s.segments,
        s.slots.len(),
        s.failed,
        size(s.total_rss),
        money(s.progress)
    )
}

/// " · $0.42 so far, ≈$1.20 for the run" (the projection at the cost per
/// saved item so far); nothing when no record has a cost.
fn money(progress: &Progress) -> String {
    let spent = progress.total_spend();
    let Some(cost) = spent.cost else {
        return String::new();
    };
    match crate::reporting::cost::projected(&spent, progress.done(), progress.total) {
        Some(all) => format!(" · {} so far, ≈{} for the run", dollars(cost), dollars(all)),
        None => format!(" · {} so far", dollars(cost)),
    }
}

pub fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// `done` of `total` in percent (an empty run is complete).
pub fn percent(done: usize, total: usize) -> f64 {
    if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    }
}

pub fn size(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1 << 20);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}
