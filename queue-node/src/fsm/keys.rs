//! The state machine's RocksDB key layout and the write sink apply fills.
//!
//! Every key starts with the shard id (4 bytes, big-endian), so one shard's
//! state is one contiguous key range (snapshot, install, rebuild), then a
//! kind byte. Kinds sort so a rebuild reads job records before the status
//! records that override them.

use raftq_api::JobId;
use serde::Serialize;

/// A job as enqueued, written once: `(JobMeta, JobStatus, JobContent)` —
/// what scheduling needs, the status at enqueue, then the payload and
/// headers, which a rebuild skips and only serving reads:
/// `shard | 'j' | index | position`.
pub const JOB: u8 = b'j';
/// Which queues the shard takes since the count grew: `shard | 'f' |
/// "fence"`.
pub const FENCE: u8 = b'f';
/// Idempotency key: `shard | 'k' | queue | 0 | key`.
pub const DEDUP: u8 = b'k';
/// Applied log id, membership, clock: `shard | 'm' | name`.
pub const META: u8 = b'm';
/// The declared nodes (metadata shard only): `shard | 'p' | "nodes"`.
pub const NODES: u8 = b'p';
/// Queue settings: `shard | 'q' | queue`.
pub const QUEUE: u8 = b'q';
/// The queue routing (metadata shard only): `shard | 'r' | "routing"`.
pub const ROUTING: u8 = b'r';
/// Job status after it changed: `shard | 's' | index | position`.
pub const STATUS: u8 = b's';

pub fn shard_prefix(shard: u32) -> [u8; 4] {
    shard.to_be_bytes()
}

/// The first key after every key of `shard`.
pub fn shard_end(shard: u32) -> Vec<u8> {
    match shard.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 5],
    }
}

/// The length of every job record's key ([`JOB`] and [`STATUS`]).
pub const JOB_KEY_LEN: usize = 17;

pub fn job_key(kind: u8, id: JobId) -> [u8; JOB_KEY_LEN] {
    let mut key = [0u8; JOB_KEY_LEN];
    let bytes = id.to_bytes();
    key[..4].copy_from_slice(&bytes[..4]);
    key[4] = kind;
    key[5..].copy_from_slice(&bytes[4..]);
    key
}

/// Inverse of [`job_key`].
pub fn job_id_of(key: &[u8]) -> Option<JobId> {
    if key.len() != JOB_KEY_LEN {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&key[..4]);
    bytes[4..].copy_from_slice(&key[5..]);
    JobId::from_bytes(&bytes)
}

pub fn named_key(shard: u32, kind: u8, name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + name.len());
    key.extend_from_slice(&shard.to_be_bytes());
    key.push(kind);
    key.extend_from_slice(name);
    key
}

pub fn dedup_key(shard: u32, queue: &str, idempotency_key: &str) -> Vec<u8> {
    let mut name = Vec::with_capacity(queue.len() + 1 + idempotency_key.len());
    name.extend_from_slice(queue.as_bytes());
    name.push(0);
    name.extend_from_slice(idempotency_key.as_bytes());
    named_key(shard, DEDUP, &name)
}

/// Where apply puts its writes: pending state writes in the node
/// ([`crate::store`]), a map in tests. Encoding errors are kept and
/// reported by the caller after apply, so apply itself never panics on
/// them.
pub trait WriteSink {
    /// Stores `value` under `key`. `created`: apply knows no record exists
    /// under `key` (a new job's, or the first status of a job that never
    /// had one), which lets the store drop a record deleted again before
    /// it was ever written.
    fn put_raw(&mut self, key: &[u8], value: &[u8], created: bool);
    fn delete(&mut self, key: &[u8]);
    fn encoding_failed(&mut self, error: postcard::Error);
    /// A buffer [`WriteSink::put`] encodes into, kept between calls.
    fn scratch(&mut self) -> &mut Vec<u8>;

    /// Replaces (or creates) the record under `key`.
    fn put<T: Serialize + ?Sized>(&mut self, key: &[u8], value: &T) {
        self.encode_put(key, value, false);
    }

    /// Creates the record under `key`: none exists.
    fn put_new<T: Serialize + ?Sized>(&mut self, key: &[u8], value: &T) {
        self.encode_put(key, value, true);
    }

    fn encode_put<T: Serialize + ?Sized>(&mut self, key: &[u8], value: &T, created: bool) {
        // One buffer for every value: a fresh `Vec` per job grew through
        // half a dozen reallocations, on the apply path of every job.
        let mut buf = std::mem::take(self.scratch());
        buf.clear();
        match postcard::to_extend(value, buf) {
            Ok(buf) => {
                self.put_raw(key, &buf, created);
                *self.scratch() = buf;
            }
            Err(e) => self.encoding_failed(e),
        }
    }
}

/// A sink over an in-memory ordered map: tests, and snapshot building.
#[derive(Debug, Default, Clone)]
pub struct MapSink {
    pub map: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    pub error: Option<String>,
    scratch: Vec<u8>,
}

/// Equal when the stored records and errors are (the scratch buffer is
/// not state).
impl PartialEq for MapSink {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map && self.error == other.error
    }
}

impl Eq for MapSink {}

impl WriteSink for MapSink {
    fn put_raw(&mut self, key: &[u8], value: &[u8], created: bool) {
        let replaced = self.map.insert(key.to_vec(), value.to_vec());
        // Apply's claim that nothing was there must hold.
        debug_assert!(
            !(created && replaced.is_some()),
            "a record said to be new replaced one: {key:?}"
        );
    }
    fn delete(&mut self, key: &[u8]) {
        self.map.remove(key);
    }
    fn encoding_failed(&mut self, error: postcard::Error) {
        self.error = Some(error.to_string());
    }
    fn scratch(&mut self) -> &mut Vec<u8> {
        &mut self.scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_keys_round_trip_and_group_by_shard() {
        let id = JobId {
            shard: 7,
            index: 99,
            position: 3,
        };
        let key = job_key(JOB, id);
        assert_eq!(job_id_of(&key), Some(id));
        assert!(key.starts_with(&shard_prefix(7)));
        assert!(key.as_slice() < shard_end(7).as_slice());
        assert!(job_key(JOB, id) < job_key(STATUS, id));
    }
}
