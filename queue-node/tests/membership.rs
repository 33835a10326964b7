//! Growing a one-node cluster to three through the admin API (the path the
//! operator drives), then losing the original node.

mod common;

use std::time::Duration;

use common::{connect, loopback, wait_for, ProcNode};
use raftq_client::proto as pb;
use raftq_client::JobSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learners_promote_them_and_survive_the_first_node() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3).map(|_| loopback()).collect();
    let peers: Vec<String> = (0..3).map(|_| loopback()).collect();
    let mut first = ProcNode::spawn_with(
        1,
        &addrs[0],
        &peers[0],
        &dir.path().join("n1"),
        &format!("1={}", peers[0]),
        Vec::new(),
    );
    let joiners: Vec<ProcNode> = (1..3)
        .map(|i| {
            ProcNode::spawn_with(
                i as u64 + 1,
                &addrs[i],
                &peers[i],
                &dir.path().join(format!("n{}", i + 1)),
                &format!("{}={}", i + 1, peers[i]),
                vec!["--join".into()],
            )
        })
        .collect();
    let c1 = connect(&addrs[0]).await;
    let p1 = connect(&peers[0]).await;
    wait_for("node 1 leads", Duration::from_secs(30), || async {
        let s = p1
            .cluster()
            .status(pb::ClusterStatusRequest::default())
            .await
            .ok()?
            .into_inner();
        (s.shards[0].role == "leader").then_some(())
    })
    .await;
    let ids = c1
        .producer()
        .enqueue_batch("m", (0..10).map(|i| JobSpec::new(format!("{i}"))).collect())
        .await
        .unwrap();

    // A joining node has no leader until it is added.
    let p2 = connect(&peers[1]).await;
    let s = p2
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!s.shards[0].has_leader);

    for (i, addr) in peers.iter().enumerate().skip(1) {
        p1.cluster()
            .add_learner(pb::AddLearnerRequest {
                node_id: i as u64 + 1,
                addr: addr.clone(),
                shard: None,
                no_wait: false,
                timeout_ms: 0,
            })
            .await
            .expect("add learner");
    }
    let s = p1
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let learners = s.shards[0].members.iter().filter(|m| !m.voter).count();
    assert_eq!(learners, 2);

    // Bad membership requests are refused with a reason, and change nothing.
    let e = p1
        .cluster()
        .change_membership(pb::ChangeMembershipRequest {
            voters: vec![],
            retain: false,
            shard: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = p1
        .cluster()
        .change_membership(pb::ChangeMembershipRequest {
            voters: vec![1, 9],
            retain: false,
            shard: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());

    // Asked through a learner: forwarded to the leader. A learner that has
    // not yet heard from the leader answers UNAVAILABLE ("retry"), as any
    // node without a leader does; anything else is a failure.
    let s = wait_for(
        "the learner to forward the promotion",
        Duration::from_secs(30),
        || async {
            let request = pb::ChangeMembershipRequest {
                voters: vec![1, 2, 3],
                retain: false,
                shard: None,
            };
            match p2.cluster().change_membership(request).await {
                Ok(status) => Some(status.into_inner()),
                Err(e) if e.code() == tonic::Code::Unavailable => None,
                Err(e) => panic!("promote: {e}"),
            }
        },
    )
    .await;
    assert_eq!(s.shards[0].members.iter().filter(|m| m.voter).count(), 3);

    // Lose node 1: the other two elect a leader and still have every job.
    first.kill();
    let c3 = connect(&addrs[2]).await;
    let stats = wait_for(
        "a new leader serving stats",
        Duration::from_secs(30),
        || async {
            let r = c3
                .admin()
                .stats(pb::StatsRequest {
                    queue: "m".into(),
                    ..Default::default()
                })
                .await
                .ok()?;
            r.into_inner().queues.into_iter().next()
        },
    )
    .await;
    assert_eq!(stats.ready, 10);
    let job = c3
        .admin()
        .get_job(pb::JobRef {
            job_id: ids[9].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.payload, "9".as_bytes());
    drop(joiners);
}

/// How many of the shards each node leads, as `addr`'s status shows it
/// (`None` while a shard has no leader).
async fn leaderships(client: &raftq_client::Client, nodes: &[u64]) -> Option<Vec<usize>> {
    let s = client
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .ok()?
        .into_inner();
    if s.shards.iter().any(|s| !s.has_leader) {
        return None;
    }
    Some(
        nodes
            .iter()
            .map(|n| s.shards.iter().filter(|s| s.leader_id == *n).count())
            .collect(),
    )
}

/// The operator's bootstrap: node 1 initialises 4 shards alone and leads
/// them all, nodes 2 and 3 join as learners and are promoted. The leaders
/// must spread (no node two ahead of another), and spread again after a
/// node leading two shards is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_spread_after_joins_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3).map(|_| loopback()).collect();
    let peers: Vec<String> = (0..3).map(|_| loopback()).collect();
    let shards = || vec!["--shards".to_string(), "4".to_string()];
    let mut nodes: Vec<ProcNode> = (0..3)
        .map(|i| {
            let mut args = shards();
            if i > 0 {
                args.push("--join".into());
            }
            ProcNode::spawn_with(
                i as u64 + 1,
                &addrs[i],
                &peers[i],
                &dir.path().join(format!("n{}", i + 1)),
                &format!("{}={}", i + 1, peers[i]),
                args,
            )
        })
        .collect();
    let p1 = connect(&peers[0]).await;
    let ids = [1, 2, 3];
    wait_for(
        "node 1 leads every shard",
        Duration::from_secs(30),
        || async { (leaderships(&p1, &ids).await? == vec![4, 0, 0]).then_some(()) },
    )
    .await;
    for (i, addr) in peers.iter().enumerate().skip(1) {
        p1.cluster()
            .add_learner(pb::AddLearnerRequest {
                node_id: i as u64 + 1,
                addr: addr.clone(),
                shard: None,
                no_wait: false,
                timeout_ms: 0,
            })
            .await
            .expect("add learner");
    }
    p1.cluster()
        .change_membership(pb::ChangeMembershipRequest {
            voters: ids.to_vec(),
            retain: false,
            shard: None,
        })
        .await
        .expect("promote");

    let even = |counts: &[usize]| {
        let (min, max) = (counts.iter().min(), counts.iter().max());
        matches!((min, max), (Some(min), Some(max)) if max - min <= 1)
    };
    let counts = wait_for("leaders spread", Duration::from_secs(60), || async {
        let counts = leaderships(&p1, &ids).await?;
        even(&counts).then_some(counts)
    })
    .await;
    assert_eq!(counts.iter().sum::<usize>(), 4);

    // Restart a node that leads two shards: while it is away the other two
    // lead two each; once it is back, it gets one again.
    let busy = counts
        .iter()
        .position(|c| *c == 2)
        .expect("a node leads two");
    assert!(
        nodes[busy].terminate(Duration::from_secs(20)),
        "stops in time"
    );
    let other = connect(&peers[(busy + 1) % 3]).await;
    let mut away = ids.to_vec();
    away.remove(busy);
    wait_for(
        "the others lead two each",
        Duration::from_secs(30),
        || async { (leaderships(&other, &away).await? == vec![2, 2]).then_some(()) },
    )
    .await;
    nodes[busy].start();
    wait_for("leaders spread again", Duration::from_secs(60), || async {
        let counts = leaderships(&other, &ids).await?;
        (even(&counts) && counts[busy] >= 1).then_some(())
    })
    .await;
}
