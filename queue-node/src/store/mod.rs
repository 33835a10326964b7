//! Durable storage of a node: one RocksDB holding every shard's Raft log,
//! Raft metadata and state-machine records, in three column families, keys
//! prefixed by shard. One WAL for the whole node, so one fsync makes many
//! appended batches (of any shard) durable at once.
//!
//! - [`contents`]: reading job payloads and headers back to serve them.
//! - [`db`]: opening RocksDB and the group-commit fsync thread.
//! - [`health`]: noticing a RocksDB that stalls writes for good.
//! - [`log_store`]: openraft's `RaftLogStorage`.
//! - [`snapshot_file`]: snapshots streamed to and from files.
//! - [`state_machine`]: openraft's `RaftStateMachine` over [`crate::fsm`].
//! - [`watermark`]: the file that catches a WAL or database cut short.

// openraft's trait methods return its `StorageError` (large); our helpers
// return the same type so `?` works without conversions.
#![allow(clippy::result_large_err)]

pub mod contents;
pub mod db;
pub mod format;
pub mod health;
pub mod log_store;
mod pending;
pub mod snapshot_file;
pub mod state_machine;
pub mod watermark;

pub use contents::{ContentCache, ContentError, Contents};
pub use db::{Durability, Store, StoreMemory};

use crate::raft_types::StorageError;

/// Wraps a RocksDB or decoding failure as an openraft storage error.
pub(crate) fn io_err(
    subject: openraft::ErrorSubject<crate::raft_types::NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}
