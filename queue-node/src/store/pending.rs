//! Apply's state writes between two checkpoints, and the one RocksDB batch
//! a checkpoint turns them into.
//!
//! Most records live briefly: a claim writes a job's status, and the ack a
//! few milliseconds later deletes it again. Written one apply at a time,
//! each of those became a memtable insert, a tombstone, and work for every
//! flush and compaction after it — on every node, the largest cost of a
//! 3-node fetch+ack (docs/BENCHMARKS.md). Held here until the checkpoint,
//! a record created and deleted in between never reaches RocksDB (the
//! delete cancels the writes on the spot), and a key written several
//! times reaches it once.
//!
//! A checkpoint hands RocksDB the writes sorted by key (a memtable insert
//! just after the previous one is the cheap kind), one per key: the last;
//! and the deletes of a claim's jobs, acked together, as one range delete.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use raftq_api::JobId;
use rocksdb::{ColumnFamily, WriteBatch};

use crate::fsm::keys::{self, JOB_KEY_LEN};

#[derive(Default)]
pub struct PendingWrites {
    /// Keys and values, back to back.
    bytes: Vec<u8>,
    ops: Vec<Rec>,
    /// Job records' keys (the only records apply creates) whose record was
    /// created since the last checkpoint: the last write to each. A delete of one of them cancels
    /// its writes on the spot, so they are never sorted.
    created: HashMap<[u8; JOB_KEY_LEN], u32, BuildHasherDefault<KeyHasher>>,
    /// Writes cancelled that way.
    cancelled: usize,
}

struct Rec {
    key: (usize, usize),
    /// `None`: a delete.
    value: Option<(usize, usize)>,
    /// The write before this one to the same created key, or [`NONE`].
    prev: u32,
    cancelled: bool,
}

const NONE: u32 = u32::MAX;

/// What one write costs here besides its key and value.
const REC_BYTES: usize = std::mem::size_of::<Rec>() + 8;

/// FxHash's mixing: fast, and enough for keys the state machine makes.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
        }
    }
}

impl PendingWrites {
    fn push(&mut self, data: &[u8]) -> (usize, usize) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        (start, data.len())
    }

    /// `key` as a job record's key, and the last write to it if its
    /// record was created since the checkpoint.
    fn created_write(&self, key: &[u8]) -> (Option<[u8; JOB_KEY_LEN]>, Option<u32>) {
        let Ok(key) = <[u8; JOB_KEY_LEN]>::try_from(key) else {
            return (None, None);
        };
        (Some(key), self.created.get(&key).copied())
    }

    fn push_op(&mut self, key: &[u8], value: Option<&[u8]>, prev: u32) -> u32 {
        let index = u32::try_from(self.ops.len()).unwrap_or(NONE);
        let key = self.push(key);
        let value = value.map(|v| self.push(v));
        self.ops.push(Rec {
            key,
            value,
            prev,
            cancelled: false,
        });
        index
    }

    /// Stores `value` under `key`; `created` when no record exists under
    /// it (never written, or deleted since), so a delete before the
    /// checkpoint cancels both.
    pub fn put(&mut self, key: &[u8], value: &[u8], created: bool) {
        let (job_key, last) = self.created_write(key);
        let tracked = match (job_key, last, created) {
            (Some(job_key), Some(prev), _) => Some((job_key, prev)),
            (Some(job_key), None, true) => Some((job_key, NONE)),
            _ => None,
        };
        let prev = tracked.map_or(NONE, |(_, prev)| prev);
        let index = self.push_op(key, Some(value), prev);
        if let Some((job_key, _)) = tracked.filter(|_| index != NONE) {
            self.created.insert(job_key, index);
        }
    }

    pub fn delete(&mut self, key: &[u8]) {
        let (Some(job_key), Some(mut at)) = self.created_write(key) else {
            self.push_op(key, None, NONE);
            return;
        };
        // Nothing was stored before the first of these writes, and
        // nothing will be after this delete: none of them need happen.
        self.created.remove(&job_key);
        while at != NONE {
            let op = &mut self.ops[at as usize];
            op.cancelled = true;
            self.cancelled += 1;
            at = op.prev;
        }
    }

    /// Memory held (keys, values and bookkeeping).
    pub fn bytes(&self) -> usize {
        self.bytes.len() + self.ops.len() * REC_BYTES
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ops.clear();
        self.created.clear();
        self.cancelled = 0;
    }

    fn slice(&self, (start, len): (usize, usize)) -> &[u8] {
        &self.bytes[start..start + len]
    }

    /// What RocksDB must be told, in key order: per key its last write
    /// (`Some(value)`, or `None` for a delete).
    fn net_writes(&mut self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let mut ops = std::mem::take(&mut self.ops);
        if self.cancelled > 0 {
            ops.retain(|op| !op.cancelled);
        }
        // Stable: one key's writes keep their order, and the last wins.
        ops.sort_by(|a, b| self.slice(a.key).cmp(self.slice(b.key)));
        self.ops = ops;
        let ops = &self.ops;
        let this = &*self;
        let mut i = 0;
        std::iter::from_fn(move || {
            let first = ops.get(i)?;
            let key = this.slice(first.key);
            let mut last = first;
            i += 1;
            while let Some(next) = ops.get(i).filter(|op| this.slice(op.key) == key) {
                last = next;
                i += 1;
            }
            Some((key, last.value.map(|v| this.slice(v))))
        })
    }

    /// The net writes as one RocksDB batch for `cf`, leaving this empty.
    pub fn take_write_batch(&mut self, cf: &ColumnFamily) -> WriteBatch {
        let capacity = self.bytes.len() + 16 * self.ops.len() + 64;
        let mut batch = WriteBatch::with_capacity_bytes(capacity);
        let writes: Vec<_> = self.net_writes().collect();
        for write in with_ranges(&writes) {
            match write {
                Write::Put(key, value) => batch.put_cf(cf, key, value),
                Write::Delete(key) => batch.delete_cf(cf, key),
                Write::DeleteRange(from, to) => batch.delete_range_cf(cf, from, &to[..]),
            }
        }
        self.clear();
        batch
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Write<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    /// Every key from the first up to (not including) the second.
    DeleteRange(&'a [u8], [u8; JOB_KEY_LEN]),
}

/// Deletes of this many job records or more, one after another, become
/// one range delete.
const MIN_RANGE: usize = 8;

/// `writes` (in key order) with each run of [`MIN_RANGE`] or more deletes
/// of job records at consecutive positions of one log entry as one range
/// delete. Nothing else can lie between two such keys (job records' keys
/// are all of one length), so the range deletes exactly what the run did:
/// acks of a claim's jobs, which sit side by side, leave one range
/// tombstone instead of one tombstone per job.
fn with_ranges<'a>(writes: &[(&'a [u8], Option<&'a [u8]>)]) -> Vec<Write<'a>> {
    // The job whose record `writes[i]` deletes.
    let job_delete = |i: usize| match writes.get(i) {
        Some((key, None)) if key.get(4) == Some(&keys::JOB) => keys::job_id_of(key),
        _ => None,
    };
    let mut out = Vec::with_capacity(writes.len());
    let mut i = 0;
    while i < writes.len() {
        let mut end = i + 1;
        if let Some(first) = job_delete(i) {
            let mut last = first;
            while let Some(next) = job_delete(end) {
                let same_entry = (next.shard, next.index) == (first.shard, first.index);
                if !same_entry || Some(next.position) != last.position.checked_add(1) {
                    break;
                }
                last = next;
                end += 1;
            }
            if let Some(after) = last
                .position
                .checked_add(1)
                .filter(|_| end - i >= MIN_RANGE)
            {
                let to = keys::job_key(
                    keys::JOB,
                    JobId {
                        position: after,
                        ..last
                    },
                );
                out.push(Write::DeleteRange(writes[i].0, to));
                i = end;
                continue;
            }
        }
        for (key, value) in &writes[i..end] {
            out.push(match value {
                Some(value) => Write::Put(key, value),
                None => Write::Delete(key),
            });
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(pending: &mut PendingWrites) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        pending
            .net_writes()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect()
    }

    #[test]
    fn each_key_gets_its_last_write_in_key_order() {
        let mut pending = PendingWrites::default();
        pending.put(b"s2", b"leased", false);
        pending.delete(b"j1");
        pending.put(b"j1", b"again", false);
        pending.put(b"s1", b"x", false);
        pending.delete(b"s1");
        assert_eq!(
            net(&mut pending),
            vec![
                (b"j1".to_vec(), Some(b"again".to_vec())),
                (b"s1".to_vec(), None),
                (b"s2".to_vec(), Some(b"leased".to_vec())),
            ]
        );
    }

    /// A job record's key: `kind`, job `n`.
    fn job(kind: u8, n: u32) -> Vec<u8> {
        at(kind, 1, n)
    }

    #[test]
    fn a_record_created_and_deleted_before_the_checkpoint_never_reaches_rocksdb() {
        let mut pending = PendingWrites::default();
        // Claimed (created), nacked, claimed again, acked.
        pending.put(&job(b's', 1), b"leased", true);
        pending.put(&job(b's', 1), b"ready", false);
        pending.put(&job(b's', 1), b"leased again", false);
        pending.delete(&job(b's', 1));
        // A record that existed before: its delete must be written.
        pending.put(&job(b's', 2), b"leased", false);
        pending.delete(&job(b's', 2));
        // Created and still there.
        pending.put(&job(b's', 3), b"leased", true);
        // Created, deleted, and created again.
        pending.put(&job(b's', 4), b"leased", true);
        pending.delete(&job(b's', 4));
        pending.put(&job(b's', 4), b"leased again", true);
        assert_eq!(
            net(&mut pending),
            vec![
                (job(b's', 2), None),
                (job(b's', 3), Some(b"leased".to_vec())),
                (job(b's', 4), Some(b"leased again".to_vec())),
            ]
        );
        // The four puts cancelled (the deletes were never pushed).
        assert_eq!(pending.cancelled, 4);
    }

    #[test]
    fn a_created_record_under_another_kind_of_key_is_left_to_the_sort() {
        let mut pending = PendingWrites::default();
        pending.put(b"short", b"1", true);
        pending.delete(b"short");
        assert_eq!(net(&mut pending), vec![(b"short".to_vec(), None)]);
    }

    /// A job record's key: `kind`, the job at `position` of log entry `index`.
    fn at(kind: u8, index: u64, position: u32) -> Vec<u8> {
        let id = JobId {
            shard: 0,
            index,
            position,
        };
        keys::job_key(kind, id).to_vec()
    }

    #[test]
    fn runs_of_job_record_deletes_become_range_deletes() {
        let run: Vec<Vec<u8>> = (3..13).map(|p| at(keys::JOB, 1, p)).collect();
        let short: Vec<Vec<u8>> = (20..23).map(|p| at(keys::JOB, 1, p)).collect();
        // Consecutive positions, but of two entries.
        let split: Vec<Vec<u8>> = [at(keys::JOB, 2, 0), at(keys::JOB, 3, 1)].into();
        let statuses: Vec<Vec<u8>> = (0..10).map(|p| at(keys::STATUS, 1, p)).collect();
        let mut writes: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        writes.extend(run.iter().map(|k| (k.as_slice(), None)));
        writes.extend(short.iter().map(|k| (k.as_slice(), None)));
        writes.extend(split.iter().map(|k| (k.as_slice(), None)));
        writes.extend(statuses.iter().map(|k| (k.as_slice(), None)));
        let planned = with_ranges(&writes);
        let end = at(keys::JOB, 1, 13);
        assert_eq!(
            planned[0],
            Write::DeleteRange(&run[0], end.try_into().unwrap())
        );
        let rest: Vec<_> = planned[1..].iter().collect();
        assert_eq!(rest.len(), 3 + 2 + 10, "everything else one by one");
        assert!(rest.iter().all(|w| matches!(w, Write::Delete(_))));
    }

    #[test]
    fn a_put_or_a_gap_ends_a_run() {
        let keys: Vec<Vec<u8>> = (0..20).map(|p| at(keys::JOB, 1, p)).collect();
        let mut writes: Vec<(&[u8], Option<&[u8]>)> =
            keys.iter().map(|k| (k.as_slice(), None)).collect();
        writes[9].1 = Some(b"kept");
        writes.remove(15);
        let planned = with_ranges(&writes);
        assert_eq!(
            planned[0],
            Write::DeleteRange(&keys[0], at(keys::JOB, 1, 9).try_into().unwrap())
        );
        assert_eq!(planned[1], Write::Put(&keys[9], b"kept"));
        // 10..15 is five deletes (too few), 16..20 four.
        assert_eq!(planned.len(), 2 + 5 + 4);
    }
}
