// The transport-security checks of validate_deploy.mjs on one rendered
// overlay (a list of objects): mutual TLS on every container, probes that
// speak it, the router's api token, a certificate that names what the
// processes check, and NetworkPolicies that keep the workers to tandem pods.
import path from "node:path";

const TLS_FLAGS = ["--tls_cert", "--tls_key", "--tls_client_ca"];

// --flag=value arguments as a map.
function flags(args = []) {
  const m = new Map();
  for (const a of args) {
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) m.set(a.slice(0, eq), a.slice(eq + 1));
  }
  return m;
}

// The Secret mounted at the directory holding `file`, or undefined.
function secretMountedFor(file, container, podSpec) {
  for (const vm of container.volumeMounts || []) {
    if (path.dirname(file) !== vm.mountPath.replace(/\/$/, "")) continue;
    const vol = (podSpec.volumes || []).find((v) => v.name === vm.name);
    return vol?.secret?.secretName;
  }
  return undefined;
}

export function checkSecurity(overlay, docs, fail) {
  const certs = docs.filter((d) => d.kind === "Certificate");
  const certBySecret = new Map(certs.map((c) => [c.spec.secretName, c]));
  const issuers = new Set(docs.filter((d) => d.kind === "Issuer").map((d) => d.metadata.name));
  for (const c of certs) {
    if (!issuers.has(c.spec.issuerRef?.name)) fail(`${overlay}: Certificate ${c.metadata.name} names no Issuer here`);
  }

  const services = new Map(docs.filter((d) => d.kind === "Service").map((d) => [d.metadata.name, d]));
  for (const d of docs.filter((x) => x.kind === "Deployment")) {
    const podSpec = d.spec.template.spec;
    const component = d.spec.template.metadata.labels["app.kubernetes.io/component"];
    for (const c of podSpec.containers) {
      const where = `${overlay}: ${d.metadata.name}/${c.name}`;
      const f = flags(c.args);
      for (const flag of TLS_FLAGS) {
        if (!f.has(flag)) {
          fail(`${where}: no ${flag} (every process runs mutual TLS)`);
          continue;
        }
        const secret = secretMountedFor(f.get(flag), c, podSpec);
        if (!secret) fail(`${where}: ${flag}=${f.get(flag)} is not in a mounted Secret`);
        else if (!certBySecret.has(secret)) fail(`${where}: ${flag} comes from Secret ${secret}, which no Certificate issues`);
      }
      const cert = certBySecret.get(secretMountedFor(f.get("--tls_cert") || "", c, podSpec));
      if (cert) {
        const usages = new Set(cert.spec.usages || []);
        if (!usages.has("server auth") || !usages.has("client auth")) {
          fail(`${where}: Certificate ${cert.metadata.name} must allow server auth and client auth (mutual TLS)`);
        }
        const names = new Set(cert.spec.dnsNames || []);
        const serverName = f.get("--tls_server_name");
        if (serverName && !names.has(serverName)) {
          fail(`${where}: --tls_server_name=${serverName} is not a dnsName of Certificate ${cert.metadata.name}`);
        }
        const router = f.get("--router");
        if (router && !names.has(router.split(":")[0])) {
          fail(`${where}: the router's name ${router} is not a dnsName of Certificate ${cert.metadata.name}`);
        }
      }
      // The kubelet's gRPC probe speaks no TLS: probes run `tandem health`
      // with the container's own TLS files. The router's readiness is its
      // HTTP /health instead (validate_deploy_serving.mjs).
      for (const kind of ["readinessProbe", "livenessProbe", "startupProbe"]) {
        if (kind === "startupProbe" && !c[kind]) continue;  // required of workers by the serving checks
        if (kind === "readinessProbe" && component === "router" && c[kind]?.httpGet) continue;
        const cmd = c[kind]?.exec?.command;
        if (!cmd || !cmd.includes("health")) {
          fail(`${where}: ${kind} is not \`tandem health\``);
          continue;
        }
        const pf = flags(cmd);
        for (const flag of [...TLS_FLAGS, "--tls_server_name"]) {
          if (pf.get(flag) !== f.get(flag)) fail(`${where}: ${kind} ${flag} differs from the container's`);
        }
        const port = Number((pf.get("--address") || "").split(":")[1]);
        if (!c.ports?.some((p) => p.containerPort === port)) fail(`${where}: ${kind} checks port ${port}, not the container's`);
      }
      if (component === "router") {
        const token = f.get("--api_token_file");
        if (!token) fail(`${where}: the public API takes no --api_token_file`);
        else if (!secretMountedFor(token, c, podSpec)) fail(`${where}: --api_token_file is not in a mounted Secret`);
        if (f.has("--api_token")) fail(`${where}: --api_token puts the token in the pod spec; use --api_token_file`);
      }
    }
  }

  // NetworkPolicies: worker pods admit tandem pods on any port and others
  // on the metrics port only; the router's gRPC port is open.
  const policies = docs.filter((d) => d.kind === "NetworkPolicy");
  const selects = (policy, labels) => {
    const sel = policy.spec.podSelector || {};
    for (const [k, v] of Object.entries(sel.matchLabels || {})) if (labels[k] !== v) return false;
    for (const e of sel.matchExpressions || []) {
      if (e.operator === "In" && !e.values.includes(labels[e.key])) return false;
      if (e.operator !== "In") return false;
    }
    return true;
  };
  for (const component of ["router", "prefill", "decode"]) {
    const labels = { "app.kubernetes.io/name": "tandem", "app.kubernetes.io/component": component };
    const mine = policies.filter((p) => selects(p, labels) && (p.spec.policyTypes || []).includes("Ingress"));
    if (mine.length === 0) {
      fail(`${overlay}: no NetworkPolicy limits ingress to ${component} pods`);
      continue;
    }
    for (const p of mine) {
      for (const rule of p.spec.ingress || []) {
        const ports = (rule.ports || []).map((x) => x.port);
        const fromTandemOnly =
          rule.from?.length > 0 &&
          rule.from.every((f) => !f.namespaceSelector && !f.ipBlock && f.podSelector?.matchLabels?.["app.kubernetes.io/name"] === "tandem");
        const publicPort = component === "router" && ports.length > 0 && ports.every((x) => x === "grpc" || x === "http");
        const metricsOnly = ports.length > 0 && ports.every((x) => x === "metrics");
        if (!fromTandemOnly && !publicPort && !metricsOnly) {
          fail(`${overlay}: NetworkPolicy ${p.metadata.name} lets non-tandem callers reach internal ports of ${component} pods`);
        }
      }
    }
    if (component === "router" && !mine.some((p) => (p.spec.ingress || []).some((r) => !r.from && (r.ports || []).some((x) => x.port === "grpc")))) {
      fail(`${overlay}: the router's public gRPC port is not open to clients`);
    }
  }
  if (![...services.values()].some((s) => s.metadata.name === "tandem-router")) fail(`${overlay}: no tandem-router Service`);
}
