#!/usr/bin/env python3
"""Turns prefix_device_run.sh's results into prefix_summary.json, a table and plots.

usage: prefix_summary.py OUT

Reads OUT/CACHING/WORKLOAD/rate-R/results.json (tandem-bench, one rate
each) for CACHING in on/off and WORKLOAD in multiturn/system_prompt/random,
and writes OUT/prefix_summary.json: a list of
  {"workload", "caching", "ttft_p50_s", "ttft_p99_s", "goodput_req_s", "hit_rate",
   "routed_hit_rate", "oracle_hit_rate", "report_rate", "rates": [...]}
TTFT and the hit rates are those of the lowest swept rate (prefill time,
not queueing); goodput_req_s is the requests/s served within both
objectives at the highest rate whose attainment is >= 90% (0 if none).
hit_rate is the workers' own count (prefix-cache hit over queried prompt
tokens during the run), null where no worker exported it.
Then the issue's targets: multiturn TTFT p50 off/on >= 4, system_prompt
goodput on/off >= 2, random goodput and TTFT p50 within 3%.
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_summary import line_plot  # noqa: E402  (same directory)

WORKLOADS = ("multiturn", "system_prompt", "random")
ATTAINMENT_TARGET = 0.9


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def runs_of(out, caching, workload):
    """The run of each rate, sorted by rate."""
    runs = []
    for path in glob.glob(os.path.join(out, caching, workload, "rate-*", "results.json")):
        j = load(path)
        if j and j.get("runs"):
            runs.extend(j["runs"])
    return sorted(runs, key=lambda r: r["rate"])


def summarize(out, caching, workload):
    runs = runs_of(out, caching, workload)
    if not runs:
        return None
    low = runs[0]
    met = [r for r in runs if r["attainment"]["all"] >= ATTAINMENT_TARGET]
    return {
        "workload": workload,
        "caching": caching,
        "ttft_p50_s": low["ttft_s"]["p50"],
        "ttft_p99_s": low["ttft_s"]["p99"],
        "goodput_req_s": met[-1]["goodput_req_s"] if met else 0.0,
        "hit_rate": low.get("hit_rate"),
        "routed_hit_rate": low.get("routed_hit_rate"),
        "oracle_hit_rate": low.get("oracle_hit_rate"),
        "report_rate": low["rate"],
        "rates": [{"rate": r["rate"], "completed": r["completed"], "failed": r["failed"],
                   "ttft_p50_s": r["ttft_s"]["p50"], "ttft_p99_s": r["ttft_s"]["p99"],
                   "attainment": r["attainment"]["all"], "goodput_req_s": r["goodput_req_s"],
                   "hit_rate": r.get("hit_rate"), "routed_hit_rate": r.get("routed_hit_rate"),
                   "oracle_hit_rate": r.get("oracle_hit_rate")} for r in runs],
    }


def plots(rows, out):
    for metric, label, scale in (("ttft_p50_s", "TTFT p50 (ms)", 1e3), ("goodput_req_s", "goodput (req/s)", 1)):
        for w in WORKLOADS:
            series = [(f"caching {r['caching']}", [(s["rate"], s[metric] * scale) for s in r["rates"]])
                      for r in rows if r["workload"] == w]
            if series:
                line_plot(series, f"{w}: {label} vs offered load (8B shape, H200)", "offered req/s", label,
                          os.path.join(out, f"{w}_{metric}.svg"))


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    rows = [r for c in ("on", "off") for w in WORKLOADS if (r := summarize(out, c, w))]
    with open(os.path.join(out, "prefix_summary.json"), "w") as f:
        json.dump(rows, f, indent=1)
    plots(rows, out)
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
    print(f"{'workload':<14} {'caching':<8} {'TTFT p50':>9} {'TTFT p99':>9} {'goodput':>8} {'hit':>6} "
          f"{'routed':>6} {'oracle':>6}")
    for r in rows:
        print(f"{r['workload']:<14} {r['caching']:<8} {r['ttft_p50_s']:>8.3f}s {r['ttft_p99_s']:>8.3f}s "
              f"{r['goodput_req_s']:>8.2f} {fmt(r['hit_rate']):>6} {fmt(r['routed_hit_rate']):>6} "
              f"{fmt(r['oracle_hit_rate']):>6}")
    by = {(r["workload"], r["caching"]): r for r in rows}
    missing = [f"{w}/{c}" for w in WORKLOADS for c in ("on", "off") if (w, c) not in by]
    if missing:
        print("missing results: " + ", ".join(missing))
        sys.exit(1)
    mt = ratio(by["multiturn", "off"]["ttft_p50_s"], by["multiturn", "on"]["ttft_p50_s"])
    sp = ratio(by["system_prompt", "on"]["goodput_req_s"], by["system_prompt", "off"]["goodput_req_s"])
    rg = ratio(by["random", "on"]["goodput_req_s"], by["random", "off"]["goodput_req_s"])
    rt = ratio(by["random", "on"]["ttft_p50_s"], by["random", "off"]["ttft_p50_s"])
    print(f"multiturn TTFT p50 off/on: {mt:.2f}x (target >= 4)")
    print(f"system_prompt goodput on/off: {sp:.2f}x (target >= 2)")
    print(f"random goodput on/off: {rg:.3f}, TTFT p50 on/off: {rt:.3f} (target within 3%)")


if __name__ == "__main__":
    main()
