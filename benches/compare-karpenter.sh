#!/usr/bin/env bash
# Scheduling throughput, nodesmith vs Karpenter, on the same machine.
#
# Karpenter's side is its own upstream benchmark, BenchmarkScheduling1000 and BenchmarkScheduling5000 of
# sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling (build tag test_performance: 400 fake instance
# types, a mix of generic / zone-spread / hostname-spread / zone self-affinity / hostname anti-affinity pods),
# run from the wrapper module benches/karpenter, which pins sigs.k8s.io/karpenter v1.14.1 (see its README.md).
# Our side is `cargo run --release --example scheduling-throughput -- --pods N --output json`, which prints one
# JSON object such as {"pods":5000,"nodes":123,"pods_per_sec":98765.4,"seconds":0.05}.
#
# Output (stdout): a table (size, pods/sec ours and Karpenter's, ratio ours/Karpenter, nodes ours and
# Karpenter's), then as the very last line `ratio_pods_per_sec_5000=<ours/Karpenter's>`. Progress and the raw
# `go test -bench` output go to stderr.
#
# Environment:
#   NODESMITH_THROUGHPUT_CMD  command (a shell string) for our side; `--pods N --output json` is appended.
#                             Default: cargo run --release --quiet --example scheduling-throughput --
#                             (e.g. NODESMITH_THROUGHPUT_CMD=target/release/examples/scheduling-throughput)
#   KARPENTER_BENCHTIME       go test -benchtime for Karpenter (default 3x: Solve is timed 3 times per size).
#                             Note: with anything but 1x Go runs each benchmark body twice (b.N=1, then b.N=3),
#                             and the pods are drawn from one seed-42 RNG shared by the whole test binary, so the
#                             exact pod mix measured depends on -benchtime and on which benchmarks ran before.
#
# Needs go >= 1.26.6 (GOTOOLCHAIN=local is fine) and the Go module proxy the first time (~2 min cold compile on
# 2 cores); the Go build and module caches are Go's defaults. Runs from any current directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SIZES=(1000 5000)
OURS_CMD=${NODESMITH_THROUGHPUT_CMD:-cargo run --release --quiet --example scheduling-throughput --}
BENCHTIME=${KARPENTER_BENCHTIME:-3x}
KARPENTER_PKG=sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling

die() {
	echo "compare-karpenter: $*" >&2
	exit 1
}

# json_num KEY JSON: the number under KEY in a flat JSON object.
json_num() {
	local v
	if command -v jq >/dev/null 2>&1; then
		v=$(jq -er --arg k "$1" '.[$k] | numbers' <<<"$2" 2>/dev/null) || v=
	else
		v=$(sed -nE 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*(-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?).*/\1/p' <<<"$2")
	fi
	[[ -n $v ]] || return 1
	echo "$v"
}

# --- our side (first: it fails fast while the example is missing or broken) ---
declare -A OURS_PPS OURS_NODES
for n in "${SIZES[@]}"; do
	echo "compare-karpenter: nodesmith, $n pods: $OURS_CMD --pods $n --output json" >&2
	if ! out=$(bash -c "$OURS_CMD \"\$@\"" ours --pods "$n" --output json); then
		die "our throughput command failed for --pods $n: '$OURS_CMD --pods $n --output json'" \
			"(does the scheduling-throughput example exist and build? override with NODESMITH_THROUGHPUT_CMD)"
	fi
	json=$(grep -E '^[[:space:]]*\{' <<<"$out" | tail -n 1) ||
		die "no JSON object in the output of '$OURS_CMD --pods $n --output json': $out"
	OURS_PPS[$n]=$(json_num pods_per_sec "$json") || die "no numeric pods_per_sec in: $json"
	OURS_NODES[$n]=$(json_num nodes "$json") || die "no numeric nodes in: $json"
	pods=$(json_num pods "$json") || die "no numeric pods in: $json"
	[[ $pods == "$n" ]] || echo "compare-karpenter: warning: asked for $n pods, ours reports pods=$pods" >&2
done

# --- Karpenter's side ---
command -v go >/dev/null 2>&1 || die "go not found (needs go >= 1.26.6 for sigs.k8s.io/karpenter v1.14.1)"
bench_re="^BenchmarkScheduling($(
	IFS='|'
	echo "${SIZES[*]}"
))\$"
echo "compare-karpenter: Karpenter: (cd benches/karpenter && GOWORK=off go test -mod=mod $KARPENTER_PKG" \
	"-tags=test_performance -run='^\$' -bench='$bench_re' -benchtime=$BENCHTIME -count=1)" >&2
bench_out=$(mktemp)
trap 'rm -f "$bench_out"' EXIT
if ! (cd benches/karpenter && GOWORK=off go test -mod=mod "$KARPENTER_PKG" -tags=test_performance \
	-run='^$' -bench="$bench_re" -benchtime="$BENCHTIME" -count=1) 2>&1 | tee "$bench_out" >&2; then
	die "Karpenter's benchmark failed (output above)"
fi

# A result line: BenchmarkScheduling5000-2  3  20676699544 ns/op  1000 nodes  5000 pods  241.8 pods/sec
# (metric order is not guaranteed; find each value by the unit that follows it).
declare -A THEIR_PPS THEIR_NODES
for n in "${SIZES[@]}"; do
	line=$(grep -E "^BenchmarkScheduling$n(-[0-9]+)?[[:space:]]" "$bench_out" | tail -n 1) ||
		die "no BenchmarkScheduling$n result line in Karpenter's output"
	THEIR_PPS[$n]=$(awk '{ for (i = 2; i <= NF; i++) if ($i == "pods/sec") print $(i - 1) }' <<<"$line")
	THEIR_NODES[$n]=$(awk '{ for (i = 2; i <= NF; i++) if ($i == "nodes") print $(i - 1) }' <<<"$line")
	[[ -n ${THEIR_PPS[$n]} && -n ${THEIR_NODES[$n]} ]] || die "cannot parse pods/sec and nodes from: $line"
done

# --- report ---
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) exit 1; printf "%.4f", a / b }'; }
printf '%-6s %16s %16s %10s %11s %16s\n' size ours_pods/sec karpenter_pods/s ratio ours_nodes karpenter_nodes
for n in "${SIZES[@]}"; do
	r=$(ratio "${OURS_PPS[$n]}" "${THEIR_PPS[$n]}") || die "Karpenter reported 0 pods/sec for $n pods"
	printf '%-6s %16.1f %16.1f %10s %11.0f %16.0f\n' "$n" "${OURS_PPS[$n]}" "${THEIR_PPS[$n]}" "$r" \
		"${OURS_NODES[$n]}" "${THEIR_NODES[$n]}"
done
echo "ratio_pods_per_sec_5000=$(ratio "${OURS_PPS[5000]}" "${THEIR_PPS[5000]}")"
