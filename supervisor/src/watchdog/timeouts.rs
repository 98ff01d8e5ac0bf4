//! agent.timeout given relative to the run itself ("300%", like GNU parallel's
//! `--timeout 300%`). The rule: once RELATIVE_AFTER agent attempts have
//! succeeded, an agent may run for PERCENT of the median time per item of the
//! succeeded attempts, times the number of items it still had to do when it
//! started (at least MIN_RELATIVE). Until then relative timeouts do not apply.

use std::time::Duration;

/// Succeeded attempts needed before a relative timeout applies.
pub const RELATIVE_AFTER: usize = 3;
/// A relative timeout never drops below this, so tiny medians do not kill.
pub const MIN_RELATIVE: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct PerItemTimes {
    seconds_per_item: Vec<f64>,
}

impl PerItemTimes {
    /// Records a succeeded attempt that saved `items` records in `seconds`.
    pub fn record(&mut self, seconds: f64, items: usize) {
        if items > 0 {
            self.seconds_per_item.push(seconds / items as f64);
        }
    }

    pub fn median(&self) -> Option<f64> {
        if self.seconds_per_item.len() < RELATIVE_AFTER {
            return None;
        }
        let mut sorted = self.seconds_per_item.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        Some(if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        })
    }

    /// The time an agent with `items` items to do may take, when known.
    pub fn limit(&self, percent: f64, items: usize) -> Option<Duration> {
        let median = self.median()?;
        let seconds = median * items.max(1) as f64 * percent / 100.0;
        Some(Duration::from_secs_f64(seconds).max(MIN_RELATIVE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_only_after_enough_successes() {
        let mut times = PerItemTimes::default();
        times.record(10.0, 10);
        times.record(20.0, 10);
        assert_eq!(times.limit(300.0, 10), None);
        times.record(40.0, 10);
        // median 2 s per item × 10 items × 300 %
        assert_eq!(times.limit(300.0, 10), Some(Duration::from_secs(60)));
        assert_eq!(times.limit(1.0, 1), Some(MIN_RELATIVE));
    }
}
