//! A crasher: saves its task's items, skipping saved ones and logging each
//! call to `--calls FILE`; on attempt `--on-attempt N` (NIGHTSHIFT_ATTEMPT,
//! default 1) it dies after saving `--after K` items (default 1): it exits
//! with `--code C` (default 3), or with `--abort` aborts (SIGABRT). Later
//! attempts finish. Used by resume.rs.

use nightshift_tests::agent_kit::{env, log_call, Args, Output, Task};

fn main() {
    let args = Args::parse(
        &["--abort"],
        &["--calls", "--on-attempt", "--after", "--code"],
    );
    let attempt: u32 = env("NIGHTSHIFT_ATTEMPT").parse().unwrap_or(0);
    let dies = attempt == args.value("--on-attempt").unwrap_or(1);
    let after: usize = args.value("--after").unwrap_or(1);
    let task = Task::load();
    let mut output = Output::open(&task);
    let mut saved = 0;
    for id in task.remaining(&output) {
        log_call(&args, &id);
        output.save(&task, &id);
        saved += 1;
        if dies && saved >= after {
            if args.flag("--abort") {
                std::process::abort();
            }
            std::process::exit(args.value("--code").unwrap_or(3));
        }
    }
}
