#!/usr/bin/env bash
# The controller's benchmarks, on a sandbox of their own (ports offset by 200, state in target/sandbox-bench):
#   pod unschedulable -> CreateFleet latency (p50, p99), resident memory with many nodes and pods cached, and a
#   burst of spot interruption warnings (nodesmith, then Karpenter's interruption controller on the same burst).
# Usage: benches/controller-bench.sh [latency ROUNDS PODS] [memory NODES PODS] [interruptions N]
#          [interruption-handler N]
#   (default: latency 10 4 and memory 1000 10000). `interruptions` runs the whole controller, terminations
#   included; `interruption-handler` its interruption handler alone, as Karpenter's half runs its own.
#   HALVES=nodesmith skips Karpenter's half of either (and its Go build, a few minutes the first time).
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
case ${1:-} in interruptions | interruption-handler) burst=yes ;; *) burst=no ;; esac
if [ $burst = yes ]; then
  # The bench makes its Nodes itself; the registrar, listing a thousand instances every second, would only load
  # moto, which nodesmith's terminations (begun by the burst) share.
  registrar=$(cat "$SANDBOX_STATE/pids/registrar.pid")
  kill -TERM -- "-$registrar" 2>/dev/null || kill -TERM "$registrar"
fi
if [ $# -eq 0 ]; then
  target/release/examples/controller-bench latency 10 4
  target/release/examples/controller-bench memory 1000 10000
else
  target/release/examples/controller-bench "$@"
fi

# Karpenter's half of the burst: its interruption controller (github.com/aws/karpenter-provider-aws, built from its
# Go module by benches/karpenter-interruption) on an envtest control plane made of the sandbox's own etcd and
# kube-apiserver, its queue on the same SQS server as nodesmith's half (the bench binary serves it).
if [ $burst = yes ] && [ "${HALVES:-both}" != nodesmith ]; then
  sqs_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  target/release/examples/controller-bench sqs-server "$sqs_port" >target/controller-bench-sqs.out 2>target/controller-bench-sqs.log &
  sqs_pid=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$sqs_port") 2>/dev/null && break; sleep 0.1; done
  trap 'kill $sqs_pid 2>/dev/null; scripts/sandbox down' EXIT
  (cd benches/karpenter-interruption &&
    GOWORK=off GOFLAGS=-mod=mod KUBEBUILDER_ASSETS=$NODESMITH_SANDBOX_BIN AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$sqs_port \
      BURST_MESSAGES=${2:-1000} go test -v -count=1 -run '^TestInterruptionBurst$' -timeout 60m . 2>&1 |
    tee "$ROOT/target/controller-bench-karpenter.log" | grep '^karpenter: ')
  # The server's counts: more received than sent means some messages came back after their visibility timeout.
  kill -TERM "$sqs_pid" && wait "$sqs_pid" || true
  echo "karpenter: $(cat target/controller-bench-sqs.out)"
fi
