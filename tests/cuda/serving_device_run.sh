#!/usr/bin/env bash
# The served system on one H200, three deployments of the Llama-3-8B shape
# (dummy weights), each loaded by tandem-bench through the router with
# ShareGPT-like lengths (issue 18's evidence):
#   aggregated   router + 1 aggregated worker (prefill chunks mixed into
#                decode steps), --gpu_memory_fraction 0.85
#   disagg       router + 1 prefill + 1 decode worker, 0.42 each, the two
#                processes time-slicing the GPU
#   mps-P-D      the same pair under CUDA MPS, the prefill worker limited to
#                P% of the SMs and the decode worker to D%
#                (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE), running concurrently
# For each: "offline" (1000 requests at once: closed loop, concurrency
# 1000) and an open-loop sweep (SWEEP_REQUESTS per rate at SWEEP_RATES),
# judged at TTFT 0.5 s with TPOT 50 ms and 25 ms from the same runs; then
# no KV block may be left in use. serving_summary.py turns the results
# into serving_summary.json.
#
#   bash tests/cuda/serving_device_run.sh stage [BUILD_DIR]    # here
#   MODES="aggregated disagg" bash tests/cuda/serving_device_run.sh   # there, $OUT set
# DEVICE=cpu MODEL=... runs the same mechanics on the CPU (a dry run).
# Mode `engine` runs the same requests (same seed) through the engine in one
# process (tandem-engine-bench --workload_lengths sharegpt): what the served
# modes are measured against.
# Modes aggregated-bN run the aggregated worker with --max_batch_size=N;
# OFFLINE_ONLY lists modes that skip the sweep.
set -uo pipefail
ROOT=$PWD
D=$ROOT/.device-serving
PACK=$ROOT/.device-pack/serving.tar.gz
BINARIES="tandem tandem-router tandem-prefill-worker tandem-decode-worker tandem-bench tandem-engine-bench"

if [[ ${1:-} == stage ]]; then
  set -e
  source "$ROOT/tests/cuda/stage_pack.sh"
  stage_pack "${2:-build}" "$D" "$PACK" --ucx_modules --model8b=shape -- $BINARIES
  exit 0
fi

OUT=${OUT:-/tmp/out}
MODES=${MODES:-aggregated disagg mps-50-50 mps-70-40}
SWEEP_RATES=${SWEEP_RATES:-16,32,48,64}
SWEEP_REQUESTS=${SWEEP_REQUESTS:-1000}
OFFLINE_REQUESTS=${OFFLINE_REQUESTS:-1000}
mkdir -p "$OUT"
if [[ ! -x $D/bin/tandem && -f $PACK ]]; then tar -C "$ROOT" -xzf "$PACK"; fi
BIN=${BIN:-$D/bin}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-$D/model8b}
export LD_LIBRARY_PATH=$D/lib:/usr/local/cuda/lib64
export UCX_MODULE_DIR=$D/lib/ucx
export UCX_WARN_UNUSED_ENV_VARS=n
source "$ROOT/tests/cuda/cluster_harness.sh"
harness_init serving "${TIME_LIMIT:-560}"
[[ -x $BIN/tandem ]] || { fail "no staged binaries in $BIN (run the stage step first)"; exit 1; }
if [[ $DEVICE == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
  MODEL_ARGS=(--model="$MODEL" --dummy_weights --device=cuda --gpu=0 --num_kv_blocks=0
              --gemm_algos="$ROOT/deploy/gemm_algos/nvidia-h200.llama-3-8b.json")
else
  MODEL_ARGS=(--model="$MODEL" --device=cpu --num_kv_blocks=4096)
fi
WORKER_ARGS=(${WORKER_ARGS:-})

MPS_ON=0
mps_start() {
  export CUDA_MPS_PIPE_DIRECTORY=$RUN/mps-pipe CUDA_MPS_LOG_DIRECTORY=$RUN/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d && MPS_ON=1
}
mps_stop() {
  ((MPS_ON)) || return 0
  echo quit | nvidia-cuda-mps-control
  MPS_ON=0
  sleep 1
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
}

# spawn NAME ENV... -- COMMAND...: a cluster process, logged under $OUT/$mode.
spawn() {
  local name=$1; shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" "$@" > "$OUT/$mode/$name.log" 2>&1 &
  CLUSTER_PIDS+=($!); ALL_PIDS+=($!)
}

# start_mode MODE: sets ROUTER and the metrics ports; 0 once it answers.
start_mode() {
  local dir=$RUN/$mode
  mkdir -p "$dir" "$OUT/$mode"
  CLUSTER_PIDS=()
  spawn router -- "$BIN/tandem-router" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --http_listen=127.0.0.1:0 \
    --port_file="$dir/router.port" --model="$MODEL" --slo_ttft_seconds=0.5 --slo_tpot_seconds=0.05
  wait_file "$dir/router.port" 30 "${CLUSTER_PIDS[0]}" || { fail "$mode: router did not start"; return 1; }
  ROUTER=127.0.0.1:$(head -1 "$dir/router.port")
  local common=(--router="$ROUTER" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 "${MODEL_ARGS[@]}")
  local workers=()
  case $mode in
    aggregated|aggregated-*)
      # aggregated-bN: the same with --max_batch_size=N.
      local extra=()
      [[ $mode == aggregated-b* ]] && extra=(--max_batch_size="${mode#aggregated-b}")
      spawn aggregated -- "$BIN/tandem-decode-worker" --role=aggregated --port_file="$dir/decode.port" \
        --gpu_memory_fraction=0.85 "${common[@]}" "${WORKER_ARGS[@]}" "${extra[@]}"
      workers=(decode) ;;
    disagg|mps-*)
      local penv=() denv=()
      if [[ $mode == mps-* ]]; then
        local p=${mode#mps-}; p=${p%-*}; local d=${mode##*-}
        mps_start || { fail "$mode: nvidia-cuda-mps-control -d failed"; return 1; }
        penv=(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$p); denv=(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$d)
      fi
      spawn decode "${denv[@]}" -- "$BIN/tandem-decode-worker" --port_file="$dir/decode.port" \
        --gpu_memory_fraction=0.42 --transport=auto "${common[@]}" "${WORKER_ARGS[@]}"
      spawn prefill "${penv[@]}" -- "$BIN/tandem-prefill-worker" --port_file="$dir/prefill.port" \
        --gpu_memory_fraction=0.42 --transport=auto "${common[@]}" "${WORKER_ARGS[@]}"
      workers=(decode prefill) ;;
    *) fail "unknown mode $mode"; return 1 ;;
  esac
  local i=1 w
  for w in "${workers[@]}"; do
    wait_file "$dir/$w.port" 150 "${CLUSTER_PIDS[$i]}" || { fail "$mode: $w worker did not start"; tail -5 "$OUT/$mode/"*.log; return 1; }
    i=$((i + 1))
  done
  DECODE_METRICS=$(sed -n 2p "$dir/decode.port")
  PREFILL_METRICS=$DECODE_METRICS
  [[ -f $dir/prefill.port ]] && PREFILL_METRICS=$(sed -n 2p "$dir/prefill.port")
  local until=$((SECONDS + 90))
  while ((SECONDS < until)); do
    timeout 20 "$BIN/tandem" client --router="$ROUTER" --max_new_tokens=1 --temperature=0 --token_ids "1,2,3" \
      > /dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "$mode: the cluster never answered a request"
  return 1
}

run_mode() {
  echo "=== $mode ($(date +%T))"
  if start_mode; then
    local bench=("$BIN/tandem-bench" --router="$ROUTER" --input_len=sharegpt --output_len=sharegpt --seed=1
                 --slo_ttft=0.5 --slo_tpot=0.05 --goodput_tpot=0.025 --progress=false)
    if timeout "${OFFLINE_TIMEOUT:-150}" "${bench[@]}" --concurrency="$OFFLINE_REQUESTS" \
        --num_requests="$OFFLINE_REQUESTS" --warmup=16 --out_dir="$OUT/$mode/offline" > "$OUT/$mode/offline.txt" 2>&1; then
      pass "$mode: $OFFLINE_REQUESTS requests at once ($(grep -c . "$OUT/$mode/offline.txt") lines in offline.txt)"
    else
      fail "$mode: offline run (see $mode/offline.txt)"
    fi
    tail -4 "$OUT/$mode/offline.txt"
    if [[ " ${OFFLINE_ONLY:-} " == *" $mode "* ]]; then
      :
    elif timeout "${SWEEP_TIMEOUT:-300}" "${bench[@]}" --rates="$SWEEP_RATES" --num_requests="$SWEEP_REQUESTS" \
        --warmup=0 --out_dir="$OUT/$mode/sweep" > "$OUT/$mode/sweep.txt" 2>&1; then
      pass "$mode: open-loop sweep at $SWEEP_RATES req/s"
    else
      fail "$mode: open-loop sweep (see $mode/sweep.txt)"
    fi
    [[ -f $OUT/$mode/sweep.txt ]] && tail -9 "$OUT/$mode/sweep.txt"
    check_no_blocks_used "$mode"
  fi
  stop_cluster
  mps_stop
}

# The engine alone on the very requests the offline runs send.
run_engine() {
  echo "=== engine ($(date +%T))"
  mkdir -p "$OUT/engine"
  if timeout "${ENGINE_TIMEOUT:-240}" "$BIN/tandem-engine-bench" --model="$MODEL" --dummy_weights \
      --gpu_memory_fraction=0.85 --gemm_algos="$ROOT/deploy/gemm_algos/nvidia-h200.llama-3-8b.json" \
      --decode_batches=512 --prefill_lengths=2048 --workload_lengths=sharegpt --workload_seed=1 \
      --workload_requests="$OFFLINE_REQUESTS" "${WORKER_ARGS[@]}" --out="$OUT/engine/engine_bench.json" \
      > "$OUT/engine/engine.txt" 2>&1; then
    pass "engine: $OFFLINE_REQUESTS ShareGPT-like requests in one process"
  else
    fail "engine: tandem-engine-bench (see engine/engine.txt)"
  fi
  tail -3 "$OUT/engine/engine.txt"
}

SERVED=()
for mode in $MODES; do
  if [[ $mode == engine ]]; then run_engine; else run_mode; SERVED+=("$mode"); fi
done
python3 "$ROOT/tests/cuda/serving_summary.py" "$OUT" "${SERVED[@]}" > "$OUT/serving_summary.txt" 2>&1 \
  && pass "serving_summary.json" || fail "serving_summary.py (see serving_summary.txt)"
cat "$OUT/serving_summary.txt"
# One file back with everything measured (the device tool returns at most 8).
tar -C "$OUT" -czf "$RUN/results.tgz" --exclude='*.log' . && mv "$RUN/results.tgz" "$OUT/results.tgz"
echo "=== done ($(date +%T)), status $status"
cat "$SUMMARY"
exit $status
