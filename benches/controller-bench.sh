#!/usr/bin/env bash
# The controller's benchmarks, on a sandbox of their own (ports offset by 200, state in target/sandbox-bench):
#   pod unschedulable -> CreateFleet latency (p50, p99), and resident memory with many nodes and pods cached.
# Usage: benches/controller-bench.sh [latency ROUNDS PODS] [memory NODES PODS]   (default: both, 10x4 and 1000/10000)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export SANDBOX_PORT_OFFSET=${SANDBOX_PORT_OFFSET:-200}
export SANDBOX_STATE=${SANDBOX_STATE:-$ROOT/target/sandbox-bench}
cargo build --release --bin nodesmith --example controller-bench
trap 'scripts/sandbox down' EXIT
scripts/sandbox up
# shellcheck disable=SC1091
source "$SANDBOX_STATE/env"
export NODESMITH_BIN=$ROOT/target/release/nodesmith
if [ $# -eq 0 ]; then
  target/release/examples/controller-bench latency 10 4
  target/release/examples/controller-bench memory 1000 10000
else
  target/release/examples/controller-bench "$@"
fi
