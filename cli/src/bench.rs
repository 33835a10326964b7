//! `raftq bench`: the reference workload. Producers enqueue in batches;
//! workers hold worker streams, acking in batches and asking for more in
//! the same frame. With `--spawn N` it starts N local nodes in a temp dir
//! and also reports their CPU time per job.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Conn;
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use raftq_client::proto as pb;
use raftq_client::Client;
use raftq_client::ConnectOptions;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Producers only.
    Enqueue,
    /// Workers only, over prefilled jobs: fetch → ack cycles.
    Lifecycle,
    /// Producers and workers at once.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    Fsync,
    Async,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "lifecycle")]
    scenario: Scenario,
    /// Queues the load is spread over.
    #[arg(long, default_value_t = 1)]
    queues: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Worker processes simulated (each holds `--concurrency` streams).
    #[arg(long, default_value_t = 32)]
    workers: usize,
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Jobs a stream asks for at a time.
    #[arg(long, default_value_t = 64)]
    fetch_batch: u32,
    /// Acks sent together.
    #[arg(long, default_value_t = 64)]
    ack_batch: usize,
    /// Jobs per enqueue request.
    #[arg(long, default_value_t = 64)]
    enqueue_batch: usize,
    /// Payload bytes per job.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// How long to measure, e.g. 30s or 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Jobs enqueued before measuring (lifecycle default: 1,000,000).
    #[arg(long)]
    prefill: Option<u64>,
    /// Start this many local nodes (1, 3 or 5; with --replication-factor,
    /// up to 9) instead of using --addr.
    #[arg(long)]
    spawn: Option<usize>,
    /// With --spawn: voters per shard (1, 3 or 5), each node holding only
    /// the shards placed on it. Default: every node holds every shard.
    #[arg(long, requires = "spawn")]
    replication_factor: Option<u32>,
    /// With --spawn: run the nodes with TLS on both ports and auth (a
    /// fresh CA, node certificate and token), to measure what they cost.
    #[arg(long, requires = "spawn")]
    secure: bool,
    /// With --spawn: shards per node.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// With --spawn: durability mode.
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Durability,
    /// With --spawn: batcher settings passed to the nodes.
    #[arg(long)]
    max_batch_ops: Option<usize>,
    #[arg(long)]
    linger_min_micros: Option<u64>,
    #[arg(long)]
    linger_max_micros: Option<u64>,
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// gRPC connections to each shard leader; producers and worker
    /// streams are spread over them (real workers each hold their own).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 30s, 2m or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unknown unit {unit:?}; use ms, s or m")),
    }
}

/// Local nodes started for the run; killed and removed on drop.
struct Spawned {
    children: Vec<Child>,
    /// Client ports.
    addrs: Vec<String>,
    /// With --secure: how to connect to the client ports.
    options: Option<ConnectOptions>,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Spawned {
    /// User + system CPU seconds each node used so far (Linux /proc).
    fn cpu_seconds(&self) -> Option<Vec<f64>> {
        self.children
            .iter()
            .map(|child| {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
                // Fields after the parenthesised command name; utime and
                // stime are the 14th and 15th fields, in clock ticks (100
                // per second).
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks: f64 =
                    fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
                Some(ticks / 100.0)
            })
            .collect()
    }
}

impl Spawned {
    /// The largest resident set of the nodes, in MiB (Linux /proc).
    fn max_rss_mib(&self) -> Option<f64> {
        self.children
            .iter()
            .filter_map(|child| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib / 1024.0)
            })
            .reduce(f64::max)
    }
}

fn free_addr() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.to_string())
}

fn spawn_nodes(args: &BenchArgs, count: usize) -> anyhow::Result<Spawned> {
    match args.replication_factor {
        None if !matches!(count, 1 | 3 | 5) => {
            bail!("--spawn takes 1, 3 or 5 (got {count}); with --replication-factor, up to 9")
        }
        Some(factor) if !(factor as usize..=9).contains(&count) => bail!(
            "--spawn {count} with --replication-factor {factor}: spawn from {factor} to 9 nodes"
        ),
        _ => {}
    }
    let exe = std::env::current_exe()
        .context("locating the raftq binary")?
        .with_file_name("queue-node");
    if !exe.exists() {
        bail!(
            "{} not found: build it next to raftq with `cargo build --release --workspace --bins`",
            exe.display()
        );
    }
    let dir = tempfile::tempdir().context("creating a temp dir for the nodes")?;
    let addrs = (0..count)
        .map(|_| free_addr())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let peer_addrs = (0..count)
        .map(|_| free_addr())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secure = match args.secure {
        true => Some(crate::certs::DevCerts::create(
            dir.path(),
            &["127.0.0.1", "localhost"],
        )?),
        false => None,
    };
    let members = peer_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (i, (addr, peer_addr)) in addrs.iter().zip(&peer_addrs).enumerate() {
        let data: PathBuf = dir.path().join(format!("node{}", i + 1));
        let log = std::fs::File::create(dir.path().join(format!("node{}.log", i + 1)))?;
        let mut cmd = Command::new(&exe);
        cmd.args(["--node-id", &(i + 1).to_string(), "--listen", addr])
            .args(["--peer-listen", peer_addr])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--initial-members",
                &members,
                "--shards",
                &args.shards.to_string(),
            ])
            .args(
                args.replication_factor
                    .map(|f| ["--replication-factor".to_string(), f.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .args([
                "--durability",
                match args.durability {
                    Durability::Fsync => "fsync",
                    Durability::Async => "async",
                },
            ])
            .args(["--log", "warn"])
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(certs) = &secure {
            cmd.arg("--tls-cert")
                .arg(&certs.node_cert)
                .arg("--tls-key")
                .arg(&certs.node_key)
                .arg("--tls-ca")
                .arg(&certs.ca_cert)
                .arg("--auth-file")
                .arg(&certs.auth_file);
        }
        if let Some(v) = args.max_batch_ops {
            cmd.args(["--max-batch-ops", &v.to_string()]);
        }
        if let Some(v) = args.linger_min_micros {
            cmd.args(["--linger-min-micros", &v.to_string()]);
        }
        if let Some(v) = args.linger_max_micros {
            cmd.args(["--linger-max-micros", &v.to_string()]);
        }
        if let Some(v) = args.max_in_flight {
            cmd.args(["--max-in-flight", &v.to_string()]);
        }
        children.push(
            cmd.spawn()
                .with_context(|| format!("starting {}", exe.display()))?,
        );
    }
    let options = match secure {
        Some(c) => Some(c.options()?),
        None => None,
    };
    Ok(Spawned {
        children,
        addrs,
        options,
        _dir: dir,
    })
}

/// Connections to the leader of each shard, so the load goes straight there.
struct Router {
    shards: u32,
    /// Per shard, the connections to its leader.
    leaders: Vec<Vec<Client>>,
}

impl Router {
    /// Finds each shard's leader in the shard map of the node at `addr`,
    /// and connects to the leaders' client ports. With `even_leaders`,
    /// waits until the nodes have spread the leaderships (freshly
    /// started nodes move them for several seconds, and a worker stream
    /// whose leader moves ends).
    async fn discover(
        addr: &str,
        options: &ConnectOptions,
        connections: usize,
        even_leaders: bool,
    ) -> anyhow::Result<Router> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(router) =
                Router::try_discover(addr, options, connections, even_leaders).await
            {
                return Ok(router);
            }
            if Instant::now() > deadline {
                bail!(
                    "no leader for every shard at {addr} within 60s{}",
                    if even_leaders {
                        ", spread over the nodes"
                    } else {
                        ""
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_discover(
        addr: &str,
        options: &ConnectOptions,
        connections: usize,
        even_leaders: bool,
    ) -> Option<Router> {
        let client = Client::connect_with(addr, options.clone()).await.ok()?;
        let map = client
            .queue()
            .get_shard_map(pb::GetShardMapRequest::default())
            .await
            .ok()?
            .into_inner();
        if map.shards.len() != map.shard_count as usize || map.shards.is_empty() {
            return None;
        }
        if even_leaders && !leaders_even(&map) {
            return None;
        }
        let mut by_addr: HashMap<String, Vec<Client>> = HashMap::new();
        let mut leaders = Vec::new();
        for shard in &map.shards {
            if shard.leader_addr.is_empty() {
                return None;
            }
            if !by_addr.contains_key(&shard.leader_addr) {
                let mut pool = Vec::with_capacity(connections);
                for _ in 0..connections {
                    pool.push(
                        Client::connect_with(&shard.leader_addr, options.clone())
                            .await
                            .ok()?,
                    );
                }
                by_addr.insert(shard.leader_addr.clone(), pool);
            }
            leaders.push(by_addr[&shard.leader_addr].clone());
        }
        Some(Router {
            shards: map.shard_count,
            leaders,
        })
    }

    /// A connection to `queue`'s leader; `n` picks one of the pool.
    fn for_queue(&self, queue: &str, n: usize) -> Client {
        let pool = &self.leaders[raftq_api::shard_of(queue, self.shards) as usize];
        pool[n % pool.len()].clone()
    }
}

/// Whether every node that holds a shard leads as many shards as any
/// other, give or take one.
fn leaders_even(map: &pb::ShardMap) -> bool {
    let mut led: HashMap<u64, usize> = map
        .shards
        .iter()
        .flat_map(|s| s.members.iter().map(|m| (*m, 0)))
        .collect();
    for shard in &map.shards {
        *led.entry(shard.leader_id).or_default() += 1;
    }
    let (min, max) = (led.values().min(), led.values().max());
    matches!((min, max), (Some(min), Some(max)) if max - min <= 1)
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    /// Enqueue requests answered UNAVAILABLE (an election or a leadership
    /// hand-off) and sent again.
    retried: AtomicU64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

fn record(h: &mut Histogram<u64>, since: Instant) {
    let _ = h.record((since.elapsed().as_micros() as u64).max(1));
}

fn queue_names(n: usize) -> Vec<String> {
    (0..n.max(1)).map(|i| format!("bench-{i}")).collect()
}

async fn producer(
    client: Client,
    queue: String,
    payload: Bytes,
    batch: usize,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    limit: Option<Arc<AtomicU64>>,
) -> Histogram<u64> {
    let mut latency = histogram();
    let mut client = client.queue();
    while !stop.load(Ordering::Relaxed) {
        let n = match &limit {
            Some(left) => {
                let take = left.fetch_sub(batch as u64, Ordering::Relaxed);
                if take == 0 || take > u64::MAX / 2 {
                    break;
                }
                take.min(batch as u64) as usize
            }
            None => batch,
        };
        let jobs = (0..n)
            .map(|_| pb::NewJob {
                payload: payload.clone(),
                ..Default::default()
            })
            .collect();
        let started = Instant::now();
        match client
            .enqueue(pb::EnqueueRequest {
                queue: queue.clone(),
                jobs,
            })
            .await
        {
            Ok(_) => {
                record(&mut latency, started);
                counters.enqueued.fetch_add(n as u64, Ordering::Relaxed);
            }
            // No leader for a moment (an election, a hand-off): retry the
            // same jobs, as a real producer would. Prefill must not lose them.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                if let Some(left) = &limit {
                    left.fetch_add(n as u64, Ordering::Relaxed);
                }
                counters.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    latency
}

/// One worker stream: keeps `fetch_batch` jobs asked for, acks in batches
/// of `ack_batch` together with the request for more. The cycle latency is
/// from sending acks (with the credit they free) to receiving the next
/// jobs; the stream's opening frame is not a cycle (its time is the
/// stream's setup, paid once per worker).
async fn worker_stream(
    client: Client,
    queue: String,
    worker_id: String,
    fetch_batch: u32,
    ack_batch: usize,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Histogram<u64> {
    let mut cycle = histogram();
    let (tx, rx) = mpsc::channel(8);
    let open = pb::WorkerFrame {
        open: Some(pb::WorkerOpen {
            queue,
            worker_id,
            lease_ms: Some(60_000),
        }),
        credit: fetch_batch,
        ..Default::default()
    };
    if tx.send(open).await.is_err() {
        return cycle;
    }
    let mut inbound = match client.queue().worker_stream(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(_) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return cycle;
        }
    };
    let mut held = Vec::new();
    let mut outstanding = fetch_batch as usize;
    let mut sent_at = None;
    while !stop.load(Ordering::Relaxed) {
        let frame = match tokio::time::timeout(Duration::from_millis(200), inbound.message()).await
        {
            Ok(Ok(Some(frame))) => frame,
            Ok(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            // Quiet for a while: ack what is done instead of waiting for a
            // full batch that may never come (a drained queue).
            Err(_) if !held.is_empty() => {
                let acks: Vec<_> = std::mem::take(&mut held);
                let n = acks.len();
                outstanding += n;
                let frame = pb::WorkerFrame {
                    acks,
                    credit: n as u32,
                    ..Default::default()
                };
                if tx.send(frame).await.is_err() {
                    break;
                }
                counters.acked.fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
            Err(_) => continue,
        };
        if frame.jobs.is_empty() {
            continue;
        }
        if let Some(t) = sent_at.take() {
            record(&mut cycle, t);
        }
        outstanding -= frame.jobs.len().min(outstanding);
        held.extend(frame.jobs.into_iter().filter_map(|j| j.token));
        if held.len() >= ack_batch || outstanding == 0 {
            let acks: Vec<_> = std::mem::take(&mut held);
            let n = acks.len();
            let credit = n as u32;
            outstanding += n;
            sent_at = Some(Instant::now());
            if tx
                .send(pb::WorkerFrame {
                    acks,
                    credit,
                    ..Default::default()
                })
                .await
                .is_err()
            {
                break;
            }
            counters.acked.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    if !held.is_empty() {
        let n = held.len() as u64;
        if tx
            .send(pb::WorkerFrame {
                acks: held,
                ..Default::default()
            })
            .await
            .is_ok()
        {
            counters.acked.fetch_add(n, Ordering::Relaxed);
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
    cycle
}

struct Percentiles {
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    samples: u64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        samples: h.len(),
    }
}

async fn prefill(
    router: &Arc<Router>,
    queues: &[String],
    payload: &Bytes,
    total: u64,
    producers: usize,
) -> anyhow::Result<()> {
    if total == 0 {
        return Ok(());
    }
    let counters = Arc::new(Counters::default());
    let left = Arc::new(AtomicU64::new(total));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..producers.max(4) {
        let queue = queues[i % queues.len()].clone();
        tasks.push(tokio::spawn(producer(
            router.for_queue(&queue, i),
            queue,
            payload.clone(),
            1000,
            counters.clone(),
            stop.clone(),
            Some(left.clone()),
        )));
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !tasks.iter().all(|t| t.is_finished()) {
        tick.tick().await;
        eprint!(
            "\rprefill: {} / {total} jobs ({:.0}s)   ",
            counters.enqueued.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    for t in tasks {
        t.await.context("prefill task")?;
    }
    let errors = counters.errors.load(Ordering::Relaxed);
    if errors > 0 {
        bail!("prefill: {errors} enqueue requests failed");
    }
    Ok(())
}

pub async fn run(args: BenchArgs, conn: &Conn) -> anyhow::Result<()> {
    if args.fetch_batch == 0
        || args.ack_batch == 0
        || args.enqueue_batch == 0
        || args.payload == 0
        || args.connections == 0
    {
        bail!(
            "--fetch-batch, --ack-batch, --enqueue-batch, --payload and --connections must be > 0"
        );
    }
    let spawned = match args.spawn {
        Some(n) => Some(spawn_nodes(&args, n)?),
        None => None,
    };
    let (target, options) = match &spawned {
        Some(s) => (
            s.addrs[0].clone(),
            // The bench finds the leaders itself.
            s.options
                .clone()
                .unwrap_or_else(|| ConnectOptions::new().route_to_leaders(false)),
        ),
        None => (conn.addr.clone(), conn.options()?),
    };
    eprintln!("waiting for shard leaders at {target} ...");
    let router =
        Arc::new(Router::discover(&target, &options, args.connections, spawned.is_some()).await?);
    let queues = queue_names(args.queues);
    let payload = Bytes::from(vec![b'x'; args.payload]);

    let prefill_jobs = args.prefill.unwrap_or(match args.scenario {
        Scenario::Lifecycle => 1_000_000,
        _ => 0,
    });
    prefill(&router, &queues, &payload, prefill_jobs, args.producers).await?;
    let rss_after_prefill = spawned.as_ref().and_then(Spawned::max_rss_mib);

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = spawned.as_ref().and_then(Spawned::cpu_seconds);
    let started = Instant::now();
    let mut producers = Vec::new();
    let mut workers = Vec::new();
    if args.scenario != Scenario::Lifecycle {
        for i in 0..args.producers {
            let queue = &queues[i % queues.len()];
            producers.push(tokio::spawn(producer(
                router.for_queue(queue, i),
                queue.clone(),
                payload.clone(),
                args.enqueue_batch,
                counters.clone(),
                stop.clone(),
                None,
            )));
        }
    }
    if args.scenario != Scenario::Enqueue {
        for w in 0..args.workers {
            for c in 0..args.concurrency {
                let queue = queues[(w * args.concurrency + c) % queues.len()].clone();
                workers.push(tokio::spawn(worker_stream(
                    router.for_queue(&queue, w),
                    queue,
                    format!("bench-w{w}"),
                    args.fetch_batch,
                    args.ack_batch,
                    counters.clone(),
                    stop.clone(),
                )));
            }
        }
    }

    // Lifecycle measures until the prefilled jobs are gone: counting idle
    // seconds after the queue drained would understate the rate.
    let drain_target = (args.scenario == Scenario::Lifecycle).then_some(prefill_jobs);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.tick().await;
    let (mut last_enq, mut last_ack, mut last_print) = (0, 0, Instant::now());
    while started.elapsed() < args.duration {
        tick.tick().await;
        let (enq, ack) = (
            counters.enqueued.load(Ordering::Relaxed),
            counters.acked.load(Ordering::Relaxed),
        );
        if drain_target.is_some_and(|n| n > 0 && ack >= n) {
            eprint!(
                "\n{:>4.1}s  all {ack} prefilled jobs acked; stopping",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        if last_print.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_print = Instant::now();
        eprint!(
            "\r{:>4.0}s  enqueued {enq:>10} ({:>7}/s)  acked {ack:>10} ({:>7}/s)  errors {}   ",
            started.elapsed().as_secs_f64(),
            enq - last_enq,
            ack - last_ack,
            counters.errors.load(Ordering::Relaxed)
        );
        (last_enq, last_ack) = (enq, ack);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (enqueued, acked) = (
        counters.enqueued.load(Ordering::Relaxed),
        counters.acked.load(Ordering::Relaxed),
    );
    let cpu_per_node: Option<Vec<f64>> =
        match (cpu_before, spawned.as_ref().and_then(Spawned::cpu_seconds)) {
            (Some(a), Some(b)) => Some(b.iter().zip(&a).map(|(b, a)| b - a).collect()),
            _ => None,
        };
    let cpu: Option<f64> = cpu_per_node.as_ref().map(|c| c.iter().sum());
    let rss_at_end = spawned.as_ref().and_then(Spawned::max_rss_mib);
    stop.store(true, Ordering::Relaxed);
    eprintln!();
    let mut enqueue_latency = histogram();
    for p in producers {
        let _ = enqueue_latency.add(p.await.context("producer task")?);
    }
    let mut cycle_latency = histogram();
    for w in workers {
        let _ = cycle_latency.add(w.await.context("worker task")?);
    }
    let jobs = match args.scenario {
        Scenario::Enqueue => enqueued,
        Scenario::Lifecycle => acked,
        Scenario::Mixed => acked,
    };
    let enq = percentiles(&enqueue_latency);
    let cyc = percentiles(&cycle_latency);
    let cpu_us_per_job = cpu.map(|c| c * 1e6 / jobs.max(1) as f64);
    // Each node's share: what lets more nodes carry more load.
    let per_node_us_per_job: Option<Vec<f64>> = cpu_per_node
        .as_ref()
        .map(|c| c.iter().map(|c| c * 1e6 / jobs.max(1) as f64).collect());
    let busiest_node_us_per_job = per_node_us_per_job
        .as_ref()
        .and_then(|c| c.iter().copied().reduce(f64::max));
    if args.json {
        let value = serde_json::json!({
            "scenario": format!("{:?}", args.scenario).to_lowercase(),
            "nodes": args.spawn,
            "shards": args.shards,
            "durability": format!("{:?}", args.durability).to_lowercase(),
            "seconds": elapsed,
            "enqueued": enqueued,
            "acked": acked,
            "enqueue_per_sec": enqueued as f64 / elapsed,
            "acked_per_sec": acked as f64 / elapsed,
            "enqueue_latency_ms": {"p50": enq.p50_ms, "p99": enq.p99_ms, "p999": enq.p999_ms, "samples": enq.samples},
            "cycle_latency_ms": {"p50": cyc.p50_ms, "p99": cyc.p99_ms, "p999": cyc.p999_ms, "samples": cyc.samples},
            "server_cpu_seconds": cpu,
            "server_cpu_us_per_job": cpu_us_per_job,
            "server_cpu_us_per_job_by_node": per_node_us_per_job,
            "busiest_node_cpu_us_per_job": busiest_node_us_per_job,
            "replication_factor": args.replication_factor,
            "server_rss_mib_after_prefill": rss_after_prefill,
            "server_rss_mib_at_end": rss_at_end,
            "errors": counters.errors.load(Ordering::Relaxed),
            "retried_unavailable": counters.retried.load(Ordering::Relaxed),
        });
        println!("{value}");
    } else {
        println!("scenario        {:?}", args.scenario);
        println!("duration        {elapsed:.1} s");
        println!(
            "enqueued        {enqueued} ({:.0} jobs/s)",
            enqueued as f64 / elapsed
        );
        println!(
            "acked           {acked} ({:.0} jobs/s)",
            acked as f64 / elapsed
        );
        if enq.samples > 0 {
            println!(
                "enqueue latency p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  ({} requests)",
                enq.p50_ms, enq.p99_ms, enq.p999_ms, enq.samples
            );
        }
        if cyc.samples > 0 {
            println!(
                "fetch→ack cycle p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  ({} cycles)",
                cyc.p50_ms, cyc.p99_ms, cyc.p999_ms, cyc.samples
            );
        }
        if let (Some(c), Some(per)) = (cpu, cpu_us_per_job) {
            println!(
                "server CPU      {c:.1} s  ({per:.1} µs per job, {:.2} s per 1,000 jobs)",
                per / 1000.0
            );
        }
        if let (Some(by_node), Some(busiest)) = (&per_node_us_per_job, busiest_node_us_per_job) {
            let each: Vec<String> = by_node.iter().map(|c| format!("{c:.1}")).collect();
            println!(
                "CPU per node    {} µs per job (busiest {busiest:.1})",
                each.join(" / ")
            );
        }
        println!(
            "errors          {} (and {} enqueue requests retried after UNAVAILABLE)",
            counters.errors.load(Ordering::Relaxed),
            counters.retried.load(Ordering::Relaxed)
        );
    }
    Ok(())
}
