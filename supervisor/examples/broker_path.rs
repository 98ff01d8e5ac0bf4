//! The rate broker's decisions alone, in one process and one thread, no
//! socket: microseconds per permit (and its report, when settled) for the
//! three paths scripts/bench_budget.py compares over sockets — landed (a
//! plain permit), settled (a permit and a report with its cost) and money
//! (a budget held, a pool of three keys with learned limits to choose from,
//! a permit with its cost and a report with the key and the cost).
//! Prints one JSON object: {"landed": US, "settled": US, "money": US}.

use std::io::BufWriter;
use std::time::Instant;

use shared::broker::{LearnedLimits, Request, Window};
use shared::money::Spend;
use supervisor::rate::broker::Broker;
use supervisor::rate::spend::SpendLimit;

const PERMITS: usize = 200_000;

fn measure(mode: &str, log: &std::path::Path) -> Result<f64, Box<dyn std::error::Error>> {
    let broker = Broker::new(
        None,
        BufWriter::new(std::fs::File::create(log)?),
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
            broker.answer(&Request::Learned {
                key: key.clone(),
                agent: String::new(),
                limits: LearnedLimits {
                    requests: Some(window),
                    tokens: Some(window),
                    ..LearnedLimits::default()
                },
            });
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
        let reply = broker.answer(&permit);
        if mode != "landed" {
            broker.answer(&Request::Report {
                tokens: 1,
                estimated: Some(1),
                agent: String::new(),
                key: reply.key,
                cost: Some(1e-6),
                estimated_cost: money.then_some(1e-6),
                prefix: None,
            });
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / PERMITS as f64)
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
