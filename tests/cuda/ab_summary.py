#!/usr/bin/env python3
"""Summary of an interleaved A/B of engine settings (device_run.sh's `ab`
step): for each variant and decode batch, the median, min and max step
time and fraction of copy bandwidth over the rounds, and each variant's
median against the first's. Every round ran each variant once, in its own
process, so drift between processes weighs on all of them alike.

  python3 tests/cuda/ab_summary.py OUT_DIR VARIANT...   # reads OUT_DIR/ab-<v>-<round>.json
"""
import glob
import json
import os
import statistics
import sys


def main():
    out, variants = sys.argv[1], sys.argv[2:]
    runs = []  # per variant: {batch: [(step_ms, fraction)]}
    for v in range(len(variants)):
        by_batch = {}
        for path in sorted(glob.glob(os.path.join(out, f"ab-{v}-*.json"))):
            for d in json.load(open(path)).get("decode", []):
                by_batch.setdefault(d["batch"], []).append((d["step_ms"], d["fraction_of_copy_bw"]))
        runs.append(by_batch)
    summary = {}
    for v, name in enumerate(variants):
        for batch, xs in sorted(runs[v].items()):
            ms = [x[0] for x in xs]
            frac = statistics.median(x[1] for x in xs)
            base = runs[0].get(batch)
            vs = statistics.median(x[0] for x in base) / statistics.median(ms) if base else float("nan")
            print(f"{name or '(defaults)':40s} batch {batch:4d}: step {statistics.median(ms):8.3f} ms "
                  f"(min {min(ms):.3f}, max {max(ms):.3f}, {len(ms)} runs) = {100 * frac:5.1f}% of copy bandwidth; "
                  f"{vs:.3f}x the first variant")
            summary.setdefault(name, {})[batch] = {"median_ms": statistics.median(ms), "min_ms": min(ms),
                                                   "max_ms": max(ms), "runs": len(ms),
                                                   "median_fraction_of_copy_bw": frac}
    with open(os.path.join(out, "ab_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
