//! A queue's fresh jobs — enqueued ready and not touched since — packed
//! as varint deltas, about 6 bytes each instead of the 84 a job takes in
//! the job map and the ready index. A backlog is almost all fresh jobs,
//! so this is what lets a node hold tens of millions of them.
//!
//! Fresh jobs of one priority arrive in ready order: their ready time is
//! their enqueue time, the batch clock, which never goes back, and their
//! keys grow with the log. So each priority's jobs form a run that only
//! appends at the back and pops at the front, encoded in blocks; each job
//! is stored as its difference from the one before it. A job out of that
//! order is refused by [`FreshJobs::push`] and the caller keeps it
//! unpacked: correctness never rests on the order, only the saving does.
//!
//! The packing is a representation, not state: every replica and every
//! rebuild packs the same jobs the same way, and nothing apply answers
//! depends on whether a job is packed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

use super::job::JobKey;

/// Jobs per block: a lookup or a removal in the middle decodes and
/// re-encodes one block (a few microseconds), and a block's own overhead
/// is a fraction of a byte per job.
const BLOCK: u32 = 512;

/// What a fresh job carries beyond its queue and priority (the run's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct FreshJob {
    pub key: JobKey,
    /// Also its ready time.
    pub enqueued_at_ms: u64,
    pub max_attempts: u32,
    pub answer_bytes: u32,
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    while let Some(&byte) = bytes.get(*at) {
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    value
}

/// Whether `job` may follow `prev` in a run.
fn follows(job: &FreshJob, prev: &FreshJob) -> bool {
    job.key > prev.key && job.enqueued_at_ms >= prev.enqueued_at_ms
}

fn encode(out: &mut Vec<u8>, job: &FreshJob, prev: &FreshJob) {
    let index_delta = job.key.index() - prev.key.index();
    put_varint(out, index_delta);
    let position = if index_delta == 0 {
        job.key.position() - prev.key.position()
    } else {
        job.key.position()
    };
    put_varint(out, u64::from(position));
    put_varint(out, job.enqueued_at_ms - prev.enqueued_at_ms);
    put_varint(out, u64::from(job.max_attempts));
    put_varint(out, u64::from(job.answer_bytes));
}

fn decode(bytes: &[u8], at: &mut usize, prev: &FreshJob) -> FreshJob {
    let index_delta = get_varint(bytes, at);
    let position = get_varint(bytes, at) as u32;
    let index = prev.key.index().wrapping_add(index_delta);
    let position = if index_delta == 0 {
        prev.key.position().wrapping_add(position)
    } else {
        position
    };
    FreshJob {
        key: JobKey::new(index, position),
        enqueued_at_ms: prev.enqueued_at_ms.wrapping_add(get_varint(bytes, at)),
        max_attempts: get_varint(bytes, at) as u32,
        answer_bytes: get_varint(bytes, at) as u32,
    }
}

/// Up to [`BLOCK`] jobs in order: the first decoded, the rest encoded
/// each against the one before it.
#[derive(Debug, Clone)]
struct Block {
    first: FreshJob,
    last: FreshJob,
    len: u32,
    /// Encodings of the jobs after `first`, from `start` (what lies before
    /// it belongs to jobs already popped).
    bytes: Vec<u8>,
    start: usize,
}

impl Block {
    fn new(job: FreshJob) -> Block {
        Block {
            first: job,
            last: job,
            len: 1,
            bytes: Vec::new(),
            start: 0,
        }
    }

    fn from_jobs(jobs: &[FreshJob]) -> Option<Block> {
        let (&first, rest) = jobs.split_first()?;
        let mut block = Block::new(first);
        for job in rest {
            block.append(*job);
        }
        block.bytes.shrink_to_fit();
        Some(block)
    }

    fn footprint(&self) -> usize {
        std::mem::size_of::<Block>() + self.bytes.capacity()
    }

    fn append(&mut self, job: FreshJob) {
        encode(&mut self.bytes, &job, &self.last);
        self.last = job;
        self.len += 1;
    }

    fn pop_first(&mut self) -> FreshJob {
        let first = self.first;
        self.len -= 1;
        if self.len > 0 {
            self.first = decode(&self.bytes, &mut self.start, &first);
        }
        first
    }

    fn jobs(&self) -> Vec<FreshJob> {
        let mut jobs = Vec::with_capacity(self.len as usize);
        jobs.push(self.first);
        let mut at = self.start;
        let mut prev = self.first;
        for _ in 1..self.len {
            prev = decode(&self.bytes, &mut at, &prev);
            jobs.push(prev);
        }
        jobs
    }
}

/// One priority's fresh jobs, oldest first.
#[derive(Debug, Clone, Default)]
struct Run {
    blocks: VecDeque<Block>,
}

impl Run {
    /// The block that holds `key`, if any may.
    fn block_of(&self, key: JobKey) -> Option<usize> {
        let b = self
            .blocks
            .partition_point(|block| block.first.key <= key)
            .checked_sub(1)?;
        (key <= self.blocks[b].last.key).then_some(b)
    }
}

/// One run's jobs, newest first, with the next one at hand.
type Newest<'a> = std::iter::Peekable<Box<dyn Iterator<Item = FreshJob> + 'a>>;

/// Every fresh job of one queue, by priority (highest first), then age.
#[derive(Debug, Clone, Default)]
pub(super) struct FreshJobs {
    runs: BTreeMap<Reverse<i32>, Run>,
    len: usize,
    /// Bytes these jobs take in memory.
    footprint: usize,
}

impl FreshJobs {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn footprint(&self) -> usize {
        self.footprint
    }

    /// Appends `job` to its priority's run; refuses (false) a job that
    /// does not sort after that run's last job.
    pub fn push(&mut self, priority: i32, job: FreshJob) -> bool {
        let run = self.runs.entry(Reverse(priority)).or_default();
        let before = match run.blocks.back_mut() {
            Some(last) if last.len < BLOCK => {
                if !follows(&job, &last.last) {
                    return false;
                }
                let before = last.footprint();
                last.append(job);
                if last.len == BLOCK {
                    last.bytes.shrink_to_fit();
                }
                self.footprint += last.footprint();
                before
            }
            last => {
                if last.is_some_and(|last| !follows(&job, &last.last)) {
                    return false;
                }
                let block = Block::new(job);
                self.footprint += block.footprint();
                run.blocks.push_back(block);
                0
            }
        };
        self.footprint -= before;
        self.len += 1;
        true
    }

    /// The enqueue time of the oldest job of any priority.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.runs
            .values()
            .filter_map(|run| run.blocks.front().map(|block| block.first.enqueued_at_ms))
            .min()
    }

    /// The job a claim would take first, with its priority.
    pub fn first(&self) -> Option<(i32, FreshJob)> {
        let (Reverse(priority), run) = self.runs.iter().next()?;
        run.blocks.front().map(|block| (*priority, block.first))
    }

    pub fn pop_first(&mut self) -> Option<(i32, FreshJob)> {
        let mut entry = self.runs.first_entry()?;
        let priority = entry.key().0;
        let run = entry.get_mut();
        let block = run.blocks.front_mut()?;
        let job = block.pop_first();
        if block.len == 0 {
            self.footprint -= block.footprint();
            run.blocks.pop_front();
            if run.blocks.is_empty() {
                entry.remove();
            }
        }
        self.len -= 1;
        Some((priority, job))
    }

    /// The fresh job `key`, with its priority.
    pub fn get(&self, key: JobKey) -> Option<(i32, FreshJob)> {
        self.runs.iter().find_map(|(Reverse(priority), run)| {
            let block = &run.blocks[run.block_of(key)?];
            block
                .jobs()
                .into_iter()
                .find(|job| job.key == key)
                .map(|job| (*priority, job))
        })
    }

    /// Takes the fresh job `key` out, with its priority.
    pub fn remove(&mut self, key: JobKey) -> Option<(i32, FreshJob)> {
        let (priority, b, mut jobs, at) = self.runs.iter().find_map(|(priority, run)| {
            let b = run.block_of(key)?;
            let jobs = run.blocks[b].jobs();
            let at = jobs.iter().position(|job| job.key == key)?;
            Some((*priority, b, jobs, at))
        })?;
        let run = self.runs.get_mut(&priority)?;
        let job = jobs.remove(at);
        self.footprint -= run.blocks[b].footprint();
        match Block::from_jobs(&jobs) {
            Some(block) => {
                self.footprint += block.footprint();
                run.blocks[b] = block;
            }
            None => {
                run.blocks.remove(b);
                if run.blocks.is_empty() {
                    self.runs.remove(&priority);
                }
            }
        }
        self.len -= 1;
        Some((priority.0, job))
    }

    /// Every job in claim order, with its priority.
    pub fn iter(&self) -> impl Iterator<Item = (i32, FreshJob)> + '_ {
        self.runs.iter().flat_map(|(Reverse(priority), run)| {
            run.blocks
                .iter()
                .flat_map(|block| block.jobs())
                .map(move |job| (*priority, job))
        })
    }

    /// Jobs with keys below `before` (all for `None`), newest first —
    /// across priorities, for listings. Decodes one block of each run at
    /// a time, as the caller reads on.
    pub fn iter_rev_before(
        &self,
        before: Option<JobKey>,
    ) -> impl Iterator<Item = (i32, FreshJob)> + '_ {
        let below = move |key: JobKey| before.is_none_or(|b| key < b);
        let mut runs: Vec<(i32, Newest<'_>)> = self
            .runs
            .iter()
            .map(|(Reverse(priority), run)| {
                let end = match before {
                    None => run.blocks.len(),
                    Some(b) => run.blocks.partition_point(|block| block.first.key < b),
                };
                let jobs: Box<dyn Iterator<Item = FreshJob> + '_> =
                    Box::new(run.blocks.iter().take(end).rev().flat_map(move |block| {
                        let mut jobs = block.jobs();
                        jobs.retain(|job| below(job.key));
                        jobs.into_iter().rev()
                    }));
                (*priority, jobs.peekable())
            })
            .collect();
        std::iter::from_fn(move || {
            let (_, newest) = runs
                .iter_mut()
                .enumerate()
                .filter_map(|(n, (_, jobs))| jobs.peek().map(|job| (job.key, n)))
                .max()?;
            let (priority, jobs) = &mut runs[newest];
            jobs.next().map(|job| (*priority, job))
        })
    }

    /// Empties the set, returning what it held.
    pub fn take(&mut self) -> FreshJobs {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn job(index: u64, position: u32, at: u64, bytes: u32) -> FreshJob {
        FreshJob {
            key: JobKey::new(index, position),
            enqueued_at_ms: at,
            max_attempts: (index % 3) as u32,
            answer_bytes: bytes,
        }
    }

    /// Claim order as the state machine defines it.
    fn order(priority: i32, job: &FreshJob) -> (Reverse<i32>, u64, JobKey) {
        (Reverse(priority), job.enqueued_at_ms, job.key)
    }

    #[test]
    fn a_backlog_packs_into_a_few_bytes_a_job() {
        let mut fresh = FreshJobs::default();
        let mut now = 1_700_000_000_000u64;
        for i in 0..1_000_000u64 {
            if i % 100 == 0 {
                now += 3;
            }
            assert!(fresh.push(0, job(10 + i / 100, (i % 100) as u32, now, 300)));
        }
        assert_eq!(fresh.len(), 1_000_000);
        let per_job = fresh.footprint() as f64 / 1e6;
        assert!(per_job < 8.0, "{per_job} bytes per job");
        let mut expected = 0u64;
        while let Some((_, got)) = fresh.pop_first() {
            assert_eq!(
                got.key,
                JobKey::new(10 + expected / 100, (expected % 100) as u32)
            );
            expected += 1;
        }
        assert_eq!(expected, 1_000_000);
        assert_eq!(fresh.footprint(), 0);
    }

    #[test]
    fn a_job_out_of_order_is_refused() {
        let mut fresh = FreshJobs::default();
        assert!(fresh.push(1, job(5, 0, 100, 1)));
        assert!(!fresh.push(1, job(4, 0, 100, 1)), "older key");
        assert!(!fresh.push(1, job(6, 0, 99, 1)), "earlier time");
        assert!(fresh.push(2, job(4, 0, 50, 1)), "another priority");
        assert_eq!(
            fresh.first().map(|(p, j)| (p, j.key)),
            Some((2, JobKey::new(4, 0)))
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Push {
            priority: i32,
            gap: u8,
            wait: u8,
            bytes: u32,
        },
        Pop,
        Remove(usize),
        Get(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..3i32, 0..4u8, 0..3u8, any::<u32>()).prop_map(|(priority, gap, wait, bytes)| {
                Step::Push { priority, gap, wait, bytes }
            }),
            3 => Just(Step::Pop),
            1 => any::<usize>().prop_map(Step::Remove),
            1 => any::<usize>().prop_map(Step::Get),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Against an ordered set of the same jobs: same order, same
        /// lookups, and the footprint returns to zero when emptied.
        #[test]
        fn behaves_like_an_ordered_set(steps in prop::collection::vec(step(), 1..3_000)) {
            let mut fresh = FreshJobs::default();
            let mut model: BTreeSet<(Reverse<i32>, u64, JobKey, FreshJob)> = BTreeSet::new();
            let (mut index, mut position, mut now) = (1u64, 0u32, 1_000u64);
            for step in steps {
                match step {
                    Step::Push { priority, gap, wait, bytes } => {
                        if gap == 0 { position += 1 } else { index += u64::from(gap); position = 0 }
                        now += u64::from(wait);
                        let job = job(index, position, now, bytes);
                        prop_assert!(fresh.push(priority, job));
                        let (p, t, k) = order(priority, &job);
                        model.insert((p, t, k, job));
                    }
                    Step::Pop => {
                        let want = model.pop_first().map(|(p, _, _, j)| (p.0, j));
                        prop_assert_eq!(fresh.pop_first(), want);
                    }
                    Step::Remove(n) | Step::Get(n) if model.is_empty() => {
                        let _ = n;
                        prop_assert_eq!(fresh.get(JobKey::new(index + 1, 0)), None);
                    }
                    Step::Remove(n) => {
                        let entry = *model.iter().nth(n % model.len()).unwrap();
                        model.remove(&entry);
                        prop_assert_eq!(fresh.remove(entry.2), Some((entry.0 .0, entry.3)));
                        prop_assert_eq!(fresh.remove(entry.2), None);
                    }
                    Step::Get(n) => {
                        let entry = *model.iter().nth(n % model.len()).unwrap();
                        prop_assert_eq!(fresh.get(entry.2), Some((entry.0 .0, entry.3)));
                    }
                }
                prop_assert_eq!(fresh.len(), model.len());
                prop_assert_eq!(
                    fresh.first(),
                    model.first().map(|(p, _, _, j)| (p.0, *j))
                );
            }
            let all: Vec<_> = fresh.iter().collect();
            let want: Vec<_> = model.iter().map(|(p, _, _, j)| (p.0, *j)).collect();
            prop_assert_eq!(all, want);
            // Newest first, from the top and from inside.
            let mut by_key: Vec<(i32, FreshJob)> = model.iter().map(|(p, _, _, j)| (p.0, *j)).collect();
            by_key.sort_by_key(|(_, j)| std::cmp::Reverse(j.key));
            prop_assert_eq!(fresh.iter_rev_before(None).collect::<Vec<_>>(), by_key.clone());
            if let Some((_, middle)) = by_key.get(by_key.len() / 2) {
                let below: Vec<_> = by_key.iter().copied().filter(|(_, j)| j.key < middle.key).collect();
                prop_assert_eq!(fresh.iter_rev_before(Some(middle.key)).collect::<Vec<_>>(), below);
            }
            while fresh.pop_first().is_some() {}
            prop_assert_eq!(fresh.footprint(), 0);
        }
    }
}
