//! A cluster of real `queue-node` processes on loopback, each behind a
//! fault-injecting proxy, with the levers the scenarios pull: SIGKILL,
//! restart, partitions, a small disk, a wall clock that can jump.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftq_client::proto as pb;
use raftq_client::Client;

use super::proxy::{Net, NodeId};

pub struct Spec {
    pub nodes: usize,
    pub shards: u32,
    /// Run every node under libfaketime so its wall clock can be moved.
    pub fake_clock: bool,
    /// Put this node's data dir on a tmpfs of this many MiB.
    pub small_disk: Option<(NodeId, u64)>,
    /// Node settings (YAML) instead of [`NODE_CONFIG`].
    pub config: Option<&'static str>,
    /// Mutual TLS between the nodes, TLS and a token for clients.
    pub tls: bool,
    /// Voters per shard; unset: every node holds every shard.
    pub replication_factor: Option<u32>,
    /// Nodes made ready (ids after the initial ones) but started only when
    /// a scenario has them join ([`Cluster::join`]).
    pub joiners: usize,
}

/// The client ports of a cluster and how to connect to them.
#[derive(Clone)]
pub struct Endpoints {
    pub addrs: Vec<String>,
    pub options: raftq_client::ConnectOptions,
}

impl Endpoints {
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// A client of node `i` (modulo the count), if it answers within 1 s.
    pub async fn connect(&self, i: usize) -> Option<Client> {
        let addr = &self.addrs[i % self.addrs.len()];
        tokio::time::timeout(
            Duration::from_secs(1),
            Client::connect_with(addr, self.options.clone()),
        )
        .await
        .ok()?
        .ok()
    }
}

pub struct Node {
    pub id: NodeId,
    /// Where the node listens (clients of the test connect here).
    pub listen: SocketAddr,
    /// Its peer port (the test's cluster-admin calls connect here).
    pub peer_listen: SocketAddr,
    /// Its proxy to the peer port, which is the address every other node
    /// uses.
    pub advertise: SocketAddr,
    pub dir: PathBuf,
    child: Option<Child>,
    clock_file: Option<PathBuf>,
    mounted: bool,
    /// Part of the cluster now: an initial node, or one that joined and
    /// was not retired.
    in_cluster: bool,
}

pub struct Cluster {
    pub net: Net,
    pub nodes: Vec<Node>,
    members: String,
    config: PathBuf,
    shards: u32,
    replication_factor: Option<u32>,
    /// How many shards each node holds.
    held: HashMap<NodeId, usize>,
    admins: HashMap<NodeId, Client>,
    tls: Option<super::certs::TestTls>,
    dir: Option<tempfile::TempDir>,
}

/// Short timeouts so faults are noticed quickly, small snapshots so
/// followers that fall behind install them, few attempts so jobs die.
pub const NODE_CONFIG: &str = "\
raft:
  heartbeat_ms: 100
  election_timeout_min_ms: 500
  election_timeout_max_ms: 1000
  snapshot_every_entries: 400
  logs_kept_after_snapshot: 50
queue_defaults:
  max_attempts: 4
  backoff_initial_ms: 50
  backoff_max_ms: 200
";

/// How many shards each node of `spec` holds, as the nodes place them.
fn held_shards(spec: &Spec) -> anyhow::Result<HashMap<NodeId, usize>> {
    let members = (1..=spec.nodes as NodeId)
        .map(|id| (id, String::new()))
        .collect();
    let layout = raftq_node::layout::Layout::new(&members, spec.shards, spec.replication_factor)?;
    Ok((1..=spec.nodes as NodeId)
        .map(|id| (id, layout.shards_of(id).len()))
        .collect())
}

const FAKETIME_LIBS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
];

impl Cluster {
    pub async fn start(spec: &Spec) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("node.yaml");
        std::fs::write(&config, spec.config.unwrap_or(NODE_CONFIG))?;
        let net = Net::new();
        let mut nodes = Vec::new();
        for i in 0..spec.nodes + spec.joiners {
            let id = i as NodeId + 1;
            let listen: SocketAddr = format!("127.0.0.1:{}", super::ports::free_port()).parse()?;
            let peer_listen: SocketAddr =
                format!("127.0.0.1:{}", super::ports::free_port()).parse()?;
            let advertise = net.proxy(id, peer_listen).await?;
            let node_dir = dir.path().join(format!("n{id}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut mounted = false;
            if let Some((small, mib)) = spec.small_disk {
                if small == id {
                    mount_tmpfs(&node_dir, mib)?;
                    mounted = true;
                }
            }
            let clock_file = if spec.fake_clock {
                let f = dir.path().join(format!("n{id}.clock"));
                std::fs::write(&f, "+0\n")?;
                Some(f)
            } else {
                None
            };
            nodes.push(Node {
                id,
                listen,
                peer_listen,
                advertise,
                dir: node_dir,
                child: None,
                clock_file,
                mounted,
                in_cluster: i < spec.nodes,
            });
        }
        let members = nodes
            .iter()
            .filter(|n| n.in_cluster)
            .map(|n| format!("{}={}", n.id, n.advertise))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            net,
            nodes,
            members,
            config,
            shards: spec.shards,
            replication_factor: spec.replication_factor,
            held: held_shards(spec)?,
            admins: HashMap::new(),
            tls: spec
                .tls
                .then(|| super::certs::TestTls::new(&dir.path().join("tls"))),
            dir: Some(dir),
        };
        for id in cluster.ids() {
            cluster.start_node(id)?;
        }
        let all = cluster.ids();
        cluster.wait_serving(&all, Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Keeps the data dirs and logs after the test (for a failed run).
    pub fn keep_files(&mut self) -> Option<PathBuf> {
        self.dir.take().map(|d| d.keep())
    }

    /// The nodes that are part of the cluster now.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.in_cluster)
            .map(|n| n.id)
            .collect()
    }

    /// The nodes made ready to join and not part of the cluster.
    pub fn joiner_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| !n.in_cluster)
            .map(|n| n.id)
            .collect()
    }

    /// Starts node `id` as a node added after creation: it is not among
    /// the initial members, so it joins, holding no shard.
    pub fn join(&mut self, id: NodeId) -> anyhow::Result<()> {
        self.node(id).in_cluster = true;
        self.held.insert(id, 0);
        self.start_node(id)
    }

    /// Stops node `id` for good (it was drained): it leaves the cluster.
    pub fn retire(&mut self, id: NodeId) {
        self.kill(id);
        self.node(id).in_cluster = false;
        self.held.remove(&id);
    }

    /// Each node's peer address, as the other nodes reach it.
    pub fn peer_addr(&self, id: NodeId) -> String {
        self.nodes[(id - 1) as usize].advertise.to_string()
    }

    /// The nodes' client ports, and how to connect.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            addrs: self
                .nodes
                .iter()
                .filter(|n| n.in_cluster)
                .map(|n| n.listen.to_string())
                .collect(),
            options: self
                .tls
                .as_ref()
                .map(|t| t.worker_options())
                .unwrap_or_default(),
        }
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        let i = (id - 1) as usize;
        &mut self.nodes[i]
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes[(id - 1) as usize].child.is_some()
    }

    pub fn start_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let tls_args = self.tls.as_ref().map(|t| t.node_args()).unwrap_or_default();
        let members = self.members.clone();
        let config = self.config.clone();
        let shards = self.shards;
        let placed: Vec<String> = self
            .replication_factor
            .map(|f| vec!["--replication-factor".to_string(), f.to_string()])
            .unwrap_or_default();
        let net = self.net.clone();
        let node = self.node(id);
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.with_extension("log"))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_queue-node"));
        cmd.args(["--config", &config.display().to_string()])
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &node.listen.to_string()])
            .args(["--peer-listen", &node.peer_listen.to_string()])
            .args(["--advertise", &node.advertise.to_string()])
            .args(["--data-dir", &node.dir.display().to_string()])
            .args(["--initial-members", &members])
            .args(["--shards", &shards.to_string()])
            .args(&placed)
            .args(&tls_args)
            .env("RAFTQ_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(clock) = &node.clock_file {
            let lib = FAKETIME_LIBS
                .iter()
                .find(|l| Path::new(l).exists())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "libfaketime is not installed (Debian package `faketime`; scripts/setup.sh installs it)"
                    )
                })?;
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", clock)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let child = cmd.spawn()?;
        net.set_pid(id, Some(child.id()));
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self, id: NodeId) {
        let net = self.net.clone();
        let node = self.node(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        net.set_pid(id, None);
    }

    /// Whether the node's process has exited by itself, and how.
    pub fn exited(&mut self, id: NodeId) -> Option<std::process::ExitStatus> {
        let node = self.node(id);
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status)
    }

    pub fn log(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.nodes[(id - 1) as usize].dir.with_extension("log"))
            .unwrap_or_default()
    }

    /// Moves the node's wall clock by `secs` from true time (libfaketime
    /// picks it up within a second).
    pub fn set_clock_offset(&self, id: NodeId, secs: i64) -> anyhow::Result<()> {
        let node = &self.nodes[(id - 1) as usize];
        let file = node
            .clock_file
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("node {id} was not started with a fake clock"))?;
        std::fs::write(file, format!("{secs:+}\n"))?;
        Ok(())
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.nodes[(id - 1) as usize].dir.clone()
    }

    /// A client of a node's peer port (`ClusterAdmin`), directly.
    pub async fn admin(&mut self, id: NodeId) -> Option<Client> {
        if let Some(c) = self.admins.get(&id) {
            return Some(c.clone());
        }
        let addr = self.nodes[(id - 1) as usize].peer_listen.to_string();
        let options = self
            .tls
            .as_ref()
            .map(|t| t.ops_options())
            .unwrap_or_default();
        let c = tokio::time::timeout(Duration::from_secs(2), Client::connect_with(&addr, options))
            .await
            .ok()?
            .ok()?;
        self.admins.insert(id, c.clone());
        Some(c)
    }

    pub async fn status(&mut self, id: NodeId) -> Option<pb::ClusterStatus> {
        if !self.is_running(id) {
            return None;
        }
        let c = self.admin(id).await?;
        tokio::time::timeout(
            Duration::from_secs(2),
            c.cluster().status(pb::ClusterStatusRequest::default()),
        )
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
    }

    /// The node that says it leads `shard`, if a running one does.
    pub async fn leader_of(&mut self, shard: u32) -> Option<NodeId> {
        for id in self.ids() {
            if let Some(s) = self.status(id).await {
                if s.shards
                    .iter()
                    .any(|s| s.shard == shard && s.role == "leader")
                {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Waits until each of `ids` runs, is a member of every shard placed
    /// on it and sees a leader for it.
    pub async fn wait_serving(&mut self, ids: &[NodeId], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for id in ids {
            loop {
                if let Some(status) = self.exited(*id) {
                    anyhow::bail!(
                        "node {id} exited ({status}) while waiting for it to serve:\n{}",
                        tail(&self.log(*id))
                    );
                }
                let held = self.held.get(id).copied().unwrap_or(0);
                if let Some(s) = self.status(*id).await {
                    if s.shards.len() == held
                        && s.shards.iter().all(|s| s.has_leader && s.applied_index > 0)
                    {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "node {id} not serving after {timeout:?}:\n{}",
                        tail(&self.log(*id))
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Waits until `id` answers and sees a leader for every shard it holds,
    /// however many that is (a move under way changes the count).
    pub async fn wait_answering(&mut self, id: NodeId, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited(id) {
                anyhow::bail!("node {id} exited ({status}):\n{}", tail(&self.log(id)));
            }
            if let Some(s) = self.status(id).await {
                if !s.shards.is_empty() && s.shards.iter().all(|s| s.has_leader) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "node {id} not answering after {timeout:?}:\n{}",
                    tail(&self.log(id))
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes the shards each node holds from the nodes themselves, after a
    /// move changed them.
    pub async fn recount_held(&mut self) {
        for id in self.ids() {
            if let Some(s) = self.status(id).await {
                self.held.insert(id, s.shards.len());
            }
        }
    }

    /// Waits until every running node has applied the same index on every
    /// shard it holds (replicas converged).
    pub async fn wait_converged(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut answered = 0;
            let mut applied: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
            for id in self.ids() {
                if let Some(s) = self.status(id).await {
                    answered += 1;
                    for shard in &s.shards {
                        applied
                            .entry(shard.shard)
                            .or_default()
                            .push(shard.applied_index);
                    }
                }
            }
            let same = applied.values().all(|a| a.windows(2).all(|w| w[0] == w[1]));
            if answered == self.ids().len() && same {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("replicas did not converge: applied indexes by shard {applied:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Panics and fatal errors in any node's log.
    pub fn log_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            for line in self.log(n.id).lines() {
                if line.contains("panicked") {
                    out.push(format!("node {}: {line}", n.id));
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
        for n in &self.nodes {
            if n.mounted {
                let _ = Command::new("umount").arg("-l").arg(&n.dir).status();
            }
        }
    }
}

fn mount_tmpfs(dir: &Path, mib: u64) -> anyhow::Result<()> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "cannot mount a {mib} MiB tmpfs for the small disk (needs root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The last lines of a log, for error messages.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
