//! Raft membership: what the nodes report, and the one next step that moves
//! the cluster toward `replicas` voters in every shard.
//!
//! [`plan`] is a pure function of observations; [`NodeAdmin`] performs the
//! step over the nodes' `ClusterAdmin` gRPC API. Node id = pod ordinal + 1.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use raftq_api::v1 as pb;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;

/// Raft node id of StatefulSet pod `ordinal`.
pub fn node_id(ordinal: u32) -> u64 {
    u64::from(ordinal) + 1
}

/// What one shard looks like from the node that leads it (or, when it has
/// no leader, from any node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub shard: u32,
    /// 0 = no leader known.
    pub leader: u64,
    pub term: u64,
    pub applied_index: u64,
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
}

/// Status answers of the reachable nodes, by node id.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub nodes: BTreeMap<u64, pb::ClusterStatus>,
    /// Node id → zone of the pods bound to a Kubernetes Node with a zone
    /// label (placed queues).
    pub zones: BTreeMap<u64, String>,
    /// A placed queue's declared nodes and moves, from its coordinator.
    pub placement: Option<pb::PlacementStatus>,
}

impl Observed {
    pub fn reachable(&self, id: u64) -> bool {
        self.nodes.contains_key(&id)
    }

    /// True when some node has a Raft membership: the cluster was bootstrapped.
    pub fn initialized(&self) -> bool {
        self.nodes
            .values()
            .any(|n| n.shards.iter().any(|s| !s.members.is_empty()))
    }

    /// Every shard as its leader sees it (the leader's view is the one that
    /// commits), else as the node with the newest applied index sees it.
    pub fn shards(&self) -> Vec<ShardView> {
        let mut best: BTreeMap<u32, (bool, u64, ShardView)> = BTreeMap::new();
        for (id, node) in &self.nodes {
            for s in &node.shards {
                let is_leader = s.has_leader && s.leader_id == *id;
                let view = ShardView {
                    shard: s.shard,
                    leader: if s.has_leader { s.leader_id } else { 0 },
                    term: s.term,
                    applied_index: s.applied_index,
                    voters: s
                        .members
                        .iter()
                        .filter(|m| m.voter)
                        .map(|m| m.node_id)
                        .collect(),
                    learners: s
                        .members
                        .iter()
                        .filter(|m| !m.voter)
                        .map(|m| m.node_id)
                        .collect(),
                };
                let rank = (is_leader, s.applied_index);
                match best.get(&s.shard) {
                    Some((l, a, _)) if (*l, *a) >= rank => {}
                    _ => {
                        best.insert(s.shard, (rank.0, rank.1, view));
                    }
                }
            }
        }
        best.into_values().map(|(_, _, v)| v).collect()
    }

    /// The shard count as the nodes' queue routing has it, once it grew
    /// (`None` while it is the one the cluster was created with).
    pub fn grown_shard_count(&self) -> Option<u32> {
        self.nodes
            .values()
            .filter_map(|n| n.routing.as_ref())
            .map(|r| r.shard_count)
            .max()
    }

    /// The highest node id that is a member (voter or learner) of any shard.
    pub fn highest_member(&self) -> Option<u64> {
        self.shards()
            .iter()
            .flat_map(|s| s.voters.iter().chain(s.learners.iter()).copied())
            .max()
    }
}

/// The one membership change to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the cluster on pod 0 (a one-voter cluster the next steps grow).
    Bootstrap,
    /// Add the node as a learner of every shard; returns once it caught up.
    AddLearner { id: u64 },
    /// Set the voters of every shard.
    SetVoters { voters: BTreeSet<u64> },
    /// Declare the nodes a placed queue's replicas go on (node id →
    /// draining), with the zones of those that have one; the queue's
    /// coordinator moves them.
    DeclareNodes {
        nodes: BTreeMap<u64, bool>,
        zones: BTreeMap<u64, String>,
    },
    /// Grow a placed queue's shard count.
    GrowShards { shard_count: u32 },
}

/// Why no step is taken now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Nothing to do: every shard has exactly the wanted voters.
    Settled,
    /// Waiting for something that will happen on its own (a pod starting,
    /// an election).
    Waiting(String),
    /// The change is unsafe; a person must act. The message says why.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub next: Result<Step, Hold>,
    /// The StatefulSet size allowed now: removed nodes keep running until
    /// they have left every shard.
    pub stateful_set_replicas: i32,
}

/// Plans the next step toward `replicas` voters (node ids 1..=replicas).
/// `bootstrapped` is the operator's record that it initialised this cluster
/// before: then an empty membership means lost data, never a new cluster.
pub fn plan(replicas: i32, bootstrapped: bool, observed: &Observed) -> Plan {
    plan_for(Layout::Grown, replicas, bootstrapped, observed)
}

/// How the shards of a queue come to their nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Every node holds every shard; the operator bootstraps pod 0 and adds
    /// the others one by one.
    Grown,
    /// Each shard on `replicationFactor` nodes: the pods start with the
    /// whole membership and create the cluster themselves; the operator
    /// declares the nodes and grows the shard count to `shards` (it was
    /// `initial` at creation).
    Placed { shards: u32, initial: u32 },
}

/// [`plan`] for a queue laid out as `layout` says.
pub fn plan_for(layout: Layout, replicas: i32, bootstrapped: bool, observed: &Observed) -> Plan {
    if let Layout::Placed { shards, initial } = layout {
        return plan_placed(replicas, shards, initial, observed);
    }
    let replicas = replicas.max(1);
    let wanted: BTreeSet<u64> = (1..=replicas as u64).collect();
    let hold = |h: Hold, size: i32| Plan {
        next: Err(h),
        stateful_set_replicas: size,
    };
    if observed.nodes.is_empty() {
        return hold(Hold::Waiting("no queue node answers yet".into()), replicas);
    }
    if !observed.initialized() {
        if bootstrapped {
            return hold(
                Hold::Refused(
                    "the nodes answer but none has a Raft membership although this cluster was \
                     bootstrapped before: their data was lost. Restore the volumes or delete and \
                     recreate the JobQueue"
                        .into(),
                ),
                replicas,
            );
        }
        return match observed.reachable(node_id(0)) {
            true => Plan {
                next: Ok(Step::Bootstrap),
                stateful_set_replicas: replicas,
            },
            false => hold(Hold::Waiting("waiting for pod 0 to start".into()), replicas),
        };
    }
    let highest = observed.highest_member().unwrap_or(0);
    let size = replicas.max(i32::try_from(highest).unwrap_or(i32::MAX));
    let shards = observed.shards();
    if let Some(s) = shards.iter().find(|s| s.leader == 0) {
        return hold(
            Hold::Waiting(format!("shard {} has no leader yet", s.shard)),
            size,
        );
    }

    // Grow: every wanted node a member of every shard, then a voter.
    for id in &wanted {
        if shards
            .iter()
            .any(|s| !s.voters.contains(id) && !s.learners.contains(id))
        {
            if !observed.reachable(*id) {
                return hold(
                    Hold::Waiting(format!("waiting for pod {} to start", id - 1)),
                    size,
                );
            }
            return Plan {
                next: Ok(Step::AddLearner { id: *id }),
                stateful_set_replicas: size,
            };
        }
    }
    if shards.iter().all(|s| s.voters == wanted) {
        return hold(Hold::Settled, replicas);
    }

    // Any voter change: the new voters must be able to commit it, or the
    // shard would stall with no majority.
    let reachable_wanted = wanted.iter().filter(|id| observed.reachable(**id)).count();
    let majority = wanted.len() / 2 + 1;
    if reachable_wanted < majority {
        return hold(
            Hold::Refused(format!(
                "only {reachable_wanted} of the {} remaining nodes answer; changing the voters \
                 now would leave a shard without a majority. Bring the nodes back first",
                wanted.len()
            )),
            size,
        );
    }
    for s in &shards {
        let current_reachable = s
            .voters
            .iter()
            .filter(|id| observed.reachable(**id))
            .count();
        if current_reachable < s.voters.len() / 2 + 1 {
            return hold(
                Hold::Refused(format!(
                    "shard {} has lost its majority ({current_reachable} of {} voters answer); \
                     no membership change can commit",
                    s.shard,
                    s.voters.len()
                )),
                size,
            );
        }
    }
    Plan {
        next: Ok(Step::SetVoters { voters: wanted }),
        stateful_set_replicas: size,
    }
}

/// Talks to queue nodes' admin API. A trait so the reconcile flow can be
/// tested against a mocked Kubernetes API without real pods.
#[tonic::async_trait]
pub trait NodeAdmin: Send + Sync {
    /// The peer address of node `id` of the queue `queue` (`namespace/name`).
    fn addr(&self, queue: &QueueRef, id: u64) -> String;
    async fn status(
        &self,
        queue: &QueueRef,
        addr: &str,
    ) -> Result<pb::ClusterStatus, tonic::Status>;
    async fn initialize(
        &self,
        queue: &QueueRef,
        addr: &str,
    ) -> Result<pb::ClusterStatus, tonic::Status>;
    async fn add_learner(
        &self,
        queue: &QueueRef,
        addr: &str,
        id: u64,
        learner_addr: &str,
    ) -> Result<pb::ClusterStatus, tonic::Status>;
    async fn set_voters(
        &self,
        queue: &QueueRef,
        addr: &str,
        voters: &BTreeSet<u64>,
    ) -> Result<pb::ClusterStatus, tonic::Status>;
    async fn get_placement(
        &self,
        queue: &QueueRef,
        addr: &str,
    ) -> Result<pb::PlacementStatus, tonic::Status>;
    async fn set_nodes(
        &self,
        queue: &QueueRef,
        addr: &str,
        nodes: Vec<pb::NodeSpec>,
    ) -> Result<pb::PlacementStatus, tonic::Status>;
    /// Grows the shard count; returns once the growth is done.
    async fn grow_shards(
        &self,
        queue: &QueueRef,
        addr: &str,
        shard_count: u32,
    ) -> Result<(), tonic::Status>;
}

/// Identifies one JobQueue for address lookups, with how to reach its
/// nodes' peer ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRef {
    pub namespace: String,
    pub name: String,
    /// The operator's client certificate for this queue's nodes and the
    /// CA they are checked against; `None` when TLS is off.
    pub tls: Option<std::sync::Arc<ClientTls>>,
}

/// A client identity and the CA to trust, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientTls {
    // Never print a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls { .. }")
    }
}

/// Asks nodes 1..=`replicas` for their status, then any member above that
/// (a scale-down in progress). Unreachable nodes are left out.
pub async fn observe(admin: &dyn NodeAdmin, queue: &QueueRef, replicas: i32) -> Observed {
    let replicas = replicas.max(1) as u64;
    let mut observed = observe_ids(admin, queue, 1..=replicas).await;
    if let Some(highest) = observed.highest_member().filter(|h| *h > replicas) {
        let extra = observe_ids(admin, queue, replicas + 1..=highest).await;
        observed.nodes.extend(extra.nodes);
    }
    observed
}

/// Adds a placed queue's placement to `observed`, asked of a node that
/// answered (it forwards to the coordinator).
pub async fn observe_placement(admin: &dyn NodeAdmin, queue: &QueueRef, observed: &mut Observed) {
    let Some(via) = observed.nodes.keys().next().copied() else {
        return;
    };
    observed.placement = admin
        .get_placement(queue, &admin.addr(queue, via))
        .await
        .ok();
}

async fn observe_ids(
    admin: &dyn NodeAdmin,
    queue: &QueueRef,
    ids: impl IntoIterator<Item = u64>,
) -> Observed {
    let mut observed = Observed::default();
    for id in ids {
        if let Ok(status) = admin.status(queue, &admin.addr(queue, id)).await {
            observed.nodes.insert(id, status);
        }
    }
    observed
}

/// Performs `step` through the node that can do it.
pub async fn execute(
    admin: &dyn NodeAdmin,
    queue: &QueueRef,
    observed: &Observed,
    step: &Step,
) -> Result<(), tonic::Status> {
    match step {
        Step::Bootstrap => admin
            .initialize(queue, &admin.addr(queue, node_id(0)))
            .await
            .map(drop),
        Step::AddLearner { id } => {
            let via = some_member(observed);
            admin
                .add_learner(queue, &admin.addr(queue, via), *id, &admin.addr(queue, *id))
                .await
                .map(drop)
        }
        Step::SetVoters { voters } => {
            let via = some_member(observed);
            admin
                .set_voters(queue, &admin.addr(queue, via), voters)
                .await
                .map(drop)
        }
        Step::GrowShards { shard_count } => {
            let via = some_member(observed);
            admin
                .grow_shards(queue, &admin.addr(queue, via), *shard_count)
                .await
        }
        Step::DeclareNodes { nodes, zones } => {
            let via = some_member(observed);
            let specs = nodes
                .iter()
                .map(|(id, draining)| pb::NodeSpec {
                    node_id: *id,
                    addr: admin.addr(queue, *id),
                    zone: zones.get(id).cloned().unwrap_or_default(),
                    draining: *draining,
                })
                .collect();
            admin
                .set_nodes(queue, &admin.addr(queue, via), specs)
                .await
                .map(drop)
        }
    }
}

/// A reachable node that is in the cluster; any node forwards admin calls to
/// each shard's leader.
fn some_member(observed: &Observed) -> u64 {
    let shards = observed.shards();
    shards
        .first()
        .map(|s| s.leader)
        .filter(|l| observed.reachable(*l))
        .or_else(|| {
            observed
                .nodes
                .iter()
                .find(|(_, n)| n.shards.iter().any(|s| !s.members.is_empty()))
                .map(|(id, _)| *id)
        })
        .unwrap_or(1)
}

/// Maps a queue and a node id to the node's gRPC address.
pub type AddrOf = Box<dyn Fn(&QueueRef, u64) -> String + Send + Sync>;

/// The real [`NodeAdmin`]: gRPC to `<pod>.<peer service>.<namespace>.svc`.
pub struct GrpcNodeAdmin {
    /// Per-call deadline for status; membership calls wait for catch-up.
    pub status_timeout: Duration,
    pub change_timeout: Duration,
    /// Builds a node address; the default is the in-cluster DNS name.
    pub addr_of: AddrOf,
}

impl Default for GrpcNodeAdmin {
    fn default() -> Self {
        GrpcNodeAdmin {
            status_timeout: Duration::from_secs(2),
            change_timeout: Duration::from_secs(60),
            addr_of: Box::new(|q, id| {
                format!(
                    "{name}-{ordinal}.{name}-peers.{ns}.svc:{port}",
                    name = q.name,
                    ordinal = id - 1,
                    ns = q.namespace,
                    port = crate::objects::PEER_PORT
                )
            }),
        }
    }
}

impl GrpcNodeAdmin {
    async fn client(
        &self,
        queue: &QueueRef,
        addr: &str,
        timeout: Duration,
    ) -> Result<ClusterAdminClient<tonic::transport::Channel>, tonic::Status> {
        let scheme = if queue.tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| tonic::Status::invalid_argument(format!("bad node address {addr}: {e}")))?
            .connect_timeout(self.status_timeout)
            .timeout(timeout);
        if let Some(tls) = &queue.tls {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            endpoint = endpoint
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .domain_name(host)
                        .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem))
                        .identity(tonic::transport::Identity::from_pem(
                            &tls.cert_pem,
                            &tls.key_pem,
                        )),
                )
                .map_err(|e| tonic::Status::internal(format!("TLS settings for {addr}: {e}")))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let cause =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |c| c.to_string());
            tonic::Status::unavailable(format!("cannot reach {addr}: {cause}"))
        })?;
        Ok(ClusterAdminClient::new(channel))
    }
}

#[tonic::async_trait]
impl NodeAdmin for GrpcNodeAdmin {
    fn addr(&self, queue: &QueueRef, id: u64) -> String {
        (self.addr_of)(queue, id)
    }

    async fn status(
        &self,
        queue: &QueueRef,
        addr: &str,
    ) -> Result<pb::ClusterStatus, tonic::Status> {
        let mut client = self.client(queue, addr, self.status_timeout).await?;
        Ok(client
            .status(pb::ClusterStatusRequest::default())
            .await?
            .into_inner())
    }

    async fn initialize(
        &self,
        queue: &QueueRef,
        addr: &str,
    ) -> Result<pb::ClusterStatus, tonic::Status> {
        let mut client = self.client(queue, addr, self.change_timeout).await?;
        Ok(client
            .initialize(pb::InitializeRequest {
                bootstrap_joining_node: true,
            })
            .await?
            .into_inner())
    }

    async fn add_learner(
        &self,
        queue: &QueueRef,
        addr: &str,
        id: u64,
        learner_addr: &str,
    ) -> Result<pb::ClusterStatus, tonic::Status> {
        let mut client = self.client(queue, addr, self.change_timeout).await?;
        Ok(client
            .add_learner(pb::AddLearnerRequest {
                node_id: id,
                addr: learner_addr.to_string(),
                shard: None,
                timeout_ms: 0,
                no_wait: false,
            })
            .await?
            .into_inner())
    }

    async fn set_voters(
        &self,
        queue: &QueueRef,
        addr: &str,
        voters: &BTreeSet<u64>,
    ) -> Result<pb::ClusterStatus, tonic::Status> {
        let mut client = self.client(queue, addr, self.change_timeout).await?;
        Ok(client
            .change_membership(pb::ChangeMembershipRequest {
                voters: voters.iter().copied().collect(),
                retain: false,
                shard: None,
            })
            .await?
            .into_inner())
    }

    async fn get_placement(
        &self,
        queue: &QueueRef,
        addr: &str,
    ) -> Result<pb::PlacementStatus, tonic::Status> {
        let mut client = self.client(queue, addr, self.status_timeout).await?;
        Ok(client
            .get_placement(pb::GetPlacementRequest {})
            .await?
            .into_inner())
    }

    async fn set_nodes(
        &self,
        queue: &QueueRef,
        addr: &str,
        nodes: Vec<pb::NodeSpec>,
    ) -> Result<pb::PlacementStatus, tonic::Status> {
        let mut client = self.client(queue, addr, self.change_timeout).await?;
        Ok(client
            .set_nodes(pb::SetNodesRequest { nodes })
            .await?
            .into_inner())
    }

    async fn grow_shards(
        &self,
        queue: &QueueRef,
        addr: &str,
        shard_count: u32,
    ) -> Result<(), tonic::Status> {
        let mut client = self.client(queue, addr, self.change_timeout).await?;
        let mut steps = client
            .grow_shards(pb::GrowShardsRequest { shard_count })
            .await?
            .into_inner();
        let mut last = String::new();
        while let Some(step) = steps.message().await? {
            tracing::info!(queue = %queue.name, step = %step.step, detail = %step.detail, "growing the shard count");
            last = step.step;
        }
        if last == "done" {
            Ok(())
        } else {
            Err(tonic::Status::unavailable(format!(
                "growing to {shard_count} shards ended at step {last:?}; it resumes at the next reconcile"
            )))
        }
    }
}

/// A placed queue's nodes need no step: they wait for each other and
/// elect leaders. Until every shard has a leader the plan waits.
fn plan_placed(replicas: i32, shards: u32, initial: u32, observed: &Observed) -> Plan {
    let replicas = replicas.max(1);
    let current = observed.grown_shard_count().unwrap_or(initial);
    let seen = observed.shards();
    // Pods above `replicas` keep running while they hold replicas: they
    // are drained first.
    let holding = seen
        .iter()
        .flat_map(|s| s.voters.iter().chain(s.learners.iter()).copied())
        .max()
        .unwrap_or(0)
        .max(replicas as u64);
    let size = holding as i32;
    let wait = |why: String| Plan {
        next: Err(Hold::Waiting(why)),
        stateful_set_replicas: size,
    };
    if observed.nodes.is_empty() {
        return wait("no queue node answers yet".into());
    }
    if !observed.initialized() {
        return wait(
            "the nodes create the cluster once a majority of each shard's voters has started"
                .into(),
        );
    }
    if let Some(s) = seen.iter().find(|s| s.leader == 0) {
        return wait(format!("shard {} has no leader yet", s.shard));
    }
    if let Some(missing) = (0..current).find(|id| seen.iter().all(|s| s.shard != *id)) {
        return wait(format!(
            "no node that answers holds shard {missing}: waiting for its nodes"
        ));
    }
    let Some(placement) = &observed.placement else {
        return wait("asking the queue's coordinator (shard 0's leader) for the placement".into());
    };
    // Nodes 1..=replicas take replicas; the ones above drain.
    let wanted: BTreeMap<u64, bool> = (1..=holding).map(|id| (id, id > replicas as u64)).collect();
    let zones: BTreeMap<u64, String> = observed
        .zones
        .iter()
        .filter(|(id, _)| wanted.contains_key(id))
        .map(|(id, zone)| (*id, zone.clone()))
        .collect();
    let declared: BTreeMap<u64, bool> = placement
        .declared
        .iter()
        .map(|n| (n.node_id, n.draining))
        .collect();
    let declared_zones: BTreeMap<u64, String> = placement
        .declared
        .iter()
        .filter(|n| !n.zone.is_empty())
        .map(|n| (n.node_id, n.zone.clone()))
        .collect();
    if declared != wanted || declared_zones != zones {
        if let Some(down) = wanted
            .iter()
            .find(|(id, draining)| !**draining && !observed.reachable(**id))
        {
            return wait(format!(
                "node {} (pod {}) does not answer yet; it is declared once it does",
                down.0,
                down.0 - 1
            ));
        }
        return Plan {
            next: Ok(Step::DeclareNodes {
                nodes: wanted,
                zones,
            }),
            stateful_set_replicas: size,
        };
    }
    if shards < current {
        return Plan {
            next: Err(Hold::Refused(format!(
                "spec.shards is {shards} but the cluster has {current} shards: the shard count only grows; set it to {current} or more"
            ))),
            stateful_set_replicas: size,
        };
    }
    if shards > current {
        return Plan {
            next: Ok(Step::GrowShards {
                shard_count: shards,
            }),
            stateful_set_replicas: size,
        };
    }
    if !placement.balanced {
        let moves: Vec<String> = placement
            .moves
            .iter()
            .map(|m| {
                format!(
                    "shard {} node {}->{} ({})",
                    m.shard, m.remove_node, m.add_node, m.phase
                )
            })
            .collect();
        return wait(format!(
            "moving replicas: {}",
            if moves.is_empty() {
                "planning".to_string()
            } else {
                moves.join(", ")
            }
        ));
    }
    Plan {
        next: Err(Hold::Settled),
        stateful_set_replicas: size,
    }
}

#[cfg(test)]
mod tests;
