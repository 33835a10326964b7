//! Producers and workers that behave like real clients (retrying through
//! failures, on any node) and record everything in the [`History`].
//!
//! Producers enqueue small batches with idempotency keys and retry a failed
//! batch with the same keys until it is acknowledged. Workers fetch with a
//! short lease and, by a hash of (key, attempt), ack most jobs, send some
//! back for a retry, forget a few (the lease runs out) and bury the poison
//! ones — so every path of a job's life runs under the faults. Half the
//! workers fetch; the other half hold a push stream (`WorkerStream`) for a
//! moment at a time and close it cleanly, which hands back the jobs they
//! never started.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftq_client::proto as pb;
use raftq_client::Client;
use tokio::task::JoinHandle;

use super::cluster::Endpoints;
use super::history::{History, Op, Settle};
use super::proxy::fastrand;

pub const LEASE_MS: i64 = 2_000;
const RPC_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Workload {
    pub history: Arc<History>,
    producing: Arc<AtomicBool>,
    working: Arc<AtomicBool>,
    producers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    pub enqueue_errors: Arc<AtomicU64>,
    /// The newest enqueue failure, for diagnosing a stalled run.
    pub last_enqueue_error: Arc<std::sync::Mutex<String>>,
}

/// Lazily connected clients of every node; a failed one is dropped and
/// reconnected on its next use.
#[derive(Clone)]
struct Nodes {
    endpoints: Arc<Endpoints>,
}

impl Nodes {
    async fn connect(&self, i: usize) -> Option<Client> {
        self.endpoints.connect(i).await
    }
}

/// A client of one node at a time, moving to the next node after a failure
/// (as a real client behind a load balancer would).
struct Rotation {
    nodes: Nodes,
    next: usize,
    client: Option<Client>,
}

impl Rotation {
    fn new(nodes: Nodes, start: usize) -> Rotation {
        Rotation {
            nodes,
            next: start,
            client: None,
        }
    }

    /// The current client, or `None` (after a short pause) when the next
    /// node does not answer either.
    async fn client(&mut self) -> Option<Client> {
        if self.client.is_none() {
            self.next += 1;
            self.client = self.nodes.connect(self.next).await;
        }
        if self.client.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.client.clone()
    }

    fn failed(&mut self) {
        self.client = None;
    }
}

impl Workload {
    pub fn start(
        endpoints: Endpoints,
        queues: &[&str],
        producers: usize,
        workers: usize,
    ) -> Workload {
        let history = Arc::new(History::default());
        let producing = Arc::new(AtomicBool::new(true));
        let working = Arc::new(AtomicBool::new(true));
        let enqueue_errors = Arc::new(AtomicU64::new(0));
        let last_enqueue_error: Arc<std::sync::Mutex<String>> = Arc::default();
        let nodes = Nodes {
            endpoints: Arc::new(endpoints),
        };
        let queues: Arc<Vec<String>> = Arc::new(queues.iter().map(|q| q.to_string()).collect());
        let producers = (0..producers)
            .map(|p| {
                tokio::spawn(produce(
                    p,
                    nodes.clone(),
                    queues.clone(),
                    history.clone(),
                    producing.clone(),
                    enqueue_errors.clone(),
                    last_enqueue_error.clone(),
                ))
            })
            .collect();
        // Half fetch, half hold a push stream.
        let workers = (0..workers)
            .map(|w| {
                let (nodes, queues, history, working) = (
                    nodes.clone(),
                    queues.clone(),
                    history.clone(),
                    working.clone(),
                );
                if w % 2 == 0 {
                    tokio::spawn(work(w, nodes, queues, history, working))
                } else {
                    tokio::spawn(stream_work(w, nodes, queues, history, working))
                }
            })
            .collect();
        Workload {
            history,
            producing,
            working,
            producers,
            workers,
            enqueue_errors,
            last_enqueue_error,
        }
    }

    pub async fn stop_producing(&mut self) {
        self.producing.store(false, Ordering::SeqCst);
        for p in self.producers.drain(..) {
            let _ = p.await;
        }
    }

    pub async fn stop_working(&mut self) {
        self.working.store(false, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.await;
        }
    }
}

async fn produce(
    p: usize,
    nodes: Nodes,
    queues: Arc<Vec<String>>,
    history: Arc<History>,
    producing: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    last_error: Arc<std::sync::Mutex<String>>,
) {
    let mut next = 0usize;
    let mut nodes = Rotation::new(nodes, p);
    while producing.load(Ordering::SeqCst) {
        let len = 1 + next % 8;
        let keys: Vec<String> = (next..next + len).map(|i| format!("p{p}-{i}")).collect();
        let queue = queues[next % queues.len()].clone();
        next += len;
        // Retry the same keys until the batch is acknowledged.
        while producing.load(Ordering::SeqCst) {
            let Some(c) = nodes.client().await else {
                continue;
            };
            for k in &keys {
                history.record(Op::EnqueueInvoke { key: k.clone() });
            }
            let req = pb::EnqueueRequest {
                queue: queue.clone(),
                jobs: keys
                    .iter()
                    .map(|k| pb::NewJob {
                        payload: k.clone().into_bytes().into(),
                        idempotency_key: k.clone(),
                        ..Default::default()
                    })
                    .collect(),
            };
            match tokio::time::timeout(RPC_TIMEOUT, c.queue().enqueue(req)).await {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    for (k, id) in keys.iter().zip(resp.job_ids) {
                        history.record(Op::EnqueueOk {
                            key: k.clone(),
                            job: id,
                        });
                    }
                    break;
                }
                failed => {
                    let why = match failed {
                        Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                        _ => "no answer within 3 s".to_string(),
                    };
                    *last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        format!("producer {p} to queue {queue}: {why}");
                    for k in &keys {
                        history.record(Op::EnqueueUnknown { key: k.clone() });
                    }
                    errors.fetch_add(1, Ordering::Relaxed);
                    nodes.failed();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // Pace the producers so the run spans the faults.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// What a worker does with one delivery.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Ack,
    Retry,
    Forget,
    Bury,
}

fn fate(key: &str, attempt: u32) -> Fate {
    let h = fnv(key);
    if h.is_multiple_of(53) {
        return Fate::Bury;
    }
    match (h ^ u64::from(attempt).wrapping_mul(0x9E37_79B9)) % 100 {
        0..=5 => Fate::Retry,
        6..=8 => Fate::Forget,
        _ => Fate::Ack,
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

async fn work(
    w: usize,
    nodes: Nodes,
    queues: Arc<Vec<String>>,
    history: Arc<History>,
    working: Arc<AtomicBool>,
) {
    let worker = format!("w{w}");
    let mut turn = w;
    let mut nodes = Rotation::new(nodes, w);
    while working.load(Ordering::SeqCst) {
        let Some(c) = nodes.client().await else {
            continue;
        };
        let queue = queues[turn % queues.len()].clone();
        history.record(Op::FetchInvoke {
            worker: worker.clone(),
        });
        let sent = Instant::now();
        let req = pb::FetchRequest {
            queue,
            worker_id: worker.clone(),
            max_jobs: 16,
            lease_ms: Some(LEASE_MS),
            wait_ms: 50,
        };
        let jobs = match tokio::time::timeout(RPC_TIMEOUT, c.queue().fetch(req)).await {
            Ok(Ok(r)) => r.into_inner().jobs,
            _ => {
                nodes.failed();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // Stay on a queue while it has work; move on when it is empty.
        if jobs.is_empty() {
            turn += 1;
        }
        let mut acks = Vec::new();
        let mut nacks = Vec::new();
        for leased in jobs {
            let (Some(job), Some(token)) = (leased.job, leased.token) else {
                continue;
            };
            let key = String::from_utf8_lossy(&job.payload).into_owned();
            history.record(Op::Deliver {
                worker: worker.clone(),
                key: key.clone(),
                job: token.job_id.clone(),
                attempt: token.attempt,
                expires_ms: leased.lease_expires_at_ms,
                lease_ms: LEASE_MS,
                fetch_sent: sent,
            });
            match fate(&key, token.attempt) {
                Fate::Ack => acks.push(token),
                Fate::Retry => nacks.push((token, Settle::Retry)),
                Fate::Bury => nacks.push((token, Settle::Dead)),
                Fate::Forget => {}
            }
        }
        // "Process" the jobs for a moment.
        tokio::time::sleep(Duration::from_millis((fastrand() * 10.0) as u64)).await;
        if !acks.is_empty() {
            settle_acks(&c, &history, acks).await;
        }
        if !nacks.is_empty() {
            settle_nacks(&c, &history, nacks).await;
        }
    }
}

/// A worker on the push stream: one stream on one queue for a moment at
/// a time (so it moves over the queues and closes streams often), settling
/// by the same fates as the fetching workers.
async fn stream_work(
    w: usize,
    nodes: Nodes,
    queues: Arc<Vec<String>>,
    history: Arc<History>,
    working: Arc<AtomicBool>,
) {
    let worker = format!("s{w}");
    let mut turn = w;
    let mut nodes = Rotation::new(nodes, w);
    while working.load(Ordering::SeqCst) {
        let Some(c) = nodes.client().await else {
            continue;
        };
        let queue = queues[turn % queues.len()].clone();
        turn += 1;
        if stream_session(&c, &worker, queue, &history, &working)
            .await
            .is_err()
        {
            nodes.failed();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One stream, held for [`STREAM_SESSION`], then closed cleanly. `Err`
/// when it broke (the node or its shard's leader went away): the jobs it
/// holds keep their leases, as the server keeps them.
async fn stream_session(
    c: &Client,
    worker: &str,
    queue: String,
    history: &History,
    working: &AtomicBool,
) -> Result<(), ()> {
    const CREDIT: u32 = 16;
    const STREAM_SESSION: Duration = Duration::from_secs(2);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::WorkerFrame>(16);
    history.record(Op::FetchInvoke {
        worker: worker.to_string(),
    });
    // Every lease of this stream began after this (sound for the checker's
    // "lease cut short", if looser than a fetch's send time).
    let opened = Instant::now();
    let open = pb::WorkerFrame {
        open: Some(pb::WorkerOpen {
            queue,
            worker_id: worker.to_string(),
            lease_ms: Some(LEASE_MS),
        }),
        credit: CREDIT,
        ..Default::default()
    };
    tx.send(open).await.map_err(|_| ())?;
    let mut queue_client = c.queue();
    let call = queue_client.worker_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut inbound = match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(Ok(r)) => r.into_inner(),
        _ => return Err(()),
    };
    // What this stream sent per (job, attempt), to name a refusal's kind.
    let mut sent: std::collections::HashMap<(String, u32), Settle> = Default::default();
    // Delivered here and never acked or nacked (the "forgotten" ones).
    let mut unsettled: Vec<(String, u32)> = Vec::new();
    let end = opened + STREAM_SESSION;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || !working.load(Ordering::SeqCst) {
            break;
        }
        let frame = match tokio::time::timeout(left, inbound.message()).await {
            Err(_) => break,
            Ok(Ok(Some(frame))) => frame,
            // The server ends a stream only with an error, or after the
            // worker closed it.
            Ok(Ok(None)) | Ok(Err(_)) => return Err(()),
        };
        record_refusals(history, frame.results, &sent);
        let mut reply = pb::WorkerFrame::default();
        for leased in frame.jobs {
            let (Some(job), Some(token)) = (leased.job, leased.token) else {
                continue;
            };
            let key = String::from_utf8_lossy(&job.payload).into_owned();
            history.record(Op::Deliver {
                worker: worker.to_string(),
                key: key.clone(),
                job: token.job_id.clone(),
                attempt: token.attempt,
                expires_ms: leased.lease_expires_at_ms,
                lease_ms: LEASE_MS,
                fetch_sent: opened,
            });
            reply.credit += 1;
            let kind = match fate(&key, token.attempt) {
                Fate::Ack => Settle::Ack,
                Fate::Retry => Settle::Retry,
                Fate::Bury => Settle::Dead,
                Fate::Forget => {
                    unsettled.push((token.job_id.clone(), token.attempt));
                    continue;
                }
            };
            history.record(Op::SettleInvoke {
                job: token.job_id.clone(),
                attempt: token.attempt,
                kind,
            });
            sent.insert((token.job_id.clone(), token.attempt), kind);
            match kind {
                Settle::Ack => reply.acks.push(token),
                _ => reply.nacks.push(pb::NackItem {
                    token: Some(token),
                    retry_delay_ms: Some(20),
                    error: "chaos says no".into(),
                    dead: kind == Settle::Dead,
                }),
            }
        }
        if reply.credit > 0 && tx.send(reply).await.is_err() {
            return Err(());
        }
    }
    // A clean close hands back what this stream never started: recorded
    // before the close is sent, as any settle is recorded before it is.
    for (job, attempt) in unsettled {
        history.record(Op::SettleInvoke {
            job,
            attempt,
            kind: Settle::Release,
        });
    }
    drop(tx);
    // Refusals of the last frames may still come; jobs pushed after the
    // close are handed back with the rest, so they are not deliveries.
    while let Ok(Ok(Some(frame))) = tokio::time::timeout(RPC_TIMEOUT, inbound.message()).await {
        record_refusals(history, frame.results, &sent);
    }
    Ok(())
}

fn record_refusals(
    history: &History,
    results: Vec<pb::TokenResult>,
    sent: &std::collections::HashMap<(String, u32), Settle>,
) {
    for r in results {
        let Some(t) = r.token else { continue };
        if r.code == 0 {
            continue; // extends only; this worker sends none
        }
        let kind = sent
            .get(&(t.job_id.clone(), t.attempt))
            .copied()
            .unwrap_or(Settle::Ack);
        history.record(Op::SettleRefused {
            job: t.job_id,
            attempt: t.attempt,
            kind,
            code: r.code,
        });
    }
}

async fn settle_acks(c: &Client, history: &History, tokens: Vec<pb::LeaseToken>) {
    for t in &tokens {
        history.record(Op::SettleInvoke {
            job: t.job_id.clone(),
            attempt: t.attempt,
            kind: Settle::Ack,
        });
    }
    let req = pb::AckRequest { tokens };
    if let Ok(Ok(resp)) = tokio::time::timeout(RPC_TIMEOUT, c.queue().ack(req)).await {
        record_results(history, resp.into_inner().results, |_| Settle::Ack);
    }
}

async fn settle_nacks(c: &Client, history: &History, items: Vec<(pb::LeaseToken, Settle)>) {
    let kinds: std::collections::HashMap<String, Settle> =
        items.iter().map(|(t, k)| (t.job_id.clone(), *k)).collect();
    for (t, k) in &items {
        history.record(Op::SettleInvoke {
            job: t.job_id.clone(),
            attempt: t.attempt,
            kind: *k,
        });
    }
    let req = pb::NackRequest {
        items: items
            .into_iter()
            .map(|(token, kind)| pb::NackItem {
                token: Some(token),
                retry_delay_ms: Some(20),
                error: "chaos says no".into(),
                dead: kind == Settle::Dead,
            })
            .collect(),
    };
    if let Ok(Ok(resp)) = tokio::time::timeout(RPC_TIMEOUT, c.queue().nack(req)).await {
        record_results(history, resp.into_inner().results, |job| {
            kinds.get(job).copied().unwrap_or(Settle::Retry)
        });
    }
}

fn record_results(history: &History, results: Vec<pb::TokenResult>, kind: impl Fn(&str) -> Settle) {
    for r in results {
        let Some(t) = r.token else { continue };
        let kind = kind(&t.job_id);
        if r.code == 0 {
            history.record(Op::SettleOk {
                job: t.job_id,
                attempt: t.attempt,
                kind,
            });
        } else {
            history.record(Op::SettleRefused {
                job: t.job_id,
                attempt: t.attempt,
                kind,
                code: r.code,
            });
        }
    }
}

/// Asks the cluster for the final state of every acknowledged job (many
/// at a time, each on the next node that answers).
pub async fn final_states(
    endpoints: &Endpoints,
    jobs: impl IntoIterator<Item = String>,
) -> anyhow::Result<super::history::FinalStates> {
    use futures::StreamExt;
    let mut clients = Vec::new();
    for i in 0..endpoints.len() {
        if let Some(c) = endpoints.connect(i).await {
            clients.push(c);
        }
    }
    anyhow::ensure!(!clients.is_empty(), "no node answers");
    let clients = Arc::new(clients);
    let lookups = futures::stream::iter(jobs.into_iter().enumerate()).map(|(i, job)| {
        let clients = clients.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut last = String::new();
            for attempt in i.. {
                let c = &clients[attempt % clients.len()];
                let req = pb::JobRef {
                    job_id: job.clone(),
                };
                match tokio::time::timeout(RPC_TIMEOUT, c.admin().get_job(req)).await {
                    Ok(Ok(j)) => {
                        let state = match pb::JobState::try_from(j.into_inner().state) {
                            Ok(pb::JobState::Dead) => "dead",
                            Ok(pb::JobState::Ready) => "ready",
                            Ok(pb::JobState::Leased) => "leased",
                            Ok(pb::JobState::Scheduled) => "scheduled",
                            _ => "unknown",
                        };
                        return Ok((job, Some(state.to_string())));
                    }
                    Ok(Err(s)) if s.code() == tonic::Code::NotFound => return Ok((job, None)),
                    other if Instant::now() > deadline => {
                        last = format!("{other:?}");
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            anyhow::bail!("no node answered for job {job}; the last answer: {last}")
        }
    });
    let mut out = super::history::FinalStates::new();
    let mut results = lookups.buffer_unordered(32);
    while let Some(r) = results.next().await {
        let (job, state) = r?;
        out.insert(job, state);
    }
    Ok(out)
}

/// Waits until no queue holds a ready, scheduled or leased job on any
/// node that answers (every job acked or dead).
pub async fn wait_drained(endpoints: &Endpoints, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut answered = 0;
        let mut busy = Vec::new();
        for (i, addr) in endpoints.addrs.iter().enumerate() {
            let Some(c) = endpoints.connect(i).await else {
                continue;
            };
            let req = pb::StatsRequest {
                queue: String::new(),
                local: true,
            };
            if let Ok(Ok(s)) = tokio::time::timeout(RPC_TIMEOUT, c.admin().stats(req)).await {
                answered += 1;
                for q in s.into_inner().queues {
                    if q.ready + q.scheduled + q.leased > 0 {
                        let probe = if Instant::now() > deadline {
                            // Why is nobody taking them? Ask as a worker would.
                            let req = pb::FetchRequest {
                                queue: q.queue.clone(),
                                worker_id: "probe".into(),
                                max_jobs: 1,
                                lease_ms: Some(1_000),
                                wait_ms: 0,
                            };
                            match tokio::time::timeout(RPC_TIMEOUT, c.queue().fetch(req)).await {
                                Ok(Ok(r)) => {
                                    format!("; a fetch got {} job(s)", r.into_inner().jobs.len())
                                }
                                Ok(Err(s)) => format!("; a fetch failed: {s:?}"),
                                Err(_) => "; a fetch timed out".to_string(),
                            }
                        } else {
                            String::new()
                        };
                        busy.push(format!(
                            "{addr} {}: {} ready, {} scheduled, {} leased{probe}",
                            q.queue, q.ready, q.scheduled, q.leased
                        ));
                    }
                }
            }
        }
        if answered == endpoints.len() && busy.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("queues not drained after {timeout:?}: {busy:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
