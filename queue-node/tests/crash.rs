//! SIGKILL a node process while it is taking writes, start it again: every
//! acknowledged enqueue is still there, and leases that were in flight
//! expire and are redelivered.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, wait_for, wait_for_leader, ProcNode};
use raftq_client::proto as pb;
use raftq_client::{Client, JobSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_loses_no_acknowledged_job() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = ProcNode::spawn(1, &addr, &dir.path().join("n1"), &format!("1={addr}"));
    let client = wait_for("connect", Duration::from_secs(30), || async {
        Client::connect(&addr).await.ok()
    })
    .await;
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
                match client.producer().enqueue_batch("crash", jobs).await {
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
    let client = wait_for("reconnect", Duration::from_secs(30), || async {
        Client::connect(&addr).await.ok()
    })
    .await;
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
