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

    fn slice(&self, (start, len): (usize, usize)) -> &[u8] {
        &self.bytes[start..start + len]
    }

    /// The writes in key order: `(key, Some(value))`, or `(key, None)`
    /// for a delete.
    fn sorted(&mut self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let mut ops = std::mem::take(&mut self.ops);
        ops.sort_by(|a, b| self.slice(a.key).cmp(self.slice(b.key)));
        self.ops = ops;
        self.ops
            .iter()
            .map(|op| (self.slice(op.key), op.value.map(|v| self.slice(v))))
    }

    /// The writes in key order, as one RocksDB batch for `cf`.
    pub fn into_write_batch(mut self, cf: &ColumnFamily) -> WriteBatch {
        let capacity = self.bytes.len() + 16 * self.ops.len() + 64;
        let mut batch = WriteBatch::with_capacity_bytes(capacity);
        for (key, value) in self.sorted() {
            match value {
                Some(value) => batch.put_cf(cf, key, value),
                None => batch.delete_cf(cf, key),
            }
        }
        batch
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
        let sorted: Vec<(Vec<u8>, Option<Vec<u8>>)> = batch
            .sorted()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
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
