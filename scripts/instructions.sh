#!/usr/bin/env bash
# Instructions (valgrind --tool=callgrind, counted inside the measured call
# only) and allocations per request for each workload request of the pure
# core, on the release build: the same binary and input give the same
# numbers on every run, so a 5 % step shows. Prints one Markdown table row
# per case, headed by the commit; BENCHMARKS.md keeps one table per commit.
#
#   bash scripts/instructions.sh            # every case
#   CASES='mutate+validate/update_running_denied' bash scripts/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }

BIN=$(cargo bench --locked --bench instructions --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
[ -x "$BIN" ] || { echo "instructions.sh: no bench binary" >&2; exit 1; }

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)
echo "instructions per request, commit ${commit}${dirty} ($(date -u +%F)), \`bash scripts/instructions.sh\`:"
echo
echo "| case | request bytes | instructions/op | allocations/op | allocated bytes/op |"
echo "| --- | ---: | ---: | ---: | ---: |"
allocs=$("$BIN" allocs)
"$BIN" list | while read -r name bytes per; do
  if [ -n "${CASES:-}" ] && ! grep -qxF "$name" <<<"${CASES// /$'\n'}"; then continue; fi
  n=10; [ "$per" -gt 1 ] && n=1
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*instructions::measured*' \
    "$BIN" run "$name" "$n" 2> "$out" >/dev/null
  collected=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out" | tail -1)
  rm -f "$out"
  line=$(grep -F "$name," <<<"$allocs" | head -1)
  a=$(cut -d, -f4 <<<"$line"); ab=$(cut -d, -f5 <<<"$line")
  python3 -c "import sys
name, bytes_, per, n, c, a, ab = sys.argv[1:8]
ops = int(n) * int(per)
print(f'| {name} | {int(bytes_):,} | {int(c) // ops:,} | {a} | {int(float(ab)):,} |')" \
    "$name" "$bytes" "$per" "$n" "$collected" "$a" "$ab"
done
