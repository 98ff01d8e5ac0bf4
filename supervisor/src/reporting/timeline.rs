//! The attempts of a run as a timeline, read back from events.jsonl: when each
//! agent attempt started and ended, and how. Used by `nightshift report`.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::Value;

use shared::rundir::RunDir;

use crate::run::journal::read_events;

#[derive(Debug, Clone)]
pub struct Bar {
    pub agent: String,
    pub attempt: u32,
    pub start: SystemTime,
    /// None while it runs (or when its supervisor died).
    pub end: Option<SystemTime>,
    /// succeeded, failed, crashed, killed, shutdown, running, interrupted
    pub outcome: String,
    pub detail: String,
}

pub struct Timeline {
    pub bars: Vec<Bar>,
    pub first: Option<SystemTime>,
    pub last: Option<SystemTime>,
}

fn time_of(event: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(event["ts"].as_str()?).ok()
}

pub fn read_timeline(run: &RunDir) -> Timeline {
    let mut bars: Vec<Bar> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    let mut killed: HashMap<String, String> = HashMap::new();
    let (mut first, mut last) = (None::<SystemTime>, None::<SystemTime>);
    for event in read_events(&run.events()) {
        let Some(at) = time_of(&event) else { continue };
        first = Some(first.map_or(at, |f| f.min(at)));
        last = Some(last.map_or(at, |l| l.max(at)));
        let kind = event["event"].as_str().unwrap_or("");
        if kind == "run-started" || kind == "resumed" {
            // A new supervisor: attempts still open belonged to a dead one.
            for index in open.drain().map(|(_, i)| i) {
                bars[index].outcome = "interrupted".into();
                bars[index].detail = "its supervisor stopped".into();
            }
            continue;
        }
        let Some(agent) = event["agent"].as_str() else {
            continue;
        };
        match kind {
            "launched" => {
                open.insert(agent.to_owned(), bars.len());
                killed.remove(agent);
                bars.push(Bar {
                    agent: agent.to_owned(),
                    attempt: event["attempt"]
                        .as_u64()
                        .and_then(|a| u32::try_from(a).ok())
                        .unwrap_or(1),
                    start: at,
                    end: None,
                    outcome: "running".into(),
                    detail: String::new(),
                });
            }
            "killed" if open.contains_key(agent) => {
                killed.insert(
                    agent.to_owned(),
                    event["reason"].as_str().unwrap_or("killed").to_owned(),
                );
            }
            "exited" => {
                let Some(index) = open.remove(agent) else {
                    continue;
                };
                let bar = &mut bars[index];
                bar.end = Some(at);
                let (outcome, detail) = match (
                    killed.remove(agent),
                    event["code"].as_i64(),
                    event["signal"].as_i64(),
                ) {
                    (Some(reason), _, _) if reason == "shutdown" => {
                        ("shutdown".to_owned(), "stopped by a shutdown".to_owned())
                    }
                    (Some(reason), _, _) => ("killed".to_owned(), format!("killed ({reason})")),
                    (None, Some(0), _) => ("succeeded".to_owned(), "exit code 0".to_owned()),
                    (None, Some(code), _) => ("failed".to_owned(), format!("exit code {code}")),
                    (None, None, Some(signal)) => {
                        ("crashed".to_owned(), format!("signal {signal}"))
                    }
                    // A Slurm job ended by Slurm (NODE_FAIL, PREEMPTED, ...).
                    (None, None, None) if event["state"].is_string() => (
                        "failed".to_owned(),
                        format!("Slurm: {}", event["state"].as_str().unwrap_or("")),
                    ),
                    _ => ("failed".to_owned(), "ended".to_owned()),
                };
                bar.outcome = outcome;
                bar.detail = detail;
            }
            _ => {}
        }
    }
    Timeline { bars, first, last }
}
