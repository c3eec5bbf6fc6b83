# Shared by the device scripts that start real clusters on the GPU machine
# (disagg_device_run.sh, nccl_device_run.sh); sourced, not run. It holds
# the PASS/FAIL bookkeeping, the cleanup of every child process, the
# watchdog that keeps a run inside the device call's limit, and the checks
# both scripts make (ports, metrics, token equality, no KV block in use).
#
# harness_init NAME SECONDS first, with OUT set: makes RUN (a scratch
# directory) and SUMMARY ($OUT/summary.txt), starts the watchdog, and sets
# `status` (0 until a check fails). Scripts add their children's pids to
# ALL_PIDS; start_cluster (the scripts' own) sets CLUSTER_PIDS and the
# PREFILL_METRICS / DECODE_METRICS ports used below.

pass() { echo "PASS: $*" | tee -a "$SUMMARY"; }
fail() { echo "FAIL: $*" | tee -a "$SUMMARY"; status=1; }

# Kill every child still running: SIGTERM, a moment, then SIGKILL.
cleanup() {
  local p
  for p in "${ALL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 1
  for p in "${ALL_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  [[ -n ${WATCHDOG:-} ]] && kill "$WATCHDOG" 2>/dev/null
  rm -rf "$RUN"
}

harness_init() {
  local name=$1 limit=$2
  RUN=$(mktemp -d "/tmp/$name-run.XXXXXX")
  SUMMARY=$OUT/summary.txt
  : > "$SUMMARY"
  status=0
  ALL_PIDS=()
  trap cleanup EXIT
  trap 'echo "FAIL: interrupted (time limit?)" | tee -a "$SUMMARY"; exit 1' INT TERM
  # The whole run stays inside the device call's limit. The watchdog's
  # stdio is /dev/null so that it never holds the caller's pipe open, and
  # killing it kills its sleep too.
  (
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$limit" &
    sleeper=$!
    wait "$sleeper"
    echo "FAIL: time limit ($limit s) reached" >> "$SUMMARY"
    kill -TERM $$
    # The script runs its trap only once its foreground command returns:
    # end that command (this script's own children, by parent pid).
    pkill -TERM -P $$
  ) < /dev/null > /dev/null 2>&1 &
  WATCHDOG=$!
}

# wait_file FILE SECONDS PID: until FILE has two lines (ports), the process dies, or time runs out.
wait_file() {
  local f=$1 t=$2 pid=$3 i
  for ((i = 0; i < t * 10; ++i)); do
    [[ -f $f && $(wc -l < "$f") -ge 2 ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# metric_sum PORT NAME [SUBSTRING...]: the sum of the values of NAME's
# samples on /metrics whose labels contain every SUBSTRING ("" if none).
metric_sum() {
  python3 - "$@" <<'EOF_PY'
import sys, urllib.request
port, name, needles = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
except Exception:
    sys.exit(0)
values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
          if (line.startswith(name + "{") or line.startswith(name + " ")) and all(n in line for n in needles)]
if values:
    print(f"{sum(values):g}")
EOF_PY
}

stop_cluster() {
  local p i
  for p in "${CLUSTER_PIDS[@]:1}" "${CLUSTER_PIDS[0]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${CLUSTER_PIDS[@]}"; do
    for ((i = 0; i < 100; ++i)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  CLUSTER_PIDS=()
}

# No KV block may stay in use once every request finished (reservations
# and sequences freed on the decode side, scratch freed on the prefill side).
check_no_blocks_used() {
  local name=$1 role port used
  sleep 1.5  # the gauges follow the load report
  for role in prefill decode; do
    port=$PREFILL_METRICS; [[ $role == decode ]] && port=$DECODE_METRICS
    used=$(metric_sum "$port" tandem_kv_blocks_used)
    if [[ $used == 0 ]]; then
      pass "$name: no KV block left in use on the $role worker"
    else
      fail "$name: $role worker has KV blocks in use after the run: '${used}'"
    fi
  done
}

# compare_tokens WANT.jsonl GOT.jsonl: same token ids per request.
compare_tokens() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
def tokens(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        if "token" in j:
            out.setdefault(j["request"], []).append(j["token"])
    return out
want, got = tokens(sys.argv[1]), tokens(sys.argv[2])
bad = [r for r in sorted(want) if want[r] != got.get(r)]
if not want or bad or len(got) != len(want):
    for r in bad[:3]:
        print(f"request {r}: want {want[r][:12]} got {got.get(r, [])[:12]}")
    print(f"{len(want)} requests, {len(bad)} differ, {len(got)} came back")
    sys.exit(1)
print(f"{len(want)} requests, {sum(len(v) for v in want.values())} tokens equal")
EOF
}
