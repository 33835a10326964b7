#!/usr/bin/env bash
# Runs the benchmark matrix recorded in docs/BENCHMARKS.md: 1 and 3 nodes x
# 1 and 4 shards x fsync and async, enqueue and lifecycle scenarios, plus the
# batch / linger sweep. Prints one JSON line per run (and a progress line on
# stderr). Usage: scripts/bench-matrix.sh [duration] [lifecycle prefill] > results.jsonl
# PRODUCERS (default 64) sets the enqueue scenario's concurrent producers.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20s}"
prefill="${2:-1000000}"
producers="${PRODUCERS:-64}"
./scripts/setup.sh
cargo build --release --workspace --bins
raftq="${CARGO_TARGET_DIR:-target}/release/raftq"
common=(--workers 32 --concurrency 2 --fetch-batch 64 --ack-batch 64 --payload 256 --duration "$duration" --json)

for nodes in 1 3; do
  for shards in 1 4; do
    for durability in fsync async; do
      for scenario in enqueue lifecycle; do
        echo "== nodes=$nodes shards=$shards durability=$durability scenario=$scenario" >&2
        jobs=0
        [ "$scenario" = lifecycle ] && jobs="$prefill"
        "$raftq" bench --spawn "$nodes" --shards "$shards" --durability "$durability" \
          --scenario "$scenario" --queues 8 --producers "$producers" --enqueue-batch 64 --prefill "$jobs" "${common[@]}"
      done
    done
  done
done

# Batch / linger sweep: 1 node, 1 shard, fsync, mixed load.
for ops in 256 1024 4096; do
  for linger in "0 0" "100 1000" "200 2000" "1000 5000"; do
    set -- $linger
    echo "== sweep max_batch_ops=$ops linger=$1..$2us" >&2
    "$raftq" bench --spawn 1 --scenario mixed --queues 8 --producers "$producers" --prefill 200000 \
      --max-batch-ops "$ops" --linger-min-micros "$1" --linger-max-micros "$2" "${common[@]}"
  done
done
