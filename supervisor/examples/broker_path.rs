//! The rate broker's decisions alone, in one process and one thread, no
//! socket: microseconds per permit (and its report, when settled) for the
//! three paths scripts/bench_budget.py compares over sockets — landed (a
//! plain permit), settled (a permit and a report with its cost) and money
//! (a budget held, a pool of three keys with learned limits to choose from,
//! a permit with its cost and a report with the key and the cost).
//! Prints one JSON object: {"landed": US, "settled": US, "money": US}.

use std::time::Instant;

use shared::broker::{LearnedLimits, Reply, Request, Window};
use shared::money::Spend;
use supervisor::rate::broker::{Answer, Broker};
use supervisor::rate::log::RateLog;
use supervisor::rate::spend::SpendLimit;

const PERMITS: usize = 200_000;

fn measure(mode: &str, log: &std::path::Path) -> Result<f64, Box<dyn std::error::Error>> {
    let mut broker = Broker::new(
        None,
        RateLog::new(log.to_owned(), 1 << 30),
        None,
        Instant::now(),
    );
    let keys: Vec<String> = (0..3)
        .map(|k| format!("http://bench.test/v1 BENCH_KEY_{k}"))
        .collect();
    let money = mode == "money";
    if money {
        broker.set_budget(SpendLimit::new(Some(1e9), None, Spend::default()));
        let window = Window {
            limit: 100_000_000,
            remaining: 100_000_000,
            reset_seconds: 1.0,
        };
        for key in &keys {
            broker.answer(
                &Request::Learned {
                    key: key.clone(),
                    agent: String::new(),
                    limits: LearnedLimits {
                        requests: Some(window),
                        tokens: Some(window),
                        ..LearnedLimits::default()
                    },
                },
                Instant::now(),
            );
        }
    }
    let permit = Request::Permit {
        tokens: 1,
        agent: "segment_01/orch_01/agent_01".into(),
        key: None,
        cost: money.then_some(1e-6),
        keys: if money { keys.clone() } else { Vec::new() },
        prefix: None,
    };
    let started = Instant::now();
    for _ in 0..PERMITS {
        let reply = grant(&mut broker, &permit)?;
        if mode != "landed" {
            let report = Request::Report {
                tokens: 1,
                estimated: Some(1),
                agent: String::new(),
                key: reply.key,
                cost: Some(1e-6),
                estimated_cost: money.then_some(1e-6),
                prefix: None,
                quiet: true,
            };
            broker.answer(&report, Instant::now());
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / PERMITS as f64)
}

/// A permit asked and granted, as the broker's thread does it: queued under
/// a ticket, then granted by grant_due.
fn grant(broker: &mut Broker, permit: &Request) -> Result<Reply, Box<dyn std::error::Error>> {
    let now = Instant::now();
    let Answer::Later(ticket) = broker.answer(permit, now) else {
        return Err("a permit is answered through grant_due".into());
    };
    broker
        .grant_due(now)
        .into_iter()
        .find(|(t, _)| *t == ticket)
        .map(|(_, reply)| reply)
        .ok_or_else(|| "the permit was not granted at once".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("rate.log");
    let mut figures = serde_json::Map::new();
    for mode in ["landed", "settled", "money"] {
        figures.insert(mode.into(), measure(mode, &log)?.into());
    }
    println!("{}", serde_json::Value::Object(figures));
    Ok(())
}
