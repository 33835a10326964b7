//! Raft messages between nodes, over the `RaftTransport` gRPC service. The
//! openraft request and response structs travel postcard-encoded inside a
//! `RaftMessage` that names the shard.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use raftq_api::v1::raft_transport_client::RaftTransportClient;
use raftq_api::v1::raft_transport_server::RaftTransport;
use raftq_api::v1::{CampaignReply, CampaignRequest, RaftMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::context::NodeContext;
use crate::raft_types::{NodeId, Raft, TypeConfig};
use crate::security::dial::Dialer;
use crate::security::{Call, Port};
use crate::store::format;

/// Makes the clients one shard's Raft uses to reach its peers.
///
/// Small messages (votes, heartbeats: appends without entries) go over one
/// channel per peer address kept here: openraft asks for a new client for
/// every leadership check of a read-index and gives it one heartbeat
/// interval to answer, which a fresh connection's handshake alone could
/// exceed. Entries and snapshots go over a channel of the client's own, so
/// a large transfer never holds up the heartbeats behind it. A tonic
/// channel reconnects by itself when its peer restarts.
#[derive(Clone)]
pub struct NetworkFactory {
    shard: u32,
    dialer: Dialer,
    pacer: Arc<crate::pacer::SnapshotPacer>,
    control: Arc<std::sync::Mutex<std::collections::HashMap<String, Channel>>>,
}

impl NetworkFactory {
    pub fn new(
        shard: u32,
        dialer: Dialer,
        pacer: Arc<crate::pacer::SnapshotPacer>,
    ) -> NetworkFactory {
        NetworkFactory {
            shard,
            dialer,
            pacer,
            control: Arc::default(),
        }
    }

    fn control_channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let ch = self.dialer.channel(addr)?;
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

fn transport(ch: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(ch)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

pub struct PeerClient {
    shard: u32,
    target: NodeId,
    /// Shared with every client of this peer: small messages.
    control: Option<RaftTransportClient<Channel>>,
    /// This client's own connection, made on first use: entries, snapshots.
    bulk: Option<RaftTransportClient<Channel>>,
    addr: String,
    dialer: Dialer,
    pacer: Arc<crate::pacer::SnapshotPacer>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            shard: self.shard,
            target,
            control: self.control_channel(&node.addr).ok().map(transport),
            dialer: self.dialer.clone(),
            bulk: None,
            addr: node.addr.clone(),
            pacer: self.pacer.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(&mut self, kind: RpcKind, req: &Req) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(kind, data).await
    }

    async fn send<Resp, E>(&mut self, kind: RpcKind, data: Vec<u8>) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable =
            |msg: String| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg)));
        let client = match kind {
            RpcKind::Entries(_) | RpcKind::Snapshot => {
                if self.bulk.is_none() {
                    self.bulk = self.dialer.channel(&self.addr).ok().map(transport);
                }
                self.bulk.as_mut()
            }
            RpcKind::Heartbeat | RpcKind::Vote => self.control.as_mut(),
        };
        let Some(client) = client else {
            return Err(unreachable(format!(
                "bad address {:?} for node {}",
                self.addr, self.target
            )));
        };
        let msg = RaftMessage {
            shard: self.shard,
            data: data.into(),
            format: match kind {
                RpcKind::Snapshot => format::SNAPSHOT_FORMAT,
                RpcKind::Entries(format) => format,
                RpcKind::Heartbeat | RpcKind::Vote => format::BASE_ENTRY_FORMAT,
            },
        };
        let reply = match kind {
            RpcKind::Heartbeat | RpcKind::Entries(_) => client.append_entries(msg).await,
            RpcKind::Vote => client.vote(msg).await,
            RpcKind::Snapshot => client.install_snapshot(msg).await,
        }
        .map_err(|status| {
            unreachable(format!(
                "node {} at {}: {}",
                self.target,
                self.addr,
                status.message()
            ))
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

enum RpcKind {
    /// An append without entries.
    Heartbeat,
    /// In the format its entries need.
    Entries(u32),
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        // openraft sends up to 300 entries at once and gives the call one
        // heartbeat interval: a follower that fell behind by a few large
        // batches could never take them in time, and the same oversized
        // request was retried forever. Send what fits and report it as a
        // partial success; openraft sends the rest next.
        let keep = entries_within(&rpc.entries, MAX_APPEND_BYTES);
        if keep == rpc.entries.len() {
            let kind = match rpc.entries.is_empty() {
                true => RpcKind::Heartbeat,
                false => RpcKind::Entries(format::entries_format(&rpc.entries)),
            };
            return self.call(kind, &rpc).await;
        }
        rpc.entries.truncate(keep);
        let sent = rpc.entries.last().map(|e| e.log_id);
        let kind = RpcKind::Entries(format::entries_format(&rpc.entries));
        match self.call(kind, &rpc).await? {
            AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(sent)),
            other => Ok(other),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let data =
            encode_snapshot_chunk(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.pacer.pace(data.len()).await;
        self.send(RpcKind::Snapshot, data).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(RpcKind::Vote, &rpc).await
    }
}

/// Longest a hand-over may ask a node to wait before it stands.
const MAX_CAMPAIGN_WAIT_MS: u32 = 60_000;

/// Most bytes of entries (roughly) sent in one AppendEntries call.
const MAX_APPEND_BYTES: usize = 2 << 20;

/// How many of `entries`, from the first, fit in `budget` bytes (at least
/// one, so a single large entry still goes).
fn entries_within(entries: &[openraft::Entry<TypeConfig>], budget: usize) -> usize {
    let mut used = 0;
    for (i, entry) in entries.iter().enumerate() {
        let size = match &entry.payload {
            openraft::EntryPayload::Normal(batch) => {
                64 + batch.ops.iter().map(|op| op.size_hint()).sum::<usize>()
            }
            _ => 64,
        };
        if i > 0 && used + size > budget {
            return i;
        }
        used += size;
    }
    entries.len()
}

/// An InstallSnapshot request's fields other than the chunk's bytes.
///
/// On the wire a chunk is this header, postcard-encoded, followed by the
/// bytes as they are. postcard encodes a `Vec<u8>` one element at a time,
/// and decoding a multi-megabyte chunk that way held a runtime thread long
/// enough (a second, in a debug build) for the node to miss every shard's
/// heartbeats while it caught up by snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotChunkHeader {
    vote: openraft::Vote<NodeId>,
    meta: openraft::SnapshotMeta<NodeId, BasicNode>,
    offset: u64,
    done: bool,
}

fn encode_snapshot_chunk(
    rpc: InstallSnapshotRequest<TypeConfig>,
) -> Result<Vec<u8>, postcard::Error> {
    let header = SnapshotChunkHeader {
        vote: rpc.vote,
        meta: rpc.meta,
        offset: rpc.offset,
        done: rpc.done,
    };
    let mut data = postcard::to_allocvec(&header)?;
    data.extend_from_slice(&rpc.data);
    Ok(data)
}

fn decode_snapshot_chunk(data: &[u8]) -> Result<InstallSnapshotRequest<TypeConfig>, Status> {
    let (header, chunk): (SnapshotChunkHeader, &[u8]) = postcard::take_from_bytes(data)
        .map_err(|e| Status::invalid_argument(format!("undecodable snapshot chunk: {e}")))?;
    Ok(InstallSnapshotRequest {
        vote: header.vote,
        meta: header.meta,
        offset: header.offset,
        data: chunk.to_vec(),
        done: header.done,
    })
}

/// Whether this node accepts leaderships handed over to it: not for a
/// while after it started handing its own away (it is about to stop).
#[derive(Debug, Default)]
pub struct CampaignGate {
    closed_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl CampaignGate {
    pub fn close_for(&self, how_long: std::time::Duration) {
        *self.closed_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::time::Instant::now() + how_long);
    }

    pub fn is_open(&self) -> bool {
        self.closed_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|until| std::time::Instant::now() >= until)
    }
}

/// The receiving side: hands each message to the named shard's Raft.
pub struct TransportService {
    pub ctx: Arc<NodeContext>,
}

fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    let data = postcard::to_allocvec(value)
        .map_err(|e| Status::internal(format!("encoding raft reply: {e}")))?;
    Ok(Response::new(RaftMessage {
        shard: 0,
        data: data.into(),
        format: format::BASE_ENTRY_FORMAT,
    }))
}

impl TransportService {
    /// The shard a message is for, if this node reads what it carries
    /// (entries and votes in `ENTRY_FORMAT`, snapshots in `SNAPSHOT_FORMAT`).
    fn shard(&self, msg: &RaftMessage, readable: u32) -> Result<Raft, Status> {
        if let Some(why) = format::refuse_message(msg.format, readable) {
            return Err(Status::failed_precondition(why));
        }
        self.ctx
            .local(msg.shard)
            .map(|s| s.raft.clone())
            .ok_or_else(|| Status::not_found(format!("this node has no shard {}", msg.shard)))
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.ctx.authorize(Port::Peer, &request, Call::Raft, None)?;
        let msg = request.into_inner();
        let raft = self.shard(&msg, format::ENTRY_FORMAT)?;
        let req: AppendEntriesRequest<TypeConfig> = decode(&msg.data)?;
        encode(&raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.ctx.authorize(Port::Peer, &request, Call::Raft, None)?;
        let msg = request.into_inner();
        let raft = self.shard(&msg, format::ENTRY_FORMAT)?;
        let req: VoteRequest<NodeId> = decode(&msg.data)?;
        encode(&raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.ctx.authorize(Port::Peer, &request, Call::Raft, None)?;
        let msg = request.into_inner();
        let raft = self.shard(&msg, format::SNAPSHOT_FORMAT)?;
        let req = decode_snapshot_chunk(&msg.data)?;
        encode(&raft.install_snapshot(req).await)
    }

    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignReply>, Status> {
        self.ctx.authorize(Port::Peer, &request, Call::Raft, None)?;
        let req = request.into_inner();
        if !self.ctx.campaigns.is_open() {
            return Err(Status::failed_precondition(
                "this node is handing its leaderships away (it is stopping)",
            ));
        }
        let raft = self
            .ctx
            .local(req.shard)
            .ok_or_else(|| Status::not_found(format!("this node has no shard {}", req.shard)))?
            .raft
            .clone();
        let term = raft.metrics().borrow().current_term;
        if term != req.term {
            return Err(Status::failed_precondition(format!(
                "shard {}: this node is in term {term}, the hand-over was for term {}",
                req.shard, req.term
            )));
        }
        let wait =
            std::time::Duration::from_millis(u64::from(req.after_ms.min(MAX_CAMPAIGN_WAIT_MS)));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            // Stand only if nobody has been elected meanwhile.
            if raft.metrics().borrow().current_term == term {
                if let Err(e) = raft.trigger().elect().await {
                    tracing::warn!(shard = req.shard, error = %e, "cannot stand for election");
                }
            }
        });
        Ok(Response::new(CampaignReply {}))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::*;
    use crate::ops::{Batch, NewJob, Op, QueueDefaults};

    fn entry(index: u64, payload_bytes: usize) -> Entry<TypeConfig> {
        let job = NewJob::ready(Bytes::from(vec![0u8; payload_bytes]));
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch {
                time_ms: 0,
                defaults: QueueDefaults::default(),
                ops: Arc::from(vec![Op::Enqueue {
                    queue: "q".into(),
                    jobs: vec![job],
                }]),
            }),
        }
    }

    #[test]
    fn a_snapshot_chunk_travels_as_its_bytes() {
        let chunk: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(3, 2),
            meta: openraft::SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 2), 77)),
                last_membership: Default::default(),
                snapshot_id: "1-77-4".into(),
            },
            offset: 4096,
            data: chunk.clone(),
            done: true,
        };
        let wire = encode_snapshot_chunk(rpc).expect("encodes");
        assert!(wire.ends_with(&chunk), "the chunk is sent as it is");
        let back = decode_snapshot_chunk(&wire).expect("decodes");
        assert_eq!(back.vote, openraft::Vote::new_committed(3, 2));
        assert_eq!(back.meta.snapshot_id, "1-77-4");
        assert_eq!(back.offset, 4096);
        assert!(back.done);
        assert_eq!(back.data, chunk);
        assert!(decode_snapshot_chunk(&[0xff; 3]).is_err());
    }

    #[test]
    fn append_requests_are_cut_to_the_byte_budget() {
        let small: Vec<_> = (1..=10).map(|i| entry(i, 100)).collect();
        assert_eq!(entries_within(&small, MAX_APPEND_BYTES), 10);
        let large: Vec<_> = (1..=10).map(|i| entry(i, 1 << 20)).collect();
        assert_eq!(entries_within(&large, MAX_APPEND_BYTES), 1);
        let huge = vec![entry(1, 3 << 20), entry(2, 10)];
        assert_eq!(
            entries_within(&huge, MAX_APPEND_BYTES),
            1,
            "one entry always goes"
        );
        assert_eq!(entries_within(&[], MAX_APPEND_BYTES), 0);
    }
}
