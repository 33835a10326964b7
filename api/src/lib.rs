//! The raftq wire protocol: the `raftq.v1` gRPC services generated from
//! `proto/`, plus the rules every side agrees on (limits, queue names, job
//! ids). This crate must stay free of storage code: workers depend on it.

pub mod job_id;
pub mod limits;
pub mod validate;

/// Generated messages, clients and servers of package `raftq.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("raftq.v1");
}

/// KEDA's external scaler protocol (package `externalscaler`), copied from
/// KEDA: the node serves it so a `ScaledObject` can scale workers on a
/// queue's backlog.
#[allow(clippy::all, missing_docs)]
pub mod keda {
    tonic::include_proto!("externalscaler");
}

pub use job_id::JobId;

/// The shard that owns `queue` among `shards`: FNV-1a of the name, so every
/// node and SDK agrees without coordination.
pub fn shard_of(queue: &str, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in queue.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}
