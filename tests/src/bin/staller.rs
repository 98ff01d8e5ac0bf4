//! A staller: saves the first `--save N` items of its task, with `--child`
//! starts a child that stalls too (in the agent's process group), then stalls
//! until killed. As an exec item command with `--only ID` it echoes every item
//! but that one at once and stalls on that one. Used by process_trees.rs and
//! interrupt.rs.

use std::io::{Read, Write};

use nightshift_tests::agent_kit::{or_fail, stall, start_self, Args, Output, Task};

fn main() {
    let args = Args::parse(&["--child", "--as-child"], &["--save", "--only"]);
    if args.flag("--as-child") {
        stall();
    }
    if let Some(id) = args.text("--only") {
        let mut item = String::new();
        or_fail(std::io::stdin().read_to_string(&mut item), "read the item");
        if !item.contains(id) {
            let mut stdout = std::io::stdout();
            or_fail(stdout.write_all(item.as_bytes()), "answer");
            or_fail(stdout.flush(), "answer");
            return;
        }
    }
    if let Some(count) = args.value::<usize>("--save") {
        let task = Task::load();
        let mut output = Output::open(&task);
        for item in task.items.iter().take(count) {
            output.save(&task, task.id(item));
        }
    }
    if args.flag("--child") {
        start_self(&["--as-child"], |_| {});
    }
    stall();
}
