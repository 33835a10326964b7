//! The pure apply path, without Raft or RocksDB: what one batch of 1,024
//! jobs costs the state machine. Run with `cargo bench --workspace --bench apply`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raftq_node::fsm::keys::WriteSink;
use raftq_node::fsm::ShardState;
use raftq_node::ops::{Batch, NewJob, Op, OpResult, QueueDefaults};

/// 16 ops of 64 jobs: the reference workload's batches.
const JOBS: usize = 1_024;
const OPS_PER_BATCH: usize = 16;

/// Counts what apply would write, the way the RocksDB sink would receive it.
#[derive(Default)]
struct CountingSink {
    puts: usize,
    deletes: usize,
    bytes: usize,
    scratch: Vec<u8>,
}

impl WriteSink for CountingSink {
    fn put_raw(&mut self, key: &[u8], value: &[u8], _created: bool) {
        self.puts += 1;
        self.bytes += key.len() + value.len();
        black_box(value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.deletes += 1;
        self.bytes += key.len();
    }
    fn encoding_failed(&mut self, error: postcard::Error) {
        panic!("encoding failed: {error}");
    }
    fn scratch(&mut self) -> &mut Vec<u8> {
        &mut self.scratch
    }
}

fn batch(time_ms: u64, ops: Vec<Op>) -> Batch {
    Batch {
        time_ms,
        defaults: QueueDefaults::default(),
        ops: ops.into(),
    }
}

fn enqueue_ops() -> Vec<Op> {
    let payload = Bytes::from(vec![7u8; 256]);
    (0..OPS_PER_BATCH)
        .map(|_| Op::Enqueue {
            queue: "bench".to_string(),
            jobs: (0..JOBS / OPS_PER_BATCH)
                .map(|_| NewJob::ready(payload.clone()))
                .collect(),
        })
        .collect()
}

fn claim_ops() -> Vec<Op> {
    (0..OPS_PER_BATCH)
        .map(|w| Op::Claim {
            queue: "bench".to_string(),
            worker: format!("worker-{w}"),
            max: (JOBS / OPS_PER_BATCH) as u32,
            lease_ms: None,
        })
        .collect()
}

/// A state holding `JOBS` ready jobs, and the index its next batch uses.
fn filled() -> (ShardState, u64) {
    let mut state = ShardState::new(0);
    state.apply_batch(
        1,
        &batch(1_000, enqueue_ops()),
        &mut CountingSink::default(),
    );
    (state, 2)
}

/// The state with every job leased, and the ack ops that finish them.
fn leased() -> (ShardState, Vec<Op>) {
    let (mut state, index) = filled();
    let result = state.apply_batch(
        index,
        &batch(1_001, claim_ops()),
        &mut CountingSink::default(),
    );
    let tokens: Vec<_> = result
        .0
        .into_iter()
        .flat_map(|r| match r {
            OpResult::Claimed(jobs) => jobs
                .into_iter()
                .map(|j| (j.id, j.status.attempt))
                .collect::<Vec<_>>(),
            other => panic!("claim returned {other:?}"),
        })
        .collect();
    assert_eq!(tokens.len(), JOBS, "every job leased");
    let acks = tokens
        .chunks(JOBS / OPS_PER_BATCH)
        .map(|chunk| Op::Ack {
            tokens: chunk.to_vec(),
        })
        .collect();
    (state, acks)
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_1024_jobs");
    group.throughput(Throughput::Elements(JOBS as u64));

    let enqueue = batch(1_000, enqueue_ops());
    group.bench_function("enqueue", |b| {
        b.iter_batched(
            || ShardState::new(0),
            |mut state| state.apply_batch(1, &enqueue, &mut CountingSink::default()),
            BatchSize::SmallInput,
        )
    });

    let claim = batch(1_001, claim_ops());
    group.bench_function("claim", |b| {
        b.iter_batched(
            filled,
            |(mut state, index)| state.apply_batch(index, &claim, &mut CountingSink::default()),
            BatchSize::SmallInput,
        )
    });

    group.bench_function("ack", |b| {
        b.iter_batched(
            leased,
            |(mut state, acks)| {
                state.apply_batch(3, &batch(1_002, acks), &mut CountingSink::default())
            },
            BatchSize::SmallInput,
        )
    });

    let encoded = postcard::to_allocvec(&enqueue).expect("encode");
    group.bench_function("decode_enqueue_entry", |b| {
        b.iter(|| postcard::from_bytes::<Batch>(black_box(&encoded)).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
