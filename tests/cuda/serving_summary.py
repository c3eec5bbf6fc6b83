#!/usr/bin/env python3
"""Turns serving_device_run.sh's results into serving_summary.json and a table.

usage: serving_summary.py OUT MODE...

Reads OUT/MODE/offline/results.json (1000 requests at once) and
OUT/MODE/sweep/results.json (the open-loop sweep) of each mode and writes
OUT/serving_summary.json: a list of
  {"mode", "offline": {"completed", "failed", "output_tokens_per_s",
   "ttft_p50_s", "tpot_p50_s", "tpot_p99_s"},
   "goodput_req_s": {"tpot_0.050": x, "tpot_0.025": y}}
Goodput is tandem-bench's goodput_served: requests/s served within both
objectives at the highest swept rate whose attainment is >= 90%. The MPS
splits are reported each, and the best (by goodput at TPOT 25 ms, then
offline throughput) once more as "disagg-mps".
"""
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def summarize(out, mode):
    off = load(os.path.join(out, mode, "offline", "results.json"))
    sweep = load(os.path.join(out, mode, "sweep", "results.json"))
    row = {"mode": mode, "offline": None, "goodput_req_s": None}
    if off and off.get("runs"):
        r = off["runs"][0]
        row["offline"] = {
            "completed": r["completed"],
            "failed": r["failed"],
            "output_tokens_per_s": r["output_tokens_per_s"],
            "ttft_p50_s": r["ttft_s"]["p50"],
            "tpot_p50_s": r["tpot_s"]["p50"],
            "tpot_p99_s": r["tpot_s"]["p99"],
        }
    if sweep and "goodput_served" in sweep:
        g = sweep["goodput_served"]
        row["goodput_req_s"] = {"tpot_0.050": g.get("tpot_0.050", 0.0), "tpot_0.025": g.get("tpot_0.025", 0.0)}
        row["sweep"] = [
            {"rate": r["rate"], "served_req_s": r["request_throughput"], "attainment": r["attainment"]["all"],
             "tpot_p50_s": r["tpot_s"]["p50"], "tpot_p99_s": r["tpot_s"]["p99"], "ttft_p99_s": r["ttft_s"]["p99"]}
            for r in sweep["runs"]
        ]
    return row


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, modes = sys.argv[1], sys.argv[2:]
    rows = [summarize(out, m) for m in modes]
    mps = [r for r in rows if r["mode"].startswith("mps-") and r["offline"] and r["goodput_req_s"]]
    if mps:
        best = max(mps, key=lambda r: (r["goodput_req_s"]["tpot_0.025"], r["offline"]["output_tokens_per_s"]))
        rows.append(dict(best, mode="disagg-mps", split=best["mode"]))
    with open(os.path.join(out, "serving_summary.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(f"{'mode':<12} {'done':>5} {'fail':>5} {'out tok/s':>10} {'TTFT p50':>9} {'TPOT p50':>9} "
          f"{'TPOT p99':>9} {'p99/p50':>8} {'gp@50ms':>8} {'gp@25ms':>8}")
    missing = False
    for r in rows:
        o, g = r["offline"], r["goodput_req_s"] or {"tpot_0.050": float("nan"), "tpot_0.025": float("nan")}
        if not o:
            print(f"{r['mode']:<12} missing results")
            missing = True
            continue
        ratio = o["tpot_p99_s"] / o["tpot_p50_s"] if o["tpot_p50_s"] > 0 else float("nan")
        print(f"{r['mode']:<12} {o['completed']:>5} {o['failed']:>5} {o['output_tokens_per_s']:>10.0f} "
              f"{o['ttft_p50_s']:>8.2f}s {o['tpot_p50_s']*1e3:>7.1f}ms {o['tpot_p99_s']*1e3:>7.1f}ms {ratio:>8.2f} "
              f"{g['tpot_0.050']:>8.2f} {g['tpot_0.025']:>8.2f}")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
