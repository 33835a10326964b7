#!/usr/bin/env bash
# Starts a local one-node raftq cluster: clients on 127.0.0.1:7400, peers
# and ClusterAdmin on 127.0.0.1:7401, data in ./raftq-data. Loopback only,
# without TLS or auth (see docs/SECURITY.md to turn them on). Extra
# arguments go to queue-node (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Build the whole workspace's binaries (also the `raftq` CLI) in one go, so
# RocksDB is compiled once for every binary.
cargo build --release --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/release/queue-node" "$@"
