//! Growing and shrinking a placed cluster under load: 3 `queue-node`
//! processes with 6 shards at replication factor 3, three more started
//! with `--join`, and `raftq cluster set-nodes` declaring all six. The
//! coordinator (on shard 0's leader) moves replicas until every node holds
//! 3; then nodes 4-6 are drained (every replica moved back) and leave.
//! Throughout, a producer enqueues and a worker fetches and acks: every
//! acknowledged enqueue is delivered, and no job is handed out again after
//! its ack succeeded.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::load::Load;
use common::{loopback, queue_on, wait_for, ProcNode};
use raftq_client::proto as pb;
use raftq_client::Client;

const SHARDS: u32 = 6;
const CONFIG: &str = "raft:\n  leader_balance_every_ms: 300\n";

fn raftq() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_queue-node")).with_file_name("raftq")
}

/// `raftq cluster set-nodes` on the peer port at `peer`; returns stdout.
fn set_nodes(peer: &str, args: &[String]) -> String {
    let out = std::process::Command::new(raftq())
        .args(["--peer-addr", peer, "cluster", "set-nodes"])
        .args(args)
        .output()
        .expect("run raftq cluster set-nodes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "set-nodes failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The placement, asked (as a client would) until shard 0 has a leader.
async fn placement(peer: &str) -> pb::PlacementStatus {
    let admin = Client::connect(peer).await.expect("peer port");
    raftq_client::RetryPolicy::default()
        .run(|| {
            let mut cluster = admin.cluster();
            async move { cluster.get_placement(pb::GetPlacementRequest {}).await }
        })
        .await
        .expect("get placement")
        .into_inner()
}

fn replicas(p: &pb::PlacementStatus) -> BTreeMap<u64, u32> {
    p.nodes.iter().map(|n| (n.node_id, n.replicas)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_grow_to_six_and_shrink_back_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let addrs: Vec<String> = (0..6).map(|_| loopback()).collect();
    let peers: Vec<String> = (0..6).map(|_| loopback()).collect();
    let initial = (0..3)
        .map(|i| format!("{}={}", i + 1, peers[i]))
        .collect::<Vec<_>>()
        .join(",");
    let args = |join: bool| {
        let mut args = vec![
            "--config".to_string(),
            config.display().to_string(),
            "--shards".into(),
            SHARDS.to_string(),
            "--replication-factor".into(),
            "3".into(),
        ];
        if join {
            args.push("--join".into());
        }
        args
    };
    let spawn = |i: usize, join: bool| {
        ProcNode::spawn_with(
            i as u64 + 1,
            &addrs[i],
            &peers[i],
            &dir.path().join(format!("n{}", i + 1)),
            &initial,
            args(join),
        )
    };
    let mut nodes: Vec<ProcNode> = (0..3).map(|i| spawn(i, false)).collect();
    wait_for(
        "the 3 nodes to hold every shard",
        Duration::from_secs(60),
        || async {
            let p = Client::connect(&peers[0]).await.ok()?;
            let p = p
                .cluster()
                .get_placement(pb::GetPlacementRequest {})
                .await
                .ok()?
                .into_inner();
            (replicas(&p).values().filter(|r| **r == SHARDS).count() == 3).then_some(())
        },
    )
    .await;

    // Load on a queue of every shard, through node 1.
    let client = common::connect(&addrs[0]).await;
    let queues: Vec<String> = (0..SHARDS).map(|s| queue_on(SHARDS, s, "grow")).collect();
    let load = Load::start(&client, queues, "scale");

    // Declarations that cannot be kept are refused, and nothing is stored.
    let admin = Client::connect(&peers[0]).await.expect("peer port");
    let spec = |id: u64, draining: bool| pb::NodeSpec {
        node_id: id,
        addr: peers[id as usize - 1].clone(),
        zone: String::new(),
        draining,
    };
    let refusals = [
        // Node 4 is not started yet.
        (
            vec![
                spec(1, false),
                spec(2, false),
                spec(3, false),
                spec(4, false),
            ],
            "does not answer as node 4",
        ),
        (
            vec![spec(1, false), spec(2, false), spec(3, true)],
            "2 declared node(s) would take replicas",
        ),
    ];
    for (nodes, reason) in refusals {
        let refused = admin
            .cluster()
            .set_nodes(pb::SetNodesRequest { nodes })
            .await
            .expect_err("a declaration that cannot be kept");
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        assert!(refused.message().contains(reason), "{refused:?}");
    }
    let untouched = placement(&peers[0]).await;
    assert!(untouched.declared.is_empty(), "{untouched:?}");

    // Grow: three nodes join; declaring all six evens the replicas out.
    for i in 3..6 {
        nodes.push(spawn(i, true));
    }
    for peer in &peers[3..] {
        wait_for(
            "a joining node to answer",
            Duration::from_secs(60),
            || async {
                let admin = Client::connect(peer).await.ok()?;
                admin
                    .cluster()
                    .status(pb::ClusterStatusRequest::default())
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }
    let six: Vec<String> = (0..6).map(|i| format!("{}={}", i + 1, peers[i])).collect();
    let text = set_nodes(&peers[1], &six);
    assert!(text.contains("balanced"), "{text}");
    let grown = placement(&peers[0]).await;
    assert!(grown.balanced, "{grown:?}");
    assert_eq!(
        replicas(&grown),
        (1..=6).map(|id| (id, 3)).collect(),
        "every node holds 3 of the 6 shards' 18 replicas: {grown:?}"
    );
    for id in 4..=6usize {
        let admin = nodes[id - 1].admin().await;
        let status = admin
            .cluster()
            .status(pb::ClusterStatusRequest::default())
            .await
            .expect("status")
            .into_inner();
        assert_eq!(status.shards.len(), 3, "node {id}: {status:?}");
    }

    // Shrink: drain the three new nodes, then they leave.
    let mut drain = six.clone();
    drain.push("--drain".into());
    drain.push("4,5,6".into());
    let text = set_nodes(&peers[2], &drain);
    assert!(text.contains("balanced"), "{text}");
    let shrunk = placement(&peers[0]).await;
    for id in 4..=6u64 {
        assert_eq!(
            replicas(&shrunk).get(&id).copied().unwrap_or(0),
            0,
            "{shrunk:?}"
        );
    }
    for id in 1..=3u64 {
        assert_eq!(replicas(&shrunk)[&id], SHARDS, "{shrunk:?}");
    }
    let three: Vec<String> = six[..3].to_vec();
    set_nodes(&peers[0], &three);
    for node in &mut nodes[3..] {
        node.kill();
    }

    // Every acknowledged enqueue is delivered; nothing after its ack.
    load.finish(100).await;

    for node in &mut nodes {
        node.kill();
    }
}
