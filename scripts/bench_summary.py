"""Median (min-max) of the load generator's JSON lines on stdin; saves the
median throughput to /tmp/bench-<label>.json for the floor ratio."""
import json
import statistics
import sys

label = sys.argv[1]
rows = [json.loads(line) for line in sys.stdin if line.startswith("{")]


def show(key, fmt="{:.0f}"):
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return "n/a"
    return (fmt + " (" + fmt + "-" + fmt + ")").format(statistics.median(vals), min(vals), max(vals))


errors = sum(r["errors"] for r in rows)
exits = sorted({r["exit_code"] for r in rows}, key=str)
print(
    f"{label}: rps {show('rps')}; p50 us {show('p50_us')}; p90 us {show('p90_us')}; "
    f"p99 us {show('p99_us')}; p99.9 us {show('p999_us')}; errors {errors}; "
    f"peak RSS KiB {show('peak_rss_kib')}; idle RSS KiB {show('idle_rss_kib')}; "
    f"ready ms {show('ready_ms', '{:.1f}')}; exit codes {exits}"
)
with open(f"/tmp/bench-{label}.json", "w") as f:
    json.dump({"label": label, "rps": statistics.median(r["rps"] for r in rows) if rows else 0}, f)
