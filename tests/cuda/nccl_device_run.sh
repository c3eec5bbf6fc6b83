#!/usr/bin/env bash
# The NCCL KV transport on two GPUs (nvidia-h200-x2), in one device call
# (under 8 min):
#   unit    nccl_gpu_test: a decode process on GPU 1, this one on GPU 0, a
#           staged and a direct transfer through libnccl, every byte checked
#   parity  router + prefill worker on GPU 0 + decode worker on GPU 1 on the
#           built-in model, --transport=nccl, and --transport=auto with
#           different TANDEM_HOST_IDs per worker (so that auto must pick
#           nccl over cuda_ipc): greedy tokens of a set of prompts through
#           `tandem client` equal `tandem generate --device=cuda`; the
#           prefill log and tandem_kv_transfers_total name nccl; no KV block
#           stays in use on either worker
#   bench   nccl_gpu_bench: KV bytes/s for 512..16k-token prompts of the
#           8B KV layout (direct and staged plans) next to the NCCL
#           all-reduce bus bandwidth of the same GPUs, measured in the same
#           run (bench.json, bench.txt)
#   ttft    the 8B-shaped model (dummy weights) through the cluster over
#           nccl: client TTFT of 2k-token prompts against the prefill
#           worker's own prefill-alone compute time and transfer tail
#           (from its metrics), ttft.txt
# Results and logs go under $OUT; every check prints a PASS or FAIL line
# (also in $OUT/summary.txt); the exit status is 0 only if all passed.
#
# Staging (here, after building a CUDA + NCCL build, e.g. build-nccl):
#   bash tests/cuda/nccl_device_run.sh stage [BUILD_DIR]
# makes .device-pack/nccl.tar.gz; carry .device-pack and run, on
# nvidia-h200-x2:
#   STEPS="unit parity bench ttft" bash tests/cuda/nccl_device_run.sh
set -uo pipefail
ROOT=$PWD
D=$ROOT/.device-nccl
PACK=$ROOT/.device-pack/nccl.tar.gz
BINARIES="tandem tandem-router tandem-prefill-worker tandem-decode-worker nccl_gpu_test nccl_gpu_bench nccl_transport_test"

if [[ ${1:-} == stage ]]; then
  set -e
  source "$ROOT/tests/cuda/stage_pack.sh"
  stage_pack "${2:-build-nccl}" "$D" "$PACK" --ucx_modules --model8b=device -- $BINARIES
  exit 0
fi

OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-unit parity bench ttft}
mkdir -p "$OUT"
if [[ ! -x $D/bin/tandem && -f $PACK ]]; then tar -C "$ROOT" -xzf "$PACK"; fi
BIN=${BIN:-$D/bin}
export LD_LIBRARY_PATH=$D/lib:/usr/local/cuda/lib64
export UCX_MODULE_DIR=$D/lib/ucx
export UCX_WARN_UNUSED_ENV_VARS=n
# NVLink multicast stays off (the transport also forces it, with overwrite).
export NCCL_NVLS_ENABLE=0
MODEL8B=${MODEL8B:-$D/model8b}
[[ -d $MODEL8B ]] || MODEL8B=$ROOT/.device/model8b
source "$ROOT/tests/cuda/cluster_harness.sh"
harness_init nccl "${TIME_LIMIT:-480}"

[[ -x $BIN/tandem ]] || { fail "no staged binaries in $BIN (run the stage step first)"; exit 1; }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
nvidia-smi topo -m > "$OUT/topo.txt" 2>&1
(( $(wc -l < "$OUT/gpu.txt") >= 2 )) || { fail "fewer than two GPUs visible"; exit 1; }

# start_cluster NAME TRANSPORT PREFILL_HOST_ID DECODE_HOST_ID [-- ARGS for
# router] [--- ARGS for both workers]: prefill on GPU 0, decode on GPU 1.
start_cluster() {
  local name=$1 transport=$2 phost=$3 dhost=$4; shift 4
  local router_args=() worker_args=()
  while [[ $# -gt 0 && $1 != --- ]]; do router_args+=("$1"); shift; done
  [[ ${1:-} == --- ]] && shift
  worker_args=("$@")
  local dir=$RUN/$name
  mkdir -p "$dir" "$OUT/$name"
  CLUSTER_PIDS=()
  "$BIN/tandem-router" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --http_listen=127.0.0.1:0 --port_file="$dir/router.port" \
    "${router_args[@]}" > "$OUT/$name/router.log" 2>&1 &
  CLUSTER_PIDS+=($!); ALL_PIDS+=($!)
  wait_file "$dir/router.port" 30 "${CLUSTER_PIDS[0]}" || { fail "$name: router did not start"; return 1; }
  ROUTER=127.0.0.1:$(head -1 "$dir/router.port")
  TANDEM_HOST_ID=$dhost "$BIN/tandem-decode-worker" --router="$ROUTER" --listen=127.0.0.1:0 \
    --metrics_listen=127.0.0.1:0 --port_file="$dir/decode.port" --device=cuda --gpu=1 --gpu_memory_fraction=0.8 \
    --num_kv_blocks=0 --transport="$transport" "${worker_args[@]}" > "$OUT/$name/decode.log" 2>&1 &
  CLUSTER_PIDS+=($!); ALL_PIDS+=($!)
  TANDEM_HOST_ID=$phost "$BIN/tandem-prefill-worker" --router="$ROUTER" --listen=127.0.0.1:0 \
    --metrics_listen=127.0.0.1:0 --port_file="$dir/prefill.port" --device=cuda --gpu=0 --gpu_memory_fraction=0.8 \
    --num_kv_blocks=0 --transport="$transport" "${worker_args[@]}" > "$OUT/$name/prefill.log" 2>&1 &
  CLUSTER_PIDS+=($!); ALL_PIDS+=($!)
  wait_file "$dir/decode.port" 150 "${CLUSTER_PIDS[1]}" || { fail "$name: decode worker did not start"; tail -5 "$OUT/$name/decode.log"; return 1; }
  wait_file "$dir/prefill.port" 150 "${CLUSTER_PIDS[2]}" || { fail "$name: prefill worker did not start"; tail -5 "$OUT/$name/prefill.log"; return 1; }
  DECODE_METRICS=$(sed -n 2p "$dir/decode.port")
  PREFILL_METRICS=$(sed -n 2p "$dir/prefill.port")
  local until=$((SECONDS + 90))
  while ((SECONDS < until)); do
    timeout 30 "$BIN/tandem" client --router="$ROUTER" --max_new_tokens=1 --temperature=0 --token_ids "1,2,3" \
      > /dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "$name: the cluster never answered a request"
  return 1
}

PROMPTS=(
  "Once upon a time"
  "The capital of France is"
  "def fibonacci(n):"
  "$(printf 'The quick brown fox jumps over the lazy dog. %.0s' {1..40})"
  "$(printf 'Disaggregated prefill ships the KV cache block by block, layer by layer. %.0s' {1..25})"
)
GREEDY=(--temperature=0 --max_new_tokens=24 --ignore_eos --output=jsonl)

step_unit() {
  echo "=== unit ($(date +%T))"
  if timeout 120 "$BIN/nccl_gpu_test" > "$OUT/nccl_gpu_test.log" 2>&1; then
    if grep -q "SKIPPED" "$OUT/nccl_gpu_test.log"; then
      fail "nccl_gpu_test skipped (two GPUs not visible?)"
    else
      pass "nccl_gpu_test: staged and direct transfers GPU 0 -> GPU 1, every byte checked"
    fi
  else
    fail "nccl_gpu_test (see nccl_gpu_test.log)"
    tail -20 "$OUT/nccl_gpu_test.log"
  fi
  if timeout 60 "$BIN/nccl_transport_test" > "$OUT/nccl_transport_test.log" 2>&1; then
    pass "nccl_transport_test (fake NCCL) on the device image"
  else
    fail "nccl_transport_test (see nccl_transport_test.log)"
  fi
}

# parity_run NAME ARGS...: greedy tokens of every prompt, one at a time
# and all at once, into $OUT/parity/NAME-<i>.jsonl / NAME-batched.jsonl.
parity_run() {
  local name=$1 i; shift
  for i in "${!PROMPTS[@]}"; do
    timeout 60 "$@" "${GREEDY[@]}" "${PROMPTS[$i]}" > "$OUT/parity/$name-$i.jsonl" 2>> "$OUT/parity/$name.err" || return 1
  done
  timeout 120 "$@" "${GREEDY[@]}" "${PROMPTS[@]}" > "$OUT/parity/$name-batched.jsonl" 2>> "$OUT/parity/$name.err"
}

step_parity() {
  echo "=== parity ($(date +%T))"
  mkdir -p "$OUT/parity"
  if ! parity_run generate "$BIN/tandem" generate --device=cuda; then
    fail "tandem generate --device=cuda (see parity/generate.err)"
    return
  fi
  local name transport phost dhost i bad counted
  # nccl by name on one host id; auto across two host ids (same host, but
  # auto must then pass over cuda_ipc and pick nccl, not ucx_staged).
  for name in nccl auto; do
    transport=$name phost=node-a dhost=node-a
    [[ $name == auto ]] && dhost=node-b
    start_cluster "parity-$name" "$transport" "$phost" "$dhost" || { stop_cluster; continue; }
    if parity_run "client-$name" "$BIN/tandem" client --router="$ROUTER"; then
      bad=0
      for i in "${!PROMPTS[@]}"; do
        compare_tokens "$OUT/parity/generate-$i.jsonl" "$OUT/parity/client-$name-$i.jsonl" \
          >> "$OUT/parity/compare-$name.txt" || bad=$((bad + 1))
      done
      ((bad == 0)) && pass "parity $name: greedy tokens of ${#PROMPTS[@]} prompts equal tandem generate --device=cuda" \
        || fail "parity $name: $bad of ${#PROMPTS[@]} prompts differ (parity/compare-$name.txt)"
      compare_tokens "$OUT/parity/generate-batched.jsonl" "$OUT/parity/client-$name-batched.jsonl" \
        >> "$OUT/parity/compare-$name.txt" && pass "parity $name: concurrent requests equal generate of all at once" \
        || fail "parity $name: concurrent requests differ from generate of all at once"
    else
      fail "parity $name: tandem client failed"
      tail -5 "$OUT/parity/client-$name.err"
    fi
    grep -q "goes over nccl" "$OUT/parity-$name/prefill.log" && pass "parity $name: the prefill worker logs KV going over nccl" \
      || { fail "parity $name: no 'goes over nccl' in the prefill log"; grep -i "goes over\|nccl" "$OUT/parity-$name/prefill.log" | head -5; }
    counted=$(metric_sum "$PREFILL_METRICS" tandem_kv_transfers_total 'transport="nccl"' 'outcome="ok"')
    if [[ -n $counted ]] && python3 -c "import sys; sys.exit(0 if float('$counted') >= 2 * ${#PROMPTS[@]} else 1)"; then
      pass "parity $name: tandem_kv_transfers_total{transport=\"nccl\",outcome=\"ok\"} = $counted"
    else
      fail "parity $name: tandem_kv_transfers_total for nccl is '${counted}'"
    fi
    check_no_blocks_used "parity $name"
    stop_cluster
  done
}

step_bench() {
  echo "=== bench ($(date +%T))"
  if timeout 240 "$BIN/nccl_gpu_bench" --gtest_also_run_disabled_tests > "$OUT/bench.log" 2>&1; then
    pass "nccl_gpu_bench (bench.json)"
  else
    fail "nccl_gpu_bench (see bench.log)"
    tail -20 "$OUT/bench.log"
  fi
  python3 - "$OUT/bench.log" "$OUT/bench.json" <<'PY' | tee "$OUT/bench.txt"
import json, sys
rows = [json.loads(l.split("NCCL_BENCH ", 1)[1]) for l in open(sys.argv[1]) if l.startswith("NCCL_BENCH ")]
json.dump(rows, open(sys.argv[2], "w"), indent=1)
ar = next((r["busbw_gbps"] for r in rows if r["kind"] == "allreduce"), None)
print(f"NCCL all-reduce bus bandwidth GPU0<->GPU1: {ar} GB/s")
for r in rows:
    if r["kind"] == "kv":
        share = f"{r['gbps'] / ar * 100:5.1f}% of all-reduce busbw" if ar else ""
        print(f"KV {r['tokens']:6d} tokens {r['plan']:7s}: {r['bytes'] / 2**20:8.1f} MiB in {r['seconds'] * 1e3:8.2f} ms "
              f"= {r['gbps']:7.2f} GB/s {share}")
PY
}

step_ttft() {
  echo "=== ttft ($(date +%T))"
  [[ -f $MODEL8B/config.json ]] || { fail "ttft: no $MODEL8B/config.json"; return; }
  start_cluster ttft-8b nccl node-a node-a --model="$MODEL8B" --- --model="$MODEL8B" --dummy_weights \
    --max_batch_tokens=8192 || { stop_cluster; return; }
  local r ids p0 pc0 t0 tc0
  ids=$(python3 -c "import random; random.seed(2048); print(','.join(str(random.randrange(10, 100000)) for _ in range(2048)))")
  : > "$OUT/ttft-8b/ttft.jsonl"
  timeout 60 "$BIN/tandem" client --router="$ROUTER" --token_ids --max_new_tokens=1 --temperature=0 "$ids" \
    > /dev/null 2>&1  # warm-up
  p0=$(metric_sum "$PREFILL_METRICS" tandem_prefill_batch_time_seconds_sum)
  pc0=$(metric_sum "$PREFILL_METRICS" tandem_prefill_batch_time_seconds_count)
  t0=$(metric_sum "$PREFILL_METRICS" tandem_kv_transfer_time_seconds_sum)
  tc0=$(metric_sum "$PREFILL_METRICS" tandem_kv_transfer_time_seconds_count)
  for r in 1 2 3 4 5; do
    timeout 60 "$BIN/tandem" client --router="$ROUTER" --token_ids --max_new_tokens=1 --temperature=0 \
      --output=jsonl "$ids" 2>> "$OUT/ttft-8b/client.err" | grep finish_reason >> "$OUT/ttft-8b/ttft.jsonl" \
      || fail "ttft: a 2k-token request failed"
  done
  python3 - "$OUT/ttft-8b/ttft.jsonl" "$p0" "$pc0" "$t0" "$tc0" \
    "$(metric_sum "$PREFILL_METRICS" tandem_prefill_batch_time_seconds_sum)" \
    "$(metric_sum "$PREFILL_METRICS" tandem_prefill_batch_time_seconds_count)" \
    "$(metric_sum "$PREFILL_METRICS" tandem_kv_transfer_time_seconds_sum)" \
    "$(metric_sum "$PREFILL_METRICS" tandem_kv_transfer_time_seconds_count)" <<'PY' | tee "$OUT/ttft-8b/ttft.txt"
import json, sys
v = sorted(json.loads(l)["ttft_seconds"] for l in open(sys.argv[1]) if l.strip())
f = [float(x or 0) for x in sys.argv[2:]]
prefill = (f[4] - f[0]) / max(f[5] - f[1], 1)
tail = (f[6] - f[2]) / max(f[7] - f[3], 1)
print(f"8B 2048 tokens over nccl: client TTFT median {v[len(v)//2]*1e3:.1f} ms; prefill alone {prefill*1e3:.1f} ms; "
      f"transfer tail after prefill {tail*1e3:.2f} ms (prefill+transfer / prefill alone = {(prefill+tail)/prefill:.3f})")
PY
  [[ -s $OUT/ttft-8b/ttft.txt ]] && pass "ttft 8B 2k: prefill+transfer vs prefill alone (ttft-8b/ttft.txt)"
  grep -q "goes over nccl" "$OUT/ttft-8b/prefill.log" && pass "ttft 8B: KV over nccl" || fail "ttft 8B: not over nccl"
  check_no_blocks_used "ttft 8B"
  stop_cluster
}

for step in $STEPS; do
  case $step in
    unit) step_unit ;;
    parity) step_parity ;;
    bench) step_bench ;;
    ttft) step_ttft ;;
    *) fail "unknown step $step" ;;
  esac
done
echo "=== done ($(date +%T)), status $status"
cat "$SUMMARY"
exit $status
