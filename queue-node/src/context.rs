//! What the request handlers share: this node's shards and where a request
//! for a shard goes (served here when this node leads it, else forwarded
//! to the leader through [`crate::forward`] — for a shard this node does
//! not hold, to the leader its [`Directory`] last heard of).
//!
//! Owns routing only; it proposes nothing and reads no job state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::batcher::Batcher;
use crate::directory::Directory;
use crate::drain::WorkerDrain;
use crate::forward::{self, Leader};
use crate::layout::Layout;
use crate::memory::MemoryBudget;
use crate::network::CampaignGate;
use crate::ops::QueueDefaults;
use crate::raft_types::{NodeId, Raft};
use crate::routing::{Routing, RoutingCell, MAX_SHARDS};
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
    /// The shards this node holds, by id: a move opens and drops them.
    shards: ShardSet,
    /// Opens replicas of shards at run time, for moves.
    pub replicas: crate::replicas::ReplicaFactory,
    /// Where every shard lives: the cluster's shard count, and which
    /// shards are held elsewhere.
    pub layout: Layout,
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
    /// Requests forwarded to each shard's leader, by shard id.
    forwarded: Box<[std::sync::atomic::AtomicU64]>,
    /// The replica moves run from this node now.
    pub moves: crate::mover::MovesUnderWay,
    /// Held while a growth of the shard count runs here: one at a time.
    pub growing: tokio::sync::Mutex<()>,
    /// The moves this node starts while it leads the metadata shard.
    pub coordinator: crate::coordinator::Coordinator,
    /// Which shard each queue lives on, and how many shards there are.
    pub routing: RoutingCell,
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
pub enum Route {
    Local(Arc<ShardHandle>),
    Leader(Leader),
}

/// The shards this node holds, sorted by id. Replaced whole when a move
/// opens or drops a replica, so a reader keeps a consistent set for as
/// long as it holds it.
struct ShardSet {
    held: RwLock<Arc<[Arc<ShardHandle>]>>,
    changed: tokio::sync::watch::Sender<()>,
}

impl ShardSet {
    fn new(mut shards: Vec<ShardHandle>) -> ShardSet {
        shards.sort_by_key(|s| s.id);
        ShardSet {
            held: RwLock::new(shards.into_iter().map(Arc::new).collect()),
            changed: tokio::sync::watch::Sender::new(()),
        }
    }

    fn get(&self) -> Arc<[Arc<ShardHandle>]> {
        self.held.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut Vec<Arc<ShardHandle>>)) {
        {
            let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
            let mut shards = held.to_vec();
            change(&mut shards);
            shards.sort_by_key(|s| s.id);
            *held = shards.into();
        }
        self.changed.send_replace(());
    }
}

impl NodeContext {
    pub fn new(
        identity: NodeIdentity,
        layout: Layout,
        shards: Vec<ShardHandle>,
        replicas: crate::replicas::ReplicaFactory,
        defaults: QueueDefaults,
        memory: MemoryBudget,
        security: Arc<Security>,
    ) -> NodeContext {
        let layout_shards = layout.shard_count;
        NodeContext {
            id: identity.id,
            addr: identity.addr,
            directory: Directory::with_own(identity.id, &identity.client_addr),
            client_addr: identity.client_addr,
            shards: ShardSet::new(shards),
            replicas,
            layout,
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
            forwarded: (0..MAX_SHARDS).map(|_| Default::default()).collect(),
            moves: Default::default(),
            growing: Default::default(),
            coordinator: Default::default(),
            routing: RoutingCell::new(Routing::initial(layout_shards)),
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
        // Nodes other members reported (a node that joined and holds no
        // shard in common with this one), and the nodes declared for
        // placement.
        hosts.extend(
            self.directory
                .peers()
                .values()
                .map(|addr| host_of(addr).to_owned()),
        );
        if let Some(declared) = crate::coordinator::declared(self) {
            hosts.extend(declared.iter().map(|n| host_of(&n.addr).to_owned()));
        }
        for shard in self.held().iter() {
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

    /// Every member of any shard this node holds, and, when shards are
    /// placed on some nodes only, every node of the layout: node id → peer
    /// address.
    pub fn member_addrs(&self) -> BTreeMap<NodeId, String> {
        let mut members = BTreeMap::new();
        if !self.layout.is_full() {
            members.extend(self.directory.peers());
            members.extend(
                self.layout
                    .voters
                    .values()
                    .flat_map(|voters| voters.iter().map(|(id, addr)| (*id, addr.clone()))),
            );
        }
        for shard in self.held().iter() {
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
        self.routing.shard_of(queue)
    }

    /// How many shards the cluster has now.
    pub fn shard_count(&self) -> u32 {
        self.routing.shard_count()
    }

    /// Every shard of the cluster, held here or not.
    pub fn shard_ids(&self) -> std::ops::Range<u32> {
        0..self.shard_count()
    }

    pub fn holds_every_shard(&self) -> bool {
        self.held().len() as u32 == self.shard_count()
    }

    /// The shards this node holds now, sorted by id.
    pub fn held(&self) -> Arc<[Arc<ShardHandle>]> {
        self.shards.get()
    }

    /// Resolves each time a replica is opened or dropped here.
    pub fn held_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.shards.changed.subscribe()
    }

    /// Adds a replica opened for a move.
    pub(crate) fn hold(&self, shard: ShardHandle) {
        let id = shard.id;
        self.shards.update(|held| {
            held.retain(|s| s.id != id);
            held.push(Arc::new(shard));
        });
    }

    /// Stops serving a replica that is being dropped; returns it.
    pub(crate) fn release(&self, id: u32) -> Option<Arc<ShardHandle>> {
        let mut released = None;
        self.shards.update(|held| {
            if let Some(i) = held.iter().position(|s| s.id == id) {
                released = Some(held.remove(i));
            }
        });
        released
    }

    /// The shard `id`, when this node holds it.
    pub fn local(&self, id: u32) -> Option<Arc<ShardHandle>> {
        let held = self.held();
        held.binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| held[i].clone())
    }

    /// The shard `id`, which must be held here.
    pub fn shard(&self, id: u32) -> Result<Arc<ShardHandle>, Status> {
        self.exists(id)?;
        self.local(id).ok_or_else(|| {
            let voters: Vec<_> = match self.directory.remote_shard(id) {
                Some(remote) => remote.members,
                None => self
                    .layout
                    .voters
                    .get(&id)
                    .map(|v| v.keys().copied().collect())
                    .unwrap_or_default(),
            };
            Status::failed_precondition(format!(
                "shard {id} is not on node {} (its members are nodes {voters:?}); ask one of them",
                self.id
            ))
        })
    }

    fn exists(&self, id: u32) -> Result<(), Status> {
        // A shard created since this node last heard of the routing is
        // held here or known to its peers already.
        if id < self.shard_count()
            || self.local(id).is_some()
            || self.directory.remote_shard(id).is_some()
        {
            return Ok(());
        }
        Err(Status::invalid_argument(format!(
            "shard {id} does not exist (this cluster has {} shard(s)); check the job id",
            self.shard_count()
        )))
    }

    /// Where a request on `queue` goes.
    pub fn route_queue<T>(&self, queue: &str, request: &Request<T>) -> Result<Route, Status> {
        self.route_queue_as(queue, forward::Arrival::of(request.metadata()))
    }

    /// Like [`NodeContext::route_queue`], for a request that arrived as
    /// `arrival` says.
    pub fn route_queue_as(&self, queue: &str, arrival: forward::Arrival) -> Result<Route, Status> {
        let (shard, pinned_away) = self.routing.place(queue);
        // A client routing by the hash alone sent a pinned queue to the
        // wrong shard's leader: telling it where that shard's leader is
        // would not change where it sends the retry, so it is forwarded.
        let arrival = match arrival {
            forward::Arrival::Direct if pinned_away => forward::Arrival::Client,
            arrival => arrival,
        };
        self.route_as(shard, arrival)
    }

    pub fn route<T>(&self, shard: u32, request: &Request<T>) -> Result<Route, Status> {
        self.route_as(shard, forward::Arrival::of(request.metadata()))
    }

    /// Like [`NodeContext::route`], for a request that arrived as
    /// `arrival` says: one from another node is never forwarded again, nor
    /// one a client sent straight to the leader it knows (it is told where
    /// the leader is instead).
    pub fn route_as(&self, shard: u32, arrival: forward::Arrival) -> Result<Route, Status> {
        self.exists(shard)?;
        let Some(handle) = self.local(shard) else {
            return self.route_elsewhere(shard, arrival);
        };
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
                        let (term, epoch) = {
                            let metrics = handle.raft.metrics();
                            let m = metrics.borrow();
                            let epoch = m.membership_config.log_id().map_or(0, |l| l.index);
                            (m.current_term, epoch)
                        };
                        return Err(forward::not_leader(
                            self.id,
                            forward::LeaderHint {
                                shard,
                                leader: l,
                                leader_addr: self.directory.client_addr(l),
                                term,
                                epoch,
                                routing_version: self.routing.version(),
                            },
                        ));
                    }
                    forward::Arrival::Client => {}
                }
                self.count_forward(shard);
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

    /// Where a request for a shard held by other nodes goes: to its
    /// leader, as the [`Directory`] last heard.
    fn route_elsewhere(&self, shard: u32, arrival: forward::Arrival) -> Result<Route, Status> {
        let Some(remote) = self.directory.remote_shard(shard) else {
            return Err(Status::unavailable(format!(
                "shard {shard} is held by other nodes and node {} has not yet heard who leads it; retry shortly",
                self.id
            )));
        };
        match arrival {
            forward::Arrival::Forwarded => Err(Status::unavailable(format!(
                "shard {shard} is not on node {} (it was forwarded here by a node with an old view); retry",
                self.id
            ))),
            forward::Arrival::Direct => Err(forward::not_leader(
                self.id,
                forward::LeaderHint {
                    shard,
                    leader: remote.leader,
                    leader_addr: self.directory.client_addr(remote.leader),
                    term: remote.term,
                    epoch: remote.epoch,
                    routing_version: self.routing.version(),
                },
            )),
            forward::Arrival::Client => Ok(Route::Leader(Leader {
                node: remote.leader,
                channel: self.peer(&remote.leader_peer_addr)?,
                addr: remote.leader_peer_addr,
            }))
            .inspect(|_| self.count_forward(shard)),
        }
    }

    fn count_forward(&self, shard: u32) {
        if let Some(count) = self.forwarded.get(shard as usize) {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Requests for `shard` this node forwarded to its leader.
    pub fn forwarded(&self, shard: u32) -> u64 {
        self.forwarded
            .get(shard as usize)
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
    }
}
