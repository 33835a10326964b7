//! A 3-process cluster on loopback under load: SIGKILL the leader, restart
//! it. Every acknowledged enqueue is delivered and acked, no (job, attempt)
//! lease is granted twice, and nothing is left behind.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, wait_for};
use raftq_client::proto as pb;
use raftq_client::{Client, JobSpec, RetryPolicy, Worker};

const QUEUE: &str = "load";
const JOBS: usize = 3000;
const BATCH: usize = 50;

/// The leader's id, as a node that currently sees one reports it.
async fn leader_of(clients: &[Client]) -> u64 {
    wait_for("a leader", Duration::from_secs(30), || async {
        for c in clients {
            if let Ok(s) = c
                .cluster()
                .status(pb::ClusterStatusRequest::default())
                .await
            {
                let shard = &s.into_inner().shards[0];
                if shard.has_leader && shard.role == "leader" {
                    return Some(shard.leader_id);
                }
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_under_load_loses_nothing() {
    leader_crash_under_load(false).await;
}

/// The same with TLS on both ports and auth: the nodes speak mutual TLS,
/// requests forwarded to the leader carry the verified principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_under_load_loses_nothing_with_tls_and_auth() {
    leader_crash_under_load(true).await;
}

async fn leader_crash_under_load(secure: bool) {
    let dir = tempfile::tempdir().unwrap();
    let tls = secure.then(|| common::certs::TestTls::new(&dir.path().join("tls")));
    let args = tls.as_ref().map(|t| t.node_args()).unwrap_or_default();
    let mut nodes = common::spawn_cluster(dir.path(), 3, &args);
    let mut clients = Vec::new();
    let mut admins = Vec::new();
    for n in &nodes {
        match &tls {
            Some(t) => {
                clients.push(common::connect_with(&n.addr, t.worker_options()).await);
                admins.push(common::connect_with(&n.peer_addr, t.ops_options()).await);
            }
            None => {
                clients.push(connect(&n.addr).await);
                admins.push(n.admin().await);
            }
        }
    }
    leader_of(&admins).await;

    // Workers on every node (followers forward their streams to the leader).
    let delivered: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let handled: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut workers = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let delivered = delivered.clone();
        let handled = handled.clone();
        let mut stop = stop_tx.subscribe();
        let worker = Worker::new(client.clone(), QUEUE)
            .concurrency(4)
            .lease(Duration::from_secs(2))
            .worker_id(format!("w{i}"));
        workers.push(tokio::spawn(worker.run_until(
            move |job: raftq_client::Job| {
                let delivered = delivered.clone();
                let handled = handled.clone();
                async move {
                    let payload = String::from_utf8_lossy(&job.payload).into_owned();
                    delivered
                        .lock()
                        .unwrap()
                        .push((job.id.clone(), job.attempt));
                    handled.lock().unwrap().insert(payload);
                    Ok::<(), String>(())
                }
            },
            async move {
                let _ = stop.recv().await;
            },
        )));
    }

    // Produce with idempotency keys, retrying through the failover.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut killed: Option<usize> = None;
    let mut attempts_by_node = 0usize;
    for start in (0..JOBS).step_by(BATCH) {
        if start == JOBS / 3 {
            let leader = leader_of(&admins).await;
            let index = (leader - 1) as usize;
            nodes[index].kill();
            killed = Some(index);
        }
        if start == 2 * JOBS / 3 {
            if let Some(index) = killed.take() {
                nodes[index].start();
            }
        }
        let payloads: Vec<String> = (start..start + BATCH).map(|i| format!("job-{i}")).collect();
        let ids = wait_for("an enqueue to succeed", Duration::from_secs(60), || {
            attempts_by_node += 1;
            let client = clients[attempts_by_node % clients.len()].clone();
            let jobs: Vec<JobSpec> = payloads
                .iter()
                .map(|p| JobSpec::new(p.clone()).idempotency_key(p.clone()))
                .collect();
            // One try per node: this loop moves on to the next node itself.
            let producer = client.producer().retry(RetryPolicy::never());
            async move { producer.enqueue_batch(QUEUE, jobs).await.ok() }
        })
        .await;
        for (p, id) in payloads.iter().zip(ids) {
            acknowledged.insert(p.clone(), id);
        }
    }
    assert_eq!(acknowledged.len(), JOBS);
    let unique_ids: BTreeSet<&String> = acknowledged.values().collect();
    assert_eq!(
        unique_ids.len(),
        JOBS,
        "idempotent retries created no duplicate jobs"
    );

    // Every acknowledged job is handled, and the queue drains.
    wait_for(
        "every acknowledged job handled",
        Duration::from_secs(120),
        || async {
            let handled = handled.lock().unwrap();
            acknowledged
                .keys()
                .all(|p| handled.contains(p))
                .then_some(())
        },
    )
    .await;
    wait_for("the queue to drain", Duration::from_secs(60), || async {
        for c in &clients {
            if let Ok(r) = c
                .admin()
                .stats(pb::StatsRequest {
                    queue: QUEUE.into(),
                    ..Default::default()
                })
                .await
            {
                let s = &r.into_inner().queues[0];
                return (s.ready + s.scheduled + s.leased + s.dead == 0).then_some(());
            }
        }
        None
    })
    .await;
    let _ = stop_tx.send(());
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }

    // No lease was granted twice: each (job, attempt) was delivered once.
    let delivered = delivered.lock().unwrap().clone();
    let mut per_lease: HashMap<(String, u32), usize> = HashMap::new();
    for d in delivered.iter() {
        *per_lease.entry(d.clone()).or_default() += 1;
    }
    let doubled: Vec<_> = per_lease.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "leases granted twice: {doubled:?}");

    // All three replicas converge on the same applied state.
    wait_for("replicas converge", Duration::from_secs(30), || async {
        let mut applied = Vec::new();
        for c in &admins {
            let s = c
                .cluster()
                .status(pb::ClusterStatusRequest::default())
                .await
                .ok()?
                .into_inner();
            applied.push(s.shards[0].applied_index);
        }
        applied.windows(2).all(|w| w[0] == w[1]).then_some(())
    })
    .await;
    for n in &nodes {
        assert!(
            !n.log().contains("panicked"),
            "node {} panicked:\n{}",
            n.id,
            n.log()
        );
    }
}
