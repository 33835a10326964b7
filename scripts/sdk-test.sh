#!/usr/bin/env bash
# Lints and tests the SDKs in sdk/ against real queue-node processes (the
# debug build, which this script builds). Each SDK's tools are installed
# into the cache directory on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/raftq"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
# The binaries as `cargo test` builds them (same features: nothing rebuilt
# after the Rust tests).
cargo test --workspace --locked --no-run
export RAFTQ_BIN_DIR="$CARGO_TARGET_DIR/debug"
for tool in python3 node npm go; do
  command -v "$tool" >/dev/null 2>&1 || { echo "sdk-test: $tool not found; the SDK tests need Python 3.10+, Node.js 20+ and Go 1.26+" >&2; exit 1; }
done

echo "sdk: python"
venv="$cache/sdk-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -e "sdk/python[dev]"
(
  cd sdk/python
  "$venv/bin/ruff" check .
  "$venv/bin/ruff" format --check .
  "$venv/bin/mypy"
  "$venv/bin/pytest" -q
)

echo "sdk: typescript"
(
  cd sdk/typescript
  npm ci --no-audit --no-fund --loglevel=error
  npm run lint
  npm test
)

echo "sdk: go"
(
  cd sdk/go
  unformatted=$(gofmt -l .)
  if [ -n "$unformatted" ]; then
    echo "gofmt: $unformatted" >&2
    exit 1
  fi
  go vet ./...
  go tool -modfile=tools/go.mod staticcheck ./...
  go test -count=1 ./...
)
