//! Leadership hand-off before a restart: `StepDown` (the admin RPC and the
//! `queue-node step-down` command the operator's preStop hook runs) moves
//! every shard a node leads to a peer, and the cluster keeps serving.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{connect, wait_for};
use raftq_client::proto as pb;
use raftq_client::{Client, JobSpec};

/// Leader of each shard, once every shard has one all nodes agree on.
async fn leaders(clients: &[Client]) -> BTreeMap<u32, u64> {
    wait_for("every shard led", Duration::from_secs(30), || async {
        let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
        for c in clients {
            let status = c
                .cluster()
                .status(pb::ClusterStatusRequest::default())
                .await
                .ok()?
                .into_inner();
            for s in status.shards {
                if !s.has_leader || *seen.entry(s.shard).or_insert(s.leader_id) != s.leader_id {
                    return None;
                }
            }
        }
        Some(seen)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_moves_every_led_shard_and_service_continues() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = common::spawn_cluster(dir.path(), 3, &["--shards".into(), "2".into()]);
    let mut clients = Vec::new();
    let mut admins = Vec::new();
    for n in &nodes {
        clients.push(connect(&n.addr).await);
        admins.push(n.admin().await);
    }
    let before = leaders(&admins).await;
    let old = before[&0];
    let led_by_old: Vec<u32> = before
        .iter()
        .filter(|(_, l)| **l == old)
        .map(|(s, _)| *s)
        .collect();

    let answer = admins[(old - 1) as usize]
        .cluster()
        .step_down(pb::StepDownRequest {
            timeout_ms: 20_000,
            drain_workers: false,
            shard: None,
        })
        .await
        .expect("step down")
        .into_inner();
    let moved: Vec<u32> = answer.shards.iter().map(|s| s.shard).collect();
    assert_eq!(
        moved, led_by_old,
        "every shard the node led, and only those"
    );
    for s in &answer.shards {
        assert!(
            s.new_leader_id != 0 && s.new_leader_id != old,
            "shard {} still led by {old}: {answer:?}",
            s.shard
        );
    }

    // The node that stepped down still takes requests and forwards them.
    let producer = clients[(old - 1) as usize].producer();
    for n in 0..20 {
        producer
            .enqueue("after-handoff", JobSpec::new(format!("job-{n}")))
            .await
            .expect("enqueue through the former leader");
    }
    let stats = clients[0]
        .admin()
        .stats(pb::StatsRequest {
            queue: "after-handoff".into(),
            local: false,
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.queues[0].ready, 20);

    // The preStop command, against the new leader of shard 0, while a
    // worker stream is open on it: the stream is ended so its worker can
    // reconnect elsewhere, and the node takes no new ones.
    let after = leaders(&admins).await;
    let new = after[&0];
    let on_new = &clients[(new - 1) as usize];
    let (frames, frames_rx) = tokio::sync::mpsc::channel::<pb::WorkerFrame>(4);
    frames
        .send(pb::WorkerFrame {
            open: Some(pb::WorkerOpen {
                queue: "after-handoff".into(),
                worker_id: "draining".into(),
                lease_ms: None,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut stream = on_new
        .queue()
        .worker_stream(tokio_stream::wrappers::ReceiverStream::new(frames_rx))
        .await
        .expect("worker stream")
        .into_inner();
    let out = Command::new(env!("CARGO_BIN_EXE_queue-node"))
        .args([
            "step-down",
            "--drain-workers",
            "--addr",
            &nodes[(new - 1) as usize].peer_addr,
        ])
        .output()
        .expect("run queue-node step-down");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "step-down failed: {stderr}");
    assert!(stderr.contains("now led by node"), "{stderr}");
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends")
        .expect_err("with an error");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("shutting down"), "{ended:?}");
    drop(frames);
    let again = on_new
        .queue()
        .worker_stream(futures::stream::iter([pb::WorkerFrame {
            open: Some(pb::WorkerOpen {
                queue: "after-handoff".into(),
                worker_id: "late".into(),
                lease_ms: None,
            }),
            ..Default::default()
        }]))
        .await;
    let refused = match again {
        Err(status) => status,
        Ok(r) => r
            .into_inner()
            .message()
            .await
            .expect_err("a draining node takes no new stream"),
    };
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let last = leaders(&admins).await;
    assert_ne!(last[&0], new, "shard 0 moved again");
}

#[test]
fn step_down_against_nothing_fails_with_a_clear_message() {
    let port = common::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_queue-node"))
        .args(["step-down", "--addr", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run queue-node step-down");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the node"), "{stderr}");
}

/// The preStop hook dials its own node on 127.0.0.1 but, with TLS, must
/// check the node's certificate for the node's advertised name (a pod's
/// certificate names its DNS name, not loopback): `--advertise`, which a
/// pod sets through `RAFTQ_ADVERTISE`.
#[test]
fn step_down_over_tls_checks_the_advertised_name_not_loopback() {
    use common::certs::{Ca, NodeFiles};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("pod CA");
    let files = NodeFiles::write(
        &dir.path().join("tls"),
        &ca,
        &ca.leaf(&["orders-0.orders-peers.shop.svc"], "orders"),
    );
    let path = |p: &std::path::Path| p.display().to_string();
    let node = common::ProcNode::single_with(
        1,
        &common::loopback(),
        &dir.path().join("n1"),
        [
            "--tls-cert",
            &path(&files.cert),
            "--tls-key",
            &path(&files.key),
            "--tls-ca",
            &path(&files.ca),
        ]
        .map(String::from)
        .to_vec(),
    );
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n",
            path(&files.cert),
            path(&files.key),
            path(&files.ca)
        ),
    )
    .unwrap();
    let step_down = |advertise: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_queue-node"));
        cmd.args(["step-down", "--addr", &node.peer_addr, "--config"])
            .arg(&config)
            .env_remove("RAFTQ_ADVERTISE");
        if let Some(name) = advertise {
            cmd.args(["--advertise", name]);
        }
        cmd.output().expect("run queue-node step-down")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = step_down(Some("orders-0.orders-peers.shop.svc:7401"));
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "step-down checking the advertised name failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Checked against 127.0.0.1, the pod's certificate does not fit.
    let out = step_down(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot reach the node"), "{stderr}");
    assert!(
        stderr.contains("certificate"),
        "the cause is named: {stderr}"
    );
}
