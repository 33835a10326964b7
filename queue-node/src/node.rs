//! Wires a node together: storage, one Raft group per shard, the batchers,
//! the timer ticker and the gRPC server; and shuts it down.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::BasicNode;
use raftq_api::keda::external_scaler_server::ExternalScalerServer;
use raftq_api::limits::MAX_MESSAGE_BYTES;
use raftq_api::v1::cluster_admin_server::ClusterAdminServer;
use raftq_api::v1::queue_admin_server::QueueAdminServer;
use raftq_api::v1::queue_server::QueueServer;
use raftq_api::v1::raft_transport_server::RaftTransportServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::context::{NodeContext, NodeIdentity};
use crate::layout::Layout;
use crate::memory::{Budgets, MemoryBudget};
use crate::network::TransportService;
use crate::raft_types::NodeId;
use crate::security::{Port, Security};
use crate::service::{ClusterService, QueueAdminService, QueueService, ScalerService};
use crate::store::{health, watermark, ContentCache, Store, StoreMemory};

/// A running node.
pub struct NodeHandle {
    /// The client port: `Queue` and `QueueAdmin`.
    pub addr: SocketAddr,
    /// The peer port: Raft, `ClusterAdmin`, forwarded requests.
    pub peer_addr: SocketAddr,
    db: std::sync::Weak<rocksdb::DB>,
    data_dir: std::path::PathBuf,
    pub context: Arc<NodeContext>,
    /// Where the HTTP endpoints listen, when enabled.
    pub http_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    server: ServerTask,
    peer_server: ServerTask,
    reload: JoinHandle<()>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    watermark: JoinHandle<()>,
    balancer: Option<JoinHandle<()>>,
    /// Samples the queues for the console's charts.
    sampler: Option<JoinHandle<()>>,
    /// Learns the members' client addresses for the shard map.
    directory: Option<JoinHandle<()>>,
    /// Follows the queue routing in this node's replica of shard 0.
    routing: Option<JoinHandle<()>>,
    /// Moves replicas toward the declared nodes (when this node leads the
    /// metadata shard).
    coordinator: Option<JoinHandle<()>>,
}

impl NodeHandle {
    /// Stops serving, then stops Raft.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // In-flight calls finish; a connection that never sends anything
        // (it would be held until the idle timeout) does not hold the
        // shutdown up beyond SERVER_DRAIN.
        let served = drain(&mut self.server, "client").await;
        let peer_served = drain(&mut self.peer_server, "peer").await;
        self.reload.abort();
        if let Some(http) = self.http.take() {
            http.abort();
        }
        self.watermark.abort();
        for task in [
            self.sampler.take(),
            self.directory.take(),
            self.routing.take(),
            self.coordinator.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
            let _ = task.await;
        }
        self.context.coordinator.stop_all();
        if let Some(balancer) = self.balancer.take() {
            balancer.abort();
            let _ = balancer.await;
        }
        for shard in self.context.held().iter() {
            let _ = shard.raft.shutdown().await;
        }
        drop(self.context);
        // openraft's storage tasks wind down on their own after shutdown;
        // the data dir is free once the last of them dropped the database.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.db.strong_count() > 0 {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("storage still open 10s after shutdown");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        served.context("gRPC server task")?.context("gRPC server")?;
        peer_served
            .context("peer gRPC server task")?
            .context("peer gRPC server")?;
        Ok(())
    }

    /// Runs until the server stops by itself (it only stops on error), a
    /// shard's Raft stops on a fatal error, or RocksDB stops taking writes
    /// (a failed disk, say): a node that cannot serve a shard must exit so
    /// that it is restarted, not linger.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        tokio::select! {
            served = &mut self.server => served
                .context("gRPC server task")?
                .context("gRPC server"),
            served = &mut self.peer_server => served
                .context("peer gRPC server task")?
                .context("peer gRPC server"),
            failure = shard_failure(&self.context) => Err(failure),
            failure = health::storage_failure(self.db.clone(), self.data_dir.clone()) => {
                Err(anyhow::anyhow!(failure))
            }
        }
    }
}

/// How long a stopping node waits for its connections to close.
const SERVER_DRAIN: Duration = Duration::from_secs(10);

type ServerTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// Waits for a server stopped by its shutdown signal, at most
/// [`SERVER_DRAIN`]; then drops the connections still open.
async fn drain(
    server: &mut ServerTask,
    port: &str,
) -> Result<Result<(), tonic::transport::Error>, tokio::task::JoinError> {
    match tokio::time::timeout(SERVER_DRAIN, &mut *server).await {
        Ok(served) => served,
        Err(_) => {
            tracing::warn!(
                port,
                "connections still open {SERVER_DRAIN:?} after shutdown; closing them"
            );
            server.abort();
            Ok(Ok(()))
        }
    }
}

/// Resolves when the first shard's Raft stops with a fatal error (a
/// replica dropped by a move stops without one).
async fn shard_failure(context: &NodeContext) -> anyhow::Error {
    let mut changes = context.held_changes();
    loop {
        changes.borrow_and_update();
        let watches: Vec<_> = context
            .held()
            .iter()
            .map(|shard| {
                let mut metrics = shard.raft.metrics();
                let id = shard.id;
                Box::pin(async move {
                    // A replica a move dropped stops too, and is no
                    // longer held: that is no failure.
                    let held = || context.local(id).is_some();
                    loop {
                        if let Err(fatal) = &metrics.borrow_and_update().running_state {
                            return held().then(|| anyhow::anyhow!("shard {id} stopped: {fatal}"));
                        }
                        if metrics.changed().await.is_err() {
                            return held().then(|| anyhow::anyhow!("shard {id} stopped"));
                        }
                    }
                })
            })
            .collect();
        let failed = async {
            if watches.is_empty() {
                return std::future::pending().await;
            }
            futures::future::select_all(watches).await.0
        };
        tokio::select! {
            failed = failed => if let Some(failure) = failed { return failure },
            changed = changes.changed() => if changed.is_err() {
                return std::future::pending().await;
            },
        }
    }
}

/// A task that ends if start-up fails before handing it over.
struct TaskGuard<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> TaskGuard<T> {
    fn keep(mut self) -> Option<tokio::task::JoinHandle<T>> {
        self.0.take()
    }
}

impl<T> Drop for TaskGuard<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

pub async fn start(config: NodeConfig) -> anyhow::Result<NodeHandle> {
    config.validate()?;
    let exposure = crate::security::exposure::check(&config)?;
    let security = Arc::new(
        Security::new(
            config.tls.clone(),
            config.auth.clone(),
            config.limits.clone(),
        )
        .context("loading TLS and auth settings")?,
    );
    let layout = Layout::new(
        &initial_voters(&config, config.advertise.as_deref()),
        config.shards,
        config.replication_factor,
    )?;
    let placed = layout.shards_of(config.node_id);
    // The budgets are shared by the replicas this node holds now or is
    // likely to hold once the coordinator evens them out.
    let nodes = layout.nodes().len().max(1) as u32;
    let even_share = layout
        .replication_factor
        .map_or(config.shards, |f| (config.shards * f).div_ceil(nodes));
    let held_count = (placed.len() as u32).max(even_share).max(1);
    let budgets = Budgets::resolve(&config.memory, crate::memory::memory_limit(), held_count);
    tracing::info!(?budgets, "memory budgets");
    let store = Store::open(
        &config.data_dir,
        config.durability,
        StoreMemory {
            block_cache_bytes: budgets.block_cache as usize,
            memtable_bytes: budgets.memtables as usize,
        },
    )?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let peer_listener = TcpListener::bind(&config.peer_listen)
        .await
        .with_context(|| format!("cannot listen on {} (peer_listen)", config.peer_listen))?;
    let peer_addr = peer_listener.local_addr()?;
    let http_listener = match &config.http_listen {
        Some(http) => Some(
            TcpListener::bind(http)
                .await
                .with_context(|| format!("cannot listen on {http} (http_listen)"))?,
        ),
        None => None,
    };
    // Up before the shards load: a rebuild of a large backlog takes minutes,
    // and a liveness probe must see a live process all along.
    let http_state = Arc::new(crate::http::HttpState::new(exposure.clone()));
    http_state.starting("opening the data directory");
    let (http_addr, http) = match http_listener {
        Some(l) => (
            Some(l.local_addr()?),
            Some(TaskGuard(Some(tokio::spawn(crate::http::serve(
                l,
                http_state.clone(),
            ))))),
        ),
        None => (None, None),
    };
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| peer_addr.to_string());
    let defaults = config.queue_defaults.to_defaults();

    crate::store::format::check_data_dir(&store)?;
    store.check_shard_count(config.shards)?;
    store.check_replication_factor(config.replication_factor)?;
    let watermark = watermark::read(&config.data_dir)?;
    // The layout places a new node's shards; moves change them after.
    let held = match store.held_shards()? {
        Some(held) => held,
        None => {
            store.put_held_shards(&placed)?;
            placed
        }
    };
    let content_cache = Arc::new(ContentCache::new(budgets.content_cache as usize));
    let replicas = crate::replicas::ReplicaFactory::new(
        &config,
        crate::replicas::ReplicaResources {
            store: store.clone(),
            content_cache: content_cache.clone(),
            dialer: security.dialer.clone(),
            pending_writes: budgets.pending_writes_per_shard(held_count),
            log_cache: budgets.log_cache_per_shard(held_count),
        },
    );
    let mut shards = Vec::new();
    for (nth, &id) in held.iter().enumerate() {
        http_state.starting(format!(
            "rebuilding the job index of shard {id} ({} of {})",
            nth + 1,
            held.len()
        ));
        shards.push(replicas.open(id, Some(&watermark)).await?);
    }

    let identity = NodeIdentity {
        id: config.node_id,
        addr: advertise.clone(),
        client_addr: config
            .client_advertise
            .clone()
            .unwrap_or_else(|| addr.to_string()),
        joining: config.joins(),
        initial_members: config
            .initial_members
            .values()
            .cloned()
            .chain([advertise.clone()])
            .collect(),
    };
    let context = Arc::new(NodeContext::new(
        identity,
        layout,
        shards,
        replicas,
        defaults,
        MemoryBudget {
            index_bytes: budgets.index,
            content_cache: content_cache.clone(),
            block_cache_bytes: budgets.block_cache,
            memtable_bytes: budgets.memtables,
            log_cache_bytes: budgets.log_cache,
            requests: crate::memory::RequestBudget::new(budgets.requests),
            store: store.clone(),
        },
        security.clone(),
    ));

    let held_now = {
        let context = Arc::downgrade(&context);
        move || {
            context.upgrade().map_or_else(Vec::new, |c| {
                c.held().iter().map(|s| (s.id, s.shared.clone())).collect()
            })
        }
    };
    let watermark_task = tokio::spawn(watermark::run(
        store.clone(),
        config.data_dir.clone(),
        held_now,
    ));

    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = futures::FutureExt::shared(async {
        let _ = stopped.await;
    });
    let limits = &config.limits;
    let server = || {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_adaptive_window(Some(true))
            .max_concurrent_streams(Some(limits.max_streams_per_connection))
            .http2_keepalive_interval(Some(Duration::from_millis(limits.keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(Duration::from_millis(limits.keepalive_timeout_ms)))
            .layer(crate::security::over_limit::OverLimitLayer)
    };
    let queue = |port| {
        QueueServer::new(QueueService::new(context.clone(), port))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    };
    let admin = |port| {
        QueueAdminServer::new(QueueAdminService::new(context.clone(), port))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    };
    let history = Arc::new(crate::history::History::new(Duration::from_millis(
        config.console.sample_every_ms,
    )));
    let sampler = TaskGuard(Some(tokio::spawn(history.clone().run(context.clone()))));
    let directory = TaskGuard(Some(tokio::spawn(crate::directory::run(context.clone()))));
    let routing = TaskGuard(Some(tokio::spawn(crate::grow::follow_local(
        context.clone(),
    ))));
    let rest = crate::rest::router(Arc::new(crate::rest::Rest::new(
        context.clone(),
        history,
        crate::rest::ConsoleOptions {
            enabled: config.console.enabled,
            read_only: config.console.read_only,
        },
    )));
    // gRPC, and beside it REST and the console over HTTP/1.1 or HTTP/2.
    let client_routes = tonic::service::Routes::from(rest)
        .add_service(queue(Port::Client))
        .add_service(admin(Port::Client))
        .add_service(ExternalScalerServer::new(ScalerService::new(
            QueueAdminService::new(context.clone(), Port::Client),
        )));
    let client_router = server().accept_http1(true).add_routes(client_routes);
    let peer_message_bytes =
        usize::try_from(limits.peer_message_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    // Forwarded requests come in on the peer port.
    let peer_router = server()
        .add_service(queue(Port::Peer))
        .add_service(admin(Port::Peer))
        .add_service(ClusterAdminServer::new(ClusterService::new(
            context.clone(),
        )))
        .add_service(
            RaftTransportServer::new(TransportService {
                ctx: context.clone(),
            })
            .max_decoding_message_size(peer_message_bytes)
            .max_encoding_message_size(peer_message_bytes),
        );
    let incoming = |listener, port, stats| {
        crate::security::listener::incoming(listener, port, security.tls.clone(), limits, stats)
    };
    let server = tokio::spawn(client_router.serve_with_incoming_shutdown(
        incoming(listener, Port::Client, security.client_conns.clone()),
        stopped.clone(),
    ));
    let peer_server = tokio::spawn(peer_router.serve_with_incoming_shutdown(
        incoming(peer_listener, Port::Peer, security.peer_conns.clone()),
        stopped,
    ));
    let reload = tokio::spawn(security.clone().watch(RELOAD_EVERY));

    http_state.started(context.clone());

    if config.joins() {
        tracing::info!(
            "joining an existing cluster: waiting to be added, or for replicas to be moved here"
        );
    } else {
        bootstrap(&context, &config, &advertise, &store).await?;
    }
    let coordinator = context.layout.replication_factor.map(|_| {
        let ctx = context.clone();
        TaskGuard(Some(tokio::spawn(async move {
            tokio::join!(
                crate::coordinator::run(ctx.clone(), COORDINATE_EVERY),
                crate::replicas::collect_leftovers(ctx.clone(), LEFTOVERS_EVERY),
            );
        })))
    });
    let balancer = (config.raft.leader_balance_every_ms > 0).then(|| {
        tokio::spawn(crate::handoff::balance(
            context.clone(),
            Duration::from_millis(config.raft.leader_balance_every_ms),
        ))
    });
    tracing::info!(node_id = config.node_id, %addr, %peer_addr, advertise, tls = security.tls.is_some(), auth = security.auth_enabled(), data_dir = %config.data_dir.display(), "queue-node started");
    Ok(NodeHandle {
        addr,
        peer_addr,
        db: store.weak(),
        data_dir: config.data_dir.clone(),
        context,
        http_addr,
        stop: Some(stop),
        server,
        peer_server,
        reload,
        http: http.and_then(TaskGuard::keep),
        watermark: watermark_task,
        balancer,
        sampler: sampler.keep(),
        directory: directory.keep(),
        routing: routing.keep(),
        coordinator: coordinator.and_then(TaskGuard::keep),
    })
}

/// How often the placement coordinator compares placement with its target.
const COORDINATE_EVERY: Duration = Duration::from_secs(1);
/// How often a node looks for copies of shards it was moved off.
const LEFTOVERS_EVERY: Duration = Duration::from_secs(5);

/// How often certificates and the auth file are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The voters of a new cluster: `initial_members`, or this node alone.
/// Before binding, this node's own address may not be known yet; the
/// layout needs only the ids, and [`bootstrap`] the real addresses.
fn initial_voters(config: &NodeConfig, advertise: Option<&str>) -> BTreeMap<NodeId, String> {
    if config.initial_members.is_empty() {
        [(config.node_id, advertise.unwrap_or_default().to_string())].into()
    } else {
        config.initial_members.clone()
    }
}

/// Initialises each shard of a brand-new cluster exactly once: from the
/// lowest-id voter the layout placed it on (this node alone when no
/// initial members are given). Only the layout's shards, and only until it
/// has once succeeded: a replica opened later for a move or a new shard
/// is empty until its group fills it, and initialising it at a restart
/// would make it a second group of its own.
async fn bootstrap(
    context: &NodeContext,
    config: &NodeConfig,
    advertise: &str,
    store: &Store,
) -> anyhow::Result<()> {
    if store.bootstrapped()? {
        return Ok(());
    }
    for shard in context.held().iter() {
        let Some(voters) = context.layout.voters.get(&shard.id) else {
            continue;
        };
        let members: BTreeMap<NodeId, BasicNode> = if config.initial_members.is_empty() {
            [(config.node_id, BasicNode::new(advertise))].into()
        } else {
            voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect()
        };
        if members.keys().next() != Some(&config.node_id) {
            continue;
        }
        if shard.raft.is_initialized().await? {
            continue;
        }
        match shard.raft.initialize(members.clone()).await {
            Ok(()) => {
                tracing::info!(shard = shard.id, members = ?members.keys(), "initialised cluster")
            }
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => {}
            Err(e) => return Err(e).context("initialising the cluster"),
        }
    }
    store.put_bootstrapped()?;
    Ok(())
}
