//! The `raftq` binary's usage handling (the end-to-end CLI tests against a
//! real node live in `queue-node/tests/cli.rs`; this target also makes
//! `cargo test --workspace` build the binary they run).

use std::process::Command;

#[test]
fn help_lists_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_raftq"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "enqueue", "work", "stats", "job", "dlq", "queue", "shards", "cluster", "top",
    ] {
        assert!(help.contains(command), "help lacks {command}: {help}");
    }
}

#[test]
fn unknown_commands_and_bad_flags_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_raftq"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_raftq"))
        .args(["enqueue", "q", "x", "--header", "no-equals-sign"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));
    // A batch-only option without --batch is refused, not ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_raftq"))
        .args(["top", "--iterations", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--batch"));
}
