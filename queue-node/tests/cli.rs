//! The `raftq` CLI against a real `queue-node` process: the quickstart tour,
//! and clear errors with a non-zero exit for bad input.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{free_port, wait_for, ProcNode};

fn raftq_bin() -> PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_queue-node")).with_file_name("raftq");
    assert!(
        bin.exists(),
        "{} missing: build the workspace (cargo test --workspace)",
        bin.display()
    );
    bin
}

/// A node's client and peer ports, as the CLI's `--addr` and `--peer-addr`.
struct Target {
    addr: String,
    peer: String,
}

impl From<&ProcNode> for Target {
    fn from(node: &ProcNode) -> Target {
        Target {
            addr: node.addr.clone(),
            peer: node.peer_addr.clone(),
        }
    }
}

fn raftq(to: &Target, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(raftq_bin())
        .arg("--addr")
        .arg(&to.addr)
        .arg("--peer-addr")
        .arg(&to.peer)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftq");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("raftq output")
}

/// Waits until the node at `addr` reports itself leader, through the CLI.
async fn wait_until_leading(addr: &Target) {
    wait_for("the node to lead", Duration::from_secs(30), || async {
        let out = raftq(addr, &["cluster", "status"], None);
        String::from_utf8_lossy(&out.stdout)
            .contains("role leader")
            .then_some(())
    })
    .await;
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "raftq failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn cli_tour() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let node = ProcNode::single(1, &addr, &dir.path().join("n1"));
    let addr = Target::from(&node);
    wait_until_leading(&addr).await;

    let ids = ok(&raftq(&addr, &["enqueue", "tour", "hello", "world"], None));
    assert_eq!(ids.lines().count(), 2);
    let more = ok(&raftq(
        &addr,
        &["enqueue", "tour"],
        Some("line1\nline2\nfail\n"),
    ));
    assert_eq!(more.lines().count(), 3);
    let stats = ok(&raftq(&addr, &["stats", "tour"], None));
    assert!(
        stats.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("5"),
        "{stats}"
    );

    let first_id = ids.lines().next().unwrap();
    let job = ok(&raftq(&addr, &["job", "get", first_id], None));
    assert!(job.contains("payload:      hello"), "{job}");

    // `work` pipes each payload to the command; "fail" exits 1 and is nacked.
    let out_file = dir.path().join("out.txt");
    let command = format!(
        "p=$(cat); echo \"$p\" >> {}; [ \"$p\" != fail ]",
        out_file.display()
    );
    ok(&raftq(
        &addr,
        &["queue", "config", "tour", "--max-attempts", "1"],
        None,
    ));
    let work = raftq(
        &addr,
        &[
            "work",
            "tour",
            "--concurrency",
            "2",
            "--max-jobs",
            "5",
            "--",
            &command,
        ],
        None,
    );
    ok(&work);
    let processed = std::fs::read_to_string(&out_file).unwrap();
    let mut lines: Vec<_> = processed.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["fail", "hello", "line1", "line2", "world"]);

    let dead = ok(&raftq(&addr, &["dlq", "list", "tour"], None));
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(dead.contains("command exited"), "{dead}");
    let requeued = ok(&raftq(&addr, &["dlq", "requeue", "tour"], None));
    assert!(requeued.contains("requeued 1"), "{requeued}");
    ok(&raftq(&addr, &["queue", "pause", "tour"], None));
    let purged = ok(&raftq(&addr, &["queue", "purge", "tour"], None));
    assert!(purged.contains("purged 1"), "{purged}");
    let stats = ok(&raftq(&addr, &["stats"], None));
    assert!(stats.contains("paused"), "{stats}");
}

#[tokio::test]
async fn cli_errors_are_clear_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    // No node yet: connection refused.
    let nowhere = Target {
        addr: addr.clone(),
        peer: format!("127.0.0.1:{}", free_port()),
    };
    let out = raftq(&nowhere, &["stats"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect"),
        "{out:?}"
    );

    let node = ProcNode::single(1, &addr, &dir.path().join("n1"));
    let addr = Target::from(&node);
    wait_until_leading(&addr).await;
    for (args, needle) in [
        (vec!["enqueue", "bad/name", "x"], "contains '/'"),
        (vec!["enqueue", "q", ""], "payload is empty"),
        (vec!["job", "get", "not-an-id"], "malformed job id"),
        (vec!["job", "get", "0-12345-0"], "not found"),
        (vec!["dlq", "requeue", "q", "0-1-1"], "not a dead job"),
    ] {
        let out = raftq(&addr, &args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("raftq: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
        // The server's words, not gRPC's debug text.
        assert!(
            !stderr.contains("code:") && !stderr.contains("Some requested entity"),
            "{args:?}: {stderr}"
        );
    }
    let out = raftq(&addr, &["job", "get", "0-12345-0"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "raftq: job 0-12345-0 not found: it was acked, cancelled or purged, or never existed\n"
    );
}

/// The production shape: 3 nodes, 4 shards, leaders spread. Every
/// all-shard command works from every node (a forwarded all-shard read
/// used to be refused by a node that leads only some shards).
#[tokio::test]
async fn cli_on_three_nodes_and_four_shards_from_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = common::spawn_cluster(dir.path(), 3, &["--shards".into(), "4".into()]);
    let addrs: Vec<Target> = nodes.iter().map(Target::from).collect();
    // Wait until every shard has a leader and the leaders sit on at least
    // two nodes (the bootstrap spreads them).
    wait_for("spread shard leaders", Duration::from_secs(60), || async {
        let out = raftq(&addrs[0], &["cluster", "status"], None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let leaders: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.split(", leader ").nth(1))
            .map(|rest| rest.split(',').next().unwrap_or("").to_string())
            .collect();
        (out.status.success() && leaders.len() >= 2 && !leaders.contains("none")).then_some(())
    })
    .await;
    // Enough queues to land on every shard.
    let queues: Vec<String> = (0..16).map(|i| format!("q{i}")).collect();
    let mut ids = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        let out = ok(&raftq(&addrs[i % 3], &["enqueue", q, "job"], None));
        ids.push(out.trim().to_string());
    }
    for addr in &addrs {
        let stats = ok(&raftq(addr, &["stats"], None));
        for q in &queues {
            assert!(
                stats
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(q.as_str())),
                "{q} missing from `raftq stats` on {}:\n{stats}",
                addr.addr
            );
        }
        for id in &ids {
            ok(&raftq(addr, &["job", "get", id], None));
        }
        ok(&raftq(addr, &["dlq", "list", "q3"], None));
        ok(&raftq(addr, &["stats", "q5"], None));
        ok(&raftq(addr, &["cluster", "status"], None));
    }
    ok(&raftq(&addrs[1], &["queue", "pause", "q7"], None));
    ok(&raftq(&addrs[2], &["queue", "resume", "q7"], None));
    let purged = ok(&raftq(&addrs[0], &["queue", "purge", "q9"], None));
    assert!(purged.contains("purged 1"), "{purged}");

    // `top` in batch mode: every queue, and every shard with its leader
    // and each member's lag, as seen from any node.
    let listed = ok(&raftq(&addrs[2], &["job", "list", "q3"], None));
    assert!(listed.lines().count() >= 2, "{listed}");
    let frames = ok(&raftq(
        &addrs[2],
        &["top", "--batch", "--iterations", "2", "--interval", "200ms"],
        None,
    ));
    let last = frames
        .split("raftq top —")
        .last()
        .expect("a frame")
        .to_string();
    assert_eq!(frames.matches("raftq top —").count(), 2, "{frames}");
    for q in ["q0", "q3", "q9"] {
        assert!(last.contains(q), "{q} missing in {last}");
    }
    for shard in 0..4 {
        let line = last
            .lines()
            .find(|l| l.contains(&format!("shard {shard}: leader node")))
            .unwrap_or_else(|| panic!("shard {shard} missing in {last}"));
        assert_eq!(line.matches(" lag ").count(), 3, "{line}");
    }
}

/// `raftq bench --spawn` runs end to end and reports what it measured (a
/// functional check: speed is recorded in docs/BENCHMARKS.md, not tested).
#[test]
fn bench_spawns_nodes_and_reports_json() {
    let out = Command::new(raftq_bin())
        .args([
            "bench",
            "--spawn",
            "1",
            "--scenario",
            "mixed",
            "--duration",
            "2s",
        ])
        .args([
            "--producers",
            "2",
            "--workers",
            "2",
            "--concurrency",
            "1",
            "--prefill",
            "500",
            "--json",
        ])
        .output()
        .expect("run raftq bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line");
    let report: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    let number = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {line}"))
    };
    assert!(number("enqueued") > 0.0, "{line}");
    assert!(number("acked") > 0.0, "{line}");
    assert!(number("server_cpu_seconds") > 0.0, "{line}");
    assert_eq!(number("errors"), 0.0, "{line}");
    assert!(
        report["cycle_latency_ms"]["samples"].as_u64() > Some(0),
        "{line}"
    );
    let out = Command::new(raftq_bin())
        .args(["bench", "--spawn", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--spawn takes 1, 3 or 5"));
    let out = Command::new(raftq_bin())
        .args(["bench", "--spawn", "1", "--connections", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--connections must be > 0"));
}

/// The CLI against a node with TLS and auth: its settings from a config
/// file (the CA and a token file); without credentials, or in plaintext,
/// an error that says what to do.
#[tokio::test]
async fn cli_with_tls_and_a_token_from_its_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::certs::TestTls::new(&dir.path().join("tls"));
    let addr = format!("127.0.0.1:{}", free_port());
    let node = ProcNode::single_with(1, &addr, &dir.path().join("n1"), tls.node_args());
    let to = Target::from(&node);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", common::certs::WORKER_TOKEN)).unwrap();
    let config = dir.path().join("cli.yaml");
    std::fs::write(
        &config,
        format!(
            "addr: {addr}\nca_cert: {}\ntoken_file: {}\n",
            tls.ca_file().display(),
            token_file.display()
        ),
    )
    .unwrap();
    let with_config = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        raftq(&to, &all, None)
    };
    wait_for(
        "the node serves over TLS",
        Duration::from_secs(30),
        || async {
            with_config(&["enqueue", "secure", "hello"])
                .status
                .success()
                .then_some(())
        },
    )
    .await;
    let stats = ok(&with_config(&["stats", "secure"]));
    assert!(stats.contains("secure"), "{stats}");

    // The CA but no token: told to sign in.
    let out = raftq(
        &to,
        &["--ca-cert", tls.ca_file().to_str().unwrap(), "stats"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requires credentials"), "{stderr}");
    // Plaintext to a TLS port: told the server may require TLS.
    let out = raftq(&to, &["stats"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("may require TLS"), "{stderr}");
    // A config file with a typo is refused, naming the file.
    std::fs::write(&config, "adress: x\n").unwrap();
    let out = with_config(&["stats"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cli.yaml") && stderr.contains("adress"),
        "{stderr}"
    );
}
