//! Defects an outside test found, each kept fixed through the real path
//! (real RocksDB, real gRPC on loopback, real processes for clusters).

mod common;

use std::time::Duration;

use common::{fast_config, fetch, free_port, start_single, wait_for};
use raftq_client::proto as pb;
use raftq_client::{Client, JobSpec, RetryPolicy};
use raftq_node::node;
use tonic::Code;

const MIB: usize = 1024 * 1024;

/// Enqueues, retrying while a leader is being elected.
async fn enqueue(client: &Client, queue: &str, jobs: Vec<pb::NewJob>) -> Vec<String> {
    let request = pb::EnqueueRequest {
        queue: queue.into(),
        jobs,
    };
    RetryPolicy::default()
        .run(|| {
            let mut queue = client.queue();
            let request = request.clone();
            async move { queue.enqueue(request).await }
        })
        .await
        .expect("enqueue")
        .into_inner()
        .job_ids
}

async fn stats(client: &Client, queue: &str) -> pb::QueueStats {
    client
        .admin()
        .stats(pb::StatsRequest {
            queue: queue.into(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner()
        .queues
        .remove(0)
}

/// Opens a worker stream on `queue` with `credit`; the sender carries
/// the next frames.
async fn open_stream(
    client: &Client,
    queue: &str,
    credit: u32,
) -> (
    tokio::sync::mpsc::Sender<pb::WorkerFrame>,
    tonic::Streaming<pb::ServerFrame>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WorkerFrame {
        open: Some(pb::WorkerOpen {
            queue: queue.into(),
            worker_id: "w".into(),
            lease_ms: None,
        }),
        credit,
        ..Default::default()
    })
    .await
    .unwrap();
    let inbound = client
        .queue()
        .worker_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open a worker stream")
        .into_inner();
    (tx, inbound)
}

fn big_job(i: usize) -> pb::NewJob {
    let mut payload = vec![b'x'; MIB - 64];
    payload[..8].copy_from_slice(format!("{i:08}").as_bytes());
    JobSpec::new(payload).into_proto()
}

/// 70 jobs of 1 MiB and `Fetch(max_jobs = 100)`: the answer would be over
/// the 64 MiB message limit. The claim is bounded by bytes: fewer jobs come
/// back, exactly those are leased, and the next fetch takes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_leases_only_what_one_answer_can_carry() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    for chunk in (0..70).collect::<Vec<_>>().chunks(10) {
        enqueue(&client, "big", chunk.iter().map(|i| big_job(*i)).collect()).await;
    }
    let first = fetch(&client, "big", 100).await;
    assert!(
        !first.is_empty() && first.len() < 70,
        "got {} jobs",
        first.len()
    );
    let s = stats(&client, "big").await;
    assert_eq!(s.leased as usize, first.len(), "leased = delivered");
    assert_eq!(s.ready as usize, 70 - first.len());
    let rest = fetch(&client, "big", 100).await;
    assert_eq!(first.len() + rest.len(), 70);

    // The worker stream obeys the same bound and keeps pushing the rest.
    for chunk in (0..70).collect::<Vec<_>>().chunks(10) {
        enqueue(
            &client,
            "big-stream",
            chunk.iter().map(|i| big_job(*i)).collect(),
        )
        .await;
    }
    let (tx, mut inbound) = open_stream(&client, "big-stream", 100).await;
    let mut pushed = 0;
    while pushed < 70 {
        let frame = inbound
            .message()
            .await
            .expect("a frame within the message limit")
            .expect("stream open");
        assert!(frame.jobs.len() < 70, "one frame carried every job");
        pushed += frame.jobs.len();
    }
    assert_eq!(stats(&client, "big-stream").await.leased, 70);
    drop(tx);
    node.shutdown().await.unwrap();
}

/// A worker frame with one bad item: that item gets its own
/// INVALID_ARGUMENT result, the valid acks of the same frame are applied
/// and the stream carries on.
#[tokio::test]
async fn a_bad_item_does_not_end_the_worker_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    enqueue(
        &client,
        "items",
        vec![
            JobSpec::new("a").into_proto(),
            JobSpec::new("b").into_proto(),
            JobSpec::new("c").into_proto(),
        ],
    )
    .await;
    let (tx, mut inbound) = open_stream(&client, "items", 2).await;
    let mut jobs = Vec::new();
    while jobs.len() < 2 {
        jobs.extend(inbound.message().await.unwrap().unwrap().jobs);
    }
    let token = |j: &pb::LeasedJob| j.token.clone().unwrap();
    let bad = pb::LeaseToken {
        job_id: "not-a-job-id".into(),
        attempt: 1,
    };
    let too_long = pb::NackItem {
        token: Some(token(&jobs[1])),
        error: "é".repeat(4000),
        ..Default::default()
    };
    tx.send(pb::WorkerFrame {
        acks: vec![bad.clone(), token(&jobs[0])],
        nacks: vec![too_long],
        credit: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut results = Vec::new();
    let mut third = Vec::new();
    while results.len() < 2 || third.is_empty() {
        let frame = inbound
            .message()
            .await
            .expect("the stream carries on")
            .unwrap();
        results.extend(frame.results);
        third.extend(frame.jobs);
    }
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results
        .iter()
        .all(|r| r.code == Code::InvalidArgument as i32));
    assert!(results.iter().any(|r| r.token.as_ref() == Some(&bad)));
    assert!(results.iter().any(|r| r.message.contains("nacks[0].error")));
    let s = stats(&client, "items").await;
    assert_eq!(s.acked_total, 1, "the valid ack of the frame was applied");
    assert_eq!(
        s.leased, 2,
        "the job with the bad nack is still leased, and the third"
    );
    drop(tx);
    node.shutdown().await.unwrap();
}

/// `run_at_ms` has the same 366-day horizon as `delay_ms`.
#[tokio::test]
async fn run_at_is_bounded_like_delay() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let mut job = JobSpec::new("later").into_proto();
    job.run_at_ms = Some(i64::MAX);
    let e = client
        .queue()
        .enqueue(pb::EnqueueRequest {
            queue: "sched".into(),
            jobs: vec![job],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("run_at_ms"), "{}", e.message());
    assert_eq!(stats(&client, "sched").await.scheduled, 0);
    node.shutdown().await.unwrap();
}

/// A learner at an address where nothing listens: AddLearner fails with a
/// clear DEADLINE_EXCEEDED and removes it again; promoting a node that is
/// not there is refused; the shard keeps committing throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_learner_cannot_wedge_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let admin = common::peer(&node).await;
    let nowhere = format!("127.0.0.1:{}", free_port());
    let e = admin
        .cluster()
        .add_learner(pb::AddLearnerRequest {
            node_id: 97,
            addr: nowhere.clone(),
            shard: None,
            no_wait: false,
            timeout_ms: 1500,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{}", e.message());
    assert!(
        e.message().contains("node 97") && e.message().contains("removed again"),
        "{}",
        e.message()
    );
    let status = admin
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.shards[0].members.iter().all(|m| m.node_id != 97),
        "{status:?}"
    );

    // Not a member: refused before anything changes.
    let e = admin
        .cluster()
        .change_membership(pb::ChangeMembershipRequest {
            voters: vec![1, 97],
            retain: false,
            shard: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("AddLearner"), "{}", e.message());

    // The shard still commits, and reverting is not refused.
    enqueue(&client, "after", vec![JobSpec::new("x").into_proto()]).await;
    admin
        .cluster()
        .change_membership(pb::ChangeMembershipRequest {
            voters: vec![1],
            retain: false,
            shard: None,
        })
        .await
        .expect("the shard takes membership changes");
    node.shutdown().await.unwrap();
}

/// A node started with `--join` never forms a cluster of its own.
#[tokio::test]
async fn initialize_is_refused_on_a_joining_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_config(dir.path());
    config.join = true;
    let handle = node::start(config).await.expect("start");
    let client = common::connect(&handle.addr.to_string()).await;
    let admin = common::peer(&handle).await;
    let e = admin
        .cluster()
        .initialize(pb::InitializeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("--join") && e.message().contains("bootstrap_joining_node"),
        "{}",
        e.message()
    );
    let status = admin
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.shards.iter().all(|s| s.members.is_empty()),
        "{status:?}"
    );
    // Asked explicitly (the operator's bootstrap of pod 0), it initialises.
    admin
        .cluster()
        .initialize(pb::InitializeRequest {
            bootstrap_joining_node: true,
        })
        .await
        .expect("explicit bootstrap");
    common::wait_for_leader(&client).await;
    handle.shutdown().await.unwrap();
}

/// An idle worker stream with spare credit proposes nothing: the log does
/// not grow while nothing is ready.
#[tokio::test]
async fn an_idle_stream_proposes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let (tx, mut inbound) = open_stream(&client, "idle", 10).await;
    let admin = common::peer(&node).await;
    let last_log = || async {
        admin
            .cluster()
            .status(pb::ClusterStatusRequest::default())
            .await
            .unwrap()
            .into_inner()
            .shards[0]
            .last_log_index
    };
    let before = last_log().await;
    // Observing an absence takes time: the stream re-checks every second,
    // and used to propose a claim each time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(last_log().await, before, "an idle stream proposed entries");
    // A job enqueued now is still pushed at once.
    enqueue(&client, "idle", vec![JobSpec::new("wake").into_proto()]).await;
    let frame = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("pushed")
        .unwrap()
        .unwrap();
    assert_eq!(frame.jobs.len(), 1);
    drop(tx);
    node.shutdown().await.unwrap();
}

/// Forwarding through a follower: an answer bigger than tonic's default
/// 4 MiB arrives (the forwarder has the server's limits), and a forwarded
/// long-poll broken by the leader's death answers UNAVAILABLE, which
/// clients retry, never UNKNOWN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_has_the_servers_limits_and_fails_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = common::spawn_cluster(dir.path(), 3, &[]);
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(common::connect(&n.addr).await);
    }
    let admin = nodes[0].admin().await;
    let leader = wait_for("a leader", Duration::from_secs(30), || async {
        let s = admin
            .cluster()
            .status(pb::ClusterStatusRequest::default())
            .await
            .ok()?
            .into_inner();
        s.shards[0].has_leader.then_some(s.shards[0].leader_id)
    })
    .await;
    let follower = nodes.iter().position(|n| n.id != leader).unwrap();
    let via = &clients[follower];
    enqueue(via, "wide", (0..8).map(big_job).collect()).await;
    let jobs = fetch(via, "wide", 8).await;
    assert_eq!(jobs.len(), 8, "an 8 MiB answer through a follower");

    // A long-poll on an empty queue, forwarded; then the leader dies.
    let sent = std::time::Instant::now();
    let poll = {
        let via = via.clone();
        tokio::spawn(async move {
            via.queue()
                .fetch(pb::FetchRequest {
                    queue: "empty".into(),
                    worker_id: "w".into(),
                    max_jobs: 1,
                    lease_ms: None,
                    wait_ms: 30_000,
                })
                .await
        })
    };
    // Not synchronisation: killed before or during the forward, the answer
    // must be UNAVAILABLE either way; the pause makes "during" the usual case.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader_index = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[leader_index].kill();
    let answer = tokio::time::timeout(Duration::from_secs(40), poll)
        .await
        .expect("the long-poll ends")
        .unwrap();
    match answer {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        // Routed only after a new leader was elected (a slow machine can
        // hold the request that long): then a live leader serves the whole
        // long-poll. An empty answer before the wait is up would be a
        // broken forward taken for "no jobs".
        Ok(r) => assert!(
            r.get_ref().jobs.is_empty() && sent.elapsed() >= Duration::from_secs(29),
            "the long-poll returned {r:?} after {:?} while its leader was dead",
            sent.elapsed()
        ),
    }
}

/// A worker that closes its stream cleanly hands back, at once, the jobs it
/// was given and never reported on (not when their leases run out); what
/// it acked or extended before closing stands, and the released jobs go to
/// the next worker without using up an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanly_closed_stream_hands_back_what_it_never_started() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let queue = "handback";
    enqueue(
        &client,
        queue,
        (0..5)
            .map(|i| JobSpec::new(format!("{i}")).into_proto())
            .collect(),
    )
    .await;
    let (tx, mut inbound) = open_stream(&client, queue, 4).await;
    let mut jobs = Vec::new();
    while jobs.len() < 4 {
        jobs.extend(inbound.message().await.unwrap().unwrap().jobs);
    }
    let token = |j: &pb::LeasedJob| j.token.clone().unwrap();
    tx.send(pb::WorkerFrame {
        acks: vec![token(&jobs[0])],
        extends: vec![token(&jobs[1])],
        ..Default::default()
    })
    .await
    .unwrap();
    // The extend's answer says the frame was applied.
    let frame = inbound.message().await.unwrap().unwrap();
    assert_eq!(frame.results.len(), 1, "{frame:?}");
    drop(tx);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ends after a clean close");

    // Leases are 30 s: only a release makes these ready now.
    let s = wait_for(
        "the unstarted jobs released",
        Duration::from_secs(10),
        || async {
            let s = stats(&client, queue).await;
            (s.leased == 1).then_some(s)
        },
    )
    .await;
    assert_eq!((s.ready, s.acked_total), (3, 1), "{s:?}");

    // The released jobs come first again, on a delivery that uses no
    // attempt; the old tokens are fenced.
    let again = fetch(&client, queue, 3).await;
    let payloads: Vec<&[u8]> = again
        .iter()
        .map(|j| &j.job.as_ref().expect("a job").payload[..])
        .collect();
    assert_eq!(payloads, vec![&b"2"[..], b"3", b"4"]);
    let e = client
        .queue()
        .ack(pb::AckRequest {
            tokens: vec![token(&jobs[2])],
        })
        .await
        .expect_err("a released delivery's token is stale");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let view = client
        .admin()
        .get_job(pb::JobRef {
            job_id: jobs[2].token.clone().unwrap().job_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.attempt, 1, "the release used up no attempt");
    assert_eq!(
        again[0].token.as_ref().map(|t| t.attempt),
        Some(2),
        "but counted as a delivery, so its token is fenced"
    );
    node.shutdown().await.unwrap();
}

/// A leader read is answered only after a quorum confirms the leadership
/// (read-index): with both followers frozen (SIGSTOP), the node that still
/// believes it leads refuses stats and job reads with UNAVAILABLE instead
/// of answering from state that a new leader may already have moved past.
/// `local: true` still answers. Once the followers run again, reads work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_does_not_answer_reads() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = common::spawn_cluster(dir.path(), 3, &[]);
    let clients = futures::future::join_all(nodes.iter().map(|n| common::connect(&n.addr))).await;
    let admin = nodes[0].admin().await;
    let leader = common::shard_leader(&admin).await;
    let client = &clients[(leader - 1) as usize];
    let id = client
        .producer()
        .enqueue("reads", JobSpec::new("x"))
        .await
        .expect("enqueue");
    let get = |client: &Client| {
        let mut admin = client.admin();
        let job_id = id.clone();
        async move { admin.get_job(pb::JobRef { job_id }).await }
    };
    get(client).await.expect("a confirmed leader answers");

    let followers: Vec<&common::ProcNode> = nodes.iter().filter(|n| n.id != leader).collect();
    for f in &followers {
        f.signal("STOP");
    }
    let refused = get(client).await.expect_err("no quorum, no answer");
    assert_eq!(refused.code(), Code::Unavailable, "{}", refused.message());
    let e = client
        .admin()
        .stats(pb::StatsRequest {
            queue: "reads".into(),
            local: false,
        })
        .await
        .expect_err("stats need the quorum too");
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    let local = client
        .admin()
        .stats(pb::StatsRequest {
            queue: "reads".into(),
            local: true,
        })
        .await
        .expect("local reads need no quorum");
    assert_eq!(local.into_inner().queues[0].ready, 1);

    for f in &followers {
        f.signal("CONT");
    }
    wait_for(
        "reads after the quorum is back",
        Duration::from_secs(30),
        || async {
            let leader = common::shard_leader(&admin).await;
            get(&clients[(leader - 1) as usize]).await.ok()
        },
    )
    .await;
}

/// A node whose job index reaches its memory budget refuses enqueues with
/// RESOURCE_EXHAUSTED, saying why and what to do, while fetches and acks
/// carry on; once workers drain part of the backlog it takes enqueues
/// again, and nothing accepted is lost. A backlog of plain jobs is packed
/// far below the 128 bytes a job in the job map is counted at. `/metrics`
/// reports the budgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_job_index_refuses_enqueues_until_workers_drain_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_config(dir.path());
    const BUDGET: usize = 1 << 20;
    config.memory.index_mib = Some(1);
    let unpacked_room = BUDGET / raftq_node::memory::INDEX_BYTES_PER_JOB as usize;
    let (node, client) = common::start_with(config).await;
    let jobs = |n: usize, from: usize| pb::EnqueueRequest {
        queue: "full".into(),
        jobs: (from..from + n)
            .map(|i| pb::NewJob {
                payload: format!("job-{i}").into_bytes().into(),
                ..Default::default()
            })
            .collect(),
    };
    let index_used = || {
        raftq_node::http::render(&node.context)
            .lines()
            .find(|l| l.starts_with("raftq_memory_used_bytes{part=\"index\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .expect("index use in /metrics") as usize
    };
    let mut accepted = 0usize;
    let refused = loop {
        match client.queue().enqueue(jobs(1_000, accepted)).await {
            Ok(_) => accepted += 1_000,
            Err(status) => break status,
        }
        assert!(accepted <= BUDGET, "the budget never stopped enqueues");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("memory.index_mib")
            && refused.message().contains("until workers drain"),
        "{}",
        refused.message()
    );
    assert!(
        accepted > 10 * unpacked_room,
        "only {accepted} plain jobs fit a budget for {unpacked_room} unpacked ones"
    );
    let used = index_used();
    assert!(
        used <= BUDGET && used + 1_000 * raftq_node::memory::INDEX_BYTES_PER_JOB as usize > BUDGET,
        "{used} bytes used of {BUDGET} when refused"
    );

    // Workers keep working, and once they have drained part of the
    // backlog enqueues are taken again.
    let mut acked = 0;
    let mut taken = 0;
    while taken == 0 {
        let leased = fetch(&client, "full", 1_000).await;
        assert!(!leased.is_empty(), "the queue ran dry at {acked} acked");
        let tokens: Vec<_> = leased.into_iter().filter_map(|j| j.token).collect();
        acked += tokens.len();
        client
            .queue()
            .ack(pb::AckRequest { tokens })
            .await
            .expect("ack while the index is full");
        if client.queue().enqueue(jobs(100, accepted)).await.is_ok() {
            taken = 100;
        }
        assert!(
            acked <= accepted / 2,
            "enqueues still refused after {acked} acks"
        );
    }
    accepted += taken;
    let stats = client
        .admin()
        .stats(pb::StatsRequest {
            queue: "full".into(),
            local: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.queues[0].ready as usize, accepted - acked);

    let metrics = raftq_node::http::render(&node.context);
    assert!(
        metrics.contains("raftq_memory_budget_bytes{part=\"index\"} 1048576"),
        "{metrics}"
    );
    assert!(index_used() < used, "draining the backlog freed no index");
    for part in ["block_cache", "memtables", "log_cache", "requests"] {
        assert!(
            metrics.contains(&format!("raftq_memory_used_bytes{{part=\"{part}\"}}")),
            "{part} missing from {metrics}"
        );
    }
}
