//! The fold: what the journal says about attempts, merges and the session.

use std::time::{Duration, SystemTime};

use super::*;
use crate::merge::FileStamp;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

fn fold(events: &[(Option<&str>, Event)]) -> History {
    let mut history = History::default();
    for (i, (agent, event)) in events.iter().enumerate() {
        history.apply(&Entry {
            ts: at(i as u64),
            agent: agent.map(str::to_owned),
            event: event.clone(),
        });
    }
    history
}

fn launched(attempt: u32, pid: i32) -> Event {
    Event::Launched {
        attempt,
        items: 2,
        already_saved: 0,
        phase: None,
        pid: Some(pid),
        start_ticks: Some(1),
        job_id: None,
    }
}

fn exited(code: Option<i32>, signal: Option<i32>) -> Event {
    Event::Exited {
        pid: Some(1),
        job_id: None,
        state: None,
        code,
        signal,
        seconds: 1.0,
    }
}

fn killed(reason: KillReason, peak_rss: Option<u64>) -> Event {
    Event::Killed(Killed {
        peak_rss,
        ..Killed::because(reason)
    })
}

fn started() -> Event {
    Event::RunStarted {
        job: "j".into(),
        items: 4,
        agents: 2,
        segments: 1,
        max_parallel: 2,
        supervisor_pid: 1,
        already_complete: 0,
        memory_mode: "off".into(),
        platform: "linux".into(),
    }
}

#[test]
fn attempts_end_as_their_exit_and_kills_say() {
    let a = Some("agent_01");
    let history = fold(&[
        (None, started()),
        (a, launched(1, 10)),
        (a, killed(KillReason::Timeout, Some(500))),
        (a, exited(None, Some(15))),
        (
            a,
            Event::RetryScheduled {
                retry: 1,
                after_seconds: 0.1,
            },
        ),
        (a, launched(2, 11)),
        (a, exited(None, Some(9))),
        // The kernel's OOM kill is journalled after the exit it caused.
        (a, killed(KillReason::Memory, Some(900))),
        // A sweep after the end is not the attempt's fate either.
        (a, killed(KillReason::SegmentEnd, None)),
        (
            a,
            Event::LaunchFailed {
                error: "gone".into(),
            },
        ),
    ]);
    let agent = &history.agents["agent_01"];
    assert_eq!(agent.launches(), 2);
    assert!(!agent.running() && !agent.waiting);
    assert_eq!(agent.launch_error.as_deref(), Some("gone"));
    let first = &agent.attempts[0];
    assert_eq!((first.number, first.seq, first.pid), (1, 0, Some(10)));
    assert_eq!(first.outcome(), Outcome::Killed(KillReason::Timeout));
    assert_eq!(first.peak_rss, Some(500));
    let second = &agent.attempts[1];
    assert_eq!(second.outcome(), Outcome::Crashed { signal: 9 });
    assert_eq!(second.outcome().to_string(), "signal 9");
    assert_eq!(second.peak_rss, Some(900));
    assert_eq!(second.end.as_ref().map(|e| e.at), Some(at(6)));
}

#[test]
fn a_new_supervisor_orphans_open_attempts_unless_it_adopts_them() {
    let (a, b, c) = (Some("agent_01"), Some("agent_02"), Some("agent_03"));
    let history = fold(&[
        (None, started()),
        (a, launched(1, 10)),
        (b, launched(1, 11)),
        (b, exited(Some(0), None)),
        (c, launched(1, 12)),
        (c, killed(KillReason::Shutdown, None)),
        (
            None,
            Event::Resumed {
                leftovers_ended: 1,
                items_saved: 2,
                agents_complete: 1,
            },
        ),
        (None, started()),
        (
            c,
            Event::Adopted {
                job_id: 7,
                state: "RUNNING".into(),
                attempt: 1,
                elapsed_seconds: 3,
            },
        ),
        // Submitted by the dead supervisor, never journalled as launched.
        (
            Some("agent_04"),
            Event::Adopted {
                job_id: 8,
                state: "PENDING".into(),
                attempt: 1,
                elapsed_seconds: 0,
            },
        ),
    ]);
    let last = |name: &str| history.agents[name].last().expect("an attempt").clone();
    assert!(last("agent_01").orphaned && history.agents["agent_01"].running());
    assert!(!last("agent_02").orphaned);
    assert_eq!(last("agent_02").outcome(), Outcome::Succeeded);
    let adopted = last("agent_03");
    assert!(!adopted.orphaned, "watched again");
    assert_eq!(
        adopted.outcome(),
        Outcome::Running,
        "its old kill is forgotten"
    );
    let unjournalled = last("agent_04");
    assert_eq!((unjournalled.job_id, unjournalled.seq), (Some(8), 3));
    assert_eq!(history.agents["agent_04"].launches(), 1);
}

#[test]
fn merges_and_the_session_end_are_remembered() {
    let stamp = |bytes| FileStamp {
        bytes,
        modified_ns: 1,
        records: 2,
    };
    let finished = Event::RunFinished {
        state: RunEnd::Interrupted,
        items_done: 1,
        items_total: 4,
        exit_code: 130,
    };
    let history = fold(&[
        (None, started()),
        (None, Event::merged(1, stamp(10), 0, 0.1)),
        (None, Event::merged(2, stamp(20), 0, 0.1)),
        (None, Event::merged(1, stamp(30), 1, 0.1)),
        (None, finished.clone()),
    ]);
    assert_eq!(history.segment_stamps[&1], stamp(30), "the last merge wins");
    assert_eq!(history.segment_stamps[&2], stamp(20));
    assert_eq!(history.finished, Some(RunEnd::Interrupted));
    assert_eq!((history.first, history.last), (Some(at(0)), Some(at(4))));
    let resumed = fold(&[(None, finished), (None, started())]);
    assert_eq!(resumed.finished, None, "a new session has not finished yet");
}

#[test]
fn controls_of_the_live_session_are_folded_and_a_new_session_clears_them() {
    let control = |action: &str, max_parallel| Event::Control {
        action: action.into(),
        max_parallel,
    };
    let mut history = History::default();
    for event in [control("max-parallel", Some(4)), control("pause", None)] {
        history.apply(&Entry {
            ts: SystemTime::UNIX_EPOCH,
            agent: None,
            event,
        });
    }
    assert!(history.paused);
    assert_eq!(history.max_parallel, Some(4));
    history.apply(&Entry {
        ts: SystemTime::UNIX_EPOCH,
        agent: None,
        event: control("continue", None),
    });
    assert!(!history.paused);
    history.apply(&Entry {
        ts: SystemTime::UNIX_EPOCH,
        agent: None,
        event: Event::Resumed {
            leftovers_ended: 0,
            items_saved: 0,
            agents_complete: 0,
        },
    });
    assert_eq!(
        history.max_parallel, None,
        "a new session starts from the job"
    );
}
