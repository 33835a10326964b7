//! Moving a shard's replica between nodes while it serves: 4 `queue-node`
//! processes with 4 shards at replication factor 3 (each node holds 3).
//! `raftq cluster move` takes a replica from the shard's leader to the node
//! that did not hold it, under a producer's load: nothing acknowledged is
//! lost, leases taken before the move are still honoured (and not handed
//! out twice), the leaving node deletes its copy and keeps it deleted
//! across a restart, the incoming one serves the shard after its own
//! restart. A move to a node that is not there rolls back; bad requests are
//! refused with their reasons.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{fetch, loopback, queue_on, statuses, wait_for, ProcNode};
use raftq_client::proto as pb;
use raftq_client::{Client, JobSpec};

const NODES: u64 = 4;
const SHARDS: u32 = 4;
const CONFIG: &str = "raft:\n  leader_balance_every_ms: 300\n";

fn holds(status: &pb::ClusterStatus, shard: u32) -> bool {
    status.shards.iter().any(|s| s.shard == shard)
}

fn job_id(job: &pb::LeasedJob) -> String {
    job.job.as_ref().map(|j| j.id.clone()).unwrap_or_default()
}

fn raftq() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_queue-node")).with_file_name("raftq")
}

/// `raftq cluster move` against the peer port at `peer`.
fn run_move(peer: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(raftq())
        .args(["--peer-addr", peer, "cluster", "move"])
        .args(args)
        .output()
        .expect("run raftq cluster move")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_under_load_without_losing_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let n = NODES as usize;
    let addrs: Vec<String> = (0..n).map(|_| loopback()).collect();
    let peers: Vec<String> = (0..n).map(|_| loopback()).collect();
    let members = peers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "--shards".into(),
        SHARDS.to_string(),
        "--replication-factor".into(),
        "3".into(),
    ];
    let mut nodes: Vec<ProcNode> = (0..n)
        .map(|i| {
            ProcNode::spawn_with(
                i as u64 + 1,
                &addrs[i],
                &peers[i],
                &dir.path().join(format!("n{}", i + 1)),
                &members,
                args.clone(),
            )
        })
        .collect();

    // Every shard has a leader; pick shard 0's leader as the leaving node
    // and the node without shard 0 as the incoming one.
    let shard = 0;
    let (from, to) = wait_for(
        "every shard to have a leader",
        Duration::from_secs(60),
        || async {
            let all = statuses(&nodes).await?;
            let leaders: BTreeSet<u32> = all
                .values()
                .flat_map(|s| {
                    s.shards
                        .iter()
                        .filter(|s| s.role == "leader")
                        .map(|s| s.shard)
                })
                .collect();
            if leaders.len() != SHARDS as usize {
                return None;
            }
            let from = all
                .values()
                .find(|s| {
                    s.shards
                        .iter()
                        .any(|s| s.shard == shard && s.role == "leader")
                })?
                .node_id;
            let to = all.values().find(|s| !holds(s, shard))?.node_id;
            Some((from, to))
        },
    )
    .await;
    let idx = |id: u64| (id - 1) as usize;
    // The mover runs on a node that is neither end of the move.
    let runner = (1..=NODES).find(|id| *id != from && *id != to).unwrap();

    // A backlog, some of it leased (for a long time) before the move.
    let client = common::connect(&addrs[idx(runner)]).await;
    let queue = queue_on(SHARDS, shard, "moving");
    let producer = client.producer();
    let mut enqueued: BTreeSet<String> = BTreeSet::new();
    for i in 0..200 {
        let id = producer
            .enqueue(
                &queue,
                JobSpec::new(format!("before-{i}")).idempotency_key(format!("before-{i}")),
            )
            .await
            .expect("enqueue");
        enqueued.insert(id);
    }
    let leased = {
        let request = pb::FetchRequest {
            queue: queue.clone(),
            worker_id: "before-the-move".into(),
            max_jobs: 50,
            lease_ms: Some(600_000),
            wait_ms: 0,
        };
        client
            .queue()
            .fetch(request)
            .await
            .expect("fetch")
            .into_inner()
            .jobs
    };
    assert_eq!(leased.len(), 50);

    // A producer keeps enqueueing through the move.
    let stop = Arc::new(AtomicBool::new(false));
    let during: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let load = {
        let (stop, during, queue) = (stop.clone(), during.clone(), queue.clone());
        let producer = client.producer();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let spec =
                    JobSpec::new(format!("during-{i}")).idempotency_key(format!("during-{i}"));
                if let Ok(id) = producer.enqueue(&queue, spec).await {
                    during.lock().unwrap().insert(id);
                }
                i += 1;
            }
        })
    };

    let out = run_move(
        &peers[idx(runner)],
        &[
            &shard.to_string(),
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ],
    );
    let steps = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{steps}");
    assert!(out.status.success(), "the move failed:\n{steps}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved shard 0"));
    for phase in ["add_learner", "catch_up", "move_leader", "swap", "done"] {
        assert!(
            steps.contains(&format!("shard 0: {phase}")),
            "no {phase} step in:\n{steps}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let during = during.lock().unwrap().clone();
    assert!(
        !during.is_empty(),
        "the producer enqueued nothing during the move"
    );

    // The leaving node holds shard 0 no more; the incoming one is a voter.
    let after = wait_for(
        "the old copy to be gone",
        Duration::from_secs(30),
        || async {
            let all = statuses(&nodes).await?;
            (!holds(&all[&from], shard)).then_some(all)
        },
    )
    .await;
    let status = after[&to]
        .shards
        .iter()
        .find(|s| s.shard == shard)
        .expect("incoming holds it");
    let voters: BTreeSet<u64> = status
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.node_id)
        .collect();
    assert_eq!(voters.len(), 3, "{status:?}");
    assert!(
        voters.contains(&to) && !voters.contains(&from),
        "{voters:?}"
    );
    assert!(status.epoch > 0);

    // The leases taken before the move hold: their jobs are not handed out
    // again, and their tokens still ack.
    let leased_ids: BTreeSet<String> = leased.iter().map(job_id).collect();
    let mut fetched: BTreeSet<String> = BTreeSet::new();
    loop {
        let jobs = fetch(&client, &queue, 500).await;
        if jobs.is_empty() {
            break;
        }
        for job in &jobs {
            assert!(
                !leased_ids.contains(&job_id(job)),
                "job {} was leased twice",
                job_id(job)
            );
            fetched.insert(job_id(job));
        }
        let tokens = jobs.iter().filter_map(|j| j.token.clone()).collect();
        client
            .queue()
            .ack(pb::AckRequest { tokens })
            .await
            .expect("ack");
    }
    let old_tokens = leased.iter().filter_map(|j| j.token.clone()).collect();
    let acked = client
        .queue()
        .ack(pb::AckRequest { tokens: old_tokens })
        .await
        .expect("ack the leases taken before the move")
        .into_inner();
    assert!(acked.results.iter().all(|r| r.code == 0), "{acked:?}");
    fetched.extend(leased_ids);
    let missing: Vec<_> = enqueued
        .union(&during)
        .filter(|id| !fetched.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged enqueues lost: {missing:?}"
    );

    // Restarts: the leaving node does not bring shard 0 back; the incoming
    // one opens it again and it serves.
    nodes[idx(from)].kill();
    nodes[idx(from)].start();
    nodes[idx(to)].kill();
    nodes[idx(to)].start();
    wait_for(
        "both restarted nodes to answer",
        Duration::from_secs(60),
        || async {
            let all = statuses(&nodes).await?;
            let back = holds(&all[&to], shard) && !holds(&all[&from], shard);
            let led = all
                .values()
                .flat_map(|s| {
                    s.shards
                        .iter()
                        .filter(|s| s.role == "leader")
                        .map(|s| s.shard)
                })
                .collect::<BTreeSet<_>>()
                .len()
                == SHARDS as usize;
            (back && led).then_some(())
        },
    )
    .await;
    let again = common::connect(&addrs[idx(to)]).await;
    // Leaderships settle back to their preferred nodes after the restarts.
    let id = wait_for(
        "shard 0 to take an enqueue after the restarts",
        Duration::from_secs(30),
        || async {
            again
                .producer()
                .enqueue(
                    &queue,
                    JobSpec::new("after-restart").idempotency_key("after-restart"),
                )
                .await
                .ok()
        },
    )
    .await;
    let jobs = fetch(&again, &queue, 10).await;
    assert_eq!(jobs.iter().map(job_id).collect::<Vec<_>>(), vec![id]);

    // Refusals, each with its reason.
    let peer = Client::connect(&peers[idx(runner)]).await.unwrap();
    let same = match peer
        .cluster()
        .move_replica(pb::MoveReplicaRequest {
            shard,
            add_node: to,
            remove_node: to,
            ..Default::default()
        })
        .await
    {
        Ok(_) => panic!("a move onto the same node was accepted"),
        Err(status) => status,
    };
    assert_eq!(same.code(), tonic::Code::InvalidArgument, "{same:?}");
    let voter = Client::connect(&peers[idx(to)]).await.unwrap();
    let refused = voter
        .cluster()
        .drop_replica(pb::DropReplicaRequest { shard })
        .await
        .expect_err("a voter's copy is not dropped");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("still a member") || refused.message().contains("leads"),
        "{refused:?}"
    );

    // A move to a node that is not there rolls back: no learner is left.
    let nowhere = loopback();
    let out = run_move(
        &peers[idx(runner)],
        &[
            &shard.to_string(),
            "--to",
            "9",
            "--to-addr",
            &nowhere,
            "--from",
            &to.to_string(),
            "--stall-after",
            "3s",
        ],
    );
    let steps = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{steps}");
    assert!(!out.status.success(), "{steps}");
    assert!(steps.contains("rolled back"), "{steps}");
    let all = statuses(&nodes).await.expect("statuses");
    let members: Vec<u64> = all[&to]
        .shards
        .iter()
        .find(|s| s.shard == shard)
        .unwrap()
        .members
        .iter()
        .map(|m| m.node_id)
        .collect();
    assert!(!members.contains(&9), "{members:?}");

    for node in &mut nodes {
        node.kill();
    }
}
