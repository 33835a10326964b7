//! Clients that find leaders themselves: `GetShardMap` on a 3-process,
//! 4-shard cluster names each shard's leader by its client address; a
//! request marked `x-raftq-route: direct` to a node that does not lead is
//! answered with the leader instead of forwarded; the SDK, routing by the
//! map, has no request forwarded — also after a leader hands off — while
//! a client that does not route has its requests forwarded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{direct_enqueue, forwarded, loopback, queue_on, wait_for, ProcNode};
use raftq_client::proto as pb;
use raftq_client::{Client, ConnectOptions, JobSpec, Worker};

const SHARDS: u32 = 4;

/// The map once every shard has a leader with a known client address.
async fn complete_map(client: &Client) -> pb::ShardMap {
    wait_for("a complete shard map", Duration::from_secs(30), || async {
        let map = client
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
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_route_by_the_shard_map_and_a_wrong_node_names_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3).map(|_| loopback()).collect();
    let peers: Vec<String> = (0..3).map(|_| loopback()).collect();
    let http: Vec<String> = (0..3).map(|_| loopback()).collect();
    let members = peers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let _nodes: Vec<ProcNode> = (0..3)
        .map(|i| {
            ProcNode::spawn_with(
                i as u64 + 1,
                &addrs[i],
                &peers[i],
                &dir.path().join(format!("n{}", i + 1)),
                &members,
                vec![
                    "--shards".into(),
                    SHARDS.to_string(),
                    "--http-listen".into(),
                    http[i].clone(),
                ],
            )
        })
        .collect();
    let by_id: BTreeMap<u64, String> = (0..3).map(|i| (i as u64 + 1, addrs[i].clone())).collect();

    // The map names every shard's leader by its client address.
    let plain =
        common::connect_with(&addrs[0], ConnectOptions::new().route_to_leaders(false)).await;
    let map = complete_map(&plain).await;
    assert_eq!(map.shard_count, SHARDS);
    assert_eq!(map.node_id, 1);
    for route in &map.shards {
        assert_eq!(route.leader_addr, by_id[&route.leader_id], "{route:?}");
        assert_eq!(
            route.members.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([1, 2, 3])
        );
    }
    let asked = plain
        .queue()
        .get_shard_map(pb::GetShardMapRequest {
            queues: vec!["emails".into()],
        })
        .await
        .expect("map")
        .into_inner();
    assert_eq!(
        asked.queues["emails"],
        raftq_api::shard_of("emails", SHARDS)
    );
    // Bad input is refused with what to change.
    let too_many = plain
        .queue()
        .get_shard_map(pb::GetShardMapRequest {
            queues: vec!["q".into(); raftq_api::limits::MAX_TOKEN_BATCH + 1],
        })
        .await
        .expect_err("too many names");
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    assert!(
        too_many.message().contains("at most"),
        "{}",
        too_many.message()
    );
    let bad_name = plain
        .queue()
        .get_shard_map(pb::GetShardMapRequest {
            queues: vec![String::new()],
        })
        .await
        .expect_err("an empty queue name");
    assert_eq!(
        bad_name.code(),
        tonic::Code::InvalidArgument,
        "{bad_name:?}"
    );

    // A direct request to a node that does not lead its shard is answered
    // with the leader, not forwarded.
    let shard0 = &map.shards[0];
    let follower = (1..=3)
        .find(|id| *id != shard0.leader_id)
        .expect("a follower");
    let to_follower = common::connect_with(
        &by_id[&follower],
        ConnectOptions::new().route_to_leaders(false),
    )
    .await;
    // Once that node has learned its peers' client addresses too.
    complete_map(&to_follower).await;
    let queue0 = queue_on(SHARDS, 0, "direct");
    let before = forwarded(&http).await;
    let refused = to_follower
        .queue()
        .enqueue(direct_enqueue(&queue0))
        .await
        .expect_err("a direct request to a follower");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let trailer = |key: &str| {
        refused
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(trailer("x-raftq-leader-shard").as_deref(), Some("0"));
    assert_eq!(
        trailer("x-raftq-leader-addr"),
        Some(by_id[&shard0.leader_id].clone())
    );
    assert!(
        refused.message().contains("does not lead shard 0"),
        "{}",
        refused.message()
    );
    // Without the mark the same node forwards it.
    to_follower
        .queue()
        .enqueue(pb::EnqueueRequest {
            queue: queue0.clone(),
            jobs: vec![pb::NewJob {
                payload: "x".into(),
                ..Default::default()
            }],
        })
        .await
        .expect("forwarded");
    let after_forward = forwarded(&http).await;
    assert_eq!(after_forward, before + 1.0, "the counter sees a forward");

    // The SDK, connected to one node, routes every queue's requests to its
    // leader: nothing is forwarded.
    let sdk = common::connect(&by_id[&follower]).await;
    sdk.refresh_shard_map().await.expect("map");
    let queues: Vec<String> = (0..SHARDS).map(|s| queue_on(SHARDS, s, "routed")).collect();
    let producer = sdk.producer();
    for q in &queues {
        for _ in 0..5 {
            producer
                .enqueue(q, JobSpec::new("x"))
                .await
                .expect("enqueue");
        }
    }
    for q in &queues {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = done.clone();
        let worker = Worker::new(sdk.clone(), q.clone()).concurrency(4);
        let stop = async move {
            while counted.load(std::sync::atomic::Ordering::SeqCst) < 5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let seen = done.clone();
        tokio::time::timeout(
            Duration::from_secs(30),
            worker.run_until(
                move |_job| {
                    let seen = seen.clone();
                    async move {
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<(), String>(())
                    }
                },
                stop,
            ),
        )
        .await
        .expect("the worker finished in time")
        .expect("worker");
    }
    assert_eq!(
        forwarded(&http).await,
        after_forward,
        "the SDK had requests forwarded"
    );

    // A leader hands off: the SDK's next request is told where the new
    // leader is and goes there, still without a forward.
    let leader = map.shards[1].leader_id;
    let leader_peer = &peers[leader as usize - 1];
    let ops =
        common::connect_with(leader_peer, ConnectOptions::new().route_to_leaders(false)).await;
    ops.cluster()
        .step_down(pb::StepDownRequest {
            timeout_ms: 10_000,
            drain_workers: false,
            shard: None,
        })
        .await
        .expect("step down");
    producer
        .enqueue(&queues[1], JobSpec::new("after the hand-off"))
        .await
        .expect("enqueue after the hand-off");
    assert_eq!(forwarded(&http).await, after_forward);
}
