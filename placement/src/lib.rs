//! Shard placement for raftq: which nodes hold each shard's voters, which
//! node should lead it, and the safe steps that take a cluster from where
//! its replicas are to where they should be.
//!
//! Everything here is a pure function of what it is given — no I/O, no
//! clock, no randomness — so every replica of the metadata group that runs
//! it computes the same answer, and the tests can run it over any cluster.
//!
//! - [`model`]: nodes, shards and the cluster they form.
//! - [`balance`]: the target — replicas and leaders even over the nodes
//!   that take new work, a shard's replicas spread over zones, and as few
//!   replicas moved as that allows.
//! - [`plan`]: the moves from actual to target, at most one per node at a
//!   time, never taking a shard below its replication factor.
//! - [`step`]: one move's steps (learner, catch-up, leadership away,
//!   membership swap, old copy deleted), advanced by what is observed and
//!   rolled back when it stalls.

pub mod balance;
pub mod model;
pub mod plan;
pub mod step;

pub use balance::{target, Refusal, Target};
pub use model::{Cluster, Node, NodeId, Shard, ShardId};
pub use plan::{next_moves, Move};
