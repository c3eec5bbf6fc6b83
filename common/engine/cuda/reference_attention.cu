// The simple attention kernel the fast ones are checked against, and the
// path for shapes they do not cover. It rounds scores and probabilities to
// bf16 the way a bf16 eager-attention model does.
#include <algorithm>
#include <cfloat>

#include "common/engine/cuda/attention_kernels.h"
#include "common/engine/cuda/device_helpers.cuh"

namespace tandem::cuda {
namespace {

__device__ inline float BlockMax(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < warps ? scratch[threadIdx.x] : -FLT_MAX;
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  const float r = scratch[0];
  __syncthreads();
  return r;
}

// One block per (token, query head). Scores for every visible position go
// to shared memory, then a max/sum softmax, then each thread accumulates
// its output dimensions over the positions (V rows read coalesced).
__global__ void ReferenceKernel(KvCacheRef kv, ReferenceAttentionArgs a) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int64_t hd = kv.head_dim, kvh = h / (kv.num_heads / kv.num_kv_heads);
  float* q = smem;              // [head_dim]
  float* scores = smem + hd;    // [context]
  const float* qrow = a.qkv + t * a.qkv_stride + h * hd;
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) q[d] = qrow[d];
  __syncthreads();
  const int64_t ctx = a.positions[t] + 1;
  const int32_t* table = a.block_tables + a.table_offset[a.row_seq[t]];
  const int64_t kv_row = kv.num_kv_heads * hd;
  const float scale = rsqrtf(static_cast<float>(hd));
  // Scores: one warp per position at a time, its lanes splitting the head
  // dimension, so each K row is read once, coalesced.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  float local_max = -FLT_MAX;
  for (int64_t p = warp; p < ctx; p += warps) {
    const __nv_bfloat16* k = kv.k + (static_cast<int64_t>(table[p / kv.block_size]) * kv.block_size +
                                          p % kv.block_size) * kv_row + kvh * hd;
    float dot = 0;
    for (int64_t d = lane; d < hd; d += 32) dot += q[d] * __bfloat162float(k[d]);
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffff, dot, o);
    if (lane == 0) {
      // The rounding of a bf16 model's attention: bf16 scores, softmax in
      // fp32, bf16 probabilities, fp32 accumulation of P.V.
      scores[p] = RoundBf16(RoundBf16(dot) * scale);
      local_max = fmaxf(local_max, scores[p]);
    }
  }
  __syncthreads();
  const float m = BlockMax(local_max, scratch);
  float local_sum = 0;
  for (int64_t p = threadIdx.x; p < ctx; p += blockDim.x) {
    scores[p] = expf(scores[p] - m);
    local_sum += scores[p];
  }
  const float inv = 1.0f / BlockSum(local_sum, scratch);  // also orders the writes above
  for (int64_t p = threadIdx.x; p < ctx; p += blockDim.x) scores[p] = RoundBf16(scores[p] * inv);
  __syncthreads();
  // P.V the same way: warps take positions in turn, lanes hold head
  // dimensions (head_dim <= 256: at most 8 per lane), then the warps'
  // partial sums are added in a fixed order.
  constexpr int kMaxPerLane = 8;
  float acc[kMaxPerLane] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t p = warp; p < ctx; p += warps) {
    const __nv_bfloat16* v = kv.v + (static_cast<int64_t>(table[p / kv.block_size]) * kv.block_size +
                                          p % kv.block_size) * kv_row + kvh * hd;
    const float w = scores[p];
    for (int j = 0; j < kMaxPerLane && lane + 32 * j < hd; ++j) acc[j] += w * __bfloat162float(v[lane + 32 * j]);
  }
  __syncthreads();  // scores are no longer needed: reuse them for the partial sums
  float* partial = scores;  // [warps][head_dim]
  for (int j = 0; j < kMaxPerLane && lane + 32 * j < hd; ++j) partial[warp * hd + lane + 32 * j] = acc[j];
  __syncthreads();
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) {
    float sum = 0;
    for (int w = 0; w < warps; ++w) sum += partial[w * hd + d];
    a.out[t * kv.num_heads * hd + h * hd + d] = __float2bfloat16(sum);
  }
}

}  // namespace

size_t ReferenceAttentionSharedBytes(int64_t max_context, int64_t head_dim) {
  // q, then the scores (reused for the 4 warps' partial P.V sums).
  return static_cast<size_t>(head_dim + std::max<int64_t>(max_context, 4 * head_dim)) * sizeof(float);
}

cudaError_t ConfigureReferenceAttention(size_t max_shared_bytes) {
  return cudaFuncSetAttribute(ReferenceKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(max_shared_bytes));
}

void ReferenceAttention(const KvCacheRef& kv, const ReferenceAttentionArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return;
  const dim3 grid(static_cast<unsigned>(a.rows), static_cast<unsigned>(kv.num_heads));
  ReferenceKernel<<<grid, 128, ReferenceAttentionSharedBytes(a.max_context, kv.head_dim), stream>>>(kv, a);
}

}  // namespace tandem::cuda
