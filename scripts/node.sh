#!/usr/bin/env bash
# Starts a local one-node raftq cluster: gRPC on 127.0.0.1:7400, data in
# ./raftq-data. Extra arguments go to queue-node (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --release -p raftq-node --bin queue-node -- "$@"
