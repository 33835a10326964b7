//! Forwarding a request to the node that leads its shard: the one place
//! that builds a leader client, so every forward has the server's message
//! limits and every way a forward can fail reaches the caller as
//! `UNAVAILABLE` (retry), never as tonic's `UNKNOWN "transport error"`.
//!
//! Forwards go to the leader's peer port. A forwarded request carries the
//! caller the forwarding node verified (the leader checks its permissions
//! again), and [`FORWARDED`] so it is never forwarded a second time; an all-shard read forwarded for one shard also carries
//! [`SHARD`], so the leader answers for that shard only.

use raftq_api::limits::MAX_MESSAGE_BYTES;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
use raftq_api::v1::queue_admin_client::QueueAdminClient;
use raftq_api::v1::queue_client::QueueClient;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::raft_types::NodeId;
use crate::security::Caller;

/// Set on forwarded requests so they are never forwarded twice.
const FORWARDED: &str = "x-raftq-forwarded";
/// Set by a client that routes by the shard map: `direct` asks for the
/// leader's address instead of a forward.
const ROUTE: &str = "x-raftq-route";
/// Trailers of a "not the leader" answer to a direct request.
pub const LEADER_ID: &str = "x-raftq-leader-id";
pub const LEADER_ADDR: &str = "x-raftq-leader-addr";
pub const LEADER_TERM: &str = "x-raftq-leader-term";
pub const LEADER_SHARD: &str = "x-raftq-leader-shard";
/// The shard's membership epoch as the answering node knows it (see
/// `ShardRoute.epoch`).
pub const LEADER_EPOCH: &str = "x-raftq-leader-epoch";
/// The version of the queue routing the answering node has (see
/// `ShardMap.routing_version`): a client with an older one reads the map
/// again.
pub const ROUTING_VERSION: &str = "x-raftq-routing-version";

/// Where a shard's leader is, as a node that does not lead it knows.
pub struct LeaderHint {
    pub shard: u32,
    pub leader: NodeId,
    pub leader_addr: Option<String>,
    pub term: u64,
    pub epoch: u64,
    pub routing_version: u64,
}

/// How a request reached this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// From a client that lets any node forward it.
    Client,
    /// From a client that sent it to the leader its shard map names.
    Direct,
    /// From another node.
    Forwarded,
}

impl Arrival {
    pub fn of(metadata: &MetadataMap) -> Arrival {
        if is_forwarded(metadata) {
            Arrival::Forwarded
        } else if metadata
            .get(ROUTE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"direct"))
        {
            Arrival::Direct
        } else {
            Arrival::Client
        }
    }
}

/// The answer to a direct request on a node that does not lead its shard:
/// `UNAVAILABLE`, with the leader in the trailers for the client's map.
pub fn not_leader(own: NodeId, hint: LeaderHint) -> Status {
    let LeaderHint {
        shard,
        leader,
        leader_addr,
        term,
        epoch,
        routing_version,
    } = hint;
    let mut trailers = MetadataMap::new();
    trailers.insert(LEADER_ID, MetadataValue::from(leader));
    trailers.insert(LEADER_TERM, MetadataValue::from(term));
    trailers.insert(LEADER_SHARD, MetadataValue::from(shard));
    trailers.insert(LEADER_EPOCH, MetadataValue::from(epoch));
    trailers.insert(ROUTING_VERSION, MetadataValue::from(routing_version));
    let addr = leader_addr.and_then(|a| MetadataValue::try_from(a.as_str()).ok().map(|v| (a, v)));
    let whereabouts = match addr {
        Some((text, value)) => {
            trailers.insert(LEADER_ADDR, value);
            format!("node {leader} at {text}")
        }
        None => format!("node {leader} (its client address is not known here yet)"),
    };
    Status::with_metadata(
        tonic::Code::Unavailable,
        format!(
            "node {own} does not lead shard {shard}: its leader is {whereabouts}, term {term}; \
             send the request there (or without `x-raftq-route: direct` to have it forwarded)"
        ),
        trailers,
    )
}
/// On a forwarded all-shard read: the one shard the leader answers for.
const SHARD: &str = "x-raftq-shard";

/// The leader of a shard, as this node knows it.
#[derive(Clone)]
pub struct Leader {
    pub node: NodeId,
    pub addr: String,
    pub(crate) channel: Channel,
}

impl Leader {
    pub fn queue(&self) -> QueueClient<Channel> {
        QueueClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn admin(&self) -> QueueAdminClient<Channel> {
        QueueAdminClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn cluster(&self) -> ClusterAdminClient<Channel> {
        ClusterAdminClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Awaits a forwarded call and passes the leader's answer through; a
    /// failure of the forward itself becomes `UNAVAILABLE`.
    pub async fn relay<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        call.await.map_err(|status| self.failed(status))
    }

    /// The leader's own statuses pass unchanged. A status tonic made from
    /// a transport error (connection refused or reset, a stream cut by the
    /// leader's death) carries that error as its source, or is one of the
    /// codes a leader never answers with (tonic's UNKNOWN "transport
    /// error", INTERNAL "Unexpected EOF", CANCELLED): it means nothing about
    /// the request except that it must be retried.
    pub fn failed(&self, status: Status) -> Status {
        let broken = std::error::Error::source(&status).is_some()
            || matches!(
                status.code(),
                tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled
            );
        if !broken {
            return status;
        }
        Status::unavailable(format!(
            "forwarding to the shard leader (node {} at {}) failed: {}; retry (the request may or may not have taken effect; enqueues with an idempotency key are safe to retry)",
            self.node,
            self.addr,
            status.message()
        ))
    }
}

pub fn is_forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(FORWARDED)
}

/// The shard a forwarded all-shard read is for.
pub fn forwarded_shard(metadata: &MetadataMap) -> Option<u32> {
    if !is_forwarded(metadata) {
        return None;
    }
    metadata.get(SHARD)?.to_str().ok()?.parse().ok()
}

/// The forwarded copy of a request, made for `caller` (whom the leader
/// checks again).
pub fn forwarded<T>(message: T, caller: &Caller) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(FORWARDED, MetadataValue::from_static("1"));
    caller.stamp(metadata);
    request
}

/// The forwarded copy of an all-shard read, for `shard` only.
pub fn forwarded_for_shard<T>(message: T, shard: u32, caller: &Caller) -> Request<T> {
    let mut request = forwarded(message, caller);
    request
        .metadata_mut()
        .insert(SHARD, MetadataValue::from(shard));
    request
}
