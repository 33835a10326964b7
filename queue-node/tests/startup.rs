//! Bad node configuration is refused at start with a clear message and a
//! non-zero exit, before anything is written.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, wait_for, ProcNode};
use raftq_client::{Client, JobSpec};

fn queue_node(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_queue-node"))
        .args(args)
        .output()
        .expect("run queue-node")
}

#[test]
fn invalid_settings_exit_non_zero_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    for (args, needle) in [
        (vec!["--shards", "0"], "shards must be in 1..=64"),
        (
            vec!["--linger-min-micros", "5000", "--linger-max-micros", "10"],
            "linger_min_micros",
        ),
        (
            vec!["--initial-members", "7=127.0.0.1:1"],
            "does not list this node",
        ),
        (
            vec!["--initial-members", "oops"],
            "expected <node id>=<host:port>",
        ),
        (
            vec!["--config", "/nonexistent/raftq.yaml"],
            "cannot read config file",
        ),
        (
            vec!["--client-certs", "required"],
            "--client-certs needs TLS",
        ),
        (
            vec![
                "--tls-cert",
                "/nonexistent/node.pem",
                "--tls-key",
                "/nonexistent/key.pem",
                "--tls-ca",
                "/nonexistent/ca.pem",
            ],
            "cannot read certificate /nonexistent/node.pem",
        ),
    ] {
        let out = queue_node(
            &[
                &["--data-dir", &data, "--listen", "127.0.0.1:0"],
                args.as_slice(),
            ]
            .concat(),
        );
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // Memory budgets too small to work with are refused, not bent.
    for (yaml, needle) in [
        (
            "memory:\n  memtable_mib: 2\n",
            "memory.memtable_mib must be at least 4",
        ),
        (
            "shards: 4\nmemory:\n  log_cache_mib: 2\n",
            "memory.log_cache_mib must be at least 1 per shard",
        ),
        (
            "memory:\n  requests_mib: 0\n",
            "memory.requests_mib must be at least 1",
        ),
    ] {
        let file = dir.path().join("memory.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = queue_node(&[
            "--data-dir",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--config",
            &file.display().to_string(),
        ]);
        assert!(!out.status.success(), "{yaml:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{yaml:?}: {stderr}");
    }
    let yaml = dir.path().join("bad.yaml");
    std::fs::write(&yaml, "nodeid: 3\n").unwrap();
    let out = queue_node(&["--config", &yaml.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not valid"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_data_dir_keeps_its_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = ProcNode::single(1, &addr, &data);
    let client = wait_for("connect", Duration::from_secs(30), || async {
        Client::connect(&addr).await.ok()
    })
    .await;
    common::wait_for_leader(&client).await;
    let id = client
        .producer()
        .enqueue("kept", JobSpec::new("x"))
        .await
        .unwrap();
    node.kill();

    let out = queue_node(&[
        "--data-dir",
        &data.display().to_string(),
        "--listen",
        &addr,
        "--shards",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("created with 1 shard(s) but the node was started with 4"),
        "{stderr}"
    );

    // Refusing did no harm: the job is still there.
    node.start();
    let client = wait_for("reconnect", Duration::from_secs(30), || async {
        Client::connect(&addr).await.ok()
    })
    .await;
    common::wait_for_leader(&client).await;
    let job = client
        .admin()
        .get_job(raftq_client::proto::JobRef { job_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.payload, "x".as_bytes());
}
