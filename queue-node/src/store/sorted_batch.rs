//! One apply's writes, handed to RocksDB in key order.
//!
//! A batch interleaves keys of different kinds (a job's record, then its
//! status, then the next job's record). RocksDB's memtable skip list keeps
//! a cursor to the last insert: a key just after it is placed with a few
//! comparisons, any other needs a search from the top, a cache miss per
//! level. Sorted, nearly every insert of an apply is the cheap kind: acks
//! delete two records per job on every node, and those searches were the
//! largest cost of a 3-node fetch+ack (docs/BENCHMARKS.md).
//!
//! The sort is stable, so writes to one key keep their order.

use rocksdb::{ColumnFamily, WriteBatch};

#[derive(Default)]
pub struct SortedBatch {
    /// Keys and values, back to back.
    bytes: Vec<u8>,
    ops: Vec<Rec>,
}

struct Rec {
    key: (usize, usize),
    /// `None`: a delete.
    value: Option<(usize, usize)>,
}

impl SortedBatch {
    pub fn with_capacity_bytes(bytes: usize) -> SortedBatch {
        SortedBatch {
            bytes: Vec::with_capacity(bytes),
            ops: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8]) -> (usize, usize) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        (start, data.len())
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        let key = self.push(key);
        let value = Some(self.push(value));
        self.ops.push(Rec { key, value });
    }

    pub fn delete(&mut self, key: &[u8]) {
        let key = self.push(key);
        self.ops.push(Rec { key, value: None });
    }

    /// The writes in key order, as one RocksDB batch for `cf`.
    pub fn into_write_batch(mut self, cf: &ColumnFamily) -> WriteBatch {
        let bytes = &self.bytes;
        let slice = |(start, len): (usize, usize)| &bytes[start..start + len];
        self.ops.sort_by(|a, b| slice(a.key).cmp(slice(b.key)));
        let mut batch = WriteBatch::with_capacity_bytes(bytes.len() + 16 * self.ops.len() + 64);
        for op in &self.ops {
            match op.value {
                Some(value) => batch.put_cf(cf, slice(op.key), slice(value)),
                None => batch.delete_cf(cf, slice(op.key)),
            }
        }
        batch
    }

    /// The writes in the order [`SortedBatch::into_write_batch`] gives
    /// them: `(key, Some(value))` or `(key, None)` for a delete.
    #[cfg(test)]
    fn sorted(mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let bytes = &self.bytes;
        let slice = |(start, len): (usize, usize)| bytes[start..start + len].to_vec();
        self.ops.sort_by(|a, b| {
            bytes[a.key.0..a.key.0 + a.key.1].cmp(&bytes[b.key.0..b.key.0 + b.key.1])
        });
        self.ops
            .iter()
            .map(|op| (slice(op.key), op.value.map(slice)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_come_out_in_key_order_and_one_keys_writes_keep_theirs() {
        let mut batch = SortedBatch::default();
        batch.put(b"s2", b"leased");
        batch.delete(b"j1");
        batch.put(b"j1", b"again");
        batch.delete(b"s1");
        batch.put(b"s1", b"x");
        batch.delete(b"s1");
        let sorted = batch.sorted();
        let expected: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
            (b"j1".to_vec(), None),
            (b"j1".to_vec(), Some(b"again".to_vec())),
            (b"s1".to_vec(), None),
            (b"s1".to_vec(), Some(b"x".to_vec())),
            (b"s1".to_vec(), None),
            (b"s2".to_vec(), Some(b"leased".to_vec())),
        ];
        assert_eq!(sorted, expected);
    }
}
