//! A load generator for the rate broker, run as an agent program by
//! scripts/bench_rate.py and scripts/bench_budget.py: asks for PERMITS
//! permits (env, default 10000) as fast as it can over NIGHTSHIFT_SOCKET,
//! from IN_FLIGHT threads (default 1) with a connection each, then writes
//! one record per item of its task with its own figures, so the run
//! completes: {"id": …, "permits": N, "seconds": S, "median_us": M}.
//!
//! With KEYS=N (a pool of N keys, whose limits it first reports as learned
//! from headers: far above the load) and COST=USD, each permit names the
//! pool and its cost, and is settled by a report with that cost, as an LLM
//! agent's are: the broker's key-choice and budget path. The report is quiet
//! (no reply), as the agent's: the round trip is the permit's.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One line out, one line back.
fn ask(
    writer: &mut UnixStream,
    reader: &mut BufReader<UnixStream>,
    line: &str,
) -> Result<String, Error> {
    writer.write_all(line.as_bytes())?;
    let mut reply = String::new();
    reader.read_line(&mut reply)?;
    if !reply.contains("\"ok\":true") {
        return Err(format!("refused: {reply}").into());
    }
    Ok(reply)
}

/// One connection asking `permits` permits; its round trips in microseconds.
fn load(
    socket: &str,
    permits: usize,
    keys: &[String],
    cost: Option<f64>,
) -> Result<Vec<f64>, Error> {
    let stream = UnixStream::connect(socket)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let money = !keys.is_empty() || cost.is_some();
    let permit = if money {
        let mut request = serde_json::json!({"op": "permit", "tokens": 1, "keys": keys});
        if let Some(cost) = cost {
            request["cost"] = cost.into();
        }
        format!("{request}\n")
    } else {
        "{\"op\":\"permit\",\"tokens\":1}\n".to_owned()
    };
    // The report of a permit for each key (the last: no key named), made
    // once: the load must cost the broker, not this client.
    let report = |key: Option<&String>| {
        // Quiet, as nightshift-agent's: settled with no reply to wait for.
        let mut report =
            serde_json::json!({"op": "report", "tokens": 1, "estimated": 1, "quiet": true});
        if let Some(key) = key {
            report["key"] = key.clone().into();
        }
        if let Some(cost) = cost {
            report["cost"] = cost.into();
            report["estimated_cost"] = cost.into();
        }
        format!("{report}\n")
    };
    let reports: Vec<String> = keys.iter().map(Some).chain([None]).map(report).collect();
    let mut round_trips = Vec::with_capacity(permits);
    for _ in 0..permits {
        let asked = Instant::now();
        let granted = ask(&mut writer, &mut reader, &permit)?;
        if money {
            let chosen = keys
                .iter()
                .position(|key| granted.contains(key.as_str()))
                .unwrap_or(keys.len());
            writer.write_all(reports[chosen].as_bytes())?;
        }
        round_trips.push(asked.elapsed().as_secs_f64() * 1e6);
    }
    Ok(round_trips)
}

fn main() -> Result<(), Error> {
    let socket = std::env::var("NIGHTSHIFT_SOCKET")?;
    let permits: usize = env_number("PERMITS", 10_000);
    let in_flight: usize = env_number("IN_FLIGHT", 1_usize).max(1);
    let key_count: usize = env_number("KEYS", 0);
    let cost: Option<f64> = std::env::var("COST").ok().and_then(|c| c.parse().ok());
    let keys: Vec<String> = (0..key_count)
        .map(|k| format!("http://bench.test/v1 BENCH_KEY_{k}"))
        .collect();
    {
        // What a server's headers would say: limits far above the load.
        let stream = UnixStream::connect(&socket)?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        for key in &keys {
            let window = serde_json::json!({"limit": 100_000_000, "remaining": 100_000_000, "reset_seconds": 1.0});
            let learned = serde_json::json!({"op": "learned", "key": key, "requests": window, "tokens": window});
            ask(&mut writer, &mut reader, &format!("{learned}\n"))?;
        }
    }
    let started = Instant::now();
    let threads: Vec<_> = (0..in_flight)
        .map(|thread| {
            let socket = socket.clone();
            let keys = keys.clone();
            // The permits split over the threads, the first ones taking the rest.
            let share = permits / in_flight + usize::from(thread < permits % in_flight);
            std::thread::spawn(move || load(&socket, share, &keys, cost))
        })
        .collect();
    let mut round_trips = Vec::with_capacity(permits);
    for thread in threads {
        let mine = thread.join().map_err(|_| "a load thread panicked")??;
        round_trips.extend(mine);
    }
    let seconds = started.elapsed().as_secs_f64();
    round_trips.sort_by(f64::total_cmp);
    let median = round_trips
        .get(round_trips.len() / 2)
        .copied()
        .unwrap_or(0.0);
    let task: serde_json::Value =
        serde_json::from_slice(&std::fs::read(std::env::var("NIGHTSHIFT_TASK")?)?)?;
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(std::env::var("NIGHTSHIFT_OUTPUT")?)?;
    for item in task["items"].as_array().into_iter().flatten() {
        let record = serde_json::json!({"id": item["id"], "permits": permits, "seconds": seconds, "median_us": median});
        writeln!(out, "{record}")?;
    }
    Ok(())
}
