//! Shards placed on some nodes only: 6 `queue-node` processes with 12
//! shards at replication factor 3. Every node holds 6 shards and comes to
//! lead 2; a request for a shard a node does not hold is forwarded to that
//! shard's leader (or, sent direct, answered with it); the shard map and
//! cluster-wide stats cover all 12 shards; a routing client has nothing
//! forwarded; and a node restarted with another replication factor is
//! refused, its data left as it was.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{
    direct_enqueue, forwarded, http_get, loopback, queue_on, statuses, wait_for, ProcNode,
};
use raftq_client::proto as pb;
use raftq_client::{Client, ConnectOptions, JobSpec, Producer};

const NODES: u64 = 6;
const SHARDS: u32 = 12;

/// Fast leadership balancing, so the preferred leaders are reached within
/// seconds; the console's samples 5 times a second.
const CONFIG: &str = "raft:\n  leader_balance_every_ms: 300\nconsole:\n  sample_every_ms: 200\n";

/// Acknowledges `tokens`, retried while a shard's leader is being elected
/// or cannot confirm it leads, as a client would.
async fn ack(client: &Client, tokens: Vec<pb::LeaseToken>) {
    let request = pb::AckRequest { tokens };
    raftq_client::RetryPolicy::default()
        .run(|| {
            let mut queue = client.queue();
            let request = request.clone();
            async move { queue.ack(request).await }
        })
        .await
        .expect("ack");
}

/// Every queue's stats, retried as [`ack`] is.
async fn all_stats(client: &Client) -> pb::StatsResponse {
    raftq_client::RetryPolicy::default()
        .run(|| {
            let mut admin = client.admin();
            async move { admin.stats(pb::StatsRequest::default()).await }
        })
        .await
        .expect("stats")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_hold_six_of_twelve_shards_each_and_serve_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let n = NODES as usize;
    let addrs: Vec<String> = (0..n).map(|_| loopback()).collect();
    let peers: Vec<String> = (0..n).map(|_| loopback()).collect();
    let http: Vec<String> = (0..n).map(|_| loopback()).collect();
    let members = peers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let args = |i: usize, factor: &str| {
        vec![
            "--config".into(),
            config.display().to_string(),
            "--shards".into(),
            SHARDS.to_string(),
            "--replication-factor".into(),
            factor.into(),
            "--http-listen".into(),
            http[i].clone(),
        ]
    };
    let mut nodes: Vec<ProcNode> = (0..n)
        .map(|i| {
            ProcNode::spawn_with(
                i as u64 + 1,
                &addrs[i],
                &peers[i],
                &dir.path().join(format!("n{}", i + 1)),
                &members,
                args(i, "3"),
            )
        })
        .collect();
    let by_id: BTreeMap<u64, String> = (0..n).map(|i| (i as u64 + 1, addrs[i].clone())).collect();

    // Every node holds 6 shards, each of them with 3 voters, and every
    // shard is held by exactly 3 nodes; each node leads 2.
    let settled = wait_for(
        "every node to lead 2 of its 6 shards",
        Duration::from_secs(90),
        || async {
            let all = statuses(&nodes).await?;
            let leads =
                |s: &pb::ClusterStatus| s.shards.iter().filter(|s| s.role == "leader").count();
            all.values()
                .all(|s| s.shards.len() == 6 && leads(s) == 2)
                .then_some(all)
        },
    )
    .await;
    let mut holders: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for (id, status) in &settled {
        for shard in &status.shards {
            holders.entry(shard.shard).or_default().insert(*id);
            let voters: BTreeSet<u64> = shard
                .members
                .iter()
                .filter(|m| m.voter)
                .map(|m| m.node_id)
                .collect();
            assert_eq!(
                voters.len(),
                3,
                "node {id}, shard {}: {voters:?}",
                shard.shard
            );
            assert!(voters.contains(id));
        }
    }
    assert_eq!(holders.len(), SHARDS as usize, "{holders:?}");
    assert!(holders.values().all(|h| h.len() == 3), "{holders:?}");

    // The map from any node covers every shard, held there or not.
    let plain =
        common::connect_with(&addrs[0], ConnectOptions::new().route_to_leaders(false)).await;
    let map = wait_for("a complete shard map", Duration::from_secs(30), || async {
        let map = plain
            .queue()
            .get_shard_map(pb::GetShardMapRequest::default())
            .await
            .ok()?
            .into_inner();
        (map.shards.len() == SHARDS as usize
            && map
                .shards
                .iter()
                .all(|s| s.leader_id != 0 && !s.leader_addr.is_empty()))
        .then_some(map)
    })
    .await;
    assert_eq!(map.shard_count, SHARDS);
    for route in &map.shards {
        assert_eq!(route.leader_addr, by_id[&route.leader_id], "{route:?}");
        assert_eq!(
            route.members.iter().copied().collect::<BTreeSet<_>>(),
            holders[&route.shard],
            "{route:?}"
        );
    }

    // `raftq shards` shows where every shard lives, from any node (once
    // node 1 has heard the last hand-overs of shards it does not hold).
    let raftq = std::path::Path::new(env!("CARGO_BIN_EXE_queue-node")).with_file_name("raftq");
    let even = |text: &str| {
        (1..=NODES).all(|id| text.contains(&format!("\nnode {id}  6 replica(s), leads 2\n")))
    };
    let text = wait_for(
        "`raftq shards` to show 2 leaderships per node",
        Duration::from_secs(30),
        || async {
            let out = std::process::Command::new(&raftq)
                .args(["--addr", &addrs[0], "shards"])
                .output()
                .expect("run raftq shards");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            even(&text).then_some(text)
        },
    )
    .await;
    assert!(
        text.starts_with("12 shard(s), as node 1 sees them\n"),
        "{text}"
    );
    let map = plain
        .queue()
        .get_shard_map(pb::GetShardMapRequest::default())
        .await
        .expect("map")
        .into_inner();
    let shard0 = &map.shards[0];
    assert!(
        text.contains(&format!(
            "shard  0  leader node {} ({}), term {}",
            shard0.leader_id, by_id[&shard0.leader_id], shard0.term
        )),
        "{text}"
    );

    // Through node 1, which holds only half the shards, a job on every
    // shard is enqueued, leased and acknowledged.
    let queues: Vec<String> = (0..SHARDS).map(|s| queue_on(SHARDS, s, "placed")).collect();
    let producer = Producer::new(plain.clone());
    for queue in &queues {
        producer
            .enqueue(queue, JobSpec::new(format!("for {queue}")))
            .await
            .unwrap_or_else(|e| panic!("enqueue on {queue}: {e}"));
    }
    let other =
        common::connect_with(&addrs[5], ConnectOptions::new().route_to_leaders(false)).await;
    for queue in &queues {
        let leased = common::fetch(&other, queue, 10).await;
        assert_eq!(leased.len(), 1, "{queue}");
        let payload = leased[0].job.as_ref().map(|j| j.payload.to_vec());
        assert_eq!(payload, Some(format!("for {queue}").into_bytes()));
        let tokens = leased[0].token.clone().into_iter().collect();
        ack(&other, tokens).await;
    }
    // Stats of every queue, asked of one node, come from all 12 shards.
    let stats = all_stats(&plain).await;
    let named: BTreeSet<&str> = stats.queues.iter().map(|q| q.queue.as_str()).collect();
    for queue in &queues {
        assert!(
            named.contains(queue.as_str()),
            "{queue} missing from {named:?}"
        );
    }

    // The console's history on node 1 has every queue, those of shards it
    // does not hold included.
    wait_for(
        "node 1's history of all 12 queues",
        Duration::from_secs(30),
        || async {
            let answer = http_get(&addrs[0], "/api/v1/history").await?;
            let (_, body) = answer.split_once("\r\n\r\n")?;
            let history: serde_json::Value = serde_json::from_str(body).ok()?;
            let charted = history["queues"].as_object()?;
            queues
                .iter()
                .all(|q| {
                    charted
                        .get(q)
                        .and_then(|points| points.as_array())
                        .is_some_and(|p| !p.is_empty())
                })
                .then_some(())
        },
    )
    .await;

    // A direct request for a shard node 1 does not hold names the leader.
    let elsewhere = (0..SHARDS)
        .find(|s| !holders[s].contains(&1))
        .expect("a shard node 1 does not hold");
    let refused = plain
        .queue()
        .enqueue(direct_enqueue(&queue_on(SHARDS, elsewhere, "placed")))
        .await
        .expect_err("a direct request to a node without the shard");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let leader = map.shards[elsewhere as usize].leader_id;
    assert_eq!(
        refused
            .metadata()
            .get("x-raftq-leader-addr")
            .and_then(|v| v.to_str().ok()),
        Some(by_id[&leader].as_str())
    );

    // Membership changes of a shard go to a node that holds it.
    let admin1 = Client::connect(&peers[0])
        .await
        .expect("node 1's peer port");
    let elsewhere_voters = &holders[&elsewhere];
    let refused = admin1
        .cluster()
        .add_learner(pb::AddLearnerRequest {
            node_id: 9,
            addr: "127.0.0.1:1".into(),
            shard: Some(elsewhere),
            no_wait: false,
            timeout_ms: 1_000,
        })
        .await
        .expect_err("a membership change of a shard node 1 does not hold");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains(&format!(
            "shard {elsewhere} is not on node 1 (its members are nodes {:?})",
            elsewhere_voters.iter().collect::<Vec<_>>()
        )),
        "{}",
        refused.message()
    );

    // A client routing by the map sends each request to its leader.
    let routed = common::connect(&addrs[0]).await;
    routed.refresh_shard_map().await.expect("shard map");
    let before = forwarded(&http).await;
    let producer = Producer::new(routed.clone());
    for queue in &queues {
        producer
            .enqueue(queue, JobSpec::new("routed"))
            .await
            .unwrap_or_else(|e| panic!("routed enqueue on {queue}: {e}"));
        let to_leader = routed.for_queue(queue);
        let leased = common::fetch(&to_leader, queue, 10).await;
        assert_eq!(leased.len(), 1, "{queue}");
        let tokens = leased[0].token.clone().into_iter().collect();
        ack(&to_leader, tokens).await;
    }
    assert_eq!(forwarded(&http).await, before, "nothing forwarded");

    // Restarted with another replication factor, a node refuses to start
    // and its data is left as it was.
    let node6 = nodes.pop().expect("node 6");
    drop(node6);
    let mut changed = ProcNode::spawn_with(
        6,
        &addrs[5],
        &peers[5],
        &dir.path().join("n6"),
        &members,
        args(5, "5"),
    );
    let status = changed
        .wait_exit(Duration::from_secs(30))
        .expect("a node with another replication factor exits");
    assert!(!status.success());
    let log = changed.log();
    assert!(
        log.contains("created with replication factor 3 but the node was started with 5"),
        "{log}"
    );
    let mut same = ProcNode::spawn_with(
        6,
        &addrs[5],
        &peers[5],
        &dir.path().join("n6"),
        &members,
        args(5, "3"),
    );
    let back = common::connect_with(&addrs[5], ConnectOptions::new().route_to_leaders(false)).await;
    // Once it serves its own shards and knows who leads the others.
    let stats = wait_for(
        "node 6 to serve every shard again",
        Duration::from_secs(60),
        || async {
            let ready = http_get(&http[5], "/readyz").await?;
            if !ready.starts_with("HTTP/1.1 200") {
                return None;
            }
            back.admin()
                .stats(pb::StatsRequest::default())
                .await
                .ok()
                .map(|r| r.into_inner())
        },
    )
    .await;
    let acked: u64 = stats.queues.iter().map(|q| q.acked_total).sum();
    assert_eq!(acked, 2 * u64::from(SHARDS), "{stats:?}");
    same.kill();
}
