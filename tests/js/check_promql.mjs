// Runs every PromQL expression of tandem's Grafana dashboard and Prometheus
// rules against a live Prometheus that scrapes a local tandem cluster, and
// checks the metrics against what the test's client observed.
// Usage: node check_promql.mjs <prometheus url> <repo root> <client.json>
// client.json: {"ok_requests": N, "generated_tokens": N, "ttft_seconds": [..]}
import { readFileSync } from "node:fs";
import path from "node:path";
import * as yaml from "js-yaml";

const [prom, root, clientFile] = process.argv.slice(2);
const client = JSON.parse(readFileSync(clientFile, "utf8"));
const failures = [];

async function query(expr) {
  const r = await fetch(`${prom}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = await r.json();
  if (body.status !== "success") throw new Error(`${expr}: ${body.error}`);
  return body.data.result;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The dashboard's template variables, as Grafana would expand them for
// "All" over this cluster.
const expand = (e) => e.replaceAll("$__rate_interval", "1m").replaceAll("$model", ".*").replaceAll("$namespace", ".*");

const exprs = [];
const dashboard = JSON.parse(readFileSync(path.join(root, "deploy/grafana/tandem-dashboard.json"), "utf8"));
for (const p of dashboard.panels) for (const t of p.targets || []) exprs.push({ where: `panel "${p.title}"`, expr: expand(t.expr) });
for (const v of dashboard.templating.list) {
  if (v.type !== "query") continue;
  // label_values(metric, label) is Grafana's; the metric must have data.
  const m = /label_values\(([^,]+),/.exec(v.definition);
  if (m) exprs.push({ where: `variable $${v.name}`, expr: m[1] });
}
const rules = yaml.load(readFileSync(path.join(root, "deploy/prometheus/tandem-rules.yaml"), "utf8"));
for (const g of rules.groups) {
  for (const r of g.rules) {
    if (r.record) {
      exprs.push({ where: `rule ${r.record}`, expr: r.expr });
      exprs.push({ where: `recorded series ${r.record}`, expr: r.record });
    } else {
      // An alert fires only when things go wrong; what must return data is
      // each side of its condition without the threshold.
      for (const part of r.expr.split(/\s+and\s+/)) {
        exprs.push({ where: `alert ${r.alert}`, expr: part.replace(/\s*>\s*[^>]*$/, "") });
      }
    }
  }
}

// Scrapes and rule evaluations run every second; give them time.
let empty = exprs;
for (let attempt = 0; attempt < 30 && empty.length; ++attempt) {
  const still = [];
  for (const e of empty) {
    try {
      const result = await query(e.expr);
      if (!result.length || result.every((s) => s.value && (s.value[1] === "NaN"))) still.push(e);
    } catch (err) {
      still.push({ ...e, error: err.message });
    }
  }
  empty = still;
  if (empty.length) await sleep(1000);
}
for (const e of empty) failures.push(`${e.where}: no data for ${e.expr}${e.error ? " (" + e.error + ")" : ""}`);

const scalar = async (expr) => {
  const r = await query(expr);
  return r.length ? Number(r[0].value[1]) : NaN;
};
// Prometheus holds what it scraped up to one interval ago: wait until the
// last request's counts are in (or give up after 15 s and report).
let ok, tokens;
for (let attempt = 0; attempt < 60; ++attempt) {
  ok = await scalar('sum(tandem_requests_total{outcome="ok"})');
  tokens = await scalar("sum(tandem_generation_tokens_total)");
  if (ok === client.ok_requests && tokens === client.generated_tokens) break;
  await sleep(250);
}
if (ok !== client.ok_requests) failures.push(`tandem_requests_total{outcome="ok"} is ${ok}, the client finished ${client.ok_requests}`);
const ttftCount = await scalar("sum(tandem_time_to_first_token_seconds_count)");
if (ttftCount !== client.ok_requests) failures.push(`TTFT histogram counted ${ttftCount} requests, not ${client.ok_requests}`);
if (tokens !== client.generated_tokens) failures.push(`tandem_generation_tokens_total is ${tokens}, the client got ${client.generated_tokens}`);

// The client's TTFT includes the network and the client's own scheduling,
// so each request's server-side TTFT is at most the client's, and at least
// the client's minus one bucket's width (or 10 ms, for the millisecond
// buckets on a busy CI machine): cumulative counts agree within that.
const buckets = (await query("sum by (le) (tandem_time_to_first_token_seconds_bucket)"))
  .map((s) => ({ le: s.metric.le === "+Inf" ? Infinity : Number(s.metric.le), count: Number(s.value[1]) }))
  .sort((a, b) => a.le - b.le);
for (let i = 0; i < buckets.length; ++i) {
  const le = buckets[i].le;
  const next = i + 1 < buckets.length ? Math.max(buckets[i + 1].le, le + 0.010) : Infinity;
  const atMost = client.ttft_seconds.filter((t) => t <= le).length;
  const atMostNext = client.ttft_seconds.filter((t) => t <= next).length;
  if (buckets[i].count < atMost || buckets[i].count > atMostNext) {
    failures.push(`TTFT bucket le=${le}: metrics count ${buckets[i].count}, client says between ${atMost} and ${atMostNext}`);
  }
}

if (failures.length) {
  for (const f of failures) console.error("FAIL " + f);
  console.error(`${failures.length} problem(s) out of ${exprs.length} expressions`);
  process.exit(1);
}
console.log(`all ${exprs.length} dashboard and rule expressions return data; counts and TTFT agree`);
