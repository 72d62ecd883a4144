#!/usr/bin/env bash
# Peak RSS (VmHWM) of the release server for large bodies, as in
# BENCHMARKS.md "Memory". Needs curl and python3; ~1 min after the build.
#   bash scripts/memory-peaks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin agentic-webhook >/dev/null
BIN=$PWD/target/release/agentic-webhook
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
python3 - "$DIR" <<'PY'
import json, sys
d = sys.argv[1]
fx = lambda n: json.load(open(f"tests/fixtures/{n}"))
def conversion(size, name):
    v = fx("07-get-list-v1alpha1.convert-01.json"); one = v["request"]["objects"][0]
    v["request"]["objects"] = [one] * ((size - 4096) // (len(json.dumps(one)) + 2))
    open(f"{d}/{name}", "w").write(json.dumps(v))
conversion(60_000_000, "conv60.json")
conversion((62 << 20) * 4 // 9, "conv128mi.json")
v = fx("01-apply-v1alpha1-legacy.mutate.json")
v["request"]["object"]["spec"]["prompt"] = "x" * ((63 << 20) // 10 - 4096)
open(f"{d}/prompt128mi.json", "w").write(json.dumps(v))
conversion(64 << 20, "conv256mi.json")
v["request"]["object"]["spec"]["prompt"] = "x" * ((8 << 20) - 4096)
open(f"{d}/prompt256mi.json", "w").write(json.dumps(v))
PY
run() { # run NAME "serve args" "route file"...
  local name=$1 args=$2; shift 2
  "$BIN" serve --self-signed --ca-out "$DIR/ca.crt" --addr 127.0.0.1:18743 \
    --probe-addr 127.0.0.1:18780 $args >"$DIR/log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:18780/readyz >/dev/null && break; sleep 0.1; done
  local base; base=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  local codes=() pids=()
  for rf in "$@"; do
    curl -s -o /dev/null -w '%{http_code} ' --http2 --cacert "$DIR/ca.crt" \
      -H 'Content-Type: application/json' --data-binary "@$DIR/${rf#* }" \
      "https://127.0.0.1:18743${rf% *}?timeout=30s" >"$DIR/code.$RANDOM" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  local peak; peak=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  printf '%-44s idle %6d KiB  peak %7d KiB  answers: %s\n' "$name" "$base" "$peak" "$(cat "$DIR"/code.* | tr -s ' ')"
  rm -f "$DIR"/code.*
  kill $pid; wait $pid 2>/dev/null || true
}
run "one 60 MB conversion, no limit" "" "/convert conv60.json"
run "four 60 MB conversions at once, no limit" "" "/convert conv60.json" "/convert conv60.json" "/convert conv60.json" "/convert conv60.json"
run "128Mi: 4 largest conversions + 4 largest mutations" "--memory-limit 128Mi" \
  "/convert conv128mi.json" "/convert conv128mi.json" "/convert conv128mi.json" "/convert conv128mi.json" \
  "/mutate prompt128mi.json" "/mutate prompt128mi.json" "/mutate prompt128mi.json" "/mutate prompt128mi.json"
run "256Mi (shipped): 4 largest conversions + 4 largest mutations" "--memory-limit 256Mi" \
  "/convert conv256mi.json" "/convert conv256mi.json" "/convert conv256mi.json" "/convert conv256mi.json" \
  "/mutate prompt256mi.json" "/mutate prompt256mi.json" "/mutate prompt256mi.json" "/mutate prompt256mi.json"
