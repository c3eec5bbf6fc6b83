#!/usr/bin/env bash
# Prefix caching and cache-aware routing on one H200 (issue 20's evidence):
# the Llama-3-8B shape (dummy weights) served by AGGREGATED aggregated
# workers sharing the GPU (--gpu_memory_fraction split between them), each
# workload run by tandem-bench through the router with caching on
# (workers' prefix caches, --placement=cache_aware) and off (CACHE_OFF_ARGS
# on every worker, --placement=load):
#   multiturn      CONVERSATIONS conversations, each turn resending the
#                  history and the previous answer plus a user message
#   system_prompt  SYSTEM_PROMPTS shared system prompts of 1-4k tokens and
#                  random user parts
#   random         no shared prefix (caching must cost nothing)
# Each workload runs once per rate in RATES (open loop, NUM_REQUESTS
# requests, a fresh seed per rate so one rate never hits the prefixes of
# another), with the workers' and router's /metrics scraped around each
# run (tandem-bench --metrics) for the hit rate. prefix_summary.py turns
# the results into prefix_summary.json and plots.
#
#   bash tests/cuda/prefix_device_run.sh stage [BUILD_DIR]    # here
#   CACHING="on off" bash tests/cuda/prefix_device_run.sh     # there, $OUT set
# DEVICE=cpu MODEL=... runs the same mechanics on the CPU (a dry run).
set -uo pipefail
ROOT=$PWD
D=$ROOT/.device-prefix
PACK=$ROOT/.device-pack/prefix.tar.gz
BINARIES="tandem tandem-router tandem-decode-worker tandem-bench"

if [[ ${1:-} == stage ]]; then
  set -e
  source "$ROOT/tests/cuda/stage_pack.sh"
  stage_pack "${2:-build}" "$D" "$PACK" --model8b=shape -- $BINARIES
  exit 0
fi

OUT=${OUT:-/tmp/out}
CACHING=${CACHING:-on off}
WORKLOADS=${WORKLOADS:-multiturn system_prompt random}
RATES=${RATES:-4 8 16}
NUM_REQUESTS=${NUM_REQUESTS:-128}
AGGREGATED=${AGGREGATED:-2}
CONVERSATIONS=${CONVERSATIONS:-16}
SYSTEM_PROMPTS=${SYSTEM_PROMPTS:-4}
# Lengths: the user part of every workload, the answers, the system prompts.
INPUT_LEN=${INPUT_LEN:-200:400}
OUTPUT_LEN=${OUTPUT_LEN:-64:128}
SYSTEM_PROMPT_LEN=${SYSTEM_PROMPT_LEN:-1024:4096}
RANDOM_INPUT_LEN=${RANDOM_INPUT_LEN:-1024:2048}
# The worker flag that turns the prefix cache off (the cache's own flag).
CACHE_OFF_ARGS=${CACHE_OFF_ARGS:---enable_prefix_caching=false}
BLOCK_SIZE=${BLOCK_SIZE:-16}
mkdir -p "$OUT"
if [[ ! -x $D/bin/tandem && -f $PACK ]]; then tar -C "$ROOT" -xzf "$PACK"; fi
BIN=${BIN:-$D/bin}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-$D/model8b}
export LD_LIBRARY_PATH=$D/lib:/usr/local/cuda/lib64
source "$ROOT/tests/cuda/cluster_harness.sh"
harness_init prefix "${TIME_LIMIT:-570}"
[[ -x $BIN/tandem ]] || { fail "no staged binaries in $BIN (run the stage step first)"; exit 1; }
if [[ $DEVICE == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
  FRACTION=$(python3 -c "print(round(0.85 / $AGGREGATED, 3))")
  MODEL_ARGS=(--model="$MODEL" --dummy_weights --device=cuda --gpu=0 --num_kv_blocks=0
              --gpu_memory_fraction="$FRACTION" --gemm_algos="$ROOT/deploy/gemm_algos/nvidia-h200.llama-3-8b.json")
else
  MODEL_ARGS=(--model="$MODEL" --device=cpu --num_kv_blocks=4096)
fi

# start_cluster CACHING: router + AGGREGATED aggregated workers; sets
# ROUTER and METRICS (every process's /metrics host:port, router first).
start_cluster() {
  local caching=$1 dir=$RUN/$1 i
  mkdir -p "$dir" "$OUT/$caching"
  CLUSTER_PIDS=()
  local placement=cache_aware worker_extra=()
  if [[ $caching == off ]]; then
    placement=load
    read -r -a worker_extra <<< "$CACHE_OFF_ARGS"
  fi
  "$BIN/tandem-router" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --http_listen=127.0.0.1:0 --port_file="$dir/router.port" \
    --model="$MODEL" --placement="$placement" --slo_ttft_seconds=0.5 --slo_tpot_seconds=0.05 \
    > "$OUT/$caching/router.log" 2>&1 &
  CLUSTER_PIDS+=($!); ALL_PIDS+=($!)
  wait_file "$dir/router.port" 30 "${CLUSTER_PIDS[0]}" || { fail "$caching: router did not start"; return 1; }
  ROUTER=127.0.0.1:$(head -1 "$dir/router.port")
  METRICS=127.0.0.1:$(sed -n 2p "$dir/router.port")
  for ((i = 0; i < AGGREGATED; ++i)); do
    "$BIN/tandem-decode-worker" --role=aggregated --router="$ROUTER" --listen=127.0.0.1:0 \
      --metrics_listen=127.0.0.1:0 --port_file="$dir/worker$i.port" "${MODEL_ARGS[@]}" "${worker_extra[@]}" \
      > "$OUT/$caching/worker$i.log" 2>&1 &
    CLUSTER_PIDS+=($!); ALL_PIDS+=($!)
  done
  for ((i = 0; i < AGGREGATED; ++i)); do
    wait_file "$dir/worker$i.port" 180 "${CLUSTER_PIDS[$((i + 1))]}" ||
      { fail "$caching: worker $i did not start"; tail -5 "$OUT/$caching/"*.log; return 1; }
    METRICS=$METRICS,127.0.0.1:$(sed -n 2p "$dir/worker$i.port")
  done
  local until=$((SECONDS + 90))
  while ((SECONDS < until)); do
    timeout 20 "$BIN/tandem" client --router="$ROUTER" --max_new_tokens=1 --temperature=0 --token_ids "1,2,3" \
      > /dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "$caching: the cluster never answered a request"
  return 1
}

# No KV block may stay held by a request once every request finished
# (cached blocks that no request holds are not in use).
check_workers_idle() {
  local caching=$1 port used
  sleep 1.5  # the gauges follow the load report
  for port in ${METRICS//,/ }; do
    [[ $port == "${METRICS%%,*}" ]] && continue  # the router holds no KV
    used=$(metric_sum "${port##*:}" tandem_kv_blocks_used)
    if [[ $used == 0 ]]; then
      pass "$caching: no KV block left in use on the worker at $port"
    else
      fail "$caching: the worker at $port has KV blocks in use after the runs: '${used}'"
    fi
  done
}

run_workload() {
  local caching=$1 workload=$2 rate seed=1 input=$INPUT_LEN
  [[ $workload == random ]] && input=$RANDOM_INPUT_LEN
  for rate in $RATES; do
    local dir=$OUT/$caching/$workload/rate-$rate
    mkdir -p "$dir"
    seed=$((seed + 1))
    if timeout "${RUN_TIMEOUT:-150}" "$BIN/tandem-bench" --router="$ROUTER" --workload="$workload" \
        --rates="$rate" --num_requests="$NUM_REQUESTS" --warmup=4 --seed="$seed" \
        --conversations="$CONVERSATIONS" --system_prompts="$SYSTEM_PROMPTS" \
        --system_prompt_len="$SYSTEM_PROMPT_LEN" --input_len="$input" --output_len="$OUTPUT_LEN" \
        --slo_ttft=0.5 --slo_tpot=0.05 --block_size="$BLOCK_SIZE" --metrics="$METRICS" --progress=false \
        --out_dir="$dir" > "$dir/bench.txt" 2>&1; then
      pass "$caching/$workload at $rate req/s: $(grep -m1 'prefix hit rate' "$dir/bench.txt")"
    else
      fail "$caching/$workload at $rate req/s (see $caching/$workload/rate-$rate/bench.txt)"
      tail -3 "$dir/bench.txt"
    fi
  done
}

for caching in $CACHING; do
  echo "=== caching $caching ($(date +%T))"
  if start_cluster "$caching"; then
    for workload in $WORKLOADS; do run_workload "$caching" "$workload"; done
    check_workers_idle "$caching"
  fi
  stop_cluster
done
python3 "$ROOT/tests/cuda/prefix_summary.py" "$OUT" > "$OUT/prefix_summary.txt" 2>&1 \
  && pass "prefix_summary.json" || fail "prefix_summary.py (see prefix_summary.txt)"
cat "$OUT/prefix_summary.txt"
# One file back with everything measured (the device tool returns at most 8).
tar -C "$OUT" -czf "$RUN/results.tgz" --exclude='*.log' . && mv "$RUN/results.tgz" "$OUT/results.tgz"
echo "=== done ($(date +%T)), status $status"
cat "$SUMMARY"
exit $status
