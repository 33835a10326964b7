//! raftq's queue node: the gRPC API, one Raft group per shard (openraft),
//! the batched write pipeline and the job-queue state machine over RocksDB.
//!
//! Data flows one way: [`service`] validates requests and submits ops to the
//! shard's [`batcher`]; the batcher proposes one Raft entry per batch; the
//! [`store`] applies committed entries through the pure [`fsm`] and writes
//! the result in one RocksDB batch; results flow back to the handlers.

pub mod batcher;
pub mod clock;
pub mod config;
pub mod context;
pub mod coordinator;
pub mod directory;
pub mod drain;
pub mod forward;
pub mod fsm;
pub mod grow;
pub mod handoff;
pub mod history;
pub mod http;
pub mod latency;
pub mod layout;
pub mod leadership;
pub mod memory;
pub mod mover;
pub mod network;
pub mod node;
pub mod ops;
pub mod pacer;
pub mod raft_types;
pub mod replicas;
pub mod rest;
pub mod routing;
pub mod security;
pub mod service;
pub mod shard;
pub mod store;
pub mod ticker;
