//! `nightshift completions SHELL` prints a completion script that knows the
//! subcommands; `nightshift man` prints a manual page that renders.

use std::io::Write;
use std::process::{Command, Stdio};

use nightshift_tests::JobDir;

const SUBCOMMANDS: &[&str] = &["run", "resume", "status", "report", "validate", "merge"];

fn script(shell: &str) -> String {
    let job = JobDir::new();
    let finished = job.nightshift(&["completions", shell]);
    finished.expect_code(0);
    assert!(!finished.stdout.trim().is_empty(), "{shell}: empty script");
    for subcommand in SUBCOMMANDS {
        assert!(
            finished.stdout.contains(subcommand),
            "{shell}: `{subcommand}` not completed"
        );
    }
    assert!(
        finished.stdout.contains("notify"),
        "{shell}: options are completed too"
    );
    finished.stdout
}

/// True when `program` can be started here.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `shell -n` (parse, do not run) on the script, when that shell is installed.
fn parses_in(shell: &str, text: &str) {
    if !installed(shell) {
        eprintln!("{shell} is not installed: its script is not parsed");
        return;
    }
    let job = JobDir::new();
    let path = job.write("completion", text);
    let status = Command::new(shell)
        .arg("-n")
        .arg(&path)
        .status()
        .expect("run the shell");
    assert!(status.success(), "{shell} -n refuses the script");
}

#[test]
fn bash_completions_parse() {
    parses_in("bash", &script("bash"));
}

#[test]
fn zsh_completions_name_the_subcommands() {
    let text = script("zsh");
    assert!(text.starts_with("#compdef nightshift"), "{text}");
    parses_in("zsh", &text);
}

#[test]
fn fish_completions_name_the_subcommands() {
    let text = script("fish");
    assert!(text.contains("complete -c nightshift"), "{text}");
    parses_in("fish", &text);
}

#[test]
fn an_unknown_shell_is_bad_usage() {
    JobDir::new()
        .nightshift(&["completions", "cmd.exe"])
        .expect_code(2);
}

#[test]
fn the_man_page_renders() {
    let job = JobDir::new();
    let finished = job.nightshift(&["man"]);
    finished.expect_code(0);
    let page = &finished.stdout;
    assert!(
        page.lines().any(|l| l.starts_with(".TH nightshift 1")),
        "a roff title header: {page}"
    );
    for subcommand in SUBCOMMANDS {
        assert!(page.contains(subcommand), "`{subcommand}` in the page");
    }
    if !installed("man") {
        return;
    }
    // man -l renders a local file; plain text out, no pager.
    let mut child = Command::new("man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "80")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start man");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(page.as_bytes())
        .expect("feed man");
    let rendered = child.wait_with_output().expect("man renders");
    assert!(
        rendered.status.success(),
        "man -l: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("nightshift"), "{text}");
}
