#!/usr/bin/env python3
"""Turns serving_device_run.sh's results into serving_summary.json and a table.

usage: serving_summary.py OUT MODE...
       serving_summary.py --plot SUMMARY.json   (plots beside a merged summary)

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


def line_plot(series, title, xlabel, ylabel, path):
    """A small SVG line plot: series is [(name, [(x, y), ...])]."""
    w, h, l, r, t, b = 640, 400, 70, 170, 40, 50
    pts = [p for _, ps in series for p in ps]
    if not pts:
        return
    xmax = max(x for x, _ in pts) * 1.05 or 1
    ymax = max(y for _, y in pts) * 1.1 or 1
    sx = lambda x: l + (w - l - r) * x / xmax
    sy = lambda y: h - b - (h - t - b) * y / ymax
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w/2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{l}" y1="{h-b}" x2="{w-r}" y2="{h-b}" stroke="black"/>',
           f'<line x1="{l}" y1="{t}" x2="{l}" y2="{h-b}" stroke="black"/>',
           f'<text x="{(l+w-r)/2}" y="{h-12}" text-anchor="middle">{xlabel}</text>',
           f'<text x="16" y="{(t+h-b)/2}" text-anchor="middle" transform="rotate(-90 16 {(t+h-b)/2})">{ylabel}</text>']
    for i in range(6):
        xv, yv = xmax * i / 5, ymax * i / 5
        out.append(f'<text x="{sx(xv)}" y="{h-b+16}" text-anchor="middle">{xv:.0f}</text>')
        out.append(f'<text x="{l-6}" y="{sy(yv)+4}" text-anchor="end">{yv:.3g}</text>')
        out.append(f'<line x1="{l}" y1="{sy(yv)}" x2="{w-r}" y2="{sy(yv)}" stroke="#eee"/>')
    for k, (name, ps) in enumerate(series):
        c = colors[k % len(colors)]
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                   % (c, " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ps)))
        for x, y in ps:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"/>')
        out.append(f'<text x="{w-r+10}" y="{t+18*k+10}" fill="{c}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def plots(rows, out):
    swept = [r for r in rows if r.get("sweep") and r["mode"] != "disagg-mps"]
    line_plot([(r["mode"], [(s["rate"], s["served_req_s"]) for s in r["sweep"]]) for r in swept],
              "Served throughput vs offered load (8B shape, ShareGPT-like)", "offered req/s", "served req/s",
              os.path.join(out, "served_vs_rate.svg"))
    line_plot([(r["mode"], [(s["rate"], s["tpot_p99_s"] * 1e3) for s in r["sweep"]]) for r in swept],
              "TPOT p99 vs offered load", "offered req/s", "TPOT p99 (ms)", os.path.join(out, "tpot_p99_vs_rate.svg"))
    line_plot([(r["mode"], [(s["rate"], s["attainment"]) for s in r["sweep"]]) for r in swept],
              "SLO attainment (TTFT 0.5 s, TPOT 50 ms) vs offered load", "offered req/s", "attainment",
              os.path.join(out, "attainment_vs_rate.svg"))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--plot":
        # Plots of an existing serving_summary.json (e.g. merged from calls).
        path = sys.argv[2]
        plots(json.load(open(path)), os.path.dirname(path) or ".")
        return
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
    plots(rows, out)
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
