#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, property, gRPC,
# multi-process cluster and operator tests, then the Helm chart tests, the
# web console in a real browser, and the SDKs (Python, TypeScript, Go)
# against real nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
./scripts/chart-test.sh
./scripts/console-test.sh
./scripts/sdk-test.sh
