//! Test helpers: in-process nodes on loopback, real `queue-node` processes,
//! and waiting on conditions with deadlines.
#![allow(dead_code)]

pub mod certs;
pub mod load;
mod ports;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use raftq_client::{proto as pb, Client};
use raftq_node::config::NodeConfig;
use raftq_node::node::{self, NodeHandle};

pub use ports::free_port;

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client of the node at `addr` connected with `options`, once it
/// accepts connections.
pub async fn connect_with(addr: &str, options: raftq_client::ConnectOptions) -> Client {
    wait_for(
        "node accepts connections",
        Duration::from_secs(30),
        || async { Client::connect_with(addr, options.clone()).await.ok() },
    )
    .await
}

/// A client of the node at `addr`, once it accepts connections.
pub async fn connect(addr: &str) -> Client {
    wait_for(
        "node accepts connections",
        Duration::from_secs(30),
        || async { Client::connect(addr).await.ok() },
    )
    .await
}

/// Leases up to `max` ready jobs of `queue` (default lease, no waiting),
/// retrying while a leader is being elected, as a client would.
pub async fn fetch(client: &Client, queue: &str, max: u32) -> Vec<pb::LeasedJob> {
    let request = pb::FetchRequest {
        queue: queue.into(),
        worker_id: "w".into(),
        max_jobs: max,
        lease_ms: None,
        wait_ms: 0,
    };
    raftq_client::RetryPolicy::default()
        .run(|| {
            let mut queue = client.queue();
            let request = request.clone();
            async move { queue.fetch(request).await }
        })
        .await
        .expect("fetch")
        .into_inner()
        .jobs
}

pub fn fast_config(dir: &Path) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        peer_listen: "127.0.0.1:0".into(),
        ..NodeConfig::default()
    };
    c.raft.heartbeat_ms = 50;
    c.raft.election_timeout_min_ms = 300;
    c.raft.election_timeout_max_ms = 600;
    c
}

/// Starts a one-node cluster in this process and waits until it leads.
pub async fn start_single(dir: &Path) -> (NodeHandle, Client) {
    start_with(fast_config(dir)).await
}

pub async fn start_with(config: NodeConfig) -> (NodeHandle, Client) {
    let handle = node::start(config)
        .await
        .unwrap_or_else(|e| panic!("node failed to start: {e:#}"));
    let client = Client::connect(&handle.addr.to_string())
        .await
        .expect("connect");
    wait_for_leader(&client).await;
    (handle, client)
}

/// A client of an in-process node's peer port (`ClusterAdmin`).
pub async fn peer(handle: &NodeHandle) -> Client {
    connect(&handle.peer_addr.to_string()).await
}

/// A fresh loopback address.
pub fn loopback() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Waits until the node behind `client` (its client port) can serve:
/// every shard has a leader.
pub async fn wait_for_leader(client: &Client) {
    wait_for(
        "a leader for every shard",
        Duration::from_secs(20),
        || async {
            let request = pb::StatsRequest {
                queue: String::new(),
                local: false,
            };
            client.admin().stats(request).await.ok().map(|_| ())
        },
    )
    .await
}

/// The leader of shard 0, asked through a peer port's `ClusterAdmin`.
pub async fn shard_leader(admin: &Client) -> u64 {
    wait_for("a shard leader", Duration::from_secs(20), || async {
        let status = admin
            .cluster()
            .status(pb::ClusterStatusRequest::default())
            .await
            .ok()?
            .into_inner();
        let shard = status.shards.first()?;
        shard.has_leader.then_some(shard.leader_id)
    })
    .await
}

/// Starts `n` `queue-node` processes forming one cluster on loopback, node
/// ids 1..=n with data dirs `n1`, `n2`, ... under `dir`.
pub fn spawn_cluster(dir: &Path, n: usize, extra_args: &[String]) -> Vec<ProcNode> {
    let addrs: Vec<String> = (0..n).map(|_| loopback()).collect();
    let peer_addrs: Vec<String> = (0..n).map(|_| loopback()).collect();
    let members = peer_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let id = i as u64 + 1;
            ProcNode::spawn_with(
                id,
                a,
                &peer_addrs[i],
                &dir.join(format!("n{id}")),
                &members,
                extra_args.to_vec(),
            )
        })
        .collect()
}

/// A `queue-node` process.
pub struct ProcNode {
    pub id: u64,
    /// The client port.
    pub addr: String,
    /// The peer port (`ClusterAdmin`), the address in the membership.
    pub peer_addr: String,
    pub dir: PathBuf,
    pub members: String,
    /// Extra command-line arguments (e.g. `--config file.yaml`).
    pub extra_args: Vec<String>,
    child: Option<Child>,
}

impl ProcNode {
    /// A one-node cluster with clients on `addr`.
    pub fn single(id: u64, addr: &str, dir: &Path) -> ProcNode {
        ProcNode::single_with(id, addr, dir, Vec::new())
    }

    pub fn single_with(id: u64, addr: &str, dir: &Path, extra_args: Vec<String>) -> ProcNode {
        let peer = loopback();
        ProcNode::spawn_with(id, addr, &peer, dir, &format!("{id}={peer}"), extra_args)
    }

    pub fn spawn_with(
        id: u64,
        addr: &str,
        peer_addr: &str,
        dir: &Path,
        members: &str,
        extra_args: Vec<String>,
    ) -> ProcNode {
        let mut node = ProcNode {
            id,
            addr: addr.to_string(),
            peer_addr: peer_addr.to_string(),
            dir: dir.to_path_buf(),
            members: members.to_string(),
            extra_args,
            child: None,
        };
        node.start();
        node
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_queue-node"))
            .args(["--node-id", &self.id.to_string()])
            .args(["--listen", &self.addr])
            .args(["--peer-listen", &self.peer_addr])
            .args(["--data-dir", &self.dir.display().to_string()])
            .args(["--initial-members", &self.members])
            .args(&self.extra_args)
            .env("RAFTQ_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn queue-node");
        self.child = Some(child);
    }

    /// SIGTERM, then waits for the process to exit (up to `timeout`, then
    /// SIGKILL). Returns whether it exited by itself in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([format!("-{name}"), child.id().to_string()])
                .status();
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client of the peer port (`ClusterAdmin`).
    pub async fn admin(&self) -> Client {
        connect(&self.peer_addr).await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The whole HTTP/1.1 answer to `GET path`, if the node answers.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(text)
}

/// The sum of `raftq_forwarded_requests_total` over the nodes whose HTTP
/// listeners are `http`.
pub async fn forwarded(http: &[String]) -> f64 {
    let mut total = 0.0;
    for addr in http {
        let text = http_get(addr, "/metrics").await.expect("metrics");
        total += text
            .lines()
            .filter(|l| l.starts_with("raftq_forwarded_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// A queue name starting with `tag` that lands on `shard` of `shards`.
pub fn queue_on(shards: u32, shard: u32, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .find(|q| raftq_api::shard_of(q, shards) == shard)
        .unwrap_or_default()
}

/// An enqueue of one job to `queue` marked `x-raftq-route: direct`: a node
/// that does not lead its shard answers with the leader, never forwards.
pub fn direct_enqueue(queue: &str) -> tonic::Request<pb::EnqueueRequest> {
    let mut request = tonic::Request::new(pb::EnqueueRequest {
        queue: queue.to_string(),
        jobs: vec![pb::NewJob {
            payload: "x".into(),
            ..Default::default()
        }],
    });
    request
        .metadata_mut()
        .insert("x-raftq-route", "direct".parse().expect("ascii"));
    request
}

/// Each node's `ClusterAdmin.Status`; `None` while any does not answer.
pub async fn statuses(
    nodes: &[ProcNode],
) -> Option<std::collections::BTreeMap<u64, pb::ClusterStatus>> {
    let mut out = std::collections::BTreeMap::new();
    for node in nodes {
        let admin = Client::connect(&node.peer_addr).await.ok()?;
        let status = admin
            .cluster()
            .status(pb::ClusterStatusRequest::default())
            .await
            .ok()?
            .into_inner();
        out.insert(node.id, status);
    }
    Some(out)
}
