// The serving checks of validate_deploy.mjs on one rendered overlay: the
// router's OpenAI-compatible HTTP API reaches clients (container port from
// --http_listen, Service port, NetworkPolicy), the router is ready only
// when it can place a request (HTTP /health), a PodDisruptionBudget covers
// it, and every worker has a startupProbe long enough for an 8B-or-larger
// model read from a network volume.
const MIN_STARTUP_SECONDS = 30 * 60;

function flag(args = [], name) {
  const a = args.find((x) => x.startsWith(`${name}=`));
  return a === undefined ? undefined : a.slice(name.length + 1);
}

const componentOf = (d) => d.spec.template.metadata.labels["app.kubernetes.io/component"];

function selectsRouter(selector = {}) {
  const labels = { "app.kubernetes.io/name": "tandem", "app.kubernetes.io/component": "router" };
  const match = selector.matchLabels || {};
  return Object.keys(match).length > 0 && Object.entries(match).every(([k, v]) => labels[k] === v);
}

export function checkServing(overlay, docs, fail) {
  const deployments = docs.filter((d) => d.kind === "Deployment");
  const router = deployments.find((d) => componentOf(d) === "router");
  if (!router) {
    fail(`${overlay}: no router Deployment`);
    return;
  }
  const c = router.spec.template.spec.containers[0];
  const where = `${overlay}: ${router.metadata.name}/${c.name}`;
  const listen = flag(c.args, "--http_listen");
  const httpPort = listen === undefined ? undefined : Number(listen.split(":").pop());
  const containerPort = (c.ports || []).find((p) => p.containerPort === httpPort);
  if (!listen) fail(`${where}: no --http_listen (the OpenAI-compatible API)`);
  else if (!containerPort?.name) fail(`${where}: --http_listen port ${httpPort} is not a named container port`);

  // Ready only when a request can be placed: /health over HTTPS when the
  // router runs TLS (it serves the HTTP API with its certificate).
  const ready = c.readinessProbe?.httpGet;
  if (!ready || ready.path !== "/health") {
    fail(`${where}: readiness is not the HTTP API's /health (ready only when a request can be placed)`);
  } else {
    if (ready.port !== containerPort?.name && ready.port !== httpPort) fail(`${where}: readiness probes port ${ready.port}, not the HTTP API's`);
    const tls = flag(c.args, "--tls_cert") !== undefined;
    if (tls && ready.scheme !== "HTTPS") fail(`${where}: the router serves HTTPS but its readiness probe is ${ready.scheme || "HTTP"}`);
  }

  const service = docs.find((d) => d.kind === "Service" && d.metadata.name === "tandem-router");
  if (service && containerPort && !(service.spec.ports || []).some((p) => p.targetPort === containerPort.name || p.targetPort === httpPort)) {
    fail(`${overlay}: the tandem-router Service does not expose the HTTP API`);
  }
  const policies = docs.filter((d) => d.kind === "NetworkPolicy" && selectsRouter(d.spec.podSelector));
  if (containerPort && policies.length > 0 &&
      !policies.some((p) => (p.spec.ingress || []).some((r) => !r.from && (r.ports || []).some((x) => x.port === containerPort.name)))) {
    fail(`${overlay}: no NetworkPolicy opens the router's HTTP API to clients`);
  }

  const pdbs = docs.filter((d) => d.kind === "PodDisruptionBudget" && selectsRouter(d.spec.selector));
  if (pdbs.length === 0) fail(`${overlay}: no PodDisruptionBudget covers the router`);
  for (const p of pdbs) {
    if (p.spec.minAvailable === undefined && p.spec.maxUnavailable === undefined) fail(`${overlay}: PodDisruptionBudget ${p.metadata.name} limits nothing`);
  }

  for (const d of deployments.filter((x) => componentOf(x) !== "router")) {
    for (const w of d.spec.template.spec.containers) {
      const at = `${overlay}: ${d.metadata.name}/${w.name}`;
      const s = w.startupProbe;
      if (!s) {
        fail(`${at}: no startupProbe (liveness would kill a worker still loading its model)`);
        continue;
      }
      const seconds = (s.periodSeconds ?? 10) * (s.failureThreshold ?? 3);
      if (seconds < MIN_STARTUP_SECONDS) fail(`${at}: startupProbe allows ${seconds} s for the model load; want >= ${MIN_STARTUP_SECONDS}`);
      if (!s.exec?.command?.includes("health")) fail(`${at}: startupProbe is not \`tandem health\``);
    }
  }
}
