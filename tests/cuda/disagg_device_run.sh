#!/usr/bin/env bash
# Disaggregated serving on one GPU, in one device call (under 7 min):
#   unit    the GPU transport test (cuda_ipc with its gather kernel and its
#           memcpy path, ucx_staged, auto between two processes; layers in
#           and out of order, coalesced, long tables, pooled streams, every
#           block checked)
#   parity  router + 1 prefill + 1 decode worker on GPU 0 (--device cuda,
#           --gpu_memory_fraction 0.4 each) on the built-in model, once per
#           transport (cuda_ipc, ucx; PARITY_TRANSPORTS): greedy tokens of a set of
#           prompts through `tandem client` must equal `tandem generate
#           --device=cuda`; the prefill worker's log and
#           tandem_kv_transfers_total must name the expected transport; no
#           KV block may stay in use on either worker afterwards
#   bench   tandem-transfer-bench on the Llama-3-8B-shaped model (dummy
#           weights): KV bytes/s of cuda_ipc and ucx_staged against D2D
#           cudaMemcpy in the same run, and TTFT with transfer vs prefill
#           alone for 512..8k-token prompts
#   e2e     the 8B-shaped model through the cluster (--transport auto):
#           TTFT as the client sees it per prompt length (next to the
#           bench's engine-level prefill-alone numbers), then tandem-bench's
#           open-loop sweep (512-token prompts, 64 output tokens)
# Results and logs go under $OUT; every check prints a PASS or FAIL line
# (also in $OUT/summary.txt); the exit status is 0 only if all passed.
#
# Staging (here, after building build-ipc):
#   bash tests/cuda/disagg_device_run.sh stage [BUILD_DIR]
# makes .device-pack/disagg.tar.gz (binaries, their libraries, UCX's
# transport modules, the 8B config + tokenizer from .device/model8b);
# carry .device-pack and run
#   STEPS="unit parity bench e2e" bash tests/cuda/disagg_device_run.sh
set -uo pipefail
ROOT=$PWD
D=$ROOT/.device-disagg
# Packed, since binaries + libraries + the 8B tokenizer exceed what the
# device call carries uncompressed; in an ignored folder (/.device*/).
PACK=$ROOT/.device-pack/disagg.tar.gz
BINARIES="tandem tandem-router tandem-prefill-worker tandem-decode-worker tandem-transfer-bench tandem-bench cuda_transport_test"

if [[ ${1:-} == stage ]]; then
  set -e
  source "$ROOT/tests/cuda/stage_pack.sh"
  stage_pack "${2:-build-ipc}" "$D" "$PACK" --ucx_modules --model8b=device -- $BINARIES
  exit 0
fi

OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-unit parity bench e2e}
mkdir -p "$OUT"
if [[ ! -x $D/bin/tandem && -f $PACK ]]; then tar -C "$ROOT" -xzf "$PACK"; fi
BIN=${BIN:-$D/bin}
# DEVICE=cpu runs the cluster steps on the CPU backend (a dry run of this
# script's mechanics off the device; cuda_ipc is then not expected).
DEVICE=${DEVICE:-cuda}
PARITY_TRANSPORTS=${PARITY_TRANSPORTS:-cuda_ipc ucx}
if [[ $DEVICE == cuda ]]; then
  WORKER_DEVICE_ARGS=(--device=cuda --gpu=0 --gpu_memory_fraction=0.4 --num_kv_blocks=0)
else
  WORKER_DEVICE_ARGS=(--device=cpu --num_kv_blocks=1024)
fi
export LD_LIBRARY_PATH=$D/lib:/usr/local/cuda/lib64
export UCX_MODULE_DIR=$D/lib/ucx
export UCX_WARN_UNUSED_ENV_VARS=n
export NCCL_NVLS_ENABLE=0
MODEL8B=${MODEL8B:-$D/model8b}
[[ -d $MODEL8B ]] || MODEL8B=$ROOT/.device/model8b
source "$ROOT/tests/cuda/cluster_harness.sh"
harness_init disagg "${TIME_LIMIT:-420}"

[[ -x $BIN/tandem ]] || { fail "no staged binaries in $BIN (run the stage step first)"; exit 1; }
[[ $DEVICE == cuda ]] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

# start_cluster NAME TRANSPORT ROUTER_MODEL_ARGS -- WORKER_ARGS...: sets
# ROUTER, PREFILL_METRICS, DECODE_METRICS, CLUSTER_PIDS; 0 when serving.
start_cluster() {
  local name=$1 transport=$2; shift 2
  local router_args=()
  while [[ $# -gt 0 && $1 != -- ]]; do router_args+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  local dir=$RUN/$name
  mkdir -p "$dir" "$OUT/$name"
  CLUSTER_PIDS=()
  "$BIN/tandem-router" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --http_listen=127.0.0.1:0 --port_file="$dir/router.port" \
    "${router_args[@]}" > "$OUT/$name/router.log" 2>&1 &
  CLUSTER_PIDS+=($!); ALL_PIDS+=($!)
  wait_file "$dir/router.port" 30 "${CLUSTER_PIDS[0]}" || { fail "$name: router did not start"; return 1; }
  ROUTER=127.0.0.1:$(head -1 "$dir/router.port")
  local role
  for role in decode prefill; do
    "$BIN/tandem-$role-worker" --router="$ROUTER" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
      --port_file="$dir/$role.port" "${WORKER_DEVICE_ARGS[@]}" \
      --transport="$transport" "$@" > "$OUT/$name/$role.log" 2>&1 &
    CLUSTER_PIDS+=($!); ALL_PIDS+=($!)
  done
  wait_file "$dir/decode.port" 150 "${CLUSTER_PIDS[1]}" || { fail "$name: decode worker did not start"; tail -5 "$OUT/$name/decode.log"; return 1; }
  wait_file "$dir/prefill.port" 150 "${CLUSTER_PIDS[2]}" || { fail "$name: prefill worker did not start"; tail -5 "$OUT/$name/prefill.log"; return 1; }
  DECODE_METRICS=$(sed -n 2p "$dir/decode.port")
  PREFILL_METRICS=$(sed -n 2p "$dir/prefill.port")
  # Serving once a one-token request goes through (registration takes a report interval).
  local until=$((SECONDS + 60))
  while ((SECONDS < until)); do
    timeout 20 "$BIN/tandem" client --router="$ROUTER" --max_new_tokens=1 --temperature=0 --token_ids "1,2,3" \
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
  "In 1969, the first humans"
  "$(printf 'The quick brown fox jumps over the lazy dog. %.0s' {1..40})"
  "$(printf 'Disaggregated prefill ships the KV cache block by block, layer by layer. %.0s' {1..25})"
)
GREEDY=(--temperature=0 --max_new_tokens=24 --ignore_eos --output=jsonl)

step_unit() {
  echo "=== unit ($(date +%T))"
  # One process per case, as under CTest: a case forks its decode side
  # before it touches CUDA, which a process that ran an earlier case has.
  local t ok=1
  : > "$OUT/cuda_transport_test.log"
  for t in cuda_ipc cuda_ipc_memcpy ucx_staged auto; do
    timeout 60 "$BIN/cuda_transport_test" --gtest_filter="*/$t" >> "$OUT/cuda_transport_test.log" 2>&1 || ok=0
  done
  if ((ok)); then
    if grep -q "SKIPPED" "$OUT/cuda_transport_test.log"; then
      fail "cuda_transport_test skipped (no GPU visible?)"
    else
      pass "cuda_transport_test: GPU blocks land in another process over cuda_ipc (kernel and memcpy paths), ucx_staged and auto"
    fi
  else
    fail "cuda_transport_test (see cuda_transport_test.log)"
    tail -20 "$OUT/cuda_transport_test.log"
  fi
}

# parity_run NAME ARGS...: greedy tokens of every prompt, one request at a
# time (the same batch shapes as one `tandem generate` per prompt, so the
# comparison does not lean on batch invariance), into $OUT/parity/NAME-<i>.jsonl,
# and all prompts at once into $OUT/parity/NAME-batched.jsonl.
parity_run() {
  local name=$1 i; shift
  for i in "${!PROMPTS[@]}"; do
    timeout 60 "$@" "${GREEDY[@]}" "${PROMPTS[$i]}" > "$OUT/parity/$name-$i.jsonl" 2>> "$OUT/parity/$name.err" || return 1
  done
  timeout 120 "$@" "${GREEDY[@]}" "${PROMPTS[@]}" > "$OUT/parity/$name-batched.jsonl" 2>> "$OUT/parity/$name.err"
}

# parity_check WANT GOT LABEL: PASS/FAIL per prompt set (one at a time, batched).
parity_check() {
  local want=$1 got=$2 label=$3 i bad=0
  for i in "${!PROMPTS[@]}"; do
    compare_tokens "$OUT/parity/$want-$i.jsonl" "$OUT/parity/$got-$i.jsonl" >> "$OUT/parity/compare-$got.txt" || bad=$((bad + 1))
  done
  if ((bad == 0)); then
    pass "parity $label: greedy tokens of ${#PROMPTS[@]} prompts, one request at a time, equal tandem generate --device=$DEVICE"
  else
    fail "parity $label: $bad of ${#PROMPTS[@]} prompts (one at a time) differ from tandem generate --device=$DEVICE"
    grep -B1 differ "$OUT/parity/compare-$got.txt" | head -6
  fi
  if compare_tokens "$OUT/parity/$want-batched.jsonl" "$OUT/parity/$got-batched.jsonl" >> "$OUT/parity/compare-$got.txt"; then
    pass "parity $label: ${#PROMPTS[@]} concurrent requests equal tandem generate of all prompts at once"
  else
    fail "parity $label: concurrent requests differ from tandem generate of all at once (batch invariance, not only transport)"
  fi
}

step_parity() {
  echo "=== parity ($(date +%T))"
  mkdir -p "$OUT/parity"
  if ! parity_run generate "$BIN/tandem" generate --device="$DEVICE"; then
    fail "tandem generate --device=$DEVICE (see parity/generate.err)"
    tail -5 "$OUT/parity/generate.err"
    return
  fi
  local transport expect
  for transport in $PARITY_TRANSPORTS; do
    case $DEVICE/$transport in
      cuda/ucx) expect=ucx_staged ;;  # a GPU pool over --transport=ucx goes staged
      cuda/*) expect=cuda_ipc ;;      # auto on one host picks CUDA IPC
      *) expect=$transport; [[ $transport == auto ]] && expect=ucx ;;  # host pools: UCX puts
    esac
    start_cluster "parity-$transport" "$transport" -- || { stop_cluster; continue; }
    if parity_run "client-$transport" "$BIN/tandem" client --router="$ROUTER"; then
      parity_check generate "client-$transport" "$transport"
    else
      fail "parity $transport: tandem client failed"
      tail -5 "$OUT/parity/client-$transport.err"
    fi
    if grep -q "goes over $expect" "$OUT/parity-$transport/prefill.log"; then
      pass "parity $transport: the prefill worker logs KV going over $expect"
    else
      fail "parity $transport: no 'goes over $expect' in the prefill log"
      grep -i "transport\|goes over" "$OUT/parity-$transport/prefill.log" | head -5
    fi
    if [[ $expect == cuda_ipc ]]; then
      if grep -q "opened a CUDA IPC completion event of prefill process" "$OUT/parity-$transport/decode.log"; then
        pass "parity $transport: the decode worker waits for the prefill worker's CUDA IPC completion events"
      else
        fail "parity $transport: no CUDA IPC completion event opened in the decode log"
      fi
    fi
    local counted
    counted=$(metric_sum "$PREFILL_METRICS" tandem_kv_transfers_total "transport=\"$expect\"" 'outcome="ok"')
    if [[ -n $counted ]] && python3 -c "import sys; sys.exit(0 if float('$counted') >= 2 * ${#PROMPTS[@]} else 1)"; then
      pass "parity $transport: tandem_kv_transfers_total{transport=\"$expect\",outcome=\"ok\"} = $counted"
    else
      fail "parity $transport: tandem_kv_transfers_total for $expect is '${counted}'"
      python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PREFILL_METRICS/metrics').read().decode())" 2>/dev/null | grep '^tandem_kv_transfers_total' | head -5
    fi
    check_no_blocks_used "parity $transport"
    stop_cluster
  done
}

step_bench() {
  echo "=== bench ($(date +%T))"
  [[ -f $MODEL8B/config.json ]] || { fail "bench: no $MODEL8B/config.json"; return; }
  if timeout 200 "$BIN/tandem-transfer-bench" --model="$MODEL8B" --dummy_weights --repeats=3 \
      --ttft_lengths=512,1024,2048,4096,8000 --gpu_memory_fraction=0.45 --out="$OUT/transfer_bench.json" \
      > "$OUT/transfer_bench.txt" 2> "$OUT/transfer_bench.err"; then
    pass "tandem-transfer-bench (transfer_bench.json)"
  else
    fail "tandem-transfer-bench (see transfer_bench.err)"
    tail -10 "$OUT/transfer_bench.err"
  fi
  cat "$OUT/transfer_bench.txt"
}

step_e2e() {
  echo "=== e2e ($(date +%T))"
  [[ -f $MODEL8B/config.json ]] || { fail "e2e: no $MODEL8B/config.json"; return; }
  start_cluster e2e-8b auto --model="$MODEL8B" -- --model="$MODEL8B" --dummy_weights --max_batch_tokens=8192 \
    || { stop_cluster; return; }
  local len r ids
  : > "$OUT/e2e-8b/ttft.jsonl"
  for len in 512 1024 2048 4096 8000; do
    ids=$(python3 -c "import random; random.seed($len); print(','.join(str(random.randrange(10, 100000)) for _ in range($len)))")
    for r in 1 2 3; do
      timeout 60 "$BIN/tandem" client --router="$ROUTER" --token_ids --max_new_tokens=1 --temperature=0 \
        --output=jsonl "$ids" 2>> "$OUT/e2e-8b/client.err" | grep finish_reason \
        | python3 -c "import json,sys; j=json.loads(sys.stdin.read()); j['tokens']=$len; j['repeat']=$r; print(json.dumps(j))" \
        >> "$OUT/e2e-8b/ttft.jsonl" || fail "e2e: request of $len tokens failed"
    done
  done
  python3 - "$OUT/e2e-8b/ttft.jsonl" <<'EOF' | tee "$OUT/e2e-8b/ttft.txt"
import collections, json, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    j = json.loads(line)
    if j["repeat"] > 1:  # the first of each length warms up
        rows[j["tokens"]].append(j["ttft_seconds"])
for n in sorted(rows):
    v = sorted(rows[n])
    print(f"e2e 8B auto (cuda_ipc) {n:6d} tokens: router TTFT median {v[len(v)//2]*1e3:8.1f} ms")
EOF
  [[ -s $OUT/e2e-8b/ttft.txt ]] && pass "e2e 8B: TTFT through the cluster for 512..8000 tokens (e2e-8b/ttft.txt)"
  # The benchmark harness's open-loop sweep against this deployment.
  if timeout ${SWEEP_TIMEOUT:-120} "$BIN/tandem-bench" --router="$ROUTER" --rates=${SWEEP_RATES:-4,8,16,32} \
      --num_requests=${SWEEP_REQUESTS:-64} --input_len=512 --output_len=64 --slo_ttft=0.5 --slo_tpot=0.05 --seed=1 \
      --out_dir="$OUT/sweep" > "$OUT/e2e-8b/sweep.txt" 2>&1; then
    pass "e2e 8B: open-loop sweep (sweep/results.json)"
  else
    fail "e2e 8B: open-loop sweep (see e2e-8b/sweep.txt)"
  fi
  tail -12 "$OUT/e2e-8b/sweep.txt"
  grep -q "goes over cuda_ipc" "$OUT/e2e-8b/prefill.log" && pass "e2e 8B: KV over cuda_ipc" || fail "e2e 8B: not over cuda_ipc"
  check_no_blocks_used "e2e 8B"
  stop_cluster
}

for step in $STEPS; do
  case $step in
    unit) step_unit ;;
    parity) step_parity ;;
    bench) step_bench ;;
    e2e) step_e2e ;;
    *) fail "unknown step $step" ;;
  esac
done
echo "=== done ($(date +%T)), status $status"
cat "$SUMMARY"
exit $status
