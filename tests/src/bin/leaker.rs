//! A leaker: saves every item of its task, then leaves two daemons behind
//! that escape its process group: one in a session of its own that keeps the
//! run's environment, and one with an empty environment whose parent exits at
//! once (a double fork), so only the process that adopts orphans can find it.
//! Their pids go to `--pids FILE`; they give up after a while by themselves.
//! Used by process_trees.rs.

use std::process::{Command, Stdio};

use nightshift_tests::agent_kit::{
    append_line, fail, or_fail, spawn_self, stall, start_self, Args, Output, Task,
};

fn main() {
    let args = Args::parse(&["--daemon", "--middle"], &["--pids"]);
    if args.flag("--daemon") {
        // A fresh child is no group leader, so it may start a session.
        or_fail(nix::unistd::setsid(), "start a session");
        stall();
    }
    let pids = args
        .text("--pids")
        .unwrap_or_else(|| fail("--pids FILE is required"));
    if args.flag("--middle") {
        let bare = start_self(&["--daemon"], |c| {
            quiet(c).env_clear();
        });
        append_line(pids, bare);
        // Exiting now orphans the daemon: the second fork of a double fork.
        return;
    }
    let task = Task::load();
    let mut output = Output::open(&task);
    for item in &task.items {
        output.save(&task, task.id(item));
    }
    let kept = start_self(&["--daemon"], |c| {
        quiet(c);
    });
    let mut middle = spawn_self(&["--middle", "--pids", pids], |c| {
        quiet(c);
    });
    or_fail(middle.wait(), "wait for the middle process");
    append_line(pids, kept);
}

/// Daemons hold none of the agent's output pipes, as a real daemon would not.
fn quiet(command: &mut Command) -> &mut Command {
    command.stdout(Stdio::null()).stderr(Stdio::null())
}
