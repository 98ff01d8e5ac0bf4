//! The watchdog's verdicts on slots built in-process: timeouts, stalls, a
//! tree over its memory limit, the youngest agent evicted under pressure.

use std::time::{Duration, Instant};

use shared::job::{AgentTimeout, ByteSize, HumanDuration, JobSettings};
use shared::plan::{AgentPlan, AgentRef};

use super::*;
use crate::supervise::slot::Kill;
use crate::watchdog::disk::DiskWatch;

fn plan(number: usize) -> AgentPlan {
    let at = AgentRef {
        segment: 1,
        orchestrator: 1,
        agent: number,
    };
    AgentPlan {
        name: at.to_string(),
        at,
        first_item: 0,
        items: 1,
    }
}

fn slot(agent: &AgentPlan, pid: i32, started: Instant, rss: u64) -> Slot<'_> {
    Slot {
        agent,
        attempt: 1,
        key: AttemptKey::Local { pid },
        start_ticks: 0,
        started,
        launched_at: String::new(),
        exit: None,
        deadline: None,
        saved_at_launch: 0,
        done: 0,
        output_len: 0,
        last_progress: started,
        kill: None,
        rss,
        peak_rss: rss,
    }
}

fn watchdog(settings: &JobSettings, now: Instant) -> Watchdog {
    let disk = DiskWatch::new(std::path::Path::new("/"), 0);
    Watchdog::new(settings, MemoryWatch::new(settings), disk, now)
}

fn settings(edit: impl FnOnce(&mut JobSettings)) -> JobSettings {
    let mut settings: JobSettings =
        toml::from_str("[input]\npath = \"items.jsonl\"\n").expect("a minimal job");
    edit(&mut settings);
    settings
}

#[test]
fn a_fixed_timeout_and_a_stall_are_told_apart() {
    let settings = settings(|s| {
        s.agent.timeout = Some(AgentTimeout::Fixed(HumanDuration::from_secs(60)));
        s.agent.stall_timeout = Some(HumanDuration::from_secs(10));
    });
    let now = Instant::now();
    let watchdog = watchdog(&settings, now);
    assert_eq!(watchdog.fixed_timeout(), Some(Duration::from_secs(60)));
    let agent = plan(1);
    let mut running = slot(&agent, 10, now, 0);
    running.deadline = Some(now + Duration::from_secs(60));
    assert_eq!(
        watchdog.overdue(&running, now + Duration::from_secs(5)),
        None
    );
    assert_eq!(
        watchdog.overdue(&running, now + Duration::from_secs(11)),
        Some(KillReason::Stall)
    );
    running.last_progress = now + Duration::from_secs(59);
    assert_eq!(
        watchdog.overdue(&running, now + Duration::from_secs(60)),
        Some(KillReason::Timeout)
    );
    running.exit = Some(crate::outcome::Outcome::Succeeded);
    assert_eq!(
        watchdog.overdue(&running, now + Duration::from_secs(600)),
        None,
        "an attempt that ended is not killed"
    );
}

#[test]
fn a_tree_over_its_limit_is_ended_and_a_struck_one_is_said_to_be_the_kernels() {
    let settings = settings(|s| s.agent.memory_limit = Some(ByteSize(100)));
    let now = Instant::now();
    let mut watchdog = watchdog(&settings, now);
    let (big, small, struck) = (plan(1), plan(2), plan(3));
    let slots = HashMap::from([
        (AttemptKey::Local { pid: 1 }, slot(&big, 1, now, 200)),
        (AttemptKey::Local { pid: 2 }, slot(&small, 2, now, 50)),
        (AttemptKey::Local { pid: 3 }, slot(&struck, 3, now, 10)),
    ]);
    let mut verdicts = watchdog.memory_verdicts(&slots, |key| key == AttemptKey::Local { pid: 3 });
    verdicts.sort_by_key(|v| v.key);
    assert_eq!(
        verdicts,
        vec![
            Verdict {
                key: AttemptKey::Local { pid: 1 },
                reason: KillReason::Memory,
                by_kernel: false
            },
            Verdict {
                key: AttemptKey::Local { pid: 3 },
                reason: KillReason::Memory,
                by_kernel: true
            },
        ]
    );
}

#[test]
fn over_the_ceiling_the_youngest_makes_room_but_never_the_last_one() {
    let settings = settings(|s| s.limits.ram_ceiling = Some(ByteSize(1000)));
    let now = Instant::now();
    let mut watchdog = watchdog(&settings, now);
    watchdog.memory.sample(now, 2000, None);
    let (old, young) = (plan(1), plan(2));
    let mut slots = HashMap::from([
        (AttemptKey::Local { pid: 1 }, slot(&old, 1, now, 900)),
        (
            AttemptKey::Local { pid: 2 },
            slot(&young, 2, now + Duration::from_secs(1), 1100),
        ),
    ]);
    let verdicts = watchdog.memory_verdicts(&slots, |_| false);
    assert_eq!(
        verdicts,
        vec![Verdict {
            key: AttemptKey::Local { pid: 2 },
            reason: KillReason::Ceiling,
            by_kernel: false
        }]
    );
    // While one is being killed to make room, nobody else is.
    if let Some(young) = slots.get_mut(&AttemptKey::Local { pid: 2 }) {
        young.kill = Some(Kill {
            reason: KillReason::Ceiling,
            hard_at: now,
            hard_sent: false,
        });
    }
    assert!(watchdog.memory_verdicts(&slots, |_| false).is_empty());
    slots.remove(&AttemptKey::Local { pid: 2 });
    assert!(
        watchdog.memory_verdicts(&slots, |_| false).is_empty(),
        "one agent alone is never killed to make room"
    );
}
