//! The command line's own contract: usage errors exit 2. (This test also makes
//! `cargo test` build the `nightshift` binary that the end-to-end tests in
//! tests/ run.)

use std::process::Command;

fn nightshift(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(args)
        .output()
        .expect("run nightshift")
}

#[test]
fn version_and_help_exit_zero() {
    assert!(nightshift(&["--version"]).status.success());
    let help = nightshift(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["run", "plan", "validate", "merge"] {
        assert!(text.contains(command), "--help lists {command}: {text}");
    }
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(nightshift(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(nightshift(&["run"]).status.code(), Some(2));
    let missing = nightshift(&["run", "/nonexistent/job.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/job.toml"));
    assert_eq!(
        nightshift(&["validate", "/nonexistent/run"]).status.code(),
        Some(2)
    );
}
