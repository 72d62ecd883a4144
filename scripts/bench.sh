#!/usr/bin/env bash
# Reruns every number in BENCHMARKS.md from one command (about 25 minutes on
# 2 cores, after release builds of about 10): instructions and allocations
# per request under callgrind (scripts/instructions.sh, needs valgrind);
# criterion on the pure core;
# the load generator against the transport floor, agentic-webhook and
# agnhost (the Kubernetes e2e webhook), each started fresh by the load
# generator (start-to-ready and peak RSS come from those runs); the write
# latency through a real kube-apiserver; the reconciler at 100 and 1,000
# sessions on a real kube-apiserver.
#
#   bash scripts/bench.sh                         # everything
#   RUNS=5 bash scripts/bench.sh                  # more load runs per setting (median, min–max)
#   SESSIONS=100,1000,10000 bash scripts/bench.sh # the reconciler at 10,000 too (+17 min)
#   SKIP_APISERVER=1 bash scripts/bench.sh        # without the two real-apiserver benches
#   SKIP_INSTRUCTIONS=1 bash scripts/bench.sh     # without the callgrind counts
#
# The real-apiserver benches need etcd (`apt-get install etcd-server`) and
# ../shared/kube/kube-apiserver.xz, as the tests do (docs/testing.md); the
# side-by-side runs need agnhost from ../shared/kube and `unshare --net`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_APISERVER:-}" != 1 ] && [ "${1:-}" != --trio ] && [ -z "${KUBEBUILDER_ASSETS:-}" ] \
  && ! command -v etcd >/dev/null; then
  echo "bench.sh: no etcd for the real-apiserver benches: apt-get install etcd-server, or SKIP_APISERVER=1" >&2
  exit 1
fi

RUNS="${RUNS:-3}"
DURATION="${DURATION:-8s}"
LG=target/release/examples/loadgen
summarize() { python3 scripts/bench_summary.py "$1"; }
ratio() { # label, server, baseline
  python3 -c '
import json, sys
label, a, b = sys.argv[1:4]
x = json.load(open(f"/tmp/bench-{label}-{a}.json"))["rps"]
y = json.load(open(f"/tmp/bench-{label}-{b}.json"))["rps"]
print(f"{label}: throughput ratio {a}/{b} = {x / y:.2f}")' "$@"
}
AGNHOST=target/kube-assets/agnhost

# Floor, agentic-webhook and agnhost on the same stack and load, alternating
# so drift on a shared machine hits all three. Runs in a network namespace
# whose only interface is lo (agnhost listens on every interface).
trio() { # label, extra loadgen args...
  local label="$1"; shift
  ip link set lo up
  for s in floor webhook agnhost; do : > "/tmp/bench-$label-$s.jsonl"; done
  for _ in $(seq "$RUNS"); do
    "$LG" --json --duration "$DURATION" --spawn target/release/examples/floor --floor \
      --addr 127.0.0.1:19443 --probe-addr 127.0.0.1:19080 "$@" | tail -1 >> "/tmp/bench-$label-floor.jsonl"
    "$LG" --json --duration "$DURATION" --spawn target/release/agentic-webhook \
      --addr 127.0.0.1:18443 --probe-addr 127.0.0.1:18080 "$@" | tail -1 >> "/tmp/bench-$label-webhook.jsonl"
    "$LG" --json --duration "$DURATION" --spawn "$AGNHOST" --agnhost \
      --addr 127.0.0.1:17443 "$@" | tail -1 >> "/tmp/bench-$label-agnhost.jsonl"
  done
  for s in floor webhook agnhost; do summarize "$label-$s" < "/tmp/bench-$label-$s.jsonl"; done
  ratio "$label" webhook floor
  ratio "$label" agnhost floor
}
if [ "${1:-}" = --trio ]; then shift; trio "$@"; exit; fi

echo "== build (release)"
cargo build --release --locked --bin agentic-webhook --example loadgen --example floor

if [ "${SKIP_INSTRUCTIONS:-}" != 1 ] && command -v valgrind >/dev/null; then
echo "== instructions and allocations per request (callgrind; deterministic)"
bash scripts/instructions.sh
fi

if [ "${SKIP_CRITERION:-}" != 1 ]; then
echo "== criterion: pure core (decode → rules → encode)"
cargo bench --locked --bench core -- --noplot 2>&1 | grep -E '^(admission|conversion)/|time:' | grep -v 'change:' | grep -vE '\[[+−-][0-9.]+%'
fi

# Floor and webhook runs alternate, so drift on a shared machine hits both.
pair() { # label, extra loadgen args...
  local label="$1"; shift
  : > "/tmp/bench-$label-floor.jsonl"; : > "/tmp/bench-$label-webhook.jsonl"
  for _ in $(seq "$RUNS"); do
    "$LG" --json --duration "$DURATION" --spawn target/release/examples/floor --floor \
      --addr 127.0.0.1:19443 --probe-addr 127.0.0.1:19080 "$@" | tail -1 >> "/tmp/bench-$label-floor.jsonl"
    "$LG" --json --duration "$DURATION" --spawn target/release/agentic-webhook \
      --addr 127.0.0.1:18443 --probe-addr 127.0.0.1:18080 "$@" | tail -1 >> "/tmp/bench-$label-webhook.jsonl"
  done
  summarize "$label-floor" < "/tmp/bench-$label-floor.jsonl"
  summarize "$label-webhook" < "/tmp/bench-$label-webhook.jsonl"
  ratio "$label" webhook floor
}

echo "== closed loop, 4 HTTP/2 connections, 32 in flight: admission reviews only; floor / agentic-webhook / agnhost"
if [ ! -x "$AGNHOST" ] && [ -f ../shared/kube/agnhost.xz ]; then
  mkdir -p "$(dirname "$AGNHOST")"
  xz -dc ../shared/kube/agnhost.xz > "$AGNHOST.tmp" && chmod 755 "$AGNHOST.tmp" && mv "$AGNHOST.tmp" "$AGNHOST"
fi
if [ -x "$AGNHOST" ] && unshare --net true 2>/dev/null; then
  unshare --net bash "$0" --trio admission --mix create=1,update=1,status=1
else
  echo "(no agnhost or no unshare --net here: floor and agentic-webhook only)"
  pair admission --mix create=1,update=1,status=1
fi

echo "== closed loop, default mix (10% conversion lists of 20 objects)"
pair mixed

echo "== open loop at 5,000 reviews/s, admission only (latency from each request's scheduled time)"
pair rate5k --rate 5000 --concurrency 64 --mix create=1,update=1,status=1

[ "${SKIP_APISERVER:-}" = 1 ] && exit 0

echo "== write latency through a real kube-apiserver: no webhooks / the product / agnhost, with and without matchConditions"
# In a network namespace of its own (only loopback): agnhost listens on
# every interface. Needs root (or user namespaces) for unshare.
cargo bench --locked --no-run --bench write_latency 2>&1 | tail -1
WL=$(ls -t target/release/deps/write_latency-* | grep -v '\.d$' | head -1)
if unshare --net true 2>/dev/null; then
  unshare --net sh -c "ip link set lo up && $WL --bench --writes ${WRITES:-300}"
else
  echo "(no unshare --net here: running without the agnhost set-ups)"
  "$WL" --bench --writes "${WRITES:-300}"
fi

echo "== the reconciler on a real kube-apiserver: ${SESSIONS:-100,1000} sessions created by 8 clients"
cargo bench --locked --bench reconcile_load -- --sessions "${SESSIONS:-100,1000}" --clients 8 2>&1 | grep -vE '^\s*(Compiling|Finished|Running)'

