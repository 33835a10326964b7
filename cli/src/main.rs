//! `raftq`: the command-line tool for raftq queues, jobs and clusters.

mod bench;
mod certs;
mod top;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use raftq_client::proto as pb;
use std::path::PathBuf;

use raftq_client::{Client, ConnectOptions, JobSpec, RetryPolicy, TlsOptions, Worker};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Parser)]
#[command(
    name = "raftq",
    version,
    about = "Command-line tool for raftq, the replicated job queue"
)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where and how to connect: flags, else their environment variables,
/// else the config file, else the defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Client port of any raftq node [default: 127.0.0.1:7400].
    #[arg(long, global = true, env = "RAFTQ_ADDR")]
    pub addr: Option<String>,
    /// Peer port of any raftq node: `cluster` commands go there
    /// [default: 127.0.0.1:7401].
    #[arg(long, global = true, env = "RAFTQ_PEER_ADDR")]
    pub peer_addr: Option<String>,
    /// Connect with TLS (implied by --ca-cert and --client-cert).
    #[arg(long, global = true, env = "RAFTQ_TLS")]
    pub tls: bool,
    /// The CA that signed the node's certificate (PEM); default: the
    /// system's roots.
    #[arg(long, global = true, env = "RAFTQ_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A client certificate (PEM), for nodes that identify callers by it.
    #[arg(
        long,
        global = true,
        env = "RAFTQ_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    #[arg(
        long,
        global = true,
        env = "RAFTQ_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// The name the node's certificate must carry, when it is not the
    /// host connected to.
    #[arg(long, global = true, env = "RAFTQ_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// A bearer token for nodes with auth on.
    #[arg(long, global = true, env = "RAFTQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A YAML file with any of: addr, peer_addr, tls, ca_cert, client_cert,
    /// client_key, tls_domain, token, token_file [default:
    /// ~/.config/raftq/config.yaml, when it exists].
    #[arg(long = "config", global = true, env = "RAFTQ_CLI_CONFIG")]
    pub config_file: Option<PathBuf>,
}

/// The CLI's config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    addr: Option<String>,
    peer_addr: Option<String>,
    #[serde(default)]
    tls: bool,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    tls_domain: Option<String>,
    token: Option<String>,
    /// A file holding the token (a mounted Secret, say).
    token_file: Option<PathBuf>,
}

/// [`ConnArgs`] with the config file and the defaults applied.
#[derive(Debug, Clone)]
pub struct Conn {
    pub addr: String,
    pub peer_addr: String,
    tls: bool,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    tls_domain: Option<String>,
    token: Option<String>,
}

impl ConnArgs {
    pub fn resolve(self) -> anyhow::Result<Conn> {
        let (path, required) = match self.config_file.clone() {
            Some(path) => (Some(path), true),
            None => (
                std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".config/raftq/config.yaml")),
                false,
            ),
        };
        let file = match path {
            Some(path) if required || path.exists() => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the config file {}", path.display()))?;
                serde_yaml::from_str::<ConfigFile>(&text)
                    .with_context(|| format!("the config file {} is not valid", path.display()))?
            }
            _ => ConfigFile::default(),
        };
        let token = match (self.token, file.token, file.token_file) {
            (Some(t), _, _) | (None, Some(t), _) => Some(t),
            (None, None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading token_file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None, None) => None,
        };
        let (client_cert, client_key) = match (self.client_cert, self.client_key) {
            (Some(c), Some(k)) => (Some(c), Some(k)),
            _ => (file.client_cert, file.client_key),
        };
        if client_cert.is_some() != client_key.is_some() {
            bail!("client_cert and client_key go together: give both or neither");
        }
        Ok(Conn {
            addr: self
                .addr
                .or(file.addr)
                .unwrap_or_else(|| "127.0.0.1:7400".into()),
            peer_addr: self
                .peer_addr
                .or(file.peer_addr)
                .unwrap_or_else(|| "127.0.0.1:7401".into()),
            tls: self.tls || file.tls,
            ca_cert: self.ca_cert.or(file.ca_cert),
            client_cert,
            client_key,
            tls_domain: self.tls_domain.or(file.tls_domain),
            token,
        })
    }
}

impl Conn {
    pub fn options(&self) -> anyhow::Result<ConnectOptions> {
        // Each command talks to the node given (through a port-forward,
        // often): it forwards to leaders, so no shard map is read.
        let mut options = ConnectOptions::new().route_to_leaders(false);
        if self.tls || self.ca_cert.is_some() || self.client_cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(path) = &self.ca_cert {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading --ca-cert {}", path.display()))?;
                tls = tls.ca_cert_pem(pem);
            }
            if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                let cert_pem = std::fs::read(cert)
                    .with_context(|| format!("reading --client-cert {}", cert.display()))?;
                let key_pem = std::fs::read(key)
                    .with_context(|| format!("reading --client-key {}", key.display()))?;
                tls = tls.client_identity_pem(cert_pem, key_pem);
            }
            if let Some(domain) = &self.tls_domain {
                tls = tls.domain(domain.clone());
            }
            options = options.tls(tls);
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        Ok(options)
    }

    pub async fn connect(&self, addr: &str) -> anyhow::Result<Client> {
        Ok(Client::connect_with(addr, self.options()?).await?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue jobs: each PAYLOAD argument, or else each line of stdin, is one job.
    Enqueue(EnqueueArgs),
    /// Run a shell command for each job: payload on stdin; exit 0 acks, anything else nacks.
    Work(WorkArgs),
    /// Show queue depths (one queue, or all).
    Stats {
        queue: Option<String>,
        /// Ask the node's own (possibly lagging) state instead of the leader's.
        #[arg(long)]
        local: bool,
    },
    /// Inspect or cancel one job.
    #[command(subcommand)]
    Job(JobCommand),
    /// The dead-letter set of a queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Pause, resume or purge a queue, or change its defaults.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Write a CA, a node certificate, a client certificate, an admin token
    /// and an auth file to a directory: TLS and auth on one machine in one
    /// step (`queue-node --tls-cert DIR/node.pem --tls-key DIR/node-key.pem
    /// --tls-ca DIR/ca.pem --auth-file DIR/auth.yaml`).
    DevCerts {
        /// Where to write them.
        #[arg(long, default_value = "raftq-dev-certs")]
        out: PathBuf,
        /// Names the node certificate is valid for.
        #[arg(long = "host", default_values_t = ["127.0.0.1".to_string(), "localhost".to_string()])]
        hosts: Vec<String>,
    },
    /// Where each shard lives: its leader, term and members, and how many
    /// replicas and leaderships each node has (from the shard map).
    Shards,
    /// Cluster membership and Raft status.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// A live view of the queues (depths, rates) and the shards (leaders, lag).
    Top(top::TopArgs),
    /// Measure throughput and latency (optionally against nodes it starts).
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
struct EnqueueArgs {
    queue: String,
    payloads: Vec<String>,
    #[arg(long, default_value_t = 0)]
    priority: i32,
    /// Delay before the job becomes ready, in ms.
    #[arg(long)]
    delay_ms: Option<u64>,
    #[arg(long, default_value_t = 0)]
    max_attempts: u32,
    /// Only with a single job: dedup key.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// KEY=VALUE, repeatable.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Jobs per request when reading stdin.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
}

#[derive(Debug, Args)]
struct WorkArgs {
    queue: String,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Lease per job, in ms (default: the queue's).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Stop after this many jobs finished.
    #[arg(long)]
    max_jobs: Option<u64>,
    /// Command run by `sh -c`; gets RAFTQ_JOB_ID, RAFTQ_QUEUE and RAFTQ_ATTEMPT.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    Get {
        id: String,
    },
    Cancel {
        id: String,
    },
    /// List a queue's jobs, newest first.
    List {
        queue: String,
        /// scheduled, ready, leased or dead (default: every state).
        #[arg(long, value_parser = ["scheduled", "ready", "leased", "dead"])]
        state: Option<String>,
        /// Only jobs with this header: `key` or `key=value`.
        #[arg(long)]
        header: Option<String>,
        /// Only the job with this idempotency key.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Only jobs whose last error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// Show at most this many jobs.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    List {
        queue: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Move dead jobs back to ready (all of the queue's when no ids are given).
    Requeue { queue: String, ids: Vec<String> },
    /// Delete dead jobs (all of the queue's when no ids are given).
    Purge { queue: String, ids: Vec<String> },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    Pause {
        queue: String,
    },
    Resume {
        queue: String,
    },
    /// Delete every ready and scheduled job of the queue.
    Purge {
        queue: String,
    },
    /// Change the queue's defaults.
    Config {
        queue: String,
        #[arg(long)]
        lease_ms: Option<i64>,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long)]
        dedup_window_ms: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    Status,
    /// Add a node as a learner (waits until it caught up).
    AddLearner {
        node_id: u64,
        addr: String,
    },
    /// Set the voters, e.g. `1 2 3`.
    ChangeMembership {
        voters: Vec<u64>,
        /// Keep removed voters as learners.
        #[arg(long)]
        retain: bool,
    },
    /// Move one replica of a shard to another node, step by step (learner,
    /// catch-up, leadership away, voter swap, old copy deleted); prints
    /// each step. Run it again to resume a move that was interrupted.
    Move {
        shard: u32,
        /// The node that loses its replica.
        #[arg(long)]
        from: Option<u64>,
        /// The node that gets one.
        #[arg(long)]
        to: Option<u64>,
        /// The incoming node's peer address, when the cluster does not know it yet.
        #[arg(long)]
        to_addr: Option<String>,
        /// Roll the move back when a step makes no progress for this long.
        #[arg(long, default_value = "10m", value_parser = bench::parse_duration)]
        stall_after: std::time::Duration,
    },
    /// Delete the connected node's copy of a shard it is no member of any
    /// more (a move that could not reach it leaves one).
    DropReplica {
        shard: u32,
    },
    /// Declare the nodes replicas are placed on, e.g. `1=10.0.0.1:7500
    /// 2=10.0.0.2:7500 ...`; the cluster then moves replicas until they are
    /// even over them. Waits until they are, printing progress.
    SetNodes {
        /// ID=PEER_ADDR, one per node.
        #[arg(required = true, value_parser = parse_node)]
        nodes: Vec<(u64, String)>,
        /// Nodes to empty before they leave (their replicas are moved away).
        #[arg(long, value_delimiter = ',')]
        drain: Vec<u64>,
        /// ID=ZONE: a node's failure domain (replicas of a shard are spread over zones).
        #[arg(long = "zone", value_parser = parse_node)]
        zones: Vec<(u64, String)>,
        /// Return once declared, without waiting for the moves.
        #[arg(long)]
        no_wait: bool,
    },
    /// The declared nodes, each node's replicas and leaderships, and the
    /// moves under way.
    Placement,
    /// Grow the shard count to SHARDS without downtime: new shards are
    /// created, queues that hold jobs stay where they are, new queues
    /// spread over every shard. Prints each step; run it again to finish
    /// a growth that was interrupted.
    GrowShards {
        shards: u32,
    },
}

fn parse_node(s: &str) -> Result<(u64, String), String> {
    let (id, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=VALUE, e.g. 4=10.0.0.4:7500"))?;
    let id = id
        .parse()
        .map_err(|_| format!("{s:?}: {id:?} is not a node id"))?;
    Ok((id, value.to_string()))
}

/// The placement as text: a line per node, then the moves under way.
fn placement_text(p: &pb::PlacementStatus) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "coordinator node {}, replication factor {}{}\n",
        p.coordinator,
        p.replication_factor,
        if p.balanced { ", balanced" } else { "" }
    );
    if p.declared.is_empty() {
        out.push_str("no nodes declared: replicas stay where the cluster placed them\n");
    }
    for node in &p.nodes {
        let declared = p.declared.iter().find(|d| d.node_id == node.node_id);
        let note = match declared {
            None if p.declared.is_empty() => "",
            None => " (not declared: its replicas are moved away)",
            Some(d) if d.draining => " (draining)",
            Some(_) => "",
        };
        let _ = writeln!(
            out,
            "node {}  {} replica(s), leads {}{note}",
            node.node_id, node.replicas, node.leads
        );
    }
    for m in &p.moves {
        let _ = writeln!(
            out,
            "moving shard {}: node {} -> node {} ({})",
            m.shard, m.remove_node, m.add_node, m.phase
        );
    }
    out
}

/// The shard map as text: a line per shard, then a line per node with
/// the replicas it holds and the shards it leads.
fn shard_table(map: &pb::ShardMap) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{} shard(s), as node {} sees them\n",
        map.shard_count, map.node_id
    );
    let mut held: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for shard in &map.shards {
        let leader = match shard.leader_id {
            0 => "none known".to_string(),
            id if shard.leader_addr.is_empty() => format!("node {id}"),
            id => format!("node {id} ({})", shard.leader_addr),
        };
        let members: Vec<String> = shard.members.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "shard {:>2}  leader {leader}, term {}, members {}",
            shard.shard,
            shard.term,
            members.join(" ")
        );
        for member in &shard.members {
            held.entry(*member).or_default().0 += 1;
        }
        if shard.leader_id != 0 {
            held.entry(shard.leader_id).or_default().1 += 1;
        }
    }
    for (node, (replicas, leads)) in held {
        let _ = writeln!(out, "node {node}  {replicas} replica(s), leads {leads}");
    }
    out
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

fn spec(args: &EnqueueArgs, payload: String) -> JobSpec {
    let mut job = JobSpec::new(payload)
        .priority(args.priority)
        .max_attempts(args.max_attempts);
    if let Some(d) = args.delay_ms {
        job = job.delay(Duration::from_millis(d));
    }
    for (k, v) in &args.headers {
        job = job.header(k.clone(), v.clone());
    }
    job
}

async fn enqueue(client: &Client, args: EnqueueArgs) -> anyhow::Result<()> {
    let producer = client.producer();
    if !args.payloads.is_empty() {
        if args.idempotency_key.is_some() && args.payloads.len() > 1 {
            bail!("--idempotency-key needs exactly one payload");
        }
        let jobs = args
            .payloads
            .iter()
            .map(|p| {
                let job = spec(&args, p.clone());
                match &args.idempotency_key {
                    Some(k) => job.idempotency_key(k.clone()),
                    None => job,
                }
            })
            .collect();
        for id in producer.enqueue_batch(&args.queue, jobs).await? {
            println!("{id}");
        }
        return Ok(());
    }
    if args.idempotency_key.is_some() {
        bail!("--idempotency-key needs exactly one payload argument");
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut batch = Vec::new();
    let mut total = 0u64;
    let batch_size = args.batch.clamp(1, raftq_api::limits::MAX_ENQUEUE_BATCH);
    let mut lines = stdin.lock().lines();
    loop {
        let line = lines.next().transpose().context("reading stdin")?;
        if let Some(line) = &line {
            batch.push(spec(&args, line.clone()));
        }
        if batch.len() >= batch_size || (line.is_none() && !batch.is_empty()) {
            let ids = producer
                .enqueue_batch(&args.queue, std::mem::take(&mut batch))
                .await?;
            total += ids.len() as u64;
            for id in ids {
                writeln!(out, "{id}")?;
            }
            eprint!("\renqueued {total} jobs");
        }
        if line.is_none() {
            break;
        }
    }
    if total > 0 {
        eprintln!();
    }
    Ok(())
}

async fn work(client: Client, args: WorkArgs) -> anyhow::Result<()> {
    let command = Arc::new(args.command.join(" "));
    let done = Arc::new(AtomicU64::new(0));
    let limit_reached = Arc::new(tokio::sync::Notify::new());
    let mut worker = Worker::new(client, args.queue.clone()).concurrency(args.concurrency);
    if let Some(l) = args.lease_ms {
        worker = worker.lease(Duration::from_millis(l));
    }
    let max_jobs = args.max_jobs;
    let (done2, limit2) = (done.clone(), limit_reached.clone());
    let handler = move |job: raftq_client::Job| {
        let command = command.clone();
        let done = done2.clone();
        let limit = limit2.clone();
        async move {
            let result = run_command(&command, &job).await;
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            match &result {
                Ok(()) => eprintln!("job {} ok (attempt {})", job.id, job.attempt),
                Err(e) => eprintln!("job {} failed (attempt {}): {e}", job.id, job.attempt),
            }
            if max_jobs.is_some_and(|m| n >= m) {
                limit.notify_one();
            }
            result
        }
    };
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = limit_reached.notified() => {}
        }
    };
    worker.run_until(handler, shutdown).await?;
    eprintln!("processed {} jobs", done.load(Ordering::SeqCst));
    Ok(())
}

async fn run_command(command: &str, job: &raftq_client::Job) -> Result<(), String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("RAFTQ_JOB_ID", &job.id)
        .env("RAFTQ_QUEUE", &job.queue)
        .env("RAFTQ_ATTEMPT", job.attempt.to_string())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `sh -c {command}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that ignores its input closes the pipe early: not an error.
        let _ = stdin.write_all(&job.payload).await;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for the command: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: String = stderr
        .trim()
        .chars()
        .rev()
        .take(1000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(format!("command exited with {}: {tail}", output.status))
}

fn print_job(job: &pb::Job) {
    let state = pb::JobState::try_from(job.state)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    println!("id:           {}", job.id);
    println!("queue:        {}", job.queue);
    println!(
        "state:        {}",
        state.trim_start_matches("JOB_STATE_").to_lowercase()
    );
    println!("attempt:      {}/{}", job.attempt, job.max_attempts);
    println!("priority:     {}", job.priority);
    println!("due at (ms):  {}", job.due_at_ms);
    if !job.last_error.is_empty() {
        println!("last error:   {}", job.last_error);
    }
    if !job.worker_id.is_empty() {
        println!("worker:       {}", job.worker_id);
    }
    println!("payload:      {}", String::from_utf8_lossy(&job.payload));
}

/// One call, retried while it fails for a passing reason (no leader yet, a
/// leadership hand-over, a node restarting): see `RetryPolicy`.
macro_rules! call {
    ($client:expr, $service:ident, $method:ident, $request:expr) => {{
        let request = $request;
        RetryPolicy::default()
            .run(|| {
                let mut service = $client.$service();
                let request = request.clone();
                async move { service.$method(request).await }
            })
            .await?
    }};
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let conn = cli.conn.resolve()?;
    if let Command::Bench(args) = cli.command {
        return bench::run(args, &conn).await;
    }
    if let Command::DevCerts { out, hosts } = &cli.command {
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let certs = certs::DevCerts::create(out, &hosts)?;
        println!(
            "wrote a CA, node and client certificates and an admin token to {}",
            out.display()
        );
        println!(
            "start a node:  queue-node --tls-cert {} --tls-key {} --tls-ca {} --auth-file {}",
            certs.node_cert.display(),
            certs.node_key.display(),
            certs.ca_cert.display(),
            certs.auth_file.display()
        );
        println!(
            "connect:       RAFTQ_TOKEN=$(cat {}) raftq --ca-cert {} stats",
            certs.token_file.display(),
            certs.ca_cert.display()
        );
        return Ok(());
    }
    let addr = match cli.command {
        Command::Cluster(_) => &conn.peer_addr,
        _ => &conn.addr,
    };
    let client = conn.connect(addr).await?;
    match cli.command {
        Command::Top(args) => top::run(client, conn, args).await?,
        Command::Enqueue(args) => enqueue(&client, args).await?,
        Command::Work(args) => work(client, args).await?,
        Command::Stats { queue, local } => {
            let response = call!(
                client,
                admin,
                stats,
                pb::StatsRequest {
                    queue: queue.unwrap_or_default(),
                    local,
                }
            )
            .into_inner();
            println!(
                "{:<32} {:>10} {:>10} {:>10} {:>10}  STATE",
                "QUEUE", "READY", "SCHEDULED", "LEASED", "DEAD"
            );
            for q in response.queues {
                let state = if q.paused { "paused" } else { "active" };
                println!(
                    "{:<32} {:>10} {:>10} {:>10} {:>10}  {state}",
                    q.queue, q.ready, q.scheduled, q.leased, q.dead
                );
            }
        }
        Command::Job(JobCommand::Get { id }) => {
            let job = call!(client, admin, get_job, pb::JobRef { job_id: id }).into_inner();
            print_job(&job);
        }
        Command::Job(JobCommand::Cancel { id }) => {
            call!(client, admin, cancel_job, pb::JobRef { job_id: id.clone() });
            println!("cancelled {id}");
        }
        Command::Job(JobCommand::List {
            queue,
            state,
            header,
            idempotency_key,
            error,
            limit,
        }) => {
            let state = match state.as_deref() {
                Some("scheduled") => pb::JobState::Scheduled,
                Some("ready") => pb::JobState::Ready,
                Some("leased") => pb::JobState::Leased,
                Some("dead") => pb::JobState::Dead,
                _ => pb::JobState::Unspecified,
            };
            let (header_key, header_value) = match header {
                None => (String::new(), String::new()),
                Some(h) => match h.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (h, String::new()),
                },
            };
            let mut before = String::new();
            let mut shown = 0u32;
            println!(
                "{:<24} {:<9} {:>8} {:>8}  LAST ERROR",
                "ID", "STATE", "ATTEMPT", "PRIORITY"
            );
            loop {
                let page = call!(
                    client,
                    admin,
                    list_jobs,
                    pb::ListJobsRequest {
                        queue: queue.clone(),
                        state: state as i32,
                        header_key: header_key.clone(),
                        header_value: header_value.clone(),
                        idempotency_key: idempotency_key.clone().unwrap_or_default(),
                        error_contains: error.clone().unwrap_or_default(),
                        limit: (limit - shown).clamp(1, 1000),
                        before: before.clone(),
                        ..Default::default()
                    }
                )
                .into_inner();
                for job in &page.jobs {
                    let state = pb::JobState::try_from(job.state)
                        .map(|s| s.as_str_name())
                        .unwrap_or("?")
                        .trim_start_matches("JOB_STATE_")
                        .to_lowercase();
                    println!(
                        "{:<24} {:<9} {:>8} {:>8}  {}",
                        job.id,
                        state,
                        format!("{}/{}", job.attempt, job.max_attempts),
                        job.priority,
                        job.last_error
                    );
                }
                shown += page.jobs.len() as u32;
                if page.next_before.is_empty() || shown >= limit {
                    break;
                }
                before = page.next_before;
            }
        }
        Command::Dlq(DlqCommand::List { queue, limit }) => {
            let mut after = String::new();
            let mut shown = 0u32;
            loop {
                let page = call!(
                    client,
                    admin,
                    list_dead,
                    pb::ListDeadRequest {
                        queue: queue.clone(),
                        limit: limit.min(1000),
                        after: after.clone(),
                    }
                )
                .into_inner();
                for job in &page.jobs {
                    println!("{}\tattempt {}\t{}", job.id, job.attempt, job.last_error);
                }
                shown += page.jobs.len() as u32;
                if page.next_after.is_empty() || shown >= limit {
                    break;
                }
                after = page.next_after;
            }
        }
        Command::Dlq(DlqCommand::Requeue { queue, ids }) => {
            let n = call!(
                client,
                admin,
                requeue_dead,
                pb::DeadSelector {
                    queue,
                    job_ids: ids,
                }
            );
            println!("requeued {} jobs", n.into_inner().count);
        }
        Command::Dlq(DlqCommand::Purge { queue, ids }) => {
            let n = call!(
                client,
                admin,
                purge_dead,
                pb::DeadSelector {
                    queue,
                    job_ids: ids,
                }
            );
            println!("purged {} dead jobs", n.into_inner().count);
        }
        Command::Queue(QueueCommand::Pause { queue }) => {
            call!(
                client,
                admin,
                pause_queue,
                pb::QueueRef {
                    queue: queue.clone(),
                }
            );
            println!("paused {queue}");
        }
        Command::Queue(QueueCommand::Resume { queue }) => {
            call!(
                client,
                admin,
                resume_queue,
                pb::QueueRef {
                    queue: queue.clone(),
                }
            );
            println!("resumed {queue}");
        }
        Command::Queue(QueueCommand::Purge { queue }) => {
            let r = call!(
                client,
                admin,
                purge_queue,
                pb::QueueRef {
                    queue: queue.clone(),
                }
            );
            println!("purged {} jobs from {queue}", r.into_inner().removed);
        }
        Command::Queue(QueueCommand::Config {
            queue,
            lease_ms,
            max_attempts,
            dedup_window_ms,
        }) => {
            let info = call!(
                client,
                admin,
                set_queue_config,
                pb::SetQueueConfigRequest {
                    queue,
                    default_lease_ms: lease_ms,
                    default_max_attempts: max_attempts,
                    default_backoff: None,
                    dedup_window_ms,
                }
            )
            .into_inner();
            println!("{info:?}");
        }
        Command::Shards => {
            let map = call!(
                client,
                queue,
                get_shard_map,
                pb::GetShardMapRequest::default()
            )
            .into_inner();
            print!("{}", shard_table(&map));
        }
        Command::Cluster(ClusterCommand::Status) => {
            let s =
                call!(client, cluster, status, pb::ClusterStatusRequest::default()).into_inner();
            println!(
                "node {} at {} (clients: {})",
                s.node_id, s.addr, s.client_addr
            );
            for shard in s.shards {
                let leader = if shard.has_leader {
                    shard.leader_id.to_string()
                } else {
                    "none".into()
                };
                println!(
                    "shard {}: role {}, leader {leader}, term {}, commit {}, applied {}, last log {}",
                    shard.shard, shard.role, shard.term, shard.commit_index, shard.applied_index, shard.last_log_index
                );
                for m in shard.members {
                    println!(
                        "  node {} {} {}",
                        m.node_id,
                        m.addr,
                        if m.voter { "voter" } else { "learner" }
                    );
                }
            }
        }
        Command::Cluster(ClusterCommand::Move {
            shard,
            from,
            to,
            to_addr,
            stall_after,
        }) => move_replica(&client, shard, from, to, to_addr, stall_after).await?,
        Command::Cluster(ClusterCommand::GrowShards { shards }) => {
            grow_shards(&client, shards).await?
        }
        Command::Cluster(ClusterCommand::SetNodes {
            nodes,
            drain,
            zones,
            no_wait,
        }) => set_nodes(&client, nodes, drain, zones, no_wait).await?,
        Command::Cluster(ClusterCommand::Placement) => {
            let p = call!(client, cluster, get_placement, pb::GetPlacementRequest {}).into_inner();
            print!("{}", placement_text(&p));
        }
        Command::Cluster(ClusterCommand::DropReplica { shard }) => {
            let answer = call!(
                client,
                cluster,
                drop_replica,
                pb::DropReplicaRequest { shard }
            )
            .into_inner();
            if answer.dropped {
                println!("deleted this node's copy of shard {shard}");
            } else {
                println!("this node holds no copy of shard {shard}");
            }
        }
        Command::Cluster(ClusterCommand::AddLearner { node_id, addr }) => {
            eprintln!("adding node {node_id} ({addr}) as a learner; waiting for it to catch up...");
            call!(
                client,
                cluster,
                add_learner,
                pb::AddLearnerRequest {
                    node_id,
                    addr,
                    shard: None,
                    timeout_ms: 0,
                    no_wait: false,
                }
            );
            println!("node {node_id} is a learner");
        }
        Command::Bench(_) | Command::DevCerts { .. } => {
            bail!("bench and dev-certs run before connecting; this line is never reached")
        }
        Command::Cluster(ClusterCommand::ChangeMembership { voters, retain }) => {
            call!(
                client,
                cluster,
                change_membership,
                pb::ChangeMembershipRequest {
                    voters: voters.clone(),
                    retain,
                    shard: None,
                }
            );
            println!("voters are now {voters:?}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAFTQ_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftq: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The message a person needs: the context, then the server's own words
/// (never gRPC's debug text), with the status named only where it tells
/// the reader something the message does not (retry, timeouts).
fn describe(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        let status = cause.downcast_ref::<tonic::Status>().or_else(|| {
            match cause.downcast_ref::<raftq_client::Error>() {
                Some(raftq_client::Error::Status(s)) => Some(s),
                _ => None,
            }
        });
        match status {
            Some(status) => {
                parts.push(status_text(status));
                break;
            }
            None => parts.push(cause.to_string()),
        }
    }
    parts.join(": ")
}

fn status_text(status: &tonic::Status) -> String {
    use tonic::Code;
    if let Some(hint) = raftq_client::connection_hint(status) {
        return hint;
    }
    let message = status.message();
    let message = if message.is_empty() {
        "the server gave no reason"
    } else {
        message
    };
    match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists => {
            message.to_string()
        }
        Code::Unavailable => format!("{message} (unavailable: try again)"),
        Code::DeadlineExceeded => format!("{message} (timed out)"),
        Code::PermissionDenied => format!("permission denied: {message}"),
        Code::Unauthenticated => format!("not signed in: {message}"),
        Code::ResourceExhausted => format!("{message} (over a limit)"),
        Code::OutOfRange => format!("{message} (out of range)"),
        code => format!("{message} ({code:?})"),
    }
}

/// Runs a replica move from the connected node, printing each step.
async fn move_replica(
    client: &raftq_client::Client,
    shard: u32,
    from: Option<u64>,
    to: Option<u64>,
    to_addr: Option<String>,
    stall_after: std::time::Duration,
) -> anyhow::Result<()> {
    if from.is_none() && to.is_none() {
        bail!(
            "give --from (the node that loses its replica), --to (the node that gets one), or both"
        );
    }
    let request = pb::MoveReplicaRequest {
        shard,
        add_node: to.unwrap_or(0),
        add_addr: to_addr.unwrap_or_default(),
        remove_node: from.unwrap_or(0),
        stall_after_ms: u64::try_from(stall_after.as_millis()).unwrap_or(u64::MAX),
    };
    let mut steps = client
        .cluster()
        .move_replica(request)
        .await
        .with_context(|| format!("starting the move of shard {shard}"))?
        .into_inner();
    let mut last = String::new();
    loop {
        let step = steps.message().await.with_context(|| {
            format!("the move of shard {shard} stopped after step `{last}`; run the same command again to resume it")
        })?;
        let Some(step) = step else { break };
        eprintln!("shard {shard}: {:<14} {}", step.phase, step.detail);
        last = step.phase;
    }
    match last.as_str() {
        "done" => {
            println!("moved shard {shard}");
            Ok(())
        }
        "rolled_back" => bail!("the move of shard {shard} was rolled back; the shard keeps its voters"),
        other => bail!("the move of shard {shard} ended at step `{other}`; run the same command again to resume it"),
    }
}

/// Grows the shard count, printing each step.
async fn grow_shards(client: &raftq_client::Client, shards: u32) -> anyhow::Result<()> {
    let mut steps = client
        .cluster()
        .grow_shards(pb::GrowShardsRequest {
            shard_count: shards,
        })
        .await
        .with_context(|| format!("growing the cluster to {shards} shards"))?
        .into_inner();
    let mut last = String::new();
    loop {
        let step = steps.message().await.with_context(|| {
            format!("growing to {shards} shards stopped after step `{last}`; run the same command again to finish it")
        })?;
        let Some(step) = step else { break };
        eprintln!("{:<14} {}", step.step, step.detail);
        last = step.step;
    }
    if last != "done" {
        bail!("growing to {shards} shards ended at step `{last}`; run the same command again to finish it");
    }
    println!("the cluster has {shards} shards");
    Ok(())
}

/// Declares the nodes, then (unless `no_wait`) follows the moves until the
/// placement is balanced.
async fn set_nodes(
    client: &raftq_client::Client,
    nodes: Vec<(u64, String)>,
    drain: Vec<u64>,
    zones: Vec<(u64, String)>,
    no_wait: bool,
) -> anyhow::Result<()> {
    for id in drain.iter().chain(zones.iter().map(|(id, _)| id)) {
        if !nodes.iter().any(|(n, _)| n == id) {
            bail!("node {id} is given --drain or --zone but is not among the declared nodes");
        }
    }
    let request = pb::SetNodesRequest {
        nodes: nodes
            .iter()
            .map(|(id, addr)| pb::NodeSpec {
                node_id: *id,
                addr: addr.clone(),
                zone: zones
                    .iter()
                    .find(|(z, _)| z == id)
                    .map(|(_, zone)| zone.clone())
                    .unwrap_or_default(),
                draining: drain.contains(id),
            })
            .collect(),
    };
    let placed = call!(client, cluster, set_nodes, request).into_inner();
    eprint!("{}", placement_text(&placed));
    if no_wait {
        return Ok(());
    }
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The coordinator moves with shard 0's leadership: ask again.
        let p = match client
            .cluster()
            .get_placement(pb::GetPlacementRequest {})
            .await
        {
            Ok(p) => p.into_inner(),
            Err(e) if e.code() == tonic::Code::Unavailable => {
                eprintln!("{} (asking again)", e.message());
                continue;
            }
            Err(e) => return Err(e).context("asking for the placement"),
        };
        let text = placement_text(&p);
        if p.balanced {
            print!("{text}");
            return Ok(());
        }
        if text != last {
            eprint!("{text}");
            last = text;
        }
    }
}
