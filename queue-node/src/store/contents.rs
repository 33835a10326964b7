//! Job contents on disk. Apply writes a job's payload and headers once, at
//! enqueue, under [`keys::CONTENT`]; the state machine keeps only what
//! scheduling needs. This module reads contents back for the jobs a claim
//! or an admin read returns: one batched `multi_get` per answer, through
//! RocksDB's block cache, on a blocking thread — never on the apply task.

use raftq_api::JobId;

use super::db::{Store, CF_STATE};
use crate::fsm::keys;
use crate::ops::JobContent;

/// Reads the contents of one node's jobs (any shard: the key carries it).
#[derive(Clone)]
pub struct Contents {
    store: Store,
}

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("reading job contents from RocksDB: {0}")]
    Read(#[from] rocksdb::Error),
    #[error("job {id}'s content record is corrupt: {source}")]
    Decode { id: JobId, source: postcard::Error },
    #[error("the content reader stopped")]
    Stopped,
}

impl Contents {
    pub fn new(store: Store) -> Contents {
        Contents { store }
    }

    /// The contents of `ids`, in order; `None` where a job is gone (acked,
    /// cancelled or purged since it was read from the state).
    pub async fn read(&self, ids: Vec<JobId>) -> Result<Vec<Option<JobContent>>, ContentError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || read_now(&store, &ids))
            .await
            .map_err(|_| ContentError::Stopped)?
    }
}

fn read_now(store: &Store, ids: &[JobId]) -> Result<Vec<Option<JobContent>>, ContentError> {
    let keys: Vec<[u8; 17]> = ids
        .iter()
        .map(|id| keys::job_key(keys::CONTENT, *id))
        .collect();
    // Ids of one answer are mostly in order; `false` lets RocksDB sort.
    let values = store
        .db
        .batched_multi_get_cf(store.cf(CF_STATE), keys.iter(), false);
    ids.iter()
        .zip(values)
        .map(|(id, value)| match value? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|source| ContentError::Decode { id: *id, source }),
            None => Ok(None),
        })
        .collect()
}
