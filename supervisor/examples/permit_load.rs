//! A load generator for the rate broker, run as an agent program by
//! scripts/bench_rate.py: asks for PERMITS permits (env, default 10000) as fast
//! as it can over NIGHTSHIFT_SOCKET, one connection, then writes one record
//! per item of its task with its own figures, so the run completes:
//! {"id": …, "permits": N, "seconds": S, "median_us": M}.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let socket = std::env::var("NIGHTSHIFT_SOCKET")?;
    let permits: usize = std::env::var("PERMITS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(10_000);
    let stream = UnixStream::connect(socket)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let request = b"{\"op\":\"permit\",\"tokens\":1}\n";
    let mut line = String::new();
    let mut round_trips = Vec::with_capacity(permits);
    let started = Instant::now();
    for _ in 0..permits {
        let asked = Instant::now();
        writer.write_all(request)?;
        line.clear();
        reader.read_line(&mut line)?;
        round_trips.push(asked.elapsed().as_secs_f64() * 1e6);
        if !line.contains("\"ok\":true") {
            return Err(format!("refused: {line}").into());
        }
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
