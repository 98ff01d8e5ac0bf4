//! Showing progress while a run goes. On a terminal: a live display (indicatif)
//! with an overall bar (items done of total, rate, ETA), one line per running
//! agent (name, items done of its total, tree RSS, elapsed), and failures
//! printed above it as they happen. Not on a terminal (nohup, CI, a log file):
//! one plain line every limits.progress_interval, and one at each segment's end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::console::Console;
use crate::executor::AttemptKey;
use crate::reporting::progress::Progress;
use crate::supervise::slot::Slot;

/// The display is redrawn at most this often.
const REDRAW: Duration = Duration::from_millis(200);

pub struct RunSnapshot<'s, 'p> {
    pub progress: &'s Progress,
    pub slots: &'s HashMap<AttemptKey, Slot<'p>>,
    pub segment: usize,
    pub segments: usize,
    pub failed: usize,
    pub total_rss: u64,
}

pub enum ProgressView {
    Bars(Bars),
    Plain { every: Duration, next: Instant },
    Silent,
}

pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    agents: HashMap<AttemptKey, ProgressBar>,
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
                overall.set_style(
                    ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} items {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                Self::Bars(Bars {
                    multi,
                    overall,
                    agents: HashMap::new(),
                    last_draw: None,
                })
            }
            None => Self::Plain {
                every,
                next: Instant::now() + every,
            },
        }
    }

    /// Brings the display up to date (cheap when nothing is due).
    pub fn update(&mut self, snapshot: &RunSnapshot<'_, '_>, now: Instant) {
        match self {
            Self::Silent => {}
            Self::Plain { every, next } => {
                if now >= *next {
                    println!("{}", plain_line(snapshot));
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
        if let Self::Plain { .. } = self {
            println!("{}", plain_line(snapshot));
        }
    }

    pub fn finish(&mut self) {
        if let Self::Bars(bars) = self {
            for bar in bars.agents.values() {
                bar.finish_and_clear();
            }
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
            "· {rate:.1}/s · ETA {} · segment {}/{} · {} running · {} failed · {}",
            eta.map_or_else(|| "?".to_owned(), short_duration),
            snapshot.segment,
            snapshot.segments,
            snapshot.slots.len(),
            snapshot.failed,
            size(snapshot.total_rss)
        ));
        self.agents.retain(|key, bar| {
            let keep = snapshot.slots.contains_key(key);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        let mut keys: Vec<&AttemptKey> = snapshot.slots.keys().collect();
        keys.sort_by_key(|key| snapshot.slots.get(key).map(|s| s.agent.name.as_str()));
        for key in keys {
            let Some(slot) = snapshot.slots.get(key) else {
                continue;
            };
            let multi = &self.multi;
            let bar = self.agents.entry(*key).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar
            });
            let state = match slot.kill {
                Some(kill) => format!(" · stopping ({})", kill.reason),
                None => String::new(),
            };
            bar.set_message(format!(
                "{}  {}/{}  {}  {}{state}",
                slot.agent.name,
                slot.done,
                slot.agent.ids.len(),
                size(slot.rss),
                short_duration(slot.started.elapsed())
            ));
        }
    }
}

fn plain_line(s: &RunSnapshot<'_, '_>) -> String {
    let (rate, eta) = s.progress.rate_and_eta();
    let (h, m, sec) = {
        let (_, _, _, h, m, sec) = crate::executor::local::unix::local_time_now();
        (h, m, sec)
    };
    let done = s.progress.done();
    let percent = if s.progress.total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / s.progress.total as f64
    };
    format!(
        "[{h:02}:{m:02}:{sec:02}] {done}/{} items ({percent:.0}%) · {rate:.1}/s · ETA {} · segment {}/{} · {} running · {} failed · {}",
        s.progress.total,
        eta.map_or_else(|| "?".to_owned(), short_duration),
        s.segment,
        s.segments,
        s.slots.len(),
        s.failed,
        size(s.total_rss)
    )
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

pub fn size(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1 << 20);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}
