#!/usr/bin/env bash
# The CUDA engine's device run, in one call (see docs/benchmarks.md):
#   0. unit: the engine's GPU tests (cuda_sampling_test: the GPU sampler
#      against the host Sampler);
#   1. parity with transformers (tests/cuda/hf_parity.py): logits of random
#      Llama-3- and Qwen2-shaped checkpoints, CUDA vs HF, CUDA vs CPU, and
#      greedy decoding with graph replay vs kernel-by-kernel launches;
#   2. tandem-engine-bench on a Llama-3-8B-shaped model with dummy weights
#      (ceilings, decode, prefill, the 256 x 512/128 workload);
#   3. the same workload through HF transformers' generate_batch (the peer).
# Expects staged binaries in .device/bin and libraries in .device/lib
# (tools/stage_device.sh build-cuda .device tandem tandem-engine-bench
# tandem-logits tandem-gemm-tune cuda_sampling_test) and the model directory .device/model8b (config.json from
# bench/models/llama-3-8b-shape plus Llama 3's tokenizer.json).
#   STEPS="unit parity bench workload peer" bash tests/cuda/device_run.sh   # on the device, $OUT set
# (also: tune, the GEMM algorithm table for the later steps (or set
# GEMM_ALGOS to a table file); ab, an interleaved A/B of engine settings
# (AB_VARIANTS); gemv, the small GEMMs shape by shape;
# opprof, per-operation times; profile, Nsight Compute per kernel)
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.device/lib:/usr/local/cuda/lib64
export NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-unit parity bench peer}
# The committed H200 table for the 8B shape; GEMM_ALGOS= (empty) runs
# cuBLASLt's heuristic instead.
GEMM_ALGOS=${GEMM_ALGOS-deploy/gemm_algos/nvidia-h200.llama-3-8b.json}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
status=0
for step in $STEPS; do
  echo "=== $step ($(date +%T))"
  ALGOS_ARG=${GEMM_ALGOS:+--gemm_algos=$GEMM_ALGOS}
  case $step in
    unit)
      # The engine's GPU unit tests (staged beside the tools).
      for t in cuda_sampling_test; do
        .device/bin/$t > "$OUT/$t.log" 2>&1
        [[ $? == 0 ]] || status=1
        grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|Failure" "$OUT/$t.log" | head -20
      done ;;
    parity)
      $PY tests/cuda/hf_parity.py .device/bin "$OUT/parity.json" 2>&1 | grep -v Warning | tee "$OUT/parity.log" | tail -40
      [[ ${PIPESTATUS[0]} == 0 ]] || status=1
      # The same at 2.5x the weights' scale, where the reference's own
      # spread reaches the bounds: reported beside it, not a pass criterion.
      PARITY_INIT_RANGE=0.05 $PY tests/cuda/hf_parity.py .device/bin "$OUT/parity_init0.05.json" 2>&1 \
        | grep -v Warning > "$OUT/parity_init0.05.log"
      echo "init 0.05 (reported, not a pass criterion): exit ${PIPESTATUS[0]}; $(grep -c FAIL "$OUT/parity_init0.05.log") figures under the bounds" ;;
    tune)
      # The 8B model's GEMMs, every heuristic algorithm timed per shape
      # (tandem-gemm-tune); later steps use the table (GEMM_ALGOS).
      .device/bin/tandem-gemm-tune --model=.device/model8b --out="$OUT/gemm_algos.json" ${TUNE_ARGS:-} \
        > "$OUT/gemm_tune.log" 2> "$OUT/gemm_tune.err"
      [[ $? == 0 ]] || { status=1; tail -5 "$OUT/gemm_tune.err"; }
      grep -E "forward pass|wrote" "$OUT/gemm_tune.log"
      GEMM_ALGOS=$OUT/gemm_algos.json ;;
    bench)
      .device/bin/tandem-engine-bench --model=.device/model8b --out="$OUT/engine.json" ${ALGOS_ARG} ${BENCH_ARGS:-} \
        > "$OUT/engine.log" 2> "$OUT/engine.err"
      [[ $? == 0 ]] || { status=1; tail -20 "$OUT/engine.err"; }
      grep -E "CUDA memory plan" "$OUT/engine.err"
      cat "$OUT/engine.log" ;;
    workload)
      # The 256 x 512/128 workload alone at other per-step token budgets.
      for t in ${WORKLOAD_TOKENS:-16384}; do
        .device/bin/tandem-engine-bench --model=.device/model8b --out="$OUT/workload$t.json" ${ALGOS_ARG} --decode_batches= \
          --prefill_lengths= --max_batch_tokens=$t > "$OUT/workload$t.log" 2> "$OUT/workload$t.err"
        [[ $? == 0 ]] || { status=1; tail -5 "$OUT/workload$t.err"; }
        echo "max_batch_tokens $t: $(grep workload "$OUT/workload$t.log")"
      done ;;
    gemv)
      # The decode step's small GEMMs, every compiled shape (tandem-gemv-bench).
      .device/bin/tandem-gemv-bench --model=.device/model8b --out="$OUT/gemv.json" ${GEMV_ARGS:-} \
        > "$OUT/gemv.log" 2> "$OUT/gemv.err"
      [[ $? == 0 ]] || { status=1; tail -20 "$OUT/gemv.err"; }
      grep -E "device|^[a-z_+]+:|best|step" "$OUT/gemv.log" ;;
    ab)
      # Interleaved A/B of engine settings, given as environment assignments
      # (AB_VARIANTS="TANDEM_CUDA_PDL=1|TANDEM_CUDA_PDL=0"; an empty one runs
      # the defaults): AB_RUNS rounds (3), each running every variant once
      # in its own process, decode steps only unless AB_ARGS says more;
      # tests/cuda/ab_summary.py prints the medians. One process's batch-1
      # figure varies by ~2%, too much for a single pair to decide.
      IFS='|' read -ra variants <<< "${AB_VARIANTS:-|}"
      for ((r = 1; r <= ${AB_RUNS:-3}; ++r)); do
        for v in "${!variants[@]}"; do
          # shellcheck disable=SC2086  # a variant is several words
          env ${variants[$v]} .device/bin/tandem-engine-bench --model=.device/model8b ${ALGOS_ARG} \
            --prefill_lengths= --workload_requests=0 ${AB_ARGS:-} --out="$OUT/ab-$v-$r.json" \
            > "$OUT/ab-$v-$r.log" 2>&1 || { status=1; tail -3 "$OUT/ab-$v-$r.log"; }
        done
      done
      $PY tests/cuda/ab_summary.py "$OUT" "${variants[@]}" ;;
    opprof)
      # Per-operation time (TANDEM_CUDA_PROFILE=1) of eager decode steps at
      # batch 1 and 256 and of 2k prefills: where a step's time goes.
      for b in 1 256; do
        TANDEM_CUDA_PROFILE=1 .device/bin/tandem-engine-bench --model=.device/model8b --out="$OUT/opprof$b.json" ${ALGOS_ARG} \
          --cuda_graphs=false --decode_batches=$b --prefill_lengths=$([[ $b == 1 ]] && echo 2048 || echo "") \
          --workload_requests=0 > "$OUT/opprof$b.log" 2> "$OUT/opprof$b.err"
        [[ $? == 0 ]] || { status=1; tail -5 "$OUT/opprof$b.err"; }
        grep -E "profile|  " "$OUT/opprof$b.err" | sed 's/^.*\] //' | head -40
      done ;;
    profile)
      # Per-kernel time and DRAM bytes (Nsight Compute) of eager b1 decode
      # steps and one 2k prefill: where the time goes, kernel by kernel.
      NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
      $NCU --clock-control none --launch-skip ${NCU_SKIP:-400} --launch-count ${NCU_COUNT:-700} --csv \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
        .device/bin/tandem-engine-bench --model=.device/model8b --out="$OUT/profile.json" --cuda_graphs=false \
        --decode_batches=${NCU_BATCHES:-1} --prefill_lengths=2048 --workload_requests=0 \
        > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
      [[ $? == 0 ]] || { status=1; tail -5 "$OUT/ncu.err"; }
      wc -l "$OUT/ncu.csv" ;;
    peer)
      $PY bench/peer/hf_continuous_batching.py --num_requests 256 --input_len 512 --output_len 128 \
        --out "$OUT/peer/results.json" 2>&1 | grep -v Warning | tail -5
      [[ ${PIPESTATUS[0]} == 0 ]] || status=1 ;;
  esac
done
echo "=== done ($(date +%T)), status $status"
exit $status
