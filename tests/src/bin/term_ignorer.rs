//! A TERM-ignorer: ignores SIGTERM and, with `--child`, starts a child that
//! ignores it too (with `--setsid`, in a session of its own: out of the
//! agent's process group); appends the child's pid and its own to
//! `--pids FILE`, then hangs until KILLed. Used by process_trees.rs, as an
//! exec item command and as an agent program.

use nightshift_tests::agent_kit::{append_line, or_fail, stall, start_self, Args};
use nix::sys::signal::{signal, SigHandler, Signal};

fn main() {
    let args = Args::parse(&["--child", "--setsid", "--as-child"], &["--pids"]);
    // SAFETY: SIG_IGN installs no handler, so no code runs in signal context.
    or_fail(
        unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) },
        "ignore SIGTERM",
    );
    if args.flag("--as-child") {
        // A fresh child is no group leader, so it may start a session.
        if args.flag("--setsid") {
            or_fail(nix::unistd::setsid(), "start a session");
        }
        stall();
    }
    let pids = args.text("--pids");
    if args.flag("--child") {
        let role: &[&str] = if args.flag("--setsid") {
            &["--as-child", "--setsid"]
        } else {
            &["--as-child"]
        };
        let child = start_self(role, |_| {});
        if let Some(pids) = pids {
            append_line(pids, child);
        }
    }
    if let Some(pids) = pids {
        append_line(pids, std::process::id());
    }
    stall();
}
