// Waits until a Prometheus server has scraped each of <n> targets
// successfully at least twice, so that a rate() over what follows has a
// sample from before it. Prometheus hands new targets to its scrapers only
// every 5 s after start (the discovery manager's throttle), so a fixed sleep
// before the load is not enough on a slow machine.
// Usage: node wait_prometheus_targets.mjs <prometheus url> <n> [timeout s]
const [prom, wanted, timeoutArg] = process.argv.slice(2);
const n = Number(wanted);
const deadline = Date.now() + 1000 * Number(timeoutArg || 60);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// up is 1 for a successful scrape and 0 for a failed one, so
// sum_over_time(up[1m]) counts each target's successful scrapes.
const expr = "sum_over_time(up[1m])";
let last = "no answer yet";
while (Date.now() < deadline) {
  try {
    const r = await fetch(`${prom}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = await r.json();
    if (body.status === "success") {
      const ready = body.data.result.filter((s) => Number(s.value[1]) >= 2).length;
      last = `${ready} of ${body.data.result.length} targets scraped twice`;
      if (ready >= n) {
        console.log(last);
        process.exit(0);
      }
    } else {
      last = body.error;
    }
  } catch (err) {
    last = err.message;  // not listening yet
  }
  await sleep(250);
}
console.error(`timed out waiting for ${n} scraped targets: ${last}`);
process.exit(1);
