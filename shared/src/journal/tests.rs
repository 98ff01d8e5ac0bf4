//! The journal's contract: every event survives a write and a read, lines keep
//! the keys they were always written with, and damaged or newer lines are
//! reported, not lost.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::merge::FileStamp;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

fn line(seconds: u64, agent: Option<&str>, event: &Event) -> String {
    let mut out = Vec::new();
    encode(at(seconds), agent, event, &mut out).expect("encode");
    String::from_utf8(out).expect("utf-8")
}

fn parse(text: &str) -> Journal {
    Journal::parse(Path::new("RUN/events.jsonl"), text.as_bytes())
}

/// One of every variant, with optional fields both present and absent.
fn one_of_each() -> Vec<Event> {
    let stamp = FileStamp {
        bytes: 10,
        modified_ns: 20,
        records: 3,
    };
    vec![
        Event::RunStarted {
            job: "demo".into(),
            items: 40,
            agents: 2,
            segments: 1,
            max_parallel: 2,
            supervisor_pid: 99,
            already_complete: 0,
            memory_mode: "cgroup".into(),
            platform: "linux".into(),
        },
        Event::Resumed {
            leftovers_ended: 1,
            items_saved: 5,
            agents_complete: 0,
        },
        Event::Launched {
            attempt: 1,
            items: 20,
            already_saved: 0,
            phase: Some(LaunchPhase::Wave(2)),
            pid: Some(4242),
            start_ticks: Some(777),
            job_id: None,
        },
        Event::LaunchFailed {
            error: "no such file".into(),
        },
        Event::Adopted {
            job_id: 17,
            state: "RUNNING".into(),
            attempt: 2,
            elapsed_seconds: 30,
        },
        Event::Exited {
            pid: None,
            job_id: Some(17),
            state: Some("NODE_FAIL".into()),
            code: None,
            signal: None,
            seconds: 1.5,
        },
        Event::Killed(Killed {
            reason: KillReason::MinFree,
            pid: Some(4242),
            job_id: None,
            by: Some(KilledBy::Kernel),
            processes: Some(3),
            rss: Some(1 << 20),
            peak_rss: Some(2 << 20),
        }),
        Event::OomKilled {
            pid: 4242,
            by: KilledBy::Kernel,
        },
        Event::Requeued {
            reason: KillReason::Ceiling,
        },
        Event::RetryScheduled {
            retry: 1,
            after_seconds: 0.25,
        },
        Event::Halted {
            policy: "now,fail=1".into(),
            failed: 1,
        },
        Event::merged(1, stamp, 0, 0.5),
        Event::SegmentDone { segment: 1 },
        Event::SighupIgnored,
        Event::Shutdown {
            signal: 2,
            grace_seconds: 5.0,
        },
        Event::ShutdownNow { signal: 2 },
        Event::Deadline {
            running: 2,
            drain_seconds: 60.0,
        },
        Event::DrainOver { running: 1 },
        Event::CannotGoOn {
            reason: "no usable API key".into(),
        },
        Event::BudgetSpent {
            reason: "limits.max_cost = $1.00 is spent".into(),
        },
        Event::KeyRejected {
            key: "https://api.example/v1 KEY_B".into(),
        },
        Event::Budget {
            max_cost: Some(2.5),
            max_tokens: None,
        },
        Event::Control {
            action: "max-parallel".into(),
            max_parallel: Some(4),
        },
        Event::RunFinished {
            state: RunEnd::Interrupted,
            items_done: 5,
            items_total: 40,
            exit_code: 130,
        },
        Event::Notified {
            command: vec!["notify-send".into(), "nightshift".into()],
            seconds: 0.25,
        },
        Event::NotifyFailed {
            command: vec!["./tell.sh".into()],
            error: "exited with code 3".into(),
            seconds: 0.5,
        },
    ]
}

#[test]
fn every_variant_survives_a_write_and_a_read() {
    let events = one_of_each();
    let names: Vec<&str> = events.iter().map(Event::name).collect();
    assert_eq!(names, Event::NAMES, "one sample per name, in NAMES order");
    let text: String = events
        .iter()
        .enumerate()
        .map(|(i, e)| line(i as u64, Some("agent_01"), e))
        .collect();
    let journal = parse(&text);
    assert!(journal.problems.is_empty(), "{:?}", journal.problems);
    let read: Vec<Event> = journal.entries.iter().map(|e| e.event.clone()).collect();
    assert_eq!(read, events);
    for (i, entry) in journal.entries.iter().enumerate() {
        assert_eq!(entry.ts, at(i as u64));
        assert_eq!(entry.agent.as_deref(), Some("agent_01"));
    }
    for (event, text) in events.iter().zip(text.lines()) {
        let value: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(value["event"], event.name(), "written under its own name");
    }
}

#[test]
fn lines_keep_the_keys_and_values_they_were_always_written_with() {
    let launched = Event::Launched {
        attempt: 1,
        items: 2,
        already_saved: 0,
        phase: None,
        pid: Some(42),
        start_ticks: Some(7),
        job_id: None,
    };
    assert_eq!(
        line(0, Some("agent_01"), &launched),
        "{\"agent\":\"agent_01\",\"already_saved\":0,\"attempt\":1,\"event\":\"launched\",\
         \"items\":2,\"phase\":null,\"pid\":42,\"start_ticks\":7,\
         \"ts\":\"2023-11-14T22:13:20.000Z\"}\n"
    );
    let killed = Event::Killed(Killed {
        processes: Some(2),
        ..Killed::because(KillReason::SegmentEnd)
    });
    assert_eq!(
        line(1, Some("agent_02"), &killed),
        "{\"agent\":\"agent_02\",\"event\":\"killed\",\"processes\":2,\
         \"reason\":\"segment-end\",\"ts\":\"2023-11-14T22:13:21.000Z\"}\n"
    );
    assert_eq!(
        line(2, None, &Event::SighupIgnored),
        "{\"event\":\"sighup-ignored\",\"ts\":\"2023-11-14T22:13:22.000Z\"}\n"
    );
    let phase = Event::Launched {
        attempt: 1,
        items: 2,
        already_saved: 0,
        phase: Some(LaunchPhase::Warmup),
        pid: None,
        start_ticks: None,
        job_id: Some(5),
    };
    assert!(line(3, Some("a"), &phase).contains("\"job_id\":5,\"phase\":\"warmup\","));
}

#[test]
fn unknown_events_are_kept_and_noted_once_per_name() {
    let known = line(0, None, &Event::SighupIgnored);
    let text = format!(
        "{known}{{\"event\":\"teleported\",\"ts\":\"x\",\"to\":\"mars\"}}\n\
         {{\"event\":\"teleported\",\"to\":\"venus\"}}\n{{\"event\":\"beamed\"}}\n{known}"
    );
    let journal = parse(&text);
    assert_eq!(
        journal.entries.len(),
        2,
        "known events around them are read"
    );
    let unknown: Vec<(usize, &str)> = journal
        .unknown
        .iter()
        .map(|u| (u.line, u.name.as_str()))
        .collect();
    assert_eq!(
        unknown,
        [(2, "teleported"), (3, "teleported"), (4, "beamed")]
    );
    assert_eq!(journal.unknown[1].raw["to"], "venus", "kept as read");
    let notes: Vec<String> = journal.problems.iter().map(ToString::to_string).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].starts_with("RUN/events.jsonl line 2: event `teleported` is unknown"));
    assert!(notes[1].starts_with("RUN/events.jsonl line 4: event `beamed`"));
}

#[test]
fn a_damaged_line_in_the_middle_is_reported_with_its_number() {
    let good = line(0, Some("agent_01"), &Event::SegmentDone { segment: 1 });
    let text = format!("{good}{{\"event\":\"launch\n{good}{{\"event\":\"segment-done\"}}\n{good}");
    let journal = parse(&text);
    assert_eq!(
        journal.entries.len(),
        3,
        "the good lines around it are read"
    );
    let notes: Vec<String> = journal.problems.iter().map(ToString::to_string).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with("RUN/events.jsonl line 2: not JSON"),
        "{}",
        notes[0]
    );
    assert!(
        notes[1]
            .starts_with("RUN/events.jsonl line 4: a `segment-done` event without a valid \"ts\""),
        "{}",
        notes[1]
    );
}

#[test]
fn a_torn_last_line_is_ignored_silently() {
    let good = line(0, None, &Event::SegmentDone { segment: 1 });
    let journal = parse(&format!("{good}{good}{{\"event\":\"exi"));
    assert_eq!(journal.entries.len(), 2);
    assert!(journal.problems.is_empty(), "{:?}", journal.problems);
}

#[test]
fn a_missing_journal_has_no_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::read(&dir.path().join("events.jsonl")).expect("read");
    assert!(journal.entries.is_empty() && journal.problems.is_empty());
}
