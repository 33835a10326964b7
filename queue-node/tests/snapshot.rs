//! A follower that was down while the leader snapshotted and purged its log
//! catches up by installing the snapshot, and ends with the same state.

mod common;

use std::time::Duration;

use common::wait_for;
use raftq_client::proto as pb;
use raftq_client::{Client, JobSpec};

async fn status(client: &Client) -> Option<pb::ShardStatus> {
    let s = client
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .ok()?
        .into_inner();
    s.shards.into_iter().next()
}

async fn local_stats(client: &Client, queue: &str) -> Option<pb::QueueStats> {
    let r = client
        .admin()
        .stats(pb::StatsRequest {
            queue: queue.into(),
            local: true,
        })
        .await
        .ok()?;
    r.into_inner().queues.into_iter().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_installs_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        "raft:\n  snapshot_every_entries: 20\n  logs_kept_after_snapshot: 0\n",
    )
    .unwrap();
    let args = vec!["--config".to_string(), config.display().to_string()];
    let mut nodes = common::spawn_cluster(dir.path(), 3, &args);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let mut clients = Vec::new();
    for a in &addrs {
        clients.push(
            wait_for("connect", Duration::from_secs(30), || async {
                Client::connect(a).await.ok()
            })
            .await,
        );
    }
    let admins: Vec<Client> = futures::future::join_all(nodes.iter().map(|n| n.admin())).await;
    let leader = wait_for("a leader", Duration::from_secs(30), || async {
        let s = status(&admins[0]).await?;
        s.has_leader.then_some(s.leader_id)
    })
    .await;
    // Stop a follower, then write enough entries for several snapshots.
    let lagger = if leader == 3 { 1 } else { 3 };
    let li = (lagger - 1) as usize;
    let writer = clients[(leader - 1) as usize].clone();
    nodes[li].kill();
    for i in 0..120 {
        writer
            .producer()
            .enqueue("snap", JobSpec::new(format!("job-{i}")))
            .await
            .expect("enqueue with a quorum of two");
    }
    let leader_status = status(&admins[(leader - 1) as usize]).await.unwrap();
    assert!(leader_status.applied_index > 120);

    nodes[li].start();
    let lagging = wait_for(
        "the lagging node to reconnect",
        Duration::from_secs(30),
        || async { Client::connect(&addrs[li]).await.ok() },
    )
    .await;
    let lagging_admin = nodes[li].admin().await;
    wait_for(
        "the lagging node to catch up",
        Duration::from_secs(60),
        || async {
            let s = status(&lagging_admin).await?;
            (s.applied_index >= leader_status.applied_index).then_some(())
        },
    )
    .await;
    assert!(
        nodes[li].log().contains("installed snapshot"),
        "{}",
        nodes[li].log()
    );
    let s = local_stats(&lagging, "snap")
        .await
        .expect("the snapshot carried the queue");
    assert_eq!(s.ready, 120);

    // Its state is real: after a restart it still has every job.
    nodes[li].kill();
    nodes[li].start();
    let lagging = wait_for("reconnect", Duration::from_secs(30), || async {
        Client::connect(&addrs[li]).await.ok()
    })
    .await;
    let s = wait_for(
        "local stats after restart",
        Duration::from_secs(30),
        || async { local_stats(&lagging, "snap").await },
    )
    .await;
    assert_eq!(s.ready, 120);
}
