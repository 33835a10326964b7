//! The fault scenarios. Each starts a cluster, runs the workload, injects
//! its faults for a bounded number of rounds, heals everything, drains the
//! queues and hands the history to the checker.

use std::time::{Duration, Instant};

use super::cluster::{Cluster, Endpoints, Spec};
use super::history::{check, Op, Report};
use super::proxy::{fastrand, NodeId};
use super::workload::{final_states, wait_drained, Workload};

const QUEUES: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

/// The workload's queues: [`QUEUES`], and with more shards than those
/// fill, one more queue on each shard they leave empty.
fn queues(shards: u32) -> Vec<String> {
    let mut queues: Vec<String> = QUEUES.iter().map(|q| q.to_string()).collect();
    for shard in 0..shards {
        if !queues
            .iter()
            .any(|q| raftq_api::shard_of(q, shards) == shard)
        {
            let extra = (0..)
                .map(|i| format!("echo-{i}"))
                .find(|q| raftq_api::shard_of(q, shards) == shard);
            queues.extend(extra);
        }
    }
    queues
}

/// For partition-leader-returns: snapshots so frequent that a deposed
/// leader's log is overtaken by one, and one proposal in flight, so that a
/// single proposal never answered would stall the shard.
const SNAPSHOT_OFTEN_ONE_IN_FLIGHT: &str = "\
raft:
  heartbeat_ms: 100
  election_timeout_min_ms: 500
  election_timeout_max_ms: 1000
  snapshot_every_entries: 50
  logs_kept_after_snapshot: 5
batching:
  max_in_flight: 1
queue_defaults:
  max_attempts: 4
  backoff_initial_ms: 50
  backoff_max_ms: 200
";

/// How much of each fault to inject.
#[derive(Clone, Copy)]
pub struct Size {
    pub rounds: usize,
    /// Seconds a fault is held (partitions, slow network, full disk).
    pub hold: Duration,
}

impl Size {
    pub fn ci() -> Size {
        Size {
            rounds: 3,
            hold: Duration::from_secs(3),
        }
    }

    pub fn soak() -> Size {
        Size {
            rounds: 30,
            hold: Duration::from_secs(6),
        }
    }
}

pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    pub nodes: usize,
    pub shards: u32,
    /// Voters per shard; `None`: every node holds every shard.
    pub replication_factor: Option<u32>,
    pub needs_root: bool,
}

pub const ALL: [Scenario; 16] = [
    Scenario {
        name: "kill-leader",
        what: "SIGKILL the leader of a shard, restart it, repeat",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "kill-leader-tls",
        what: "kill-leader with mutual TLS between the nodes, TLS and a token for every client",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "kill-leader-5",
        what: "SIGKILL the leader of a shard in a 5-node cluster, repeat",
        nodes: 5,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "kill-leader-placed",
        what: "SIGKILL a shard's leader in a 6-node cluster whose 12 shards are each on 3 nodes, restart it, repeat",
        nodes: 6,
        shards: 12,
        replication_factor: Some(3),
        needs_root: false,
    },
    Scenario {
        name: "move-replicas",
        what: "move a replica of each shard in turn (4 nodes, RF 3), SIGKILLing the incoming node, the leaving leader or the node running the move mid-way; each move is asked again until it ends",
        nodes: 4,
        shards: 4,
        replication_factor: Some(3),
        needs_root: false,
    },
    Scenario {
        name: "scale-out-in",
        what: "3 nodes (4 shards, RF 3) grow to 6: three nodes join and the coordinator moves replicas onto them; then the three are drained and leave",
        nodes: 3,
        shards: 4,
        replication_factor: Some(3),
        needs_root: false,
    },
    Scenario {
        name: "grow-shards",
        what: "grow 4 shards to 8, then 12 (4 nodes, RF 3), SIGKILLing shard 0's leader (which runs the growth), then another node, once the new shards are being created; each growth is asked again until it ends",
        nodes: 4,
        shards: 4,
        replication_factor: Some(3),
        needs_root: false,
    },
    Scenario {
        name: "kill-follower",
        what: "SIGKILL a follower, restart it, repeat",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "kill-all",
        what: "SIGKILL every node, restart them all, repeat",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "partition-leader",
        what: "isolate the leader from the other four nodes, heal, repeat",
        nodes: 5,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "partition-leader-returns",
        what: "isolate a busy shard's leader until it needs a snapshot, heal, make it lead again",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "partition-split",
        what: "split the cluster 2/1 (a random node alone), heal, repeat",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "slow-network",
        what: "20-50 ms latency and 5% retransmission stalls on every link, with a leader kill",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "disk-full",
        what: "fill the disk of shard 0's leader, free it, restart the node",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: true,
    },
    Scenario {
        name: "clock-jump",
        what: "step the leader's wall clock +1 h, then back",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
    Scenario {
        name: "clock-new-leader",
        what: "kill the leader so a node whose wall clock is 1 h ahead leads, then one 1 h behind",
        nodes: 3,
        shards: 2,
        replication_factor: None,
        needs_root: false,
    },
];

/// The outcome of one scenario, printed as one line.
pub struct Outcome {
    pub faults: usize,
    pub report: Report,
    pub enqueue_errors: u64,
    pub took: Duration,
    pub notes: Vec<String>,
}

pub async fn run(s: &Scenario, size: Size) -> anyhow::Result<Outcome> {
    let spec = Spec {
        nodes: s.nodes,
        shards: s.shards,
        fake_clock: s.name.starts_with("clock-"),
        small_disk: (s.name == "disk-full").then_some((1, 256)),
        config: (s.name == "partition-leader-returns").then_some(SNAPSHOT_OFTEN_ONE_IN_FLIGHT),
        tls: s.name.ends_with("-tls"),
        replication_factor: s.replication_factor,
        joiners: if s.name == "scale-out-in" { 3 } else { 0 },
    };
    let mut cluster = Cluster::start(&spec).await?;
    let outcome = run_on(s, size, &mut cluster).await;
    let failed = match &outcome {
        Ok(o) => !o.report.violations.is_empty(),
        Err(_) => true,
    };
    // RAFTQ_CHAOS_KEEP=1 keeps them after a passing run too.
    if failed || std::env::var_os("RAFTQ_CHAOS_KEEP").is_some() {
        if let Some(dir) = cluster.keep_files() {
            println!("  data dirs and node logs kept in {}", dir.display());
        }
    }
    outcome
}

async fn run_on(s: &Scenario, size: Size, cluster: &mut Cluster) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let endpoints = cluster.endpoints();
    let queues = queues(s.shards);
    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
    let mut load = Workload::start(endpoints.clone(), &queues, 3, 4);
    wait_acknowledged(&load, 100, Duration::from_secs(60)).await?;

    let mut notes = Vec::new();
    let mut phase = Instant::now();
    let mut lap = |notes: &mut Vec<String>, what: &str| {
        notes.push(format!("{what} {:.1} s", phase.elapsed().as_secs_f64()));
        phase = Instant::now();
    };
    let faults = match s.name {
        "kill-leader" | "kill-leader-5" | "kill-leader-tls" => {
            kill_leader(cluster, size, 2).await?
        }
        "kill-leader-placed" => kill_leader(cluster, size, s.shards).await?,
        "kill-follower" => kill_follower(cluster, size).await?,
        "move-replicas" => move_replicas(cluster, size, s.shards).await?,
        "scale-out-in" => scale_out_in(cluster, s.shards).await?,
        "grow-shards" => grow_shards(cluster, size, s.shards).await?,
        "kill-all" => kill_all(cluster, size).await?,
        "partition-leader" => partition_leader(cluster, size).await?,
        "partition-split" => partition_split(cluster, size).await?,
        "partition-leader-returns" => partition_leader_returns(cluster, size).await?,
        "slow-network" => slow_network(cluster, size).await?,
        "disk-full" => disk_full(cluster, size, &mut notes).await?,
        "clock-jump" => clock_jump(cluster, size).await?,
        "clock-new-leader" => clock_new_leader(cluster, size).await?,
        other => anyhow::bail!("unknown scenario {other}"),
    };
    lap(&mut notes, "faults");

    // Heal, and prove the cluster serves again before draining.
    cluster.net.heal();
    for id in cluster.ids() {
        cluster.start_node(id)?;
    }
    let all = cluster.ids();
    cluster.wait_serving(&all, Duration::from_secs(60)).await?;
    let before = acknowledged(&load);
    if let Err(e) = wait_acknowledged(&load, before + 50, Duration::from_secs(60)).await {
        let last = load
            .last_enqueue_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut views = Vec::new();
        for id in cluster.ids() {
            let view = match cluster.status(id).await {
                Some(s) => s
                    .shards
                    .iter()
                    .map(|s| {
                        format!(
                            "shard {} {} leader {} term {} applied {}",
                            s.shard, s.role, s.leader_id, s.term, s.applied_index
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                None => "no answer".into(),
            };
            views.push(format!("node {id}: {view}"));
        }
        anyhow::bail!("{e}; last enqueue error: {last}; {}", views.join("; "));
    }
    lap(&mut notes, "heal");
    load.stop_producing().await;
    let drained = wait_drained(&endpoints, Duration::from_secs(90)).await;
    load.stop_working().await;
    drained?;
    cluster.wait_converged(Duration::from_secs(30)).await?;
    lap(&mut notes, "drain");

    let events = load.history.snapshot();
    let jobs: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.op {
            Op::EnqueueOk { job, .. } => Some(job.clone()),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let finals = final_states(&endpoints, jobs).await?;
    lap(&mut notes, "final states");
    let mut report = check(&events, &finals);
    for problem in cluster.log_problems() {
        report.violations.push(problem);
    }
    Ok(Outcome {
        faults,
        report,
        enqueue_errors: load
            .enqueue_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        took: started.elapsed(),
        notes,
    })
}

fn acknowledged(load: &Workload) -> usize {
    load.history
        .snapshot()
        .iter()
        .filter(|e| matches!(e.op, Op::EnqueueOk { .. }))
        .count()
}

async fn wait_acknowledged(load: &Workload, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while acknowledged(load) < n {
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of {n} enqueues acknowledged after {timeout:?}: the cluster stopped serving",
                acknowledged(load)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn leader(cluster: &mut Cluster, shard: u32) -> anyhow::Result<NodeId> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(id) = cluster.leader_of(shard).await {
            return Ok(id);
        }
        if Instant::now() > deadline {
            anyhow::bail!("no leader for shard {shard} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lets the workload run against the faulty cluster for a while.
async fn hold(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Kills the leader of shard 0, 1, ... `shards - 1` in turn.
async fn kill_leader(c: &mut Cluster, size: Size, shards: u32) -> anyhow::Result<usize> {
    for round in 0..size.rounds {
        let id = leader(c, round as u32 % shards).await?;
        c.kill(id);
        hold(size.hold / 2).await;
        c.start_node(id)?;
        c.wait_serving(&c.ids(), Duration::from_secs(60)).await?;
    }
    Ok(size.rounds)
}

/// Moves a replica of shard 0, 1, ... in turn, from its leader to the node
/// without one; once the learner is catching up, SIGKILLs the incoming
/// node, the leaving leader or the node running the move (in turn),
/// restarts it, and asks for the move again (from a node that ran
/// throughout) until it is done or rolled back.
async fn move_replicas(c: &mut Cluster, size: Size, shards: u32) -> anyhow::Result<usize> {
    use raftq_client::proto::MoveReplicaRequest;
    for round in 0..size.rounds {
        let shard = round as u32 % shards;
        let from = leader(c, shard).await?;
        let mut to = None;
        for id in c.ids() {
            if let Some(s) = c.status(id).await {
                if !s.shards.iter().any(|s| s.shard == shard) {
                    to = Some(id);
                }
            }
        }
        let to = to.ok_or_else(|| anyhow::anyhow!("every node holds shard {shard}"))?;
        let runner = c
            .ids()
            .into_iter()
            .find(|id| *id != from && *id != to)
            .ok_or_else(|| anyhow::anyhow!("no node to run the move"))?;
        let victim = [to, from, runner][round % 3];
        let request = MoveReplicaRequest {
            shard,
            add_node: to,
            remove_node: from,
            ..Default::default()
        };
        let client = c
            .admin(runner)
            .await
            .ok_or_else(|| anyhow::anyhow!("node {runner} does not answer"))?;
        let mut steps = client
            .cluster()
            .move_replica(request.clone())
            .await?
            .into_inner();
        // Killed once the learner exists and is being filled.
        while let Ok(Some(step)) = steps.message().await {
            if step.phase != "add_learner" {
                break;
            }
        }
        c.kill(victim);
        hold(size.hold / 2).await;
        c.start_node(victim)?;
        c.wait_answering(victim, Duration::from_secs(60)).await?;
        drop(steps);
        let resumer = if victim == runner {
            c.ids()
                .into_iter()
                .find(|id| *id != runner)
                .unwrap_or(runner)
        } else {
            runner
        };
        finish_move(c, resumer, &request).await?;
        c.recount_held().await;
        c.wait_serving(&c.ids(), Duration::from_secs(60)).await?;
    }
    Ok(size.rounds)
}

/// Three nodes join and are declared; once the coordinator has evened the
/// replicas over all six, the three are drained, leave the declaration
/// and stop.
async fn scale_out_in(c: &mut Cluster, shards: u32) -> anyhow::Result<usize> {
    use raftq_client::proto::NodeSpec;
    let initial = c.ids();
    let joiners = c.joiner_ids();
    for id in &joiners {
        c.join(*id)?;
    }
    for id in &joiners {
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.status(*id).await.is_none() {
            anyhow::ensure!(Instant::now() < deadline, "node {id} did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let spec = |c: &Cluster, ids: &[NodeId], draining: &[NodeId]| -> Vec<NodeSpec> {
        ids.iter()
            .map(|id| NodeSpec {
                node_id: *id,
                addr: c.peer_addr(*id),
                zone: String::new(),
                draining: draining.contains(id),
            })
            .collect()
    };
    let all: Vec<NodeId> = initial.iter().chain(&joiners).copied().collect();
    let even = 3 * shards as usize / all.len();
    let grown = spec(c, &all, &[]);
    declare(c, grown).await?;
    settle_placement(c, |counts| {
        all.iter()
            .all(|id| counts.get(id).copied().unwrap_or(0) as usize >= even)
    })
    .await?;
    let draining = spec(c, &all, &joiners);
    declare(c, draining).await?;
    settle_placement(c, |counts| {
        joiners
            .iter()
            .all(|id| counts.get(id).copied().unwrap_or(0) == 0)
    })
    .await?;
    let shrunk = spec(c, &initial, &[]);
    declare(c, shrunk).await?;
    for id in &joiners {
        c.retire(*id);
    }
    c.recount_held().await;
    c.wait_serving(&c.ids(), Duration::from_secs(60)).await?;
    Ok(2)
}

/// Grows the shard count twice (to twice, then three times `shards`);
/// once the new shards are being created, SIGKILLs shard 0's leader (it
/// runs the growth), then in the second round another node; restarts it
/// and asks for the growth again until it is done.
async fn grow_shards(c: &mut Cluster, size: Size, shards: u32) -> anyhow::Result<usize> {
    for round in 0..2u32 {
        let count = shards * (round + 2);
        let coordinator = leader(c, 0).await?;
        let victim = if round == 0 {
            coordinator
        } else {
            c.ids()
                .into_iter()
                .find(|id| *id != coordinator)
                .ok_or_else(|| anyhow::anyhow!("one node only"))?
        };
        let asker = c
            .ids()
            .into_iter()
            .find(|id| *id != victim)
            .ok_or_else(|| anyhow::anyhow!("one node only"))?;
        let client = c
            .admin(asker)
            .await
            .ok_or_else(|| anyhow::anyhow!("node {asker} does not answer"))?;
        let request = raftq_client::proto::GrowShardsRequest { shard_count: count };
        let mut steps = client.cluster().grow_shards(request).await?.into_inner();
        // Killed once the first new shard's group exists.
        while let Ok(Some(step)) = steps.message().await {
            if step.step == "create_shards" {
                break;
            }
        }
        c.kill(victim);
        hold(size.hold / 2).await;
        c.start_node(victim)?;
        // Up, but maybe holding an empty replica of a new shard whose
        // group only the resumed growth creates: not every shard it holds
        // has a leader yet.
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.status(victim).await.is_none() {
            anyhow::ensure!(Instant::now() < deadline, "node {victim} did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(steps);
        finish_growth(c, asker, count).await?;
        c.recount_held().await;
        c.wait_serving(&c.ids(), Duration::from_secs(60)).await?;
    }
    Ok(2)
}

/// Asks `node` for a growth to `count` shards until one run ends `done`.
async fn finish_growth(c: &mut Cluster, node: NodeId, count: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        let Some(client) = c.admin(node).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let request = raftq_client::proto::GrowShardsRequest { shard_count: count };
        match client.cluster().grow_shards(request).await {
            Ok(steps) => {
                let mut steps = steps.into_inner();
                loop {
                    match steps.message().await {
                        Ok(Some(step)) => last = format!("{}: {}", step.step, step.detail),
                        Ok(None) => break,
                        Err(e) => {
                            last = format!("stopped: {}", e.message());
                            break;
                        }
                    }
                }
                if last.starts_with("done") {
                    return Ok(());
                }
            }
            Err(e) => last = format!("refused: {}", e.message()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("growing to {count} shards did not end in 120 s; last: {last}")
}

/// `SetNodes` through the first node, retried while shard 0 elects.
async fn declare(c: &mut Cluster, nodes: Vec<raftq_client::proto::NodeSpec>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let admin = c
            .admin(1)
            .await
            .ok_or_else(|| anyhow::anyhow!("node 1 does not answer"))?;
        let req = raftq_client::proto::SetNodesRequest {
            nodes: nodes.clone(),
        };
        match admin.cluster().set_nodes(req).await {
            Ok(_) => return Ok(()),
            // A node that does not answer yet, or shard 0 electing.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => anyhow::bail!("set_nodes: {}", e.message()),
        }
    }
}

/// Waits until the coordinator reports the placement balanced and
/// `done` holds for the replicas per node.
async fn settle_placement(
    c: &mut Cluster,
    done: impl Fn(&std::collections::BTreeMap<NodeId, u32>) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(admin) = c.admin(1).await {
            match admin
                .cluster()
                .get_placement(raftq_client::proto::GetPlacementRequest {})
                .await
            {
                Ok(p) => {
                    let p = p.into_inner();
                    let counts = p.nodes.iter().map(|n| (n.node_id, n.replicas)).collect();
                    if p.balanced && done(&counts) {
                        return Ok(());
                    }
                    last = format!("{counts:?}, moves {:?}", p.moves);
                }
                Err(e) => last = e.message().to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("the placement did not settle in 180 s; last: {last}")
}

/// Asks `node` to run `request` until the move ends (done or rolled back):
/// an interrupted move resumes from what the shard's membership shows.
async fn finish_move(
    c: &mut Cluster,
    node: NodeId,
    request: &raftq_client::proto::MoveReplicaRequest,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        let Some(client) = c.admin(node).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        match client.cluster().move_replica(request.clone()).await {
            Ok(steps) => {
                let mut steps = steps.into_inner();
                loop {
                    match steps.message().await {
                        Ok(Some(step)) => last = format!("{}: {}", step.phase, step.detail),
                        Ok(None) => break,
                        Err(e) => {
                            last = format!("stopped: {}", e.message());
                            break;
                        }
                    }
                }
                if last.starts_with("done") || last.starts_with("rolled_back") {
                    return Ok(());
                }
            }
            // Another run of the same move has not noticed yet that its
            // caller went away.
            Err(e) => last = format!("refused: {}", e.message()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!(
        "the move of shard {} did not end in 120 s; last: {last}",
        request.shard
    )
}

async fn kill_follower(c: &mut Cluster, size: Size) -> anyhow::Result<usize> {
    for round in 0..size.rounds {
        let l = leader(c, (round % 2) as u32).await?;
        let followers: Vec<NodeId> = c.ids().into_iter().filter(|i| *i != l).collect();
        let id = followers[round % followers.len()];
        c.kill(id);
        hold(size.hold / 2).await;
        c.start_node(id)?;
        c.wait_serving(&c.ids(), Duration::from_secs(60)).await?;
    }
    Ok(size.rounds)
}

async fn kill_all(c: &mut Cluster, size: Size) -> anyhow::Result<usize> {
    let rounds = size.rounds.div_ceil(2);
    for _ in 0..rounds {
        for id in c.ids() {
            c.kill(id);
        }
        hold(Duration::from_millis(500)).await;
        for id in c.ids() {
            c.start_node(id)?;
        }
        c.wait_serving(&c.ids(), Duration::from_secs(60)).await?;
        hold(size.hold / 2).await;
    }
    Ok(rounds * c.ids().len())
}

/// Cuts `node` off from every other node for `hold`, heals, and waits
/// until every node serves again.
async fn isolate(c: &mut Cluster, node: NodeId, hold_for: Duration) -> anyhow::Result<()> {
    let others: Vec<NodeId> = c.ids().into_iter().filter(|i| *i != node).collect();
    c.net.partition(&[node], &others);
    hold(hold_for).await;
    c.net.heal();
    c.wait_serving(&c.ids(), Duration::from_secs(60)).await
}

async fn partition_leader(c: &mut Cluster, size: Size) -> anyhow::Result<usize> {
    for round in 0..size.rounds {
        let l = leader(c, (round % 2) as u32).await?;
        isolate(c, l, size.hold).await?;
    }
    Ok(size.rounds)
}

/// A deposed leader whose in-flight proposals were overtaken by a snapshot
/// must still be able to propose when it leads again (the soak found one
/// that could not: openraft never answers such proposals, and they held
/// every in-flight slot of its batcher).
async fn partition_leader_returns(c: &mut Cluster, size: Size) -> anyhow::Result<usize> {
    let rounds = size.rounds.div_ceil(2);
    // A shard the workload keeps busy.
    let shard = raftq_api::shard_of(QUEUES[0], 2);
    for _ in 0..rounds {
        let l = leader(c, shard).await?;
        isolate(c, l, size.hold).await?;
        make_leader(c, shard, l).await?;
    }
    Ok(rounds)
}

/// Steps the leader of `shard` down until `target` wins an election.
async fn make_leader(c: &mut Cluster, shard: u32, target: NodeId) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let current = leader(c, shard).await?;
        if current == target {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {target} did not become leader of shard {shard} in 60 s"
        );
        if let Some(client) = c.admin(current).await {
            let req = raftq_client::proto::StepDownRequest {
                timeout_ms: 5_000,
                drain_workers: false,
                shard: None,
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), client.cluster().step_down(req))
                .await;
        }
    }
}

async fn partition_split(c: &mut Cluster, size: Size) -> anyhow::Result<usize> {
    let ids = c.ids();
    for _ in 0..size.rounds {
        let alone = ids[(fastrand() * ids.len() as f64) as usize % ids.len()];
        isolate(c, alone, size.hold).await?;
    }
    Ok(size.rounds)
}

async fn slow_network(c: &mut Cluster, size: Size) -> anyhow::Result<usize> {
    c.net.update(|f| {
        f.latency = Duration::from_millis(20);
        f.jitter = Duration::from_millis(30);
        f.loss = 0.05;
    });
    hold(size.hold).await;
    let l = leader(c, 0).await?;
    c.kill(l);
    hold(size.hold).await;
    c.start_node(l)?;
    c.wait_serving(&c.ids(), Duration::from_secs(90)).await?;
    hold(size.hold * (size.rounds as u32).saturating_sub(2)).await;
    let stalls = c.net.stats().delayed_chunks as usize;
    c.net.heal();
    Ok(1 + stalls)
}

async fn disk_full(c: &mut Cluster, size: Size, notes: &mut Vec<String>) -> anyhow::Result<usize> {
    // Node 1 has the small disk; make it lead shard 0 first.
    let victim: NodeId = 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader(c, 0).await? != victim {
        if Instant::now() > deadline {
            notes.push("node 1 did not lead shard 0; filled a follower's disk".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ballast = c.data_dir(victim).join("ballast");
    fill(&ballast)?;
    // RocksDB keeps space reserved for its WAL; big jobs use it up.
    let filler = tokio::spawn(fill_with_jobs(c.endpoints()));
    // The node must stop (to be restarted by its supervisor) and say why.
    let deadline = Instant::now() + Duration::from_secs(60);
    let how = loop {
        if let Some(status) = c.exited(victim) {
            let log = c.log(victim);
            let why = log
                .lines()
                .rev()
                .find(|l| l.contains("queue-node: error"))
                .unwrap_or("no error line")
                .to_string();
            anyhow::ensure!(
                !status.success()
                    && (why.contains("No space left") || why.contains("stopped taking writes")),
                "node 1 exited ({status}) without naming the full disk: {why}"
            );
            break format!("node 1 exited ({status}): {why}");
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "node 1 kept running on a full disk:\n{}",
                super::cluster::tail(&c.log(victim))
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    filler.abort();
    notes.push(how);
    hold(size.hold).await;
    std::fs::remove_file(&ballast)?;
    c.kill(victim);
    c.start_node(victim)?;
    c.wait_serving(&c.ids(), Duration::from_secs(60)).await?;
    purge(&c.endpoints(), BULK_QUEUE).await?;
    Ok(1)
}

/// Big jobs, outside the checked history, to fill a disk quickly.
const BULK_QUEUE: &str = "bulk";

async fn fill_with_jobs(endpoints: Endpoints) {
    let payload = bytes::Bytes::from(vec![0x42u8; 256 * 1024]);
    let mut i = 0usize;
    loop {
        i += 1;
        let Some(c) = endpoints.connect(i).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let req = raftq_client::proto::EnqueueRequest {
            queue: BULK_QUEUE.into(),
            jobs: (0..4)
                .map(|_| raftq_client::proto::NewJob {
                    payload: payload.clone(),
                    ..Default::default()
                })
                .collect(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), c.queue().enqueue(req)).await;
    }
}

async fn purge(endpoints: &Endpoints, queue: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        if let Some(c) = endpoints.connect(i).await {
            let req = raftq_client::proto::QueueRef {
                queue: queue.into(),
            };
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(3), c.admin().purge_queue(req)).await
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("could not purge queue {queue}")
}

/// Writes zeros until the file system says it is full.
fn fill(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = f.sync_all();
    Ok(())
}

async fn clock_jump(c: &mut Cluster, size: Size) -> anyhow::Result<usize> {
    let mut faults = 0;
    for round in 0..size.rounds.div_ceil(2) {
        let l = leader(c, (round % 2) as u32).await?;
        c.set_clock_offset(l, 3600)?;
        hold(size.hold).await;
        c.set_clock_offset(l, 0)?;
        hold(size.hold).await;
        faults += 2;
    }
    Ok(faults)
}

/// A leader change onto a node whose wall clock disagrees with the old
/// leader's: the followers' clocks are set 1 h ahead and the leader is
/// killed (the new leader is ahead), then every clock is set back to true
/// time (the sitting leader is now 1 h behind the shard's time) and it is
/// killed again. Leases must neither all expire at once nor freeze.
async fn clock_new_leader(c: &mut Cluster, size: Size) -> anyhow::Result<usize> {
    let mut faults = 0;
    for round in 0..size.rounds.div_ceil(2) {
        let shard = (round % 2) as u32;
        let old = leader(c, shard).await?;
        for id in c.ids().into_iter().filter(|id| *id != old) {
            c.set_clock_offset(id, 3600)?;
        }
        c.kill(old);
        let ahead = leader(c, shard).await?;
        hold(size.hold).await;
        c.start_node(old)?;
        c.wait_serving(&c.ids(), Duration::from_secs(60)).await?;
        for id in c.ids() {
            c.set_clock_offset(id, 0)?;
        }
        hold(size.hold / 2).await;
        c.kill(ahead);
        hold(size.hold).await;
        c.start_node(ahead)?;
        c.wait_serving(&c.ids(), Duration::from_secs(60)).await?;
        faults += 2;
    }
    Ok(faults)
}
