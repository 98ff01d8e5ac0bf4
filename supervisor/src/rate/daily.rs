//! The run's daily budgets, `[rate] tokens_per_day` and `requests_per_day`:
//! no more than that in any 24 hours, resumed sessions included. Like the
//! other hard budgets (`rate::spend`), a permit the day's budget cannot cover
//! is refused, and every one after it, so the run stops with exit code 4 and
//! says when the window has room again.
//!
//! What was used is kept per minute of the wall clock, and the minutes are
//! appended to RUN/rate.daily.jsonl (`{"minute": M, "tokens": T, "requests":
//! R}`, M = minutes since the Unix epoch; a minute may appear more than once,
//! its lines add up) as each minute ends and when the broker stops, so a
//! resume starts from what the last 24 hours used. A supervisor killed
//! outright loses at most its last minute.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shared::job::RateSettings;

/// The file of the minutes used, in the run directory.
pub const DAILY_FILE: &str = "rate.daily.jsonl";

const WINDOW_MINUTES: u64 = 24 * 60;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Minute {
    minute: u64,
    tokens: u64,
    requests: u64,
}

#[derive(Debug)]
pub struct DailyQuota {
    tokens_per_day: Option<u64>,
    requests_per_day: Option<u64>,
    /// Tokens and requests used per minute of the last 24 hours.
    minutes: BTreeMap<u64, (u64, u64)>,
    reserved_tokens: u64,
    /// What the current minute used that is not in the file yet.
    unwritten: Minute,
    file: Option<PathBuf>,
}

impl DailyQuota {
    /// The daily budgets of `[rate]`, with what the run's file says the last
    /// 24 hours used; None when the job sets none.
    pub fn new(settings: Option<&RateSettings>, file: Option<PathBuf>) -> Option<Self> {
        let rate = settings?;
        let tokens_per_day = rate.tokens_per_day.map(|c| c.get() as u64);
        let requests_per_day = rate.requests_per_day.map(|c| c.get() as u64);
        if tokens_per_day.is_none() && requests_per_day.is_none() {
            return None;
        }
        let mut minutes = BTreeMap::new();
        let text = file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default();
        for line in text.lines() {
            // A torn last line (a killed supervisor) is skipped.
            if let Ok(used) = serde_json::from_str::<Minute>(line) {
                let entry: &mut (u64, u64) = minutes.entry(used.minute).or_default();
                entry.0 += used.tokens;
                entry.1 += used.requests;
            }
        }
        Some(Self {
            tokens_per_day,
            requests_per_day,
            minutes,
            reserved_tokens: 0,
            unwritten: Minute::default(),
            file,
        })
    }

    /// (tokens, requests) used in the 24 hours before `now`.
    fn used(&self, now: SystemTime) -> (u64, u64) {
        let from = minute_of(now).saturating_sub(WINDOW_MINUTES - 1);
        self.minutes
            .range(from..)
            .fold((0, 0), |(t, r), (_, (tokens, requests))| {
                (t + tokens, r + requests)
            })
    }

    /// Starts a request that may use `tokens`, or says why the day's budget
    /// cannot cover it.
    pub fn reserve(&mut self, tokens: u64, now: SystemTime) -> Result<(), String> {
        let (used_tokens, used_requests) = self.used(now);
        if let Some(max) = self.requests_per_day {
            if used_requests + 1 > max {
                return Err(format!(
                    "the run's daily budget rate.requests_per_day = {max} is spent: {used_requests} requests in the last 24 hours{}",
                    self.room_again(now)
                ));
            }
        }
        if let Some(max) = self.tokens_per_day {
            if used_tokens + self.reserved_tokens + tokens > max {
                return Err(format!(
                    "the run's daily budget rate.tokens_per_day = {max} is spent: {used_tokens} tokens used in the last 24 hours, {} in flight, and the next request may use up to {tokens}{}",
                    self.reserved_tokens,
                    self.room_again(now)
                ));
            }
        }
        self.reserved_tokens += tokens;
        self.add(now, 0, 1);
        Ok(())
    }

    /// A request reserved for `estimated` tokens used `tokens`.
    pub fn settle(&mut self, estimated: u64, tokens: u64, now: SystemTime) {
        self.reserved_tokens = self.reserved_tokens.saturating_sub(estimated);
        self.add(now, tokens, 0);
    }

    fn add(&mut self, now: SystemTime, tokens: u64, requests: u64) {
        let minute = minute_of(now);
        if self.unwritten.minute != minute {
            self.write();
            self.unwritten = Minute {
                minute,
                ..Minute::default()
            };
            // Minutes that left the window are no longer needed.
            let from = minute.saturating_sub(WINDOW_MINUTES);
            self.minutes = self.minutes.split_off(&from);
        }
        self.unwritten.tokens += tokens;
        self.unwritten.requests += requests;
        let entry = self.minutes.entry(minute).or_default();
        entry.0 += tokens;
        entry.1 += requests;
    }

    /// Appends the current minute's use to the file (best effort: a file
    /// that cannot be written costs the next session that minute's memory).
    pub fn write(&mut self) {
        let used = std::mem::take(&mut self.unwritten);
        if used.tokens == 0 && used.requests == 0 {
            return;
        }
        let Some(path) = &self.file else {
            return;
        };
        let line = match serde_json::to_string(&used) {
            Ok(line) => line + "\n",
            Err(_) => return,
        };
        let appended = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(error) = appended {
            tracing::warn!("cannot write {}: {error}", path.display());
        }
    }

    /// "; room again from TIME": when the oldest minute of the window leaves it.
    fn room_again(&self, now: SystemTime) -> String {
        let from = minute_of(now).saturating_sub(WINDOW_MINUTES - 1);
        match self.minutes.range(from..).next() {
            Some((oldest, _)) => {
                let at = UNIX_EPOCH + Duration::from_secs((oldest + WINDOW_MINUTES) * 60);
                format!(
                    "; the window has room again from {} (resume then)",
                    humantime::format_rfc3339_seconds(at)
                )
            }
            None => String::new(),
        }
    }
}

impl Drop for DailyQuota {
    fn drop(&mut self) {
        self.write();
    }
}

fn minute_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::job::Count;

    fn settings(tokens: Option<usize>, requests: Option<usize>) -> RateSettings {
        let mut rate: RateSettings = toml::from_str("").expect("empty [rate]");
        rate.tokens_per_day = tokens.map(Count);
        rate.requests_per_day = requests.map(Count);
        rate
    }

    #[test]
    fn requests_and_tokens_are_counted_over_the_last_24_hours() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000 * 60);
        let mut quota = DailyQuota::new(Some(&settings(Some(100), Some(3))), None).expect("quota");
        assert!(quota.reserve(40, start).is_ok());
        quota.settle(40, 30, start);
        assert!(quota.reserve(40, start).is_ok());
        // 30 used and 40 in flight: 40 more would pass 100.
        let why = quota.reserve(40, start).expect_err("tokens");
        assert!(why.contains("tokens_per_day = 100"), "{why}");
        quota.settle(40, 30, start);
        assert!(quota.reserve(10, start).is_ok());
        let why = quota.reserve(1, start).expect_err("requests");
        assert!(
            why.contains("requests_per_day = 3") && why.contains("room again"),
            "{why}"
        );
        // A day later the window is empty again.
        let later = start + Duration::from_secs(24 * 3600);
        assert!(quota.reserve(1, later).is_ok());
    }

    #[test]
    fn a_new_session_starts_from_what_the_file_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(DAILY_FILE);
        let now = SystemTime::now();
        {
            let mut quota =
                DailyQuota::new(Some(&settings(None, Some(2))), Some(file.clone())).expect("quota");
            assert!(quota.reserve(5, now).is_ok());
            assert!(quota.reserve(5, now).is_ok());
        } // dropped: the minute is written
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(b"{\"minute\": 1, \"tok"))
            .expect("a torn line");
        let mut quota = DailyQuota::new(Some(&settings(None, Some(2))), Some(file)).expect("quota");
        assert!(quota.reserve(1, now).is_err(), "two requests already today");
    }
}
