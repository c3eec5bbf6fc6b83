#!/usr/bin/env bash
# The CUDA engine's device run, in one call (see docs/benchmarks.md):
#   1. parity with transformers (tests/cuda/hf_parity.py): logits of random
#      Llama-3- and Qwen2-shaped checkpoints, CUDA vs HF, CUDA vs CPU, and
#      greedy decoding with graph replay vs kernel-by-kernel launches;
#   2. tandem-engine-bench on a Llama-3-8B-shaped model with dummy weights
#      (ceilings, decode, prefill, the 256 x 512/128 workload);
#   3. the same workload through HF transformers' generate_batch (the peer).
# Expects staged binaries in .device/bin and libraries in .device/lib
# (tools/stage_device.sh build-cuda .device tandem tandem-engine-bench
# tandem-logits) and the model directory .device/model8b (config.json from
# bench/models/llama-3-8b-shape plus Llama 3's tokenizer.json).
#   STEPS="parity bench peer" bash tests/cuda/device_run.sh   # on the device, $OUT set
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.device/lib:/usr/local/cuda/lib64
export NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-parity bench peer}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
status=0
for step in $STEPS; do
  echo "=== $step ($(date +%T))"
  case $step in
    parity)
      $PY tests/cuda/hf_parity.py .device/bin "$OUT/parity.json" 2>&1 | grep -v Warning | tee "$OUT/parity.log" | tail -40
      [[ ${PIPESTATUS[0]} == 0 ]] || status=1 ;;
    bench)
      .device/bin/tandem-engine-bench --model=.device/model8b --out="$OUT/engine.json" ${BENCH_ARGS:-} \
        > "$OUT/engine.log" 2> "$OUT/engine.err"
      [[ $? == 0 ]] || { status=1; tail -20 "$OUT/engine.err"; }
      grep -E "CUDA memory plan" "$OUT/engine.err"
      cat "$OUT/engine.log" ;;
    peer)
      $PY bench/peer/hf_continuous_batching.py --num_requests 256 --input_len 512 --output_len 128 \
        --out "$OUT/peer/results.json" 2>&1 | grep -v Warning | tail -5
      [[ ${PIPESTATUS[0]} == 0 ]] || status=1 ;;
  esac
done
echo "=== done ($(date +%T)), status $status"
exit $status
