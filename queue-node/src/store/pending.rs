//! Apply's state writes between two checkpoints, and the one RocksDB batch
//! a checkpoint turns them into.
//!
//! Most records live briefly: a claim writes a job's status, and the ack a
//! few milliseconds later deletes it again. Written one apply at a time,
//! each of those became a memtable insert, a tombstone, and work for every
//! flush and compaction after it — on every node, the largest cost of a
//! 3-node fetch+ack (docs/BENCHMARKS.md). Held here until the checkpoint,
//! a record created and deleted in between never reaches RocksDB, and a
//! key written several times reaches it once.
//!
//! A checkpoint hands RocksDB the writes sorted by key (a memtable insert
//! just after the previous one is the cheap kind), one per key: the last.

use rocksdb::{ColumnFamily, WriteBatch};

#[derive(Default)]
pub struct PendingWrites {
    /// Keys and values, back to back.
    bytes: Vec<u8>,
    ops: Vec<Rec>,
}

struct Rec {
    key: (usize, usize),
    /// `None`: a delete.
    value: Option<(usize, usize)>,
    /// The put created the record: nothing was stored under its key.
    created: bool,
}

/// What one write costs here besides its key and value.
const REC_BYTES: usize = std::mem::size_of::<Rec>();

impl PendingWrites {
    fn push(&mut self, data: &[u8]) -> (usize, usize) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        (start, data.len())
    }

    /// Stores `value` under `key`; `created` when no record exists under
    /// it (never written, or deleted since), so a delete before the
    /// checkpoint cancels both.
    pub fn put(&mut self, key: &[u8], value: &[u8], created: bool) {
        let key = self.push(key);
        let value = Some(self.push(value));
        self.ops.push(Rec {
            key,
            value,
            created,
        });
    }

    pub fn delete(&mut self, key: &[u8]) {
        let key = self.push(key);
        self.ops.push(Rec {
            key,
            value: None,
            created: false,
        });
    }

    /// Memory held (keys, values and bookkeeping).
    pub fn bytes(&self) -> usize {
        self.bytes.len() + self.ops.len() * REC_BYTES
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ops.clear();
    }

    fn slice(&self, (start, len): (usize, usize)) -> &[u8] {
        &self.bytes[start..start + len]
    }

    /// What RocksDB must be told, in key order: per key its last write
    /// (`Some(value)`, or `None` for a delete), and nothing for a key
    /// whose first write created the record and whose last deleted it.
    fn net_writes(&mut self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let mut ops = std::mem::take(&mut self.ops);
        // Stable: one key's writes keep their order.
        ops.sort_by(|a, b| self.slice(a.key).cmp(self.slice(b.key)));
        self.ops = ops;
        let ops = &self.ops;
        let this = &*self;
        let mut i = 0;
        std::iter::from_fn(move || loop {
            let first = ops.get(i)?;
            let key = this.slice(first.key);
            let mut last = first;
            i += 1;
            while let Some(next) = ops.get(i).filter(|op| this.slice(op.key) == key) {
                last = next;
                i += 1;
            }
            if first.created && last.value.is_none() {
                continue;
            }
            return Some((key, last.value.map(|v| this.slice(v))));
        })
    }

    /// The net writes as one RocksDB batch for `cf`, leaving this empty.
    pub fn take_write_batch(&mut self, cf: &ColumnFamily) -> WriteBatch {
        let capacity = self.bytes.len() + 16 * self.ops.len() + 64;
        let mut batch = WriteBatch::with_capacity_bytes(capacity);
        for (key, value) in self.net_writes() {
            match value {
                Some(value) => batch.put_cf(cf, key, value),
                None => batch.delete_cf(cf, key),
            }
        }
        self.clear();
        batch
    }
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

    #[test]
    fn a_record_created_and_deleted_before_the_checkpoint_never_reaches_rocksdb() {
        let mut pending = PendingWrites::default();
        // Claimed (created), nacked, claimed again, acked.
        pending.put(b"s1", b"leased", true);
        pending.put(b"s1", b"ready", false);
        pending.put(b"s1", b"leased again", false);
        pending.delete(b"s1");
        // A record that existed before: its delete must be written.
        pending.put(b"s2", b"leased", false);
        pending.delete(b"s2");
        // Created and still there.
        pending.put(b"s3", b"leased", true);
        assert_eq!(
            net(&mut pending),
            vec![
                (b"s2".to_vec(), None),
                (b"s3".to_vec(), Some(b"leased".to_vec())),
            ]
        );
    }
}
