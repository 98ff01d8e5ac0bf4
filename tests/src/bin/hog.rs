//! A memory hog: allocates and touches `--mib N` MiB (only in the agent whose
//! name ends with `--only NAME`, when that is given) and holds it while it
//! saves its task's items, one every `--per-item SECONDS` (default 0.05),
//! skipping saved ones and logging each call to `--calls FILE`. With
//! `--in-child` the work runs in a child, so the memory sits below the
//! agent's own process. Used by memory.rs.

use std::time::Duration;

use nightshift_tests::agent_kit::{
    env, log_call, or_fail, spawn_self, Args, Output, Task, HELPER_FAILED,
};

fn main() {
    let args = Args::parse(
        &["--in-child"],
        &["--mib", "--only", "--per-item", "--calls"],
    );
    if args.flag("--in-child") {
        let rest: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--in-child")
            .collect();
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let status = or_fail(spawn_self(&rest, |_| {}).wait(), "wait for the child");
        std::process::exit(status.code().unwrap_or(HELPER_FAILED));
    }
    let chosen = match args.text("--only") {
        Some(name) => env("NIGHTSHIFT_AGENT").ends_with(name),
        None => true,
    };
    let held = if chosen {
        hold(args.value("--mib").unwrap_or(0))
    } else {
        Vec::new()
    };
    let per_item = Duration::from_secs_f64(args.value("--per-item").unwrap_or(0.05));
    let task = Task::load();
    let mut output = Output::open(&task);
    for id in task.remaining(&output) {
        log_call(&args, &id);
        std::thread::sleep(per_item);
        output.save(&task, &id);
    }
    // Held to the end: the memory is resident for the whole run of the agent.
    std::hint::black_box(&held);
}

/// `mib` MiB, every byte written, so every page is resident.
fn hold(mib: usize) -> Vec<u8> {
    let bytes = mib << 20;
    let mut held = Vec::new();
    or_fail(
        held.try_reserve_exact(bytes),
        &format!("allocate {mib} MiB"),
    );
    held.resize(bytes, 1);
    held
}
