//! Where clients reach each member: node id → client address, for the
//! shard map. This node's own comes from its config; the others' are asked
//! of them (`ClusterAdmin.Status` on their peer port, as this node) when
//! they join a shard's membership and every [`REFRESH`] after, so an
//! address that changes with a restart is picked up.
//!
//! Owns only the address book; never changes membership or routes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raftq_api::v1 as pb;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;

use crate::context::NodeContext;
use crate::raft_types::NodeId;

/// How often every member is asked again.
const REFRESH: Duration = Duration::from_secs(30);
/// How often the membership is looked at for members not asked yet.
const LOOK: Duration = Duration::from_secs(1);
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct Directory {
    known: RwLock<BTreeMap<NodeId, String>>,
}

impl Directory {
    pub fn with_own(id: NodeId, client_addr: &str) -> Directory {
        let directory = Directory::default();
        directory.set(id, client_addr.to_string());
        directory
    }

    pub fn client_addr(&self, id: NodeId) -> Option<String> {
        self.read().get(&id).cloned()
    }

    pub fn all(&self) -> BTreeMap<NodeId, String> {
        self.read().clone()
    }

    fn set(&self, id: NodeId, addr: String) {
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, addr);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, String>> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps `ctx.directory` filled while the node runs.
pub async fn run(ctx: Arc<NodeContext>) {
    let mut asked: BTreeMap<NodeId, tokio::time::Instant> = BTreeMap::new();
    loop {
        let now = tokio::time::Instant::now();
        let due: Vec<(NodeId, String)> = ctx
            .member_addrs()
            .into_iter()
            .filter(|(id, _)| *id != ctx.id)
            .filter(|(id, _)| asked.get(id).is_none_or(|at| now >= *at + REFRESH))
            .collect();
        for (id, peer_addr) in due {
            match ask(&ctx, &peer_addr).await {
                Ok(status) if status.node_id == id && !status.client_addr.is_empty() => {
                    ctx.directory.set(id, status.client_addr);
                    asked.insert(id, now);
                }
                Ok(status) => {
                    tracing::debug!(node = id, %peer_addr, answered = status.node_id, "a member's status named another node");
                }
                // Asked again at the next look: it may be starting.
                Err(e) => {
                    tracing::debug!(node = id, %peer_addr, error = %e, "could not ask a member for its client address")
                }
            }
        }
        tokio::time::sleep(LOOK).await;
    }
}

async fn ask(ctx: &NodeContext, peer_addr: &str) -> Result<pb::ClusterStatus, tonic::Status> {
    let mut client = ClusterAdminClient::new(ctx.peer(peer_addr)?);
    let call = client.status(pb::ClusterStatusRequest {});
    match tokio::time::timeout(ASK_TIMEOUT, call).await {
        Ok(answer) => answer.map(|r| r.into_inner()),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}
