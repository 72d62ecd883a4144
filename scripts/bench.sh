#!/usr/bin/env bash
# Reruns every number in BENCHMARKS.md (about 7 minutes on 2 cores, after a
# release build of about 5): criterion on the pure core, then the load generator against
# the transport floor and against agentic-webhook, each started fresh by the
# load generator (start-to-ready and peak RSS come from those runs).
#
#   bash scripts/bench.sh            # everything
#   RUNS=5 bash scripts/bench.sh     # more load runs per setting (median, min–max)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
DURATION="${DURATION:-8s}"

echo "== build (release)"
cargo build --release --locked --bin agentic-webhook --example loadgen --example floor

if [ "${SKIP_CRITERION:-}" != 1 ]; then
echo "== criterion: pure core (decode → rules → encode)"
cargo bench --locked --bench core -- --noplot 2>&1 | grep -E '^(admission|conversion)/|time:' | grep -v 'change:' | grep -vE '\[[+−-][0-9.]+%'
fi

LG=target/release/examples/loadgen
summarize() { python3 scripts/bench_summary.py "$1"; }

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
  python3 -c '
import json, sys
f = json.load(open(f"/tmp/bench-{sys.argv[1]}-floor.json"))["rps"]
w = json.load(open(f"/tmp/bench-{sys.argv[1]}-webhook.json"))["rps"]
print(f"{sys.argv[1]}: throughput ratio webhook/floor = {w / f:.2f}")' "$label"
}

echo "== closed loop, 4 HTTP/2 connections, 32 in flight: admission reviews only"
pair admission --mix create=1,update=1,status=1

echo "== closed loop, default mix (10% conversion lists of 20 objects)"
pair mixed

echo "== open loop at 5,000 reviews/s, admission only (latency from each request's scheduled time)"
pair rate5k --rate 5000 --concurrency 64 --mix create=1,update=1,status=1

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
