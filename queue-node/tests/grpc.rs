//! Every operation of the gRPC API and every kind of bad input, against a
//! real node (RocksDB in a temp dir, gRPC on loopback).

mod common;

use std::time::Duration;

use common::{fetch, start_single, wait_for};
use raftq_client::proto as pb;
use raftq_client::{Client, JobSpec, Worker};
use tonic::Code;

fn new_job(payload: &str) -> pb::NewJob {
    JobSpec::new(payload.to_string()).into_proto()
}

async fn enqueue(
    client: &Client,
    queue: &str,
    jobs: Vec<pb::NewJob>,
) -> Result<pb::EnqueueResponse, tonic::Status> {
    client
        .queue()
        .enqueue(pb::EnqueueRequest {
            queue: queue.into(),
            jobs,
        })
        .await
        .map(|r| r.into_inner())
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

fn token(j: &pb::LeasedJob) -> pb::LeaseToken {
    j.token.clone().expect("token")
}

#[tokio::test]
async fn job_lifecycle_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;

    let ids = enqueue(
        &client,
        "emails",
        vec![new_job("a"), new_job("b"), new_job("c")],
    )
    .await
    .unwrap()
    .job_ids;
    assert_eq!(ids.len(), 3);
    let s = stats(&client, "emails").await;
    assert_eq!((s.ready, s.leased), (3, 0));

    let jobs = fetch(&client, "emails", 2).await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].job.as_ref().unwrap().payload, "a".as_bytes());
    assert_eq!(jobs[0].token.as_ref().unwrap().attempt, 1);

    // Ack one, nack one (immediate retry), extend nothing stale.
    let acked = client
        .queue()
        .ack(pb::AckRequest {
            tokens: vec![token(&jobs[0])],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.results[0].code, 0);
    client
        .queue()
        .nack(pb::NackRequest {
            items: vec![pb::NackItem {
                token: Some(token(&jobs[1])),
                retry_delay_ms: Some(0),
                error: "flaky".into(),
                dead: false,
            }],
        })
        .await
        .unwrap();
    let s = stats(&client, "emails").await;
    assert_eq!(
        (s.ready, s.leased, s.acked_total, s.nacked_total),
        (2, 0, 1, 1)
    );

    // The retried job comes back with attempt 2 and its error.
    let again = fetch(&client, "emails", 10).await;
    assert_eq!(again.len(), 2);
    let retried = again
        .iter()
        .find(|j| j.job.as_ref().unwrap().id == ids[1])
        .unwrap();
    assert_eq!(retried.token.as_ref().unwrap().attempt, 2);
    assert_eq!(retried.job.as_ref().unwrap().last_error, "flaky");

    // Extend reports the new expiry.
    let ext = client
        .queue()
        .extend_lease(pb::ExtendLeaseRequest {
            tokens: vec![token(retried)],
            lease_ms: Some(60_000),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ext.results[0].lease_expires_at_ms > retried.lease_expires_at_ms);

    // Job lookup and cancel of a leased job.
    let job = client
        .admin()
        .get_job(pb::JobRef {
            job_id: ids[1].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state, pb::JobState::Leased as i32);
    let err = client
        .admin()
        .cancel_job(pb::JobRef {
            job_id: ids[1].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // A stale token (old attempt) is fenced with FAILED_PRECONDITION.
    let stale = client
        .queue()
        .ack(pb::AckRequest {
            tokens: vec![token(&jobs[1])],
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(
        stale.message().contains("lease lost"),
        "{}",
        stale.message()
    );

    // In a batch, each token gets its own answer.
    let mixed = client
        .queue()
        .ack(pb::AckRequest {
            tokens: vec![token(&jobs[1]), token(retried)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mixed.results[0].code, Code::FailedPrecondition as i32);
    assert_eq!(mixed.results[1].code, 0);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_operations() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let mut admin = client.admin();

    // Pause: nothing is leased; resume: it is.
    enqueue(&client, "q", vec![new_job("x")]).await.unwrap();
    let info = admin
        .pause_queue(pb::QueueRef { queue: "q".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(info.paused);
    assert!(fetch(&client, "q", 1).await.is_empty());
    admin
        .resume_queue(pb::QueueRef { queue: "q".into() })
        .await
        .unwrap();
    let leased = fetch(&client, "q", 1).await;
    assert_eq!(leased.len(), 1);

    // Per-queue defaults: max attempts 1 makes the first nack final.
    let info = admin
        .set_queue_config(pb::SetQueueConfigRequest {
            queue: "dl".into(),
            default_max_attempts: Some(1),
            default_lease_ms: Some(5_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.config.unwrap().default_max_attempts, 1);
    enqueue(&client, "dl", vec![new_job("d1"), new_job("d2")])
        .await
        .unwrap();
    let jobs = fetch(&client, "dl", 2).await;
    for j in &jobs {
        client
            .queue()
            .nack(pb::NackRequest {
                items: vec![pb::NackItem {
                    token: Some(token(j)),
                    retry_delay_ms: None,
                    error: "bad".into(),
                    dead: false,
                }],
            })
            .await
            .unwrap();
    }
    assert_eq!(stats(&client, "dl").await.dead, 2);

    // Dead letters: list (paged), requeue one, purge the rest.
    let page = admin
        .list_dead(pb::ListDeadRequest {
            queue: "dl".into(),
            limit: 1,
            after: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.jobs[0].last_error, "bad");
    let page2 = admin
        .list_dead(pb::ListDeadRequest {
            queue: "dl".into(),
            limit: 1,
            after: page.next_after.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.jobs.len(), 1);
    assert_ne!(page2.jobs[0].id, page.jobs[0].id);
    let n = admin
        .requeue_dead(pb::DeadSelector {
            queue: "dl".into(),
            job_ids: vec![page.jobs[0].id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.count, 1);
    let n = admin
        .purge_dead(pb::DeadSelector {
            queue: "dl".into(),
            job_ids: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.count, 1);
    let s = stats(&client, "dl").await;
    assert_eq!((s.ready, s.dead), (1, 0));

    // Cancel a ready job; purge a queue.
    let id = enqueue(&client, "p", vec![new_job("1"), new_job("2")])
        .await
        .unwrap()
        .job_ids;
    admin
        .cancel_job(pb::JobRef {
            job_id: id[0].clone(),
        })
        .await
        .unwrap();
    let err = admin
        .get_job(pb::JobRef {
            job_id: id[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let purged = admin
        .purge_queue(pb::QueueRef { queue: "p".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.removed, 1);

    // All-queue stats list every queue.
    let all = admin
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = all.queues.iter().map(|q| q.queue.as_str()).collect();
    assert!(
        names.contains(&"q") && names.contains(&"dl") && names.contains(&"p"),
        "{names:?}"
    );

    // Cluster status, on the peer port.
    let status = common::peer(&node)
        .await
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.shards[0].role, "leader");
    assert!(status.shards[0].applied_index > 0);
    assert_eq!(status.shards[0].members.len(), 1);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn delays_idempotency_and_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;

    // Idempotency key: the repeat returns the first id.
    let mut keyed = new_job("k");
    keyed.idempotency_key = "order-42".into();
    let first = enqueue(&client, "idem", vec![keyed.clone()]).await.unwrap();
    let second = enqueue(&client, "idem", vec![keyed]).await.unwrap();
    assert_eq!(first.job_ids, second.job_ids);
    assert_eq!(second.duplicate, vec![true]);
    assert_eq!(stats(&client, "idem").await.ready, 1);

    // A delayed job is scheduled, then pushed to a long-polling fetch by the idle tick.
    let mut delayed = new_job("later");
    delayed.delay_ms = Some(300);
    enqueue(&client, "delay", vec![delayed]).await.unwrap();
    assert_eq!(stats(&client, "delay").await.scheduled, 1);
    let got = client
        .queue()
        .fetch(pb::FetchRequest {
            queue: "delay".into(),
            worker_id: "w".into(),
            max_jobs: 1,
            lease_ms: Some(200),
            wait_ms: 10_000,
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(got.len(), 1, "long poll returned the delayed job");

    // Its short lease expires on an idle shard and the job is redelivered.
    let redelivered = wait_for(
        "lease expiry redelivery",
        Duration::from_secs(10),
        || async {
            let jobs = fetch(&client, "delay", 1).await;
            jobs.into_iter().next()
        },
    )
    .await;
    assert_eq!(redelivered.token.unwrap().attempt, 2);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn worker_sdk_processes_acks_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let jobs: Vec<JobSpec> = (0..50)
        .map(|i| {
            JobSpec::new(format!("{i}")).backoff(
                Duration::from_millis(10),
                Duration::from_millis(10),
                1.0,
            )
        })
        .collect();
    client.producer().enqueue_batch("work", jobs).await.unwrap();

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let done = std::sync::Arc::new(tokio::sync::Notify::new());
    let done2 = done.clone();
    let worker = Worker::new(client.clone(), "work").concurrency(4);
    let handle = tokio::spawn(worker.run_until(
        move |job: raftq_client::Job| {
            let seen = seen2.clone();
            let done = done2.clone();
            async move {
                let n: u32 = std::str::from_utf8(&job.payload).unwrap().parse().unwrap();
                let mut seen = seen.lock().unwrap();
                seen.push((n, job.attempt));
                if seen.len() >= 60 {
                    done.notify_one();
                }
                // Every 5th job fails its first attempt.
                if n.is_multiple_of(5) && job.attempt == 1 {
                    return Err(format!("job {n} failed on purpose"));
                }
                Ok(())
            }
        },
        async move { done.notified().await },
    ));
    handle.await.unwrap().unwrap();
    let s = wait_for("all jobs acked", Duration::from_secs(10), || async {
        let s = stats(&client, "work").await;
        (s.ready + s.scheduled + s.leased == 0).then_some(s)
    })
    .await;
    assert_eq!(s.acked_total, 50);
    assert_eq!(s.nacked_total, 10);
    assert_eq!(s.dead, 0);
    let retried = seen
        .lock()
        .unwrap()
        .iter()
        .any(|(n, a)| n.is_multiple_of(5) && *a == 2);
    assert!(retried, "retries were delivered as attempt 2");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn worker_stream_pushes_jobs_and_batches_acks_with_claims() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(pb::WorkerFrame {
        open: Some(pb::WorkerOpen {
            queue: "stream".into(),
            worker_id: "w1".into(),
            lease_ms: None,
        }),
        credit: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut inbound = client
        .queue()
        .worker_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Nothing is ready; a job enqueued later is pushed.
    enqueue(
        &client,
        "stream",
        vec![new_job("one"), new_job("two"), new_job("three")],
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let frame = inbound.message().await.unwrap().unwrap();
        got.extend(frame.jobs);
    }
    assert_eq!(got.len(), 2, "credit bounds what is pushed");
    // Ack both and ask for one more, in one frame; plus a stale ack.
    let mut stale = token(&got[1]);
    stale.attempt = 9;
    tx.send(pb::WorkerFrame {
        acks: vec![stale, token(&got[0]), token(&got[1])],
        credit: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut results = Vec::new();
    let mut third = Vec::new();
    while third.is_empty() || results.is_empty() {
        let frame = inbound.message().await.unwrap().unwrap();
        third.extend(frame.jobs);
        results.extend(frame.results);
    }
    assert_eq!(third[0].job.as_ref().unwrap().payload, "three".as_bytes());
    assert_eq!(results.len(), 1, "only the failed ack is reported");
    assert_eq!(results[0].code, Code::FailedPrecondition as i32);
    let s = stats(&client, "stream").await;
    assert_eq!((s.acked_total, s.leased), (2, 1));
    drop(tx);
    node.shutdown().await.unwrap();
}

/// Every bad input gets a clear INVALID_ARGUMENT (or NOT_FOUND), and
/// nothing already stored is harmed.
#[tokio::test]
async fn bad_input_is_rejected_with_clear_errors_and_harms_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let ids = enqueue(&client, "safe", vec![new_job("keep1"), new_job("keep2")])
        .await
        .unwrap()
        .job_ids;
    let q = client.queue();

    let check = |r: Result<pb::EnqueueResponse, tonic::Status>, code: Code, needle: &str| {
        let e = r.expect_err("must fail");
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle:?}",
            e.message()
        );
    };
    check(
        enqueue(&client, "safe", vec![new_job("")]).await,
        Code::InvalidArgument,
        "payload is empty",
    );
    let big = pb::NewJob {
        payload: vec![0u8; raftq_api::limits::MAX_PAYLOAD_BYTES + 1].into(),
        ..Default::default()
    };
    check(
        enqueue(&client, "safe", vec![new_job("ok"), big]).await,
        Code::InvalidArgument,
        "jobs[1].payload is 1048577 bytes",
    );
    check(
        enqueue(&client, "", vec![new_job("x")]).await,
        Code::InvalidArgument,
        "queue name is empty",
    );
    check(
        enqueue(&client, &"x".repeat(129), vec![new_job("x")]).await,
        Code::InvalidArgument,
        "limit is 128",
    );
    check(
        enqueue(&client, "bad name!", vec![new_job("x")]).await,
        Code::InvalidArgument,
        "contains ' '",
    );
    check(
        enqueue(&client, "safe", vec![]).await,
        Code::InvalidArgument,
        "jobs is empty",
    );
    let too_many = vec![new_job("x"); raftq_api::limits::MAX_ENQUEUE_BATCH + 1];
    check(
        enqueue(&client, "safe", too_many).await,
        Code::InvalidArgument,
        "limit is 10000",
    );
    let mut negative = new_job("x");
    negative.delay_ms = Some(-5);
    check(
        enqueue(&client, "safe", vec![negative]).await,
        Code::InvalidArgument,
        "delay_ms",
    );

    let fetch_err = |max_jobs, lease_ms, wait_ms| pb::FetchRequest {
        queue: "safe".into(),
        worker_id: "w".into(),
        max_jobs,
        lease_ms,
        wait_ms,
    };
    for (req, needle) in [
        (fetch_err(0, None, 0), "max_jobs"),
        (fetch_err(1, Some(0), 0), "lease_ms must be > 0"),
        (fetch_err(1, Some(-1), 0), "lease_ms must be > 0"),
        (fetch_err(1, None, -1), "wait_ms"),
    ] {
        let e = q.clone().fetch(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(needle), "{}", e.message());
    }

    let bad_token = |job_id: &str, attempt| pb::AckRequest {
        tokens: vec![pb::LeaseToken {
            job_id: job_id.into(),
            attempt,
        }],
    };
    let e = q.clone().ack(bad_token("nonsense", 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("malformed job id"), "{}", e.message());
    let e = q.clone().ack(bad_token("0-999999-0", 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = q.clone().ack(bad_token(&ids[0], 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = q.clone().ack(bad_token(&ids[0], 1)).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "a ready job holds no lease"
    );
    let e = q
        .clone()
        .ack(pb::AckRequest { tokens: vec![] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = q
        .clone()
        .extend_lease(pb::ExtendLeaseRequest {
            tokens: vec![pb::LeaseToken {
                job_id: ids[0].clone(),
                attempt: 1,
            }],
            lease_ms: Some(-10),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = client
        .admin()
        .get_job(pb::JobRef {
            job_id: "7-1-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("shard 7 does not exist"));
    let e = client
        .admin()
        .set_queue_config(pb::SetQueueConfigRequest {
            queue: "safe".into(),
            default_lease_ms: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = client
        .admin()
        .requeue_dead(pb::DeadSelector {
            queue: "safe".into(),
            job_ids: vec![ids[0].clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "a ready job is not dead");

    // A worker stream must open with `open`.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::WorkerFrame {
        credit: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let e = q
        .clone()
        .worker_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("open"), "{}", e.message());

    // Nothing stored was harmed.
    let s = stats(&client, "safe").await;
    assert_eq!((s.ready, s.leased, s.dead), (2, 0, 0));
    let jobs = fetch(&client, "safe", 10).await;
    let payloads: Vec<_> = jobs
        .iter()
        .map(|j| j.job.as_ref().unwrap().payload.clone())
        .collect();
    assert_eq!(payloads, vec!["keep1".as_bytes(), "keep2".as_bytes()]);
    node.shutdown().await.unwrap();
}

/// Stop a node and open its data dir again: every job, lease and setting
/// is rebuilt from RocksDB.
#[tokio::test]
async fn restart_rebuilds_state_from_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let ids = enqueue(
        &client,
        "r",
        (0..20).map(|i| new_job(&format!("{i}"))).collect(),
    )
    .await
    .unwrap()
    .job_ids;
    let leased = fetch(&client, "r", 5).await;
    client
        .admin()
        .pause_queue(pb::QueueRef {
            queue: "other".into(),
        })
        .await
        .unwrap();
    node.shutdown().await.unwrap();

    let (node, client) = start_single(dir.path()).await;
    let s = stats(&client, "r").await;
    assert_eq!((s.ready, s.leased), (15, 5));
    assert!(stats(&client, "other").await.paused);
    // The old leases are still valid after the restart.
    let acked = client
        .queue()
        .ack(pb::AckRequest {
            tokens: leased.iter().map(token).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(acked.results.iter().all(|r| r.code == 0));
    let job = client
        .admin()
        .get_job(pb::JobRef {
            job_id: ids[19].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.payload, "19".as_bytes());
    node.shutdown().await.unwrap();
}
