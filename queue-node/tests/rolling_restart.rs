//! A rolling restart of a 3-node, 2-shard cluster under load: each node in
//! turn gets SIGTERM (it ends its worker streams, hands its leaderships
//! over and shuts down), is restarted and must rejoin before the next one
//! goes. SDK workers stay connected throughout, so a node that waited on
//! their streams would not stop in time. Every acknowledged enqueue must
//! be stored or handled afterwards, and the longest time no enqueue
//! succeeded is reported (printed; the number goes into docs). Run in
//! plaintext and with TLS on both ports and auth (the nodes hand over
//! leadership and forward over mutual TLS; clients use TLS and a token).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wait_for;
use raftq_client::proto as pb;
use raftq_client::{Client, ConnectOptions, JobSpec, Worker};

const QUEUES: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];
/// Jobs on this queue are handled by SDK workers during the restarts.
const WORK: &str = "work";

/// True when `client`'s node is a member of every shard and sees a leader.
async fn serving(client: &Client) -> bool {
    match client
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
    {
        Ok(s) => s
            .into_inner()
            .shards
            .iter()
            .all(|s| s.has_leader && s.applied_index > 0),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_no_acknowledged_job() {
    rolling_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_no_acknowledged_job_with_tls_and_auth() {
    rolling_restart(true).await;
}

async fn rolling_restart(secure: bool) {
    let dir = tempfile::tempdir().unwrap();
    let tls = secure.then(|| common::certs::TestTls::new(&dir.path().join("tls")));
    let mut args: Vec<String> = vec!["--shards".into(), "2".into()];
    args.extend(tls.as_ref().map(|t| t.node_args()).unwrap_or_default());
    let mut nodes = common::spawn_cluster(dir.path(), 3, &args);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // How clients and operators connect: plaintext, or TLS with the
    // worker's token (client port) and the ops certificate (peer port).
    let user = tls
        .as_ref()
        .map_or_else(ConnectOptions::new, |t| t.worker_options());
    let admin_of = |n: &common::ProcNode| {
        let ops = tls.as_ref().map(|t| t.ops_options());
        let peer = n.peer_addr.clone();
        async move {
            match ops {
                Some(ops) => common::connect_with(&peer, ops).await,
                None => common::connect(&peer).await,
            }
        }
    };
    for n in &nodes {
        let c = admin_of(n).await;
        wait_for("node serving", Duration::from_secs(30), || {
            let c = c.clone();
            async move { serving(&c).await.then_some(()) }
        })
        .await;
    }

    // One producer per node address, retrying on errors like a real client.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let last_success = Arc::new(Mutex::new(Instant::now()));
    let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for (p, addr) in addrs.iter().enumerate() {
        let (acked, last, longest, stop) = (
            acked.clone(),
            last_success.clone(),
            longest_gap.clone(),
            stop.clone(),
        );
        let addr = addr.clone();
        let user = user.clone();
        producers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut client: Option<Client> = None;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = Client::connect_with(&addr, user.clone()).await.ok();
                }
                let Some(c) = &client else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let queue = QUEUES[(n % 4) as usize];
                let payload = format!("p{p}-{n}");
                match c
                    .producer()
                    .enqueue(queue, JobSpec::new(payload.clone()))
                    .await
                {
                    Ok(_) => {
                        acked.lock().unwrap().insert(format!("{queue}/{payload}"));
                        let now = Instant::now();
                        let mut last = last.lock().unwrap();
                        let gap = now - *last;
                        let mut longest = longest.lock().unwrap();
                        *longest = (*longest).max(gap);
                        *last = now;
                        n += 1;
                    }
                    Err(_) => {
                        client = None;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }

    // SDK workers on every node, and a producer for them.
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stop_workers, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut workers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let client = common::connect_with(addr, user.clone()).await;
        let handled = handled.clone();
        let mut stop = stop_workers.subscribe();
        let worker = Worker::new(client, WORK)
            .concurrency(4)
            .worker_id(format!("sdk-{i}"));
        workers.push(tokio::spawn(worker.run_until(
            move |job: raftq_client::Job| {
                let handled = handled.clone();
                async move {
                    handled
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&job.payload).into_owned());
                    Ok::<(), String>(())
                }
            },
            async move {
                let _ = stop.recv().await;
            },
        )));
    }
    let work_acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let work_producer = {
        let (addrs, work_acked, stop, user) = (
            addrs.clone(),
            work_acked.clone(),
            stop.clone(),
            user.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("work-{n}");
                let addr = &addrs[n as usize % addrs.len()];
                let Ok(c) = Client::connect_with(addr, user.clone()).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    n += 1;
                    continue;
                };
                let job = JobSpec::new(payload.clone()).idempotency_key(payload.clone());
                if c.producer().enqueue(WORK, job).await.is_ok() {
                    work_acked.lock().unwrap().insert(payload);
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    for node in nodes.iter_mut() {
        let before = acked.lock().unwrap().len();
        wait_for("load flowing", Duration::from_secs(30), || {
            let acked = acked.clone();
            async move { (acked.lock().unwrap().len() > before + 50).then_some(()) }
        })
        .await;
        assert!(
            node.terminate(Duration::from_secs(20)),
            "node {} did not stop within 20 s of SIGTERM:\n{}",
            node.id,
            node.log()
        );
        node.start();
        let c = admin_of(node).await;
        wait_for("restarted node serving", Duration::from_secs(60), || {
            let c = c.clone();
            async move { serving(&c).await.then_some(()) }
        })
        .await;
    }
    let before = acked.lock().unwrap().len();
    wait_for(
        "load flowing after the restarts",
        Duration::from_secs(30),
        || {
            let acked = acked.clone();
            async move { (acked.lock().unwrap().len() > before + 50).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("producer");
    }
    work_producer.await.expect("work producer");

    // Every acknowledged job of the workers' queue was handled.
    let work_acked = work_acked.lock().unwrap().clone();
    wait_for(
        "every acknowledged work job handled",
        Duration::from_secs(90),
        || {
            let handled = handled.clone();
            let work_acked = work_acked.clone();
            async move {
                let handled: BTreeSet<String> = handled.lock().unwrap().iter().cloned().collect();
                work_acked.is_subset(&handled).then_some(())
            }
        },
    )
    .await;
    let _ = stop_workers.send(());
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    let handled = handled.lock().unwrap().clone();
    let redelivered = handled.len() - handled.iter().collect::<BTreeSet<_>>().len();

    // Every acknowledged enqueue is in the queue (nothing was fetched).
    let client = common::connect_with(&addrs[0], user.clone()).await;
    let acked = acked.lock().unwrap().clone();
    let mut stored = 0u64;
    for q in QUEUES {
        let stats = client
            .admin()
            .stats(pb::StatsRequest {
                queue: q.into(),
                local: false,
            })
            .await
            .expect("stats")
            .into_inner();
        stored += stats.queues.iter().map(|s| s.ready).sum::<u64>();
    }
    assert!(
        stored >= acked.len() as u64,
        "{} enqueues were acknowledged but only {stored} jobs are stored",
        acked.len()
    );
    let longest = *longest_gap.lock().unwrap();
    eprintln!(
        "rolling restart (TLS and auth: {secure}): {} acknowledged enqueues, {stored} stored, longest gap without a successful enqueue {longest:?}; workers handled {} of {} acknowledged work jobs ({redelivered} handled twice)",
        acked.len(),
        handled.iter().collect::<BTreeSet<_>>().len(),
        work_acked.len()
    );
}
