//! What the request handlers share: this node's shards and where a request
//! for a shard goes (served here when this node leads it, else forwarded
//! to the leader through [`crate::forward`]).
//!
//! Owns routing only; it proposes nothing and reads no job state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::batcher::Batcher;
use crate::directory::Directory;
use crate::drain::WorkerDrain;
use crate::forward::{self, Leader};
use crate::memory::MemoryBudget;
use crate::network::CampaignGate;
use crate::ops::QueueDefaults;
use crate::raft_types::{NodeId, Raft};
use crate::security::identity::host_of;
use crate::security::{Call, Caller, Port, Security};
use crate::shard::ShardShared;
use crate::store::Contents;

/// One shard as the request handlers see it.
pub struct ShardHandle {
    pub id: u32,
    pub raft: Raft,
    pub batcher: Batcher,
    pub shared: Arc<ShardShared>,
    /// Reads back the payloads and headers of the jobs it answers with.
    pub contents: Contents,
}

/// Everything the gRPC services share.
pub struct NodeContext {
    pub id: NodeId,
    /// The peer address, as in the shards' membership.
    pub addr: String,
    /// Where clients reach this node.
    pub client_addr: String,
    pub shards: Vec<ShardHandle>,
    pub defaults: QueueDefaults,
    /// Ends worker streams when the node stops.
    pub workers: WorkerDrain,
    /// Set on a node started with `--join`: it must never form a cluster
    /// of its own.
    pub joining: bool,
    /// Closed while this node hands its leaderships away before stopping.
    pub campaigns: Arc<CampaignGate>,
    /// The memory budgets, and the enqueue backpressure that keeps them.
    pub memory: MemoryBudget,
    /// TLS, principals and limits: what every handler checks first.
    pub security: Arc<Security>,
    /// Hosts of the voters a new cluster starts with: members before any
    /// membership is known.
    initial_hosts: Vec<String>,
    peers: Mutex<HashMap<String, Channel>>,
    /// The members' client addresses, for the shard map.
    pub directory: Directory,
}

/// Who this node is, for [`NodeContext::new`].
pub struct NodeIdentity {
    pub id: NodeId,
    /// The peer address, as in the shards' membership.
    pub addr: String,
    /// Where clients reach this node.
    pub client_addr: String,
    /// Started with `--join`.
    pub joining: bool,
    /// The peer addresses of a new cluster's voters, this node's included.
    pub initial_members: Vec<String>,
}

/// Where a request for a shard goes.
pub enum Route<'a> {
    Local(&'a ShardHandle),
    Leader(Leader),
}

impl NodeContext {
    pub fn new(
        identity: NodeIdentity,
        shards: Vec<ShardHandle>,
        defaults: QueueDefaults,
        memory: MemoryBudget,
        security: Arc<Security>,
    ) -> NodeContext {
        NodeContext {
            id: identity.id,
            addr: identity.addr,
            directory: Directory::with_own(identity.id, &identity.client_addr),
            client_addr: identity.client_addr,
            shards,
            defaults,
            workers: WorkerDrain::default(),
            joining: identity.joining,
            campaigns: Arc::default(),
            memory,
            security,
            initial_hosts: identity
                .initial_members
                .iter()
                .map(|addr| host_of(addr).to_owned())
                .collect(),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Authenticates the caller of `request` on `port` and checks it may
    /// make `call` (on `queue`, when the call names one).
    pub fn authorize<T>(
        &self,
        port: Port,
        request: &Request<T>,
        call: Call,
        queue: Option<&str>,
    ) -> Result<Caller, Status> {
        self.security
            .authorize(port, request, call, queue, || self.member_hosts())
    }

    /// The hosts of every node in any shard's membership, and of the
    /// initial members: whom a peer certificate must be valid for.
    pub fn member_hosts(&self) -> BTreeSet<String> {
        let mut hosts: BTreeSet<String> = self.initial_hosts.iter().cloned().collect();
        for shard in &self.shards {
            let metrics = shard.raft.metrics();
            let m = metrics.borrow();
            hosts.extend(
                m.membership_config
                    .nodes()
                    .map(|(_, node)| host_of(&node.addr).to_owned()),
            );
        }
        hosts
    }

    /// Every member of any shard: node id → peer address.
    pub fn member_addrs(&self) -> BTreeMap<NodeId, String> {
        let mut members = BTreeMap::new();
        for shard in &self.shards {
            let metrics = shard.raft.metrics();
            let m = metrics.borrow();
            for (id, node) in m.membership_config.nodes() {
                members.insert(*id, node.addr.clone());
            }
        }
        members
    }

    /// A (cached) channel to another node.
    pub fn peer(&self, addr: &str) -> Result<Channel, Status> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = peers.get(addr) {
            return Ok(ch.clone());
        }
        let ch = self
            .security
            .dialer
            .channel(addr)
            .map_err(|e| Status::unavailable(format!("bad leader address {addr:?}: {e}")))?;
        peers.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// The shard that owns `queue`.
    pub fn shard_of_queue(&self, queue: &str) -> u32 {
        raftq_api::shard_of(queue, self.shards.len() as u32)
    }

    pub fn shard(&self, id: u32) -> Result<&ShardHandle, Status> {
        self.shards.get(id as usize).ok_or_else(|| {
            Status::invalid_argument(format!(
                "shard {id} does not exist (this cluster has {} shard(s)); check the job id",
                self.shards.len()
            ))
        })
    }

    pub fn route<T>(&self, shard: u32, request: &Request<T>) -> Result<Route<'_>, Status> {
        self.route_as(shard, forward::Arrival::of(request.metadata()))
    }

    /// Like [`NodeContext::route`], for a request that arrived as
    /// `arrival` says: one from another node is never forwarded again, nor
    /// one a client sent straight to the leader it knows (it is told where
    /// the leader is instead).
    pub fn route_as(&self, shard: u32, arrival: forward::Arrival) -> Result<Route<'_>, Status> {
        let handle = self.shard(shard)?;
        let (leader, addr) = {
            let metrics = handle.raft.metrics();
            let m = metrics.borrow();
            let leader = m.current_leader;
            let addr = leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            });
            (leader, addr)
        };
        match (leader, addr) {
            (Some(l), _) if l == self.id => Ok(Route::Local(handle)),
            (Some(l), Some(addr)) => {
                match arrival {
                    forward::Arrival::Forwarded => {
                        return Err(Status::unavailable(format!(
                            "shard {shard}: leadership is moving (this node now sees node {l} as leader); retry"
                        )))
                    }
                    forward::Arrival::Direct => {
                        let term = handle.raft.metrics().borrow().current_term;
                        return Err(forward::not_leader(
                            self.id,
                            shard,
                            l,
                            self.directory.client_addr(l),
                            term,
                        ));
                    }
                    forward::Arrival::Client => {}
                }
                handle
                    .shared
                    .forwarded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Route::Leader(Leader {
                    node: l,
                    channel: self.peer(&addr)?,
                    addr,
                }))
            }
            _ => Err(Status::unavailable(format!(
                "shard {shard} has no leader right now (election in progress or quorum lost); retry shortly"
            ))),
        }
    }
}
