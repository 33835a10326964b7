//! SIGKILL a node process while it is taking writes, start it again: every
//! acknowledged enqueue is still there, and leases that were in flight
//! expire and are redelivered. The state machine's writes skip RocksDB's
//! WAL (the Raft log is its WAL), so these also check that a restart
//! re-applies the log, and that the log is never purged past the state
//! that is on disk.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, fetch, free_port, wait_for, wait_for_leader, ProcNode};
use raftq_client::proto as pb;
use raftq_client::{Client, JobSpec, RetryPolicy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_loses_no_acknowledged_job() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = ProcNode::single(1, &addr, &dir.path().join("n1"));
    let client = connect(&addr).await;
    wait_for_leader(&client).await;

    // Lease some jobs with a short lease, then keep writing while we kill.
    client
        .producer()
        .enqueue_batch(
            "crash",
            (0..10)
                .map(|i| JobSpec::new(format!("leased-{i}")))
                .collect(),
        )
        .await
        .unwrap();
    let leased = client
        .queue()
        .fetch(pb::FetchRequest {
            queue: "crash".into(),
            worker_id: "doomed".into(),
            max_jobs: 10,
            lease_ms: Some(1_000),
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(leased.len(), 10);

    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for batch in 0.. {
                let payloads: Vec<String> = (0..20).map(|i| format!("w{w}-b{batch}-{i}")).collect();
                let jobs = payloads.iter().map(|p| JobSpec::new(p.clone())).collect();
                // Stops at the first failure: the node is gone, no retry.
                let producer = client.producer().retry(RetryPolicy::never());
                match producer.enqueue_batch("crash", jobs).await {
                    Ok(_) => acknowledged.lock().unwrap().extend(payloads),
                    Err(_) => return,
                }
            }
        }));
    }
    wait_for(
        "some acknowledged writes",
        Duration::from_secs(30),
        || async { (acknowledged.lock().unwrap().len() >= 400).then_some(()) },
    )
    .await;
    node.kill();
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    node.start();
    let client = connect(&addr).await;
    wait_for_leader(&client).await;

    // Drain everything; the 10 old leases come back as attempt 2 once expired.
    let mut seen = BTreeSet::new();
    let mut redelivered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(acknowledged.iter().all(|p| seen.contains(p)) && redelivered == 10) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {} of {} acknowledged jobs delivered, {redelivered} of 10 leases redelivered",
            acknowledged.iter().filter(|p| seen.contains(*p)).count(),
            acknowledged.len()
        );
        let jobs = client
            .queue()
            .fetch(pb::FetchRequest {
                queue: "crash".into(),
                worker_id: "survivor".into(),
                max_jobs: 500,
                lease_ms: None,
                wait_ms: 100,
            })
            .await
            .unwrap()
            .into_inner()
            .jobs;
        let tokens: Vec<_> = jobs.iter().filter_map(|j| j.token.clone()).collect();
        for j in &jobs {
            let job = j.job.as_ref().unwrap();
            let payload = String::from_utf8_lossy(&job.payload).into_owned();
            if payload.starts_with("leased-") {
                assert_eq!(
                    j.token.as_ref().unwrap().attempt,
                    2,
                    "in-flight lease redelivered as attempt 2"
                );
                redelivered += 1;
            }
            seen.insert(payload);
        }
        if !tokens.is_empty() {
            client.queue().ack(pb::AckRequest { tokens }).await.unwrap();
        }
    }
    assert!(!node.log().contains("panicked"), "{}", node.log());
}

/// A gauge of shard 0 from the node's `/metrics`.
async fn shard_gauge(http: &str, name: &str) -> Option<u64> {
    let body = metrics_text(http).await?;
    let prefix = format!("{name}{{shard=\"0\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// `GET /metrics` over a plain TCP connection (HTTP/1.0, so the server
/// closes it after the body).
async fn metrics_text(http: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// Enqueues jobs `b<batch>-0` .. `b<batch>-4` to queue `purged`; returns
/// their payloads once acknowledged.
async fn enqueue_five(client: &Client, batch: u32) -> Vec<String> {
    let payloads: Vec<String> = (0..5).map(|i| format!("b{batch}-{i}")).collect();
    let jobs = payloads.iter().map(|p| JobSpec::new(p.clone())).collect();
    client
        .producer()
        .enqueue_batch("purged", jobs)
        .await
        .unwrap();
    payloads
}

fn payload_of(job: &pb::LeasedJob) -> String {
    String::from_utf8_lossy(&job.job.as_ref().unwrap().payload).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_log_purges_restarts_with_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    // A snapshot (and a purge of the log behind it) every 10 entries.
    std::fs::write(
        &config,
        "raft:\n  snapshot_every_entries: 10\n  logs_kept_after_snapshot: 0\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "--http-listen".to_string(),
        http.clone(),
    ];
    let mut node = ProcNode::single_with(1, &addr, &dir.path().join("n1"), args);
    let client = connect(&addr).await;
    wait_for_leader(&client).await;

    // 40 entries of 5 jobs, then ack the first 50 jobs: state writes of
    // every kind, across several snapshots and purges.
    let mut expected = BTreeSet::new();
    for batch in 0..40 {
        expected.extend(enqueue_five(&client, batch).await);
    }
    let leased = fetch(&client, "purged", 50).await;
    assert_eq!(leased.len(), 50);
    for j in &leased {
        expected.remove(&payload_of(j));
    }
    let tokens = leased.iter().filter_map(|j| j.token.clone()).collect();
    client.queue().ack(pb::AckRequest { tokens }).await.unwrap();
    let applied = shard_gauge(&http, "raftq_shard_applied_index")
        .await
        .unwrap();
    // Enqueue more until a purge passed the acks, so the log that could
    // rebuild them is gone and only the flushed state holds them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for batch in 40.. {
        expected.extend(enqueue_five(&client, batch).await);
        let purged = shard_gauge(&http, "raftq_shard_purged_index")
            .await
            .unwrap();
        let durable = shard_gauge(&http, "raftq_shard_durable_index")
            .await
            .unwrap();
        assert!(durable >= purged, "purged {purged} past durable {durable}");
        if purged > applied {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no purge past the acks (applied {applied}) within 60 s; purged {purged}"
        );
    }
    node.kill();

    node.start();
    let client = connect(&addr).await;
    wait_for_leader(&client).await;
    let mut seen = BTreeSet::new();
    loop {
        let jobs = fetch(&client, "purged", 1000).await;
        if jobs.is_empty() {
            break;
        }
        for j in &jobs {
            let payload = payload_of(j);
            assert!(seen.insert(payload.clone()), "{payload} delivered twice");
        }
    }
    assert_eq!(
        seen, expected,
        "after the restart: every unacked job, no acked one"
    );
    assert!(!node.log().contains("panicked"), "{}", node.log());
}
