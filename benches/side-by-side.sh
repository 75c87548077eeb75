#!/usr/bin/env bash
# Karpenter's own performance scenarios (kubernetes-sigs/karpenter test/suites/performance), run once with
# Karpenter's KWOK provider and once with nodesmith, each on a fresh sandbox of its own (ports offset by 300, state
# in target/sandbox-side-by-side), never both at once. Prints a table per scenario with the ratio nodesmith /
# Karpenter per figure and writes it as JSON (target/side-by-side/SCENARIO-PODS.json).
#
# Usage: benches/side-by-side.sh [SCENARIO:PODS ...]
#   default: basic:1000 scale-out:5000 hostname-spread:2000 drift:600 (see benches/side_by_side.rs)
# Environment:
#   HALVES=karpenter,nodesmith   the halves to run; with nodesmith alone there is no Go build and no table
#   SIDE_BY_SIDE_SANDBOX=own     own: a fresh sandbox per half; running: the sandbox already in the environment
#                                (`source <state>/env`), as the make-test case runs it
#   PROFILE=release              the cargo profile of the nodesmith under test (debug: no release build)
#   NODESMITH_BIN, SIDE_BY_SIDE_DRIVER   the nodesmith binary and the driver (examples/side-by-side), built
#                                already: no cargo run
#   SIDE_BY_SIDE_OUT=DIR         where the figures go (default target/side-by-side)
#   SIDE_BY_SIDE_CONSOLIDATION_TIMEOUT=900   seconds after which a consolidation is reported as not settled
#
# Karpenter's half: its KWOK provider (`sigs.k8s.io/karpenter/kwok`, at the version benches/karpenter/go.mod
# pins) is built from its Go module into the cache once, and its CRDs come from the same module.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
HALVES=${HALVES:-karpenter,nodesmith}
MODE=${SIDE_BY_SIDE_SANDBOX:-own}
PROFILE=${PROFILE:-release}
OUT=${SIDE_BY_SIDE_OUT:-$ROOT/target/side-by-side}
CACHE=${NODESMITH_CACHE:-$HOME/.cache/nodesmith}
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=(basic:1000 scale-out:5000 hostname-spread:2000 drift:600); fi
mkdir -p "$OUT"

log() { printf '[side-by-side %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The driver is built without optimization whatever the profile: it only waits and lists, and a release build
# of it would link the whole library again with LTO.
if [ -z "${NODESMITH_BIN:-}" ]; then
  case $PROFILE in
    release) cargo build --release --bin nodesmith ;;
    debug) cargo build --bin nodesmith ;;
    *) echo "PROFILE is release or debug, not $PROFILE" >&2; exit 2 ;;
  esac
  export NODESMITH_BIN=$ROOT/target/$PROFILE/nodesmith
fi
if [ -z "${SIDE_BY_SIDE_DRIVER:-}" ]; then
  cargo build --example side-by-side
  SIDE_BY_SIDE_DRIVER=$ROOT/target/debug/examples/side-by-side
fi
DRIVER=$SIDE_BY_SIDE_DRIVER

if [[ ,$HALVES, == *,karpenter,* ]]; then
  KARPENTER_VERSION=$(sed -n 's/^require sigs\.k8s\.io\/karpenter \(v[^ ]*\)$/\1/p' benches/karpenter/go.mod)
  KARPENTER_DIR=$CACHE/karpenter-kwok-$KARPENTER_VERSION
  export KARPENTER_KWOK_BIN=$KARPENTER_DIR/karpenter-kwok
  if [ ! -x "$KARPENTER_KWOK_BIN" ]; then
    log "building Karpenter's KWOK provider $KARPENTER_VERSION (about 2 minutes)"
    mkdir -p "$KARPENTER_DIR"
    (cd benches/karpenter && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local \
      go build -trimpath -ldflags "-s -w" -o "$KARPENTER_KWOK_BIN.tmp" sigs.k8s.io/karpenter/kwok)
    mv "$KARPENTER_KWOK_BIN.tmp" "$KARPENTER_KWOK_BIN"
  fi
  module=$(cd benches/karpenter && GOWORK=off GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/karpenter@$KARPENTER_VERSION" \
    | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  export KARPENTER_CRDS=$OUT/karpenter-crds
  rm -rf "$KARPENTER_CRDS" && mkdir -p "$KARPENTER_CRDS"
  cp "$module"/kwok/charts/crds/*.yaml "$module"/kwok/apis/crds/*.yaml "$KARPENTER_CRDS/"
fi

sandbox() {
  SANDBOX_PORT_OFFSET=${SANDBOX_PORT_OFFSET_SIDE_BY_SIDE:-300} SANDBOX_STATE=$ROOT/target/sandbox-side-by-side \
    scripts/sandbox "$@"
}
if [ "$MODE" = own ]; then
  trap 'sandbox down >/dev/null' EXIT
  # Each half's sandbox goes with it: nothing waits for its nodes' terminations (the driver's clean-up).
  export SIDE_BY_SIDE_CLEAN_UP=skip
fi

for spec in "${SCENARIOS[@]}"; do
  name=${spec/:/-}
  for half in karpenter nodesmith; do
    [[ ,$HALVES, == *,$half,* ]] || continue
    if [ "$MODE" = own ]; then
      sandbox down >/dev/null
      sandbox up
      # shellcheck disable=SC1091
      source "$ROOT/target/sandbox-side-by-side/env"
    fi
    log "$spec: $half"
    "$DRIVER" run "$half" "$spec" --out "$OUT/$name.$half.json"
  done
  if [[ ,$HALVES, == *,karpenter,* && ,$HALVES, == *,nodesmith,* ]]; then
    "$DRIVER" table "$OUT/$name.karpenter.json" "$OUT/$name.nodesmith.json" --json "$OUT/$name.json"
  fi
done
