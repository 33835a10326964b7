#!/usr/bin/env bash
# The web console in headless Chromium (Debian's package, driven by
# playwright-core) against a real 3-node, 4-shard cluster of debug-build
# queue-node processes. Screenshots of each page land in
# queue-node/console/test/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/raftq"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
# The binaries as `cargo test` builds them (nothing rebuilt after it).
cargo test --workspace --locked --no-run
export RAFTQ_BIN_DIR="$CARGO_TARGET_DIR/debug"
export RAFTQ_CHROMIUM="${RAFTQ_CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$RAFTQ_CHROMIUM" ]; then
  echo "console-test: chromium not found (scripts/setup.sh installs Debian's package)" >&2
  exit 1
fi
cd queue-node/console/test
npm ci --no-audit --no-fund --loglevel=error
npm test
