//! Growing the shard count of a running cluster: 4 `queue-node` processes
//! with 4 shards at replication factor 3 grow to 8 shards with `raftq
//! cluster grow-shards` while a producer and a worker run. The new shards
//! get 3 voters and a leader; queues that hold anything stay on their
//! shard (their jobs, settings and idempotency keys with them); new
//! queues land on the new shards; a node restarted afterwards routes by
//! the new table; every acknowledged enqueue is delivered and nothing is
//! handed out again after its ack.

mod common;

use std::time::Duration;

use common::load::Load;
use common::{loopback, queue_on, wait_for, ProcNode};
use raftq_client::proto as pb;
use raftq_client::{Client, JobSpec};

const SHARDS: u32 = 4;
const GROWN: u32 = 8;

fn raftq() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_queue-node")).with_file_name("raftq")
}

/// `raftq cluster grow-shards` on the peer port at `peer`.
fn grow_shards(peer: &str, shards: u32) -> std::process::Output {
    std::process::Command::new(raftq())
        .args(["--peer-addr", peer, "cluster", "grow-shards"])
        .arg(shards.to_string())
        .output()
        .expect("run raftq cluster grow-shards")
}

async fn shard_map(client: &Client, queues: &[String]) -> pb::ShardMap {
    client
        .queue()
        .get_shard_map(pb::GetShardMapRequest {
            queues: queues.to_vec(),
        })
        .await
        .expect("shard map")
        .into_inner()
}

/// A queue that hashes to different shards among `SHARDS` and `GROWN`.
fn moving_queue(tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .find(|q| raftq_api::shard_of(q, SHARDS) != raftq_api::shard_of(q, GROWN))
        .unwrap_or_default()
}

async fn ready(client: &Client, queue: &str) -> u64 {
    let stats = client
        .admin()
        .stats(pb::StatsRequest {
            queue: queue.to_string(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    stats
        .queues
        .iter()
        .find(|q| q.queue == queue)
        .map_or(0, |q| q.ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_grow_to_eight_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..4).map(|_| loopback()).collect();
    let peers: Vec<String> = (0..4).map(|_| loopback()).collect();
    let initial = (0..4)
        .map(|i| format!("{}={}", i + 1, peers[i]))
        .collect::<Vec<_>>()
        .join(",");
    let http: Vec<String> = (0..4).map(|_| loopback()).collect();
    let mut nodes: Vec<ProcNode> = (0..4)
        .map(|i| {
            let args = vec![
                "--shards".to_string(),
                SHARDS.to_string(),
                "--replication-factor".into(),
                "3".into(),
                "--http-listen".into(),
                http[i].clone(),
            ];
            ProcNode::spawn_with(
                i as u64 + 1,
                &addrs[i],
                &peers[i],
                &dir.path().join(format!("n{}", i + 1)),
                &initial,
                args,
            )
        })
        .collect();
    let client = common::connect(&addrs[0]).await;
    common::wait_for_leader(&client).await;

    // What must stay where it is: a queue with waiting jobs, one with
    // settings only, one with an idempotency key only (its job acked) —
    // each one the new hash would send elsewhere.
    let parked = moving_queue("parked");
    let configured = moving_queue("configured");
    let deduped = moving_queue("deduped");
    let producer = client.producer();
    for i in 0..10 {
        producer
            .enqueue(&parked, JobSpec::new(format!("p{i}")))
            .await
            .expect("enqueue parked");
    }
    client
        .admin()
        .set_queue_config(pb::SetQueueConfigRequest {
            queue: configured.clone(),
            default_max_attempts: Some(7),
            ..Default::default()
        })
        .await
        .expect("configure");
    let first = producer
        .enqueue(&deduped, JobSpec::new("once").idempotency_key("once"))
        .await
        .expect("enqueue deduped");
    let leased = client
        .queue()
        .fetch(pb::FetchRequest {
            queue: deduped.clone(),
            worker_id: "t".into(),
            max_jobs: 1,
            lease_ms: Some(30_000),
            wait_ms: 1_000,
        })
        .await
        .expect("fetch deduped")
        .into_inner()
        .jobs;
    let tokens = leased.iter().filter_map(|j| j.token.clone()).collect();
    client
        .queue()
        .ack(pb::AckRequest { tokens })
        .await
        .expect("ack deduped");

    // A worker stream on a queue it keeps empty: the queue holds nothing
    // when the count grows, so it follows the new hash, and the stream
    // must follow it there.
    let streamed = moving_queue("streamed");
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel::<String>();
    let worker = {
        let worker = raftq_client::Worker::new(client.clone(), streamed.clone());
        tokio::spawn(worker.run(move |job: raftq_client::Job| {
            let got_tx = got_tx.clone();
            async move {
                let _ = got_tx.send(String::from_utf8_lossy(&job.payload).into_owned());
                Ok::<(), String>(())
            }
        }))
    };
    producer
        .enqueue(&streamed, JobSpec::new("before"))
        .await
        .expect("enqueue streamed");
    let first_job = tokio::time::timeout(Duration::from_secs(30), got.recv()).await;
    assert_eq!(first_job.ok().flatten().as_deref(), Some("before"));
    wait_for(
        "the streamed job's ack",
        Duration::from_secs(30),
        || async {
            let stats = client
                .admin()
                .stats(pb::StatsRequest {
                    queue: streamed.clone(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            stats
                .queues
                .iter()
                .all(|q| q.ready + q.leased + q.scheduled + q.dead == 0)
                .then_some(())
        },
    )
    .await;

    let old_queues: Vec<String> = (0..SHARDS).map(|s| queue_on(SHARDS, s, "old")).collect();
    let load = Load::start(&client, old_queues.clone(), "grow");
    wait_for("load to run", Duration::from_secs(30), || async {
        (load.enqueued() > 50).then_some(())
    })
    .await;

    // Growing is refused below the current count, and on bad counts.
    for (count, reason) in [(2, "only grows"), (65, "1..=64")] {
        let out = grow_shards(&peers[1], count);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "grow to {count} was accepted");
        assert!(stderr.contains(reason), "{stderr}");
    }

    // Grow, asked of a node that may not lead shard 0 (it forwards).
    let out = grow_shards(&peers[1], GROWN);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grow-shards failed:\n{stderr}");
    assert!(stderr.contains("create_shards"), "{stderr}");
    assert!(stderr.contains("fence"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the cluster has 8 shards"),
        "{out:?}"
    );

    // Every node learns the new routing; the new shards have 3 voters and
    // a leader; the queues that held something are pinned where they were.
    let watched = [parked.clone(), configured.clone(), deduped.clone()];
    for addr in &addrs {
        let node = common::connect(addr).await;
        let map = wait_for("the new routing", Duration::from_secs(30), || async {
            let map = shard_map(&node, &watched).await;
            (map.shard_count == GROWN
                && map
                    .shards
                    .iter()
                    .all(|s| s.leader_id != 0 && s.members.len() == 3))
            .then_some(map)
        })
        .await;
        for q in &watched {
            assert_eq!(
                map.queues[q],
                raftq_api::shard_of(q, SHARDS),
                "{q} stays on its shard"
            );
            assert_eq!(map.pinned.get(q), map.queues.get(q), "{q} is pinned");
        }
        assert!(map.routing_version >= 1);
    }
    let status = common::statuses(&nodes).await.expect("every node answers");
    let replicas: usize = status.values().map(|s| s.shards.len()).sum();
    assert_eq!(replicas, GROWN as usize * 3, "{status:?}");

    // What stayed is all there: the waiting jobs, the settings, the key.
    assert_eq!(ready(&client, &parked).await, 10);
    let info = client
        .admin()
        .get_queue(pb::QueueRef {
            queue: configured.clone(),
        })
        .await
        .expect("get queue")
        .into_inner();
    assert_eq!(
        info.config.map(|c| c.default_max_attempts),
        Some(7),
        "settings stay"
    );
    let again = producer
        .enqueue(&deduped, JobSpec::new("once").idempotency_key("once"))
        .await
        .expect("enqueue deduped again");
    assert_eq!(again, first, "the idempotency key still dedupes");

    // The worker stream followed its queue to its new shard.
    let map = shard_map(&client, std::slice::from_ref(&streamed)).await;
    assert_eq!(map.queues[&streamed], raftq_api::shard_of(&streamed, GROWN));
    assert!(!map.pinned.contains_key(&streamed), "{map:?}");
    producer
        .enqueue(&streamed, JobSpec::new("after"))
        .await
        .expect("enqueue streamed after");
    let next_job = tokio::time::timeout(Duration::from_secs(30), got.recv()).await;
    assert_eq!(next_job.ok().flatten().as_deref(), Some("after"));
    worker.abort();

    // New queues spread over the new shards, through any node.
    let node4 = common::connect(&addrs[3]).await;
    for shard in SHARDS..GROWN {
        let queue = queue_on(GROWN, shard, "new");
        let id = node4
            .producer()
            .enqueue(&queue, JobSpec::new("fresh"))
            .await
            .expect("enqueue on a new shard");
        assert!(id.starts_with(&format!("{shard}-")), "{queue} → {id}");
        assert_eq!(ready(&client, &queue).await, 1, "{queue}");
    }

    // A node restarted now routes by the new table (learned from peers).
    nodes[3].kill();
    nodes[3].start();
    let node4 = common::connect(&addrs[3]).await;
    let queue = queue_on(GROWN, GROWN - 1, "after-restart");
    let id = wait_for(
        "an enqueue through the restarted node",
        Duration::from_secs(30),
        || async {
            node4
                .producer()
                .enqueue(&queue, JobSpec::new("x"))
                .await
                .ok()
        },
    )
    .await;
    assert!(id.starts_with(&format!("{}-", GROWN - 1)), "{id}");
    assert_eq!(ready(&node4, &parked).await, 10);

    // Asked again, nothing changes.
    let out = grow_shards(&peers[2], GROWN);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("8 shards already"),
        "{out:?}"
    );

    load.finish(50).await;

    // With the load stopped: the client routes the pinned queues to their
    // shards' leaders itself, and nothing is forwarded.
    client.refresh_shard_map().await.expect("refresh the map");
    let before = common::forwarded(&http).await;
    for q in &watched {
        let id = producer
            .enqueue(q, JobSpec::new("routed"))
            .await
            .expect("enqueue on a pinned queue");
        assert!(
            id.starts_with(&format!("{}-", raftq_api::shard_of(q, SHARDS))),
            "{q} → {id}"
        );
    }
    assert_eq!(common::forwarded(&http).await, before, "nothing forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_replication_factor_refuses_to_grow() {
    let dir = tempfile::tempdir().unwrap();
    let addr = loopback();
    let peer = loopback();
    let _node = ProcNode::spawn_with(
        1,
        &addr,
        &peer,
        &dir.path().join("n1"),
        &format!("1={peer}"),
        vec!["--shards".into(), "2".into()],
    );
    common::connect(&peer).await;
    let out = grow_shards(&peer, 4);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no replication factor"), "{stderr}");
}
