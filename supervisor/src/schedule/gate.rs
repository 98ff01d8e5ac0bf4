//! When agents may start: schedule.warmup agents first, then a pause of
//! schedule.warmup_delay (a prompt cache warms up); then waves of
//! schedule.wave_size at most, schedule.wave_interval apart; and within a
//! segment, orchestrator k starts (k - 1) × schedule.orchestrator_stagger after
//! the segment. All of it inside limits.max_parallel and memory admission,
//! which the event loop checks as well. The warm-up happens once per
//! supervisor session (a resumed run warms its cache again).
//!
//! Also the run's deadline (schedule.deadline, or --until): a local clock time
//! (the next time the clock shows it) or a duration from the session's start.

use std::time::{Duration, Instant};

use shared::job::{Deadline, ScheduleSettings};

pub struct LaunchGate {
    warmup: usize,
    warmup_delay: Duration,
    wave_size: Option<usize>,
    wave_interval: Duration,
    stagger: Duration,
    launched: usize,
    last_warmup_launch: Option<Instant>,
    wave_started: Option<Instant>,
    wave_launched: usize,
    waves: usize,
    segment_started: Instant,
}

/// Where a launch falls in the schedule, for events.jsonl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Wave(usize),
    Free,
}

impl LaunchGate {
    pub fn new(schedule: &ScheduleSettings, now: Instant) -> Self {
        Self {
            warmup: schedule.warmup.map_or(0, |c| c.get()),
            warmup_delay: schedule.warmup_delay.get(),
            wave_size: schedule.wave_size.map(|c| c.get()),
            wave_interval: schedule.wave_interval.get(),
            stagger: schedule.orchestrator_stagger.get(),
            launched: 0,
            last_warmup_launch: None,
            wave_started: None,
            wave_launched: 0,
            waves: 0,
            segment_started: now,
        }
    }

    pub fn start_segment(&mut self, now: Instant) {
        self.segment_started = now;
    }

    /// When orchestrator `number` (1-based) of the current segment may start.
    pub fn orchestrator_ready(&self, number: usize) -> Instant {
        let steps = u32::try_from(number.saturating_sub(1)).unwrap_or(u32::MAX);
        self.segment_started + self.stagger.saturating_mul(steps)
    }

    /// The earliest instant the schedule (warm-up, waves) lets the next launch happen.
    pub fn next_launch_at(&self, now: Instant) -> Instant {
        if self.launched < self.warmup {
            return now;
        }
        let mut at = now;
        if let Some(last) = self.last_warmup_launch {
            at = at.max(last + self.warmup_delay);
        }
        if let (Some(size), Some(started)) = (self.wave_size, self.wave_started) {
            if self.wave_launched >= size {
                at = at.max(started + self.wave_interval);
            }
        }
        at
    }

    /// Records a launch at `now`; says which phase it belonged to.
    pub fn note_launch(&mut self, now: Instant) -> Phase {
        self.launched += 1;
        if self.launched <= self.warmup {
            self.last_warmup_launch = Some(now);
            return Phase::Warmup;
        }
        let Some(size) = self.wave_size else {
            return Phase::Free;
        };
        let new_wave = match self.wave_started {
            None => true,
            Some(started) => self.wave_launched >= size || now >= started + self.wave_interval,
        };
        if new_wave {
            self.wave_started = Some(now);
            self.wave_launched = 0;
            self.waves += 1;
        }
        self.wave_launched += 1;
        Phase::Wave(self.waves)
    }
}

/// The instant a deadline falls on, from `now`.
pub fn deadline_instant(deadline: Deadline, now: Instant) -> Instant {
    match deadline {
        Deadline::After(duration) => now + duration.get(),
        Deadline::ClockTime { hour, minute } => {
            let (_, _, _, h, m, s) = crate::executor::local::unix::local_time_now();
            let now_secs = u64::from(h) * 3600 + u64::from(m) * 60 + u64::from(s);
            let target = u64::from(hour) * 3600 + u64::from(minute) * 60;
            let wait = if target > now_secs {
                target - now_secs
            } else {
                target + 86_400 - now_secs
            };
            now + Duration::from_secs(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::job::{Count, HumanDuration};

    fn gate(warmup: Option<usize>, wave: Option<usize>) -> LaunchGate {
        let schedule = ScheduleSettings {
            warmup: warmup.map(Count),
            warmup_delay: HumanDuration::from_secs(10),
            wave_size: wave.map(Count),
            wave_interval: HumanDuration::from_secs(5),
            orchestrator_stagger: HumanDuration::from_secs(2),
            deadline: None,
            drain: HumanDuration::from_secs(60),
        };
        LaunchGate::new(&schedule, Instant::now())
    }

    #[test]
    fn warmup_then_delay_then_waves() {
        let mut g = gate(Some(1), Some(2));
        let t0 = Instant::now();
        assert_eq!(g.next_launch_at(t0), t0);
        assert_eq!(g.note_launch(t0), Phase::Warmup);
        assert_eq!(g.next_launch_at(t0), t0 + Duration::from_secs(10));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(g.note_launch(t1), Phase::Wave(1));
        assert_eq!(g.note_launch(t1), Phase::Wave(1));
        assert_eq!(g.next_launch_at(t1), t1 + Duration::from_secs(5));
        assert_eq!(g.note_launch(t1 + Duration::from_secs(5)), Phase::Wave(2));
    }

    #[test]
    fn orchestrators_are_staggered() {
        let g = gate(None, None);
        let start = g.segment_started;
        assert_eq!(g.orchestrator_ready(1), start);
        assert_eq!(g.orchestrator_ready(3), start + Duration::from_secs(4));
    }

    #[test]
    fn a_duration_deadline_counts_from_now() {
        let now = Instant::now();
        let at = deadline_instant(Deadline::After(HumanDuration::from_secs(90)), now);
        assert_eq!(at, now + Duration::from_secs(90));
        let clock = deadline_instant(Deadline::ClockTime { hour: 7, minute: 0 }, now);
        assert!(clock > now && clock <= now + Duration::from_secs(86_400));
    }
}
