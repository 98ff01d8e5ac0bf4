//! How far a run is: saved records per agent, counted as they land by reading
//! only what was appended to each agent file since the last look (complete
//! lines; a line still being written is counted once its newline arrives),
//! and the tokens and money their records say they cost.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use shared::money::Spend;
use shared::plan::{AgentRef, Plan};
use shared::records::Lines;
use shared::rundir::RunDir;

/// How much of an agent file has been read: bytes up to its last complete
/// line, and the lines in them.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileSeen {
    pub offset: u64,
    pub lines: usize,
    /// What the records in those bytes cost.
    pub spend: Spend,
}

/// The summed `usage` and `cost` of the complete lines of `bytes` (only
/// lines that mention a usage are parsed: others cost nothing).
pub fn spend_of_lines(bytes: &[u8], lines: &Lines<'_>) -> Spend {
    let mut total = Spend::default();
    for (_, range) in lines.iter() {
        let line = &bytes[range];
        if memchr::memmem::find(line, b"\"usage\"").is_some() {
            total += Spend::from_line(line);
        }
    }
    total
}

struct Tail {
    agent: AgentRef,
    items: usize,
    /// Bytes read so far, up to the last complete line.
    offset: u64,
    lines: usize,
    /// The `usage` and `cost` of the records read so far.
    spend: Spend,
}

pub struct Progress {
    tails: HashMap<PathBuf, Tail>,
    pub total: usize,
    done: usize,
    started: Instant,
    done_at_start: usize,
}

impl Progress {
    /// Starts from what the agent files hold now.
    pub fn new(run: &RunDir, plan: &Plan) -> Self {
        Self::resuming(run, plan, &HashMap::new())
    }

    /// Starts from what the agent files hold now; the files in `seen` were
    /// just read by someone else (resume) and are not read again.
    pub fn resuming(run: &RunDir, plan: &Plan, seen: &HashMap<AgentRef, FileSeen>) -> Self {
        let mut progress = Self {
            tails: plan
                .agents()
                .map(|a| {
                    let tail = Tail {
                        agent: a.at,
                        items: a.items,
                        offset: 0,
                        lines: 0,
                        spend: Spend::default(),
                    };
                    (run.agent_output(a.at), tail)
                })
                .collect(),
            total: plan.items_total,
            done: 0,
            started: Instant::now(),
            done_at_start: 0,
        };
        let mut unread = Vec::new();
        for (path, tail) in &mut progress.tails {
            match seen.get(&tail.agent) {
                Some(file) => {
                    tail.offset = file.offset;
                    tail.lines = file.lines;
                    tail.spend = file.spend;
                    progress.done += file.lines.min(tail.items);
                }
                None => unread.push(path.clone()),
            }
        }
        for path in unread {
            progress.update(&path);
        }
        progress.done_at_start = progress.done;
        progress
    }

    /// Reads what was appended to an agent file; returns its agent and saved count.
    pub fn update(&mut self, path: &Path) -> Option<(AgentRef, usize)> {
        let tail = self.tails.get_mut(path)?;
        let before = tail.lines.min(tail.items);
        if let Ok(mut file) = File::open(path) {
            let len = file.metadata().map_or(0, |m| m.len());
            if len < tail.offset {
                // Truncated (a torn line cut off): count again from the start.
                tail.offset = 0;
                tail.lines = 0;
                tail.spend = Spend::default();
            }
            if len > tail.offset && file.seek(SeekFrom::Start(tail.offset)).is_ok() {
                let mut appended =
                    Vec::with_capacity(usize::try_from(len - tail.offset).unwrap_or(0));
                if file.read_to_end(&mut appended).is_ok() {
                    let lines = Lines::new(&appended);
                    tail.lines += lines.count();
                    tail.spend += spend_of_lines(&appended, &lines);
                    tail.offset += lines.complete_len() as u64;
                }
            }
        }
        let after = tail.lines.min(tail.items);
        self.done = self.done + after - before;
        Some((tail.agent, after))
    }

    /// Records counted in one agent file so far (capped at its items).
    pub fn saved(&self, path: &Path) -> usize {
        self.tails.get(path).map_or(0, |t| t.lines.min(t.items))
    }

    /// What the records of one agent file cost so far.
    pub fn spend(&self, path: &Path) -> Spend {
        self.tails
            .get(path)
            .map_or_else(Spend::default, |t| t.spend)
    }

    /// What every record counted so far cost.
    pub fn total_spend(&self) -> Spend {
        let mut total = Spend::default();
        for tail in self.tails.values() {
            total += tail.spend;
        }
        total
    }

    pub fn done(&self) -> usize {
        self.done
    }

    /// Items per second saved in this session, and the time left at that pace.
    pub fn rate_and_eta(&self) -> (f64, Option<std::time::Duration>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let new = self.done.saturating_sub(self.done_at_start);
        if seconds <= 0.0 || new == 0 {
            return (0.0, None);
        }
        let rate = new as f64 / seconds;
        let left = self.total.saturating_sub(self.done) as f64 / rate;
        (rate, Some(std::time::Duration::from_secs_f64(left)))
    }
}
