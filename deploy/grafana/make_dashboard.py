#!/usr/bin/env python3
"""Writes tandem-dashboard.json, the Grafana dashboard for tandem (and its
copy in deploy/base for the Kustomize ConfigMap).

Edit the panels here and run `python3 deploy/grafana/make_dashboard.py`;
the JSON is what users import (Dashboards > Import, pick a Prometheus data
source). Every query is templated on $datasource, $model and $namespace.
"""
import json
import os

SEL = 'model=~"$model", namespace=~"$namespace"'
DS = {"type": "prometheus", "uid": "${datasource}"}

panels = []
next_id = [1]
y = [0]


def row(title):
    panels.append({"type": "row", "title": title, "id": next_id[0], "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    next_id[0] += 1
    y[0] += 1


def panel(title, targets, unit, x, w=8, h=8, description="", kind="timeseries", thresholds=None):
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "id": next_id[0],
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y[0]},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [{"datasource": DS, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
    }
    if thresholds:
        p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area"}
    panels.append(p)
    next_id[0] += 1


def quantiles(metric):
    return [(f'histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{SEL}}}[$__rate_interval])))', f"p{int(q * 100)}")
            for q in (0.5, 0.9, 0.99)]


row("SLO")
panel("Time to first token", quantiles("tandem_time_to_first_token_seconds") +
      [(f'max(tandem_slo_ttft_target_seconds{{{SEL}}})', "target")], "s", 0,
      description="Arrival at the router until the first token was sent, against the TTFT objective.")
panel("Time per output token", quantiles("tandem_time_per_output_token_seconds") +
      [(f'max(tandem_slo_tpot_target_seconds{{{SEL}}})', "target")], "s", 8,
      description="Per request (last - first token) / (tokens - 1), against the TPOT objective.")
panel("Goodput", [
    (f'sum(rate(tandem_slo_requests_total{{slo="all", attained="true", {SEL}}}[$__rate_interval]))', "requests/s meeting both SLOs"),
    (f'sum(rate(tandem_requests_total{{outcome="ok", {SEL}}}[$__rate_interval]))', "successful requests/s"),
], "reqps", 16, description="Requests per second that met both their TTFT and TPOT objectives.")
y[0] += 8
panel("SLO attainment", [
    (f'sum by (slo) (rate(tandem_slo_requests_total{{attained="true", {SEL}}}[$__rate_interval])) / '
     f'sum by (slo) (rate(tandem_slo_requests_total{{{SEL}}}[$__rate_interval]))', "{{slo}}"),
], "percentunit", 0, description="Share of successful requests meeting each objective (all = both).")
panel("Error budget burn rate (95% objective)", [
    (f'(sum(rate(tandem_slo_requests_total{{slo="all", attained="false", {SEL}}}[1h])) / '
     f'sum(rate(tandem_slo_requests_total{{slo="all", {SEL}}}[1h]))) / 0.05', "1h window"),
    (f'(sum(rate(tandem_slo_requests_total{{slo="all", attained="false", {SEL}}}[6h])) / '
     f'sum(rate(tandem_slo_requests_total{{slo="all", {SEL}}}[6h]))) / 0.05', "6h window"),
], "x", 8, description="1 = spending the budget exactly over the SLO period; 14.4 pages (see the alert rules).",
      thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 6}, {"color": "red", "value": 14.4}])
panel("Requests by outcome", [
    (f'sum by (outcome, finish_reason) (rate(tandem_requests_total{{{SEL}}}[$__rate_interval]))', "{{outcome}} {{finish_reason}}"),
], "reqps", 16)
y[0] += 8
panel("Token throughput", [
    (f'sum(rate(tandem_generation_tokens_total{{{SEL}}}[$__rate_interval]))', "generated tokens/s"),
    (f'sum(rate(tandem_prompt_tokens_total{{{SEL}}}[$__rate_interval]))', "prompt tokens/s"),
], "short", 0)
panel("End-to-end latency", quantiles("tandem_e2e_request_latency_seconds"), "s", 8)
panel("Inter-token latency", quantiles("tandem_inter_token_latency_seconds"), "s", 16)
y[0] += 8
panel("Where TTFT goes (p90)", [
    (f'histogram_quantile(0.9, sum by (le) (rate(tandem_request_queue_time_seconds_bucket{{{SEL}}}[$__rate_interval])))', "queue"),
    (f'histogram_quantile(0.9, sum by (le) (rate(tandem_request_prefill_time_seconds_bucket{{{SEL}}}[$__rate_interval])))', "prefill"),
    (f'histogram_quantile(0.9, sum by (le) (rate(tandem_request_kv_transfer_time_seconds_bucket{{{SEL}}}[$__rate_interval])))', "KV transfer"),
], "s", 0, w=12)
panel("Requests in flight at the router", [
    (f'sum(tandem_router_requests_running{{{SEL}}})', "in flight"),
], "short", 12, w=12)
y[0] += 8

row("Capacity by role")
panel("Decode batch size", [
    (f'sum by (instance) (tandem_decode_batch_size{{role="decode", {SEL}}})', "{{instance}}"),
    (f'histogram_quantile(0.5, sum by (le) (rate(tandem_decode_batch_size_per_iteration_bucket{{{SEL}}}[$__rate_interval])))', "p50 per iteration"),
], "short", 0)
panel("KV cache utilisation", [
    (f'tandem_kv_cache_utilization_ratio{{{SEL}}}', "{{role}} {{instance}}"),
], "percentunit", 8)
panel("KV blocks used / total", [
    (f'sum by (role) (tandem_kv_blocks_used{{{SEL}}})', "{{role}} used"),
    (f'sum by (role) (tandem_kv_blocks_capacity{{{SEL}}})', "{{role}} total"),
], "short", 16)
y[0] += 8
panel("Running and waiting requests", [
    (f'sum by (role) (tandem_requests_running{{{SEL}}})', "{{role}} running"),
    (f'sum by (role) (tandem_requests_waiting{{{SEL}}})', "{{role}} waiting"),
], "short", 0)
panel("Prefill queue", [
    (f'sum by (instance) (tandem_prefill_queued_prompt_tokens{{{SEL}}})', "{{instance}}"),
], "short", 8)
panel("Preemptions", [
    (f'sum by (instance) (rate(tandem_preemptions_total{{{SEL}}}[$__rate_interval]))', "{{instance}}"),
], "ops", 16)
y[0] += 8
panel("KV transfer bandwidth", [
    (f'sum by (transport) (rate(tandem_kv_transfer_bytes_total{{{SEL}}}[$__rate_interval]))', "{{transport}} (average)"),
    (f'max by (transport) (tandem_kv_transfer_bandwidth_bytes_per_second{{{SEL}}})', "{{transport}} last transfer"),
], "Bps", 0)
panel("KV transfer time", quantiles("tandem_kv_transfer_time_seconds"), "s", 8)
panel("Prefill batch time", quantiles("tandem_prefill_batch_time_seconds"), "s", 16)
y[0] += 8

row("Prefix cache")
panel("Prefix cache hit rate", [
    (f'sum(rate(tandem_prefix_cache_hit_tokens_total{{{SEL}}}[$__rate_interval])) / '
     f'sum(rate(tandem_prefix_cache_queried_tokens_total{{{SEL}}}[$__rate_interval]))', "workers"),
    (f'sum by (role) (rate(tandem_prefix_cache_hit_tokens_total{{{SEL}}}[$__rate_interval])) / '
     f'sum by (role) (rate(tandem_prefix_cache_queried_tokens_total{{{SEL}}}[$__rate_interval]))', "{{role}}"),
    (f'sum(rate(tandem_router_routed_prefix_hit_tokens_total{{{SEL}}}[$__rate_interval])) / '
     f'sum(rate(tandem_router_routed_prompt_tokens_total{{{SEL}}}[$__rate_interval]))', "routed (router's prediction)"),
], "percentunit", 0,
      description="Share of prompt tokens served from cached KV blocks, as the workers counted them (all, and by "
                  "role) and as the router predicted when it placed the requests (its prefix index, fed by the "
                  "workers' block events). The router's above the workers': its index is stale, or the workers "
                  "evicted what it expected.")
panel("Time to first token by prefix hit", [
    (f'histogram_quantile({q}, sum by (le, prefix_cache) (rate(tandem_router_ttft_by_prefix_seconds_bucket{{{SEL}}}[$__rate_interval])))',
     f"p{int(q * 100)} {{{{prefix_cache}}}}") for q in (0.5, 0.9)
] + [
    (f'sum by (prefix_cache) (rate(tandem_router_ttft_by_prefix_seconds_count{{{SEL}}}[$__rate_interval]))',
     "{{prefix_cache}} req/s"),
], "s", 8,
      description="TTFT of requests placed on a worker predicted to hold a prefix of the prompt (hit) and of the rest (miss).")
panel("Prefix cache blocks and evictions", [
    (f'sum by (role) (tandem_prefix_cache_blocks{{{SEL}}})', "{{role}} cached blocks"),
    (f'sum by (role) (rate(tandem_prefix_cache_evictions_total{{{SEL}}}[$__rate_interval]))', "{{role}} evictions/s"),
    (f'max(tandem_router_prefix_index_blocks{{{SEL}}})', "router index keys"),
], "short", 16,
      description="Blocks in the workers' prefix caches, how fast they are evicted for room, and the distinct "
                  "block keys in the router's prefix index.")
y[0] += 8

dashboard = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                  "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                   {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
    "title": "tandem: SLOs and capacity",
    "uid": "tandem-slo",
    "tags": ["tandem", "llm", "slo"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "refresh": "30s",
    "time": {"from": "now-1h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1},
        {"name": "model", "label": "Model", "type": "query", "datasource": DS,
         "query": {"query": "label_values(tandem_requests_total, model)", "refId": "model"},
         "definition": "label_values(tandem_requests_total, model)",
         "includeAll": True, "allValue": ".*", "multi": True, "current": {}, "refresh": 2, "hide": 0},
        {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS,
         "query": {"query": "label_values(tandem_requests_total, namespace)", "refId": "namespace"},
         "definition": "label_values(tandem_requests_total, namespace)",
         "includeAll": True, "allValue": ".*", "multi": True, "current": {}, "refresh": 2, "hide": 0},
    ]},
    "annotations": {"list": []},
    "panels": panels,
}

here = os.path.dirname(os.path.abspath(__file__))
# The Kustomize base carries a copy: Kustomize reads no file outside its root.
for out in (os.path.join(here, "tandem-dashboard.json"), os.path.join(here, "..", "base", "tandem-dashboard.json")):
    with open(out, "w") as f:
        json.dump(dashboard, f, indent=2)
        f.write("\n")
    print("wrote", os.path.normpath(out))
