//! The openraft type configuration of a raftq shard.

use crate::ops::{Batch, BatchResult};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// One shard's Raft: entries carry op batches, replies carry their results.
    pub TypeConfig:
        D = Batch,
        R = BatchResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::store::snapshot_file::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type ServerMetrics = openraft::metrics::RaftServerMetrics<NodeId, openraft::BasicNode>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
