//! This node's replicas of shards: opening one (at start, or empty for a
//! move to fill) and dropping one a move took away.
//!
//! Owns the held-shards record in the data dir and each replica's
//! lifecycle (Raft, batcher, ticker). Decides nothing about placement: a
//! replica is opened or dropped when a move asks (see [`crate::mover`]),
//! and a drop only once the shard's leader confirms this node is no member.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use raftq_api::v1 as pb;

use crate::batcher::Batcher;
use crate::config::NodeConfig;
use crate::context::{NodeContext, ShardHandle};
use crate::network::NetworkFactory;
use crate::ops::QueueDefaults;
use crate::raft_types::Raft;
use crate::security::dial::Dialer;
use crate::store::log_store::LogStore;
use crate::store::state_machine::StateMachineStore;
use crate::store::{watermark, ContentCache, Contents, Store};

/// Opens replicas: what every replica of this node shares.
pub struct ReplicaFactory {
    config: NodeConfig,
    store: Store,
    content_cache: Arc<ContentCache>,
    dialer: Dialer,
    /// Paces the snapshots every replica here sends.
    pacer: Arc<crate::pacer::SnapshotPacer>,
    defaults: QueueDefaults,
    /// Each replica's share of the pending-writes and log-cache budgets.
    pending_writes: usize,
    log_cache: usize,
    /// One open or drop at a time, so the held record follows them in order.
    changing: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("{0:#}")]
    Open(anyhow::Error),
    #[error("recording the shards this node holds: {0}")]
    Record(#[from] crate::store::db::OpenError),
    #[error("deleting the copy of shard {shard}: {source}")]
    Delete {
        shard: u32,
        source: crate::store::db::DeleteShardError,
    },
    #[error("node {node} leads shard {shard}: hand its leadership over and remove it from the voters first")]
    Leads { node: u64, shard: u32 },
    #[error("node {node} is still a member of shard {shard} (as its leader, node {leader}, says): change the shard's membership first")]
    StillMember { node: u64, shard: u32, leader: u64 },
    #[error("no leader of shard {shard} confirmed that node {node} is no member of it ({why}); its copy is kept")]
    Unconfirmed { node: u64, shard: u32, why: String },
}

impl ReplicaError {
    pub fn status(&self) -> tonic::Status {
        match self {
            ReplicaError::Leads { .. }
            | ReplicaError::StillMember { .. }
            | ReplicaError::Unconfirmed { .. } => {
                tonic::Status::failed_precondition(self.to_string())
            }
            _ => tonic::Status::internal(self.to_string()),
        }
    }
}

/// What [`ReplicaFactory::new`] needs besides the config.
pub struct ReplicaResources {
    pub store: Store,
    pub content_cache: Arc<ContentCache>,
    pub dialer: Dialer,
    pub pending_writes: usize,
    pub log_cache: usize,
}

impl ReplicaFactory {
    pub fn new(config: &NodeConfig, resources: ReplicaResources) -> ReplicaFactory {
        ReplicaFactory {
            defaults: config.queue_defaults.to_defaults(),
            config: config.clone(),
            store: resources.store,
            content_cache: resources.content_cache,
            dialer: resources.dialer,
            pacer: Arc::new(crate::pacer::SnapshotPacer::new(
                config.raft.snapshot_send_mib_per_sec,
            )),
            pending_writes: resources.pending_writes,
            log_cache: resources.log_cache,
            changing: tokio::sync::Mutex::new(()),
        }
    }

    /// Opens this node's replica of shard `id` from what the data dir holds
    /// (nothing, for a new one). `watermark` is checked when given: at
    /// start, a replica must reach as far as the node once had it.
    pub async fn open(
        &self,
        id: u32,
        watermark: Option<&BTreeMap<u32, u64>>,
    ) -> anyhow::Result<ShardHandle> {
        let raft_config = Arc::new(shard_raft_config(&self.config, id)?);
        // On a blocking thread: the rebuild reads every live job's record.
        let (sm, shared) = {
            let (store, cache) = (self.store.clone(), self.content_cache.clone());
            let pending = self.pending_writes;
            tokio::task::spawn_blocking(move || StateMachineStore::open(store, id, cache, pending))
                .await
                .context("loading the state machine")?
                .context("loading the state machine")?
        };
        let log = LogStore::new(self.store.clone(), id, shared.clone(), self.log_cache);
        if let Some(recorded) = watermark {
            // The state on disk may trail the log (state writes skip the
            // WAL and are re-applied from the log), so the log counts too.
            let last_log = log
                .last_index()
                .with_context(|| format!("reading shard {id}'s raft log"))?;
            watermark::verify(recorded, id, sm.applied_index().max(last_log))?;
        }
        let raft = Raft::new(
            self.config.node_id,
            raft_config,
            NetworkFactory::new(id, self.dialer.clone(), self.pacer.clone()),
            log,
            sm,
        )
        .await
        .with_context(|| format!("starting raft for shard {id}"))?;
        let batcher = Batcher::spawn(
            raft.clone(),
            self.config.batching.clone(),
            self.defaults,
            shared.clone(),
        );
        tokio::spawn(crate::ticker::run(
            raft.clone(),
            self.config.node_id,
            batcher.clone(),
            shared.clone(),
        ));
        Ok(ShardHandle {
            id,
            raft,
            batcher,
            shared,
            contents: Contents::new(self.store.clone(), self.content_cache.clone()),
        })
    }

    /// Records `held` as the shards this node holds.
    fn record(&self, held: impl Iterator<Item = u32>) -> Result<(), ReplicaError> {
        let held: Vec<u32> = held.collect();
        self.store.put_held_shards(&held)?;
        Ok(())
    }

    /// Deletes every trace of `shard` here (records, snapshots, its
    /// watermark line).
    async fn delete(&self, shard: u32) -> Result<(), ReplicaError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.delete_shard(shard))
            .await
            .map_err(|e| ReplicaError::Open(anyhow::anyhow!("delete task: {e}")))?
            .map_err(|source| ReplicaError::Delete { shard, source })?;
        watermark::forget(&self.config.data_dir, shard)
            .map_err(|e| ReplicaError::Open(anyhow::anyhow!("updating the watermark: {e}")))
    }
}

/// Opens an empty replica of `shard` on this node, for a move to fill:
/// false when this node holds it already. Leftovers of an earlier copy
/// (a drop cut short by a crash) are deleted first.
pub async fn open_for_move(ctx: &NodeContext, shard: u32) -> Result<bool, ReplicaError> {
    let factory = &ctx.replicas;
    let _one_at_a_time = factory.changing.lock().await;
    if ctx.local(shard).is_some() {
        return Ok(false);
    }
    factory.delete(shard).await?;
    // Recorded before it opens: a crash in between reopens it empty at
    // start, which a move can still fill; the other way round would leave
    // the leader replicating to a replica that is not there.
    factory.record(ctx.held().iter().map(|s| s.id).chain([shard]))?;
    let handle = factory
        .open(shard, None)
        .await
        .map_err(ReplicaError::Open)?;
    ctx.hold(handle);
    tracing::info!(shard, "opened an empty replica for a move");
    Ok(true)
}

/// Deletes this node's copy of `shard` once the shard's leader confirms
/// this node is no member of it: false when it holds no copy.
pub async fn drop_replica(ctx: &NodeContext, shard: u32) -> Result<bool, ReplicaError> {
    let factory = &ctx.replicas;
    let _one_at_a_time = factory.changing.lock().await;
    let Some(handle) = ctx.local(shard) else {
        return Ok(false);
    };
    confirm_not_member(ctx, &handle).await?;
    // Out of routing first, then stopped, recorded, and deleted.
    ctx.release(shard);
    if let Err(e) = handle.raft.shutdown().await {
        tracing::warn!(shard, error = %e, "stopping the dropped replica's raft");
    }
    factory.record(ctx.held().iter().map(|s| s.id))?;
    factory.delete(shard).await?;
    tracing::info!(shard, "dropped this node's copy");
    Ok(true)
}

/// Asks the members this replica knows which of them leads the shard, and
/// whether that leader still counts this node as a member.
async fn confirm_not_member(ctx: &NodeContext, handle: &ShardHandle) -> Result<(), ReplicaError> {
    let shard = handle.id;
    let members: Vec<(u64, String)> = {
        let metrics = handle.raft.metrics();
        let m = metrics.borrow();
        if m.current_leader == Some(ctx.id) {
            return Err(ReplicaError::Leads {
                node: ctx.id,
                shard,
            });
        }
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != ctx.id)
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    };
    let unconfirmed = |why: String| ReplicaError::Unconfirmed {
        node: ctx.id,
        shard,
        why,
    };
    let answers = futures::future::join_all(
        members
            .iter()
            .map(|(_, addr)| crate::directory::ask(ctx, addr)),
    )
    .await;
    let leader_view: Option<pb::ShardStatus> = answers
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|status| {
            let node = status.node_id;
            status
                .shards
                .into_iter()
                .find(|s| s.shard == shard && crate::mover::is_leaders_view(node, s))
        })
        .max_by_key(|s| s.term);
    let Some(view) = leader_view else {
        return Err(unconfirmed(format!(
            "none of nodes {:?} answered as its leader",
            members.iter().map(|(id, _)| *id).collect::<Vec<_>>()
        )));
    };
    if view.members.iter().any(|m| m.node_id == ctx.id) {
        return Err(ReplicaError::StillMember {
            node: ctx.id,
            shard,
            leader: view.leader_id,
        });
    }
    Ok(())
}

/// Raft settings of one shard. Every node has the same election timeouts:
/// a leadership hand-over relies on every voter's leader lease (its
/// maximum election timeout) running out at the same time.
fn shard_raft_config(config: &NodeConfig, shard: u32) -> anyhow::Result<openraft::Config> {
    let (min, max) = (
        config.raft.election_timeout_min_ms,
        config.raft.election_timeout_max_ms,
    );
    openraft::Config {
        cluster_name: format!("raftq-shard-{shard}"),
        heartbeat_interval: config.raft.heartbeat_ms,
        election_timeout_min: min,
        election_timeout_max: max,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
            config.raft.snapshot_every_entries,
        ),
        max_in_snapshot_log_to_keep: config.raft.logs_kept_after_snapshot,
        // openraft gives the last snapshot chunk 200 ms to be sent *and
        // installed*; a follower installing a shard of tens of megabytes
        // takes longer, timed out, and was sent the whole snapshot again,
        // for ever. Each chunk, and the install, gets 60 s.
        install_snapshot_timeout: 60_000,
        ..Default::default()
    }
    .validate()
    .with_context(|| format!("raft settings of shard {shard}"))
}

/// Deletes, now and then, the copies this node keeps of shards it was
/// moved off but could not be told to drop (it was down, or the drop
/// failed): a copy whose own membership no longer lists this node, or that
/// hears no leader, is dropped once the shard's leader confirms.
pub async fn collect_leftovers(ctx: std::sync::Arc<NodeContext>, every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        let suspects: Vec<u32> = ctx
            .held()
            .iter()
            .filter(|shard| {
                let metrics = shard.raft.metrics();
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                let initialized = membership.nodes().next().is_some();
                initialized
                    && (membership.get_node(&ctx.id).is_none() || m.current_leader.is_none())
            })
            .map(|shard| shard.id)
            .collect();
        for shard in suspects {
            match drop_replica(&ctx, shard).await {
                Ok(true) => tracing::info!(shard, "deleted a copy left behind by a move"),
                Ok(false) => {}
                Err(e) => tracing::debug!(shard, error = %e, "kept a copy"),
            }
        }
    }
}
