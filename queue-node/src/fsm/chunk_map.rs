//! An ordered map stored as a sequence of sorted chunks: what the state
//! machine keeps millions of jobs in.
//!
//! `std`'s `BTreeMap` splits a full node in half, so keys inserted in
//! ascending order — how job ids arrive — leave every node half empty:
//! 100 bytes per 52-byte entry, measured. Here a key past the end of a full
//! chunk starts a new chunk, so appends fill chunks completely, and a chunk
//! that shrinks below a quarter merges into a neighbour with room. Taking
//! from the front (oldest job first) is O(1); a lookup is two binary
//! searches; an insert or remove in the middle moves at most half a chunk.

use std::collections::VecDeque;

/// Entries per chunk: small enough that a middle insert or remove moves
/// little, large enough that the per-chunk overhead is noise.
const CHUNK: usize = 256;

#[derive(Clone, PartialEq, Eq)]
pub struct ChunkMap<K, V> {
    /// Never holds an empty chunk; each chunk sorted, and every key of a
    /// chunk below every key of the next.
    chunks: VecDeque<VecDeque<(K, V)>>,
    len: usize,
}

impl<K, V> Default for ChunkMap<K, V> {
    fn default() -> Self {
        ChunkMap {
            chunks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Copy, V> ChunkMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `key` or would: the last whose first key is
    /// not above it (the first chunk for a key below all of them).
    fn chunk_of(&self, key: &K) -> usize {
        self.chunks
            .partition_point(|chunk| chunk.front().is_some_and(|(first, _)| first <= key))
            .saturating_sub(1)
    }

    fn find(&self, key: &K) -> Option<(usize, usize)> {
        let c = self.chunk_of(key);
        let chunk = self.chunks.get(c)?;
        chunk
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| (c, i))
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let (c, i) = self.find(key)?;
        Some(&self.chunks[c][i].1)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (c, i) = self.find(key)?;
        Some(&mut self.chunks[c][i].1)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_some()
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.chunks.is_empty() {
            self.chunks.push_back(VecDeque::from([(key, value)]));
            self.len = 1;
            return None;
        }
        let c = self.chunk_of(&key);
        let at = match self.chunks[c].binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => return Some(std::mem::replace(&mut self.chunks[c][i].1, value)),
            Err(i) => i,
        };
        self.len += 1;
        let chunk = &mut self.chunks[c];
        if chunk.len() < CHUNK {
            chunk.insert(at, (key, value));
        } else if at == CHUNK {
            // Past the end of a full chunk (every append): a new chunk,
            // so the full one stays full.
            self.chunks.insert(c + 1, VecDeque::from([(key, value)]));
        } else {
            let mut tail = chunk.split_off(CHUNK / 2);
            if at <= CHUNK / 2 {
                chunk.insert(at, (key, value));
            } else {
                tail.insert(at - CHUNK / 2, (key, value));
            }
            self.chunks.insert(c + 1, tail);
        }
        None
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (c, i) = self.find(key)?;
        let (_, value) = self.chunks[c].remove(i)?;
        self.len -= 1;
        self.after_removal(c);
        Some(value)
    }

    /// Drops chunk `c` if it emptied, or merges it into a neighbour once it
    /// is under a quarter full, so random removals cannot leave memory
    /// spread thin over many near-empty chunks.
    fn after_removal(&mut self, c: usize) {
        let len = self.chunks[c].len();
        if len == 0 {
            self.chunks.remove(c);
            return;
        }
        if len >= CHUNK / 4 {
            return;
        }
        if self
            .chunks
            .get(c + 1)
            .is_some_and(|n| n.len() + len <= CHUNK)
        {
            if let Some(mut next) = self.chunks.remove(c + 1) {
                self.chunks[c].append(&mut next);
            }
        } else if c > 0 && self.chunks[c - 1].len() + len <= CHUNK {
            if let Some(mut this) = self.chunks.remove(c) {
                self.chunks[c - 1].append(&mut this);
            }
        }
    }

    pub fn first(&self) -> Option<&(K, V)> {
        self.chunks.front().and_then(|chunk| chunk.front())
    }

    pub fn pop_first(&mut self) -> Option<(K, V)> {
        let chunk = self.chunks.front_mut()?;
        let first = chunk.pop_front();
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        self.len -= usize::from(first.is_some());
        first
    }

    pub fn iter(&self) -> impl Iterator<Item = &(K, V)> + '_ {
        self.chunks.iter().flatten()
    }

    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(k, _)| *k)
    }

    /// Entries with keys above `after` (all of them for `None`), in order.
    pub fn iter_after(&self, after: Option<K>) -> impl Iterator<Item = &(K, V)> + '_ {
        let (c, i) = match after {
            None => (0, 0),
            Some(after) => {
                let c = self.chunk_of(&after);
                let i = self
                    .chunks
                    .get(c)
                    .map_or(0, |chunk| chunk.partition_point(|(k, _)| *k <= after));
                (c, i)
            }
        };
        self.chunks
            .iter()
            .skip(c)
            .enumerate()
            .flat_map(move |(n, chunk)| chunk.iter().skip(if n == 0 { i } else { 0 }))
    }

    /// Entries with keys below `before` (all of them for `None`), in
    /// reverse order: newest first, for listings.
    pub fn iter_before_rev(&self, before: Option<K>) -> impl Iterator<Item = &(K, V)> + '_ {
        let (c, i) = match before {
            None => (self.chunks.len(), usize::MAX),
            Some(before) => {
                let c = self.chunk_of(&before);
                let i = self
                    .chunks
                    .get(c)
                    .map_or(0, |chunk| chunk.partition_point(|(k, _)| *k < before));
                (c + 1, i)
            }
        };
        let last = c.saturating_sub(1);
        self.chunks
            .iter()
            .take(c)
            .enumerate()
            .rev()
            .flat_map(move |(n, chunk)| {
                let end = if n == last {
                    i.min(chunk.len())
                } else {
                    chunk.len()
                };
                chunk.iter().take(end).rev()
            })
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for ChunkMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.chunks.iter().flatten().map(|(k, v)| (k, v)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A small deterministic generator (no dependency for one test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }
    }

    fn check_invariants<K: Ord + Copy + std::fmt::Debug, V>(map: &ChunkMap<K, V>) {
        assert!(map.chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
        let keys: Vec<K> = map.keys().collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "unsorted");
        assert_eq!(keys.len(), map.len());
    }

    #[test]
    fn behaves_like_a_btree_map_under_random_operations() {
        let mut rng = Lcg(7);
        let mut map = ChunkMap::new();
        let mut model = BTreeMap::new();
        for step in 0..200_000u64 {
            let key = rng.next(5_000);
            match rng.next(10) {
                0..=3 => assert_eq!(map.insert(key, step), model.insert(key, step)),
                4..=5 => assert_eq!(map.remove(&key), model.remove(&key)),
                6 => assert_eq!(map.pop_first(), model.pop_first()),
                7 => {
                    // Appends, as job ids arrive.
                    let next = model.last_key_value().map_or(0, |(k, _)| k + 1);
                    assert_eq!(map.insert(next, step), model.insert(next, step));
                }
                8 => assert_eq!(map.get(&key), model.get(&key)),
                9 if step % 2 == 0 => {
                    let after: Vec<u64> = map.iter_after(Some(key)).map(|(k, _)| *k).collect();
                    let want: Vec<u64> = model.range(key + 1..).map(|(k, _)| *k).collect();
                    assert_eq!(after, want);
                }
                _ => {
                    let before: Vec<u64> = map
                        .iter_before_rev(Some(key))
                        .take(300)
                        .map(|(k, _)| *k)
                        .collect();
                    let want: Vec<u64> = model
                        .range(..key)
                        .rev()
                        .take(300)
                        .map(|(k, _)| *k)
                        .collect();
                    assert_eq!(before, want, "below {key}");
                }
            }
            assert_eq!(map.len(), model.len());
            assert_eq!(
                map.first(),
                model.first_key_value().map(|(k, v)| (*k, *v)).as_ref()
            );
            if step % 1000 == 0 {
                check_invariants(&map);
                assert!(map.iter().map(|(k, v)| (k, v)).eq(model.iter()));
                assert!(map
                    .iter_before_rev(None)
                    .map(|(k, v)| (k, v))
                    .eq(model.iter().rev()));
            }
        }
        check_invariants(&map);
    }

    #[test]
    fn appends_fill_chunks_and_removals_keep_them_from_thinning_out() {
        let mut map = ChunkMap::new();
        for k in 0..100_000u64 {
            map.insert(k, ());
        }
        assert_eq!(map.chunks.len(), 100_000 / CHUNK + 1);
        // Remove 7 of every 8, spread over the whole map.
        for k in (0..100_000).filter(|k| k % 8 != 0) {
            map.remove(&k);
        }
        check_invariants(&map);
        let average = map.len() as f64 / map.chunks.len() as f64;
        assert!(
            average >= (CHUNK / 4) as f64,
            "chunks average {average} entries"
        );
        assert_eq!(map.iter_after(None).count(), 12_500);
    }
}
