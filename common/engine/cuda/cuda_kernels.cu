#include "common/engine/cuda/cuda_kernels.h"

#include <cfloat>

namespace tandem::cuda {
namespace {

__device__ inline float BlockSum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < warps ? scratch[threadIdx.x] : 0.0f;
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  const float r = scratch[0];
  __syncthreads();
  return r;
}

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

__device__ inline float RoundBf16(float v) { return __bfloat162float(__float2bfloat16(v)); }

__global__ void EmbeddingGatherKernel(const int32_t* tokens, const __nv_bfloat16* embed, int64_t hidden, float* x) {
  const int64_t t = blockIdx.x;
  const __nv_bfloat16* row = embed + static_cast<int64_t>(tokens[t]) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) x[t * hidden + i] = __bfloat162float(row[i]);
}

__global__ void RmsNormKernel(const float* x, const int32_t* src_rows, const __nv_bfloat16* w, int64_t dim, float eps,
                              __nv_bfloat16* out) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + (src_rows ? src_rows[r] : r) * dim;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  const float inv = rsqrtf(BlockSum(ss, scratch) / dim + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[r * dim + i] = __float2bfloat16(__bfloat162float(w[i]) * RoundBf16(xr[i] * inv));
  }
}

__global__ void RopeCacheKernel(RopeCacheArgs a) {
  const int64_t t = blockIdx.x;
  const int64_t q_size = a.num_heads * a.head_dim, kv_size = a.num_kv_heads * a.head_dim;
  float* row = a.qkv + t * (q_size + 2 * kv_size);
  const int64_t half = a.head_dim / 2;
  const float pos = static_cast<float>(a.positions[t]);
  const int64_t total = q_size + 2 * kv_size;
  // Projections come out of the matrix product rounded to bf16 (bias
  // added first), as a bf16 model's nn.Linear does.
  for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
    row[i] = RoundBf16(row[i] + (a.bias != nullptr ? __bfloat162float(a.bias[i]) : 0.0f));
  }
  __syncthreads();
  // RoPE on the (num_heads + num_kv_heads) heads of q and k, pair by pair.
  const int64_t pairs = (a.num_heads + a.num_kv_heads) * half;
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int64_t head = p / half, i = p % half;
    float* h = row + head * a.head_dim;  // k heads follow q heads in the row
    // Angles in fp32, cos/sin and the products rounded to bf16: the
    // arithmetic of Hugging Face's apply_rotary_pos_emb in a bf16 model.
    float s, c;
    sincosf(pos * a.inv_freq[i], &s, &c);
    s = RoundBf16(s);
    c = RoundBf16(c);
    const float x1 = h[i], x2 = h[i + half];
    h[i] = RoundBf16(RoundBf16(x1 * c) - RoundBf16(x2 * s));
    h[i + half] = RoundBf16(RoundBf16(x2 * c) + RoundBf16(x1 * s));
  }
  __syncthreads();
  const int64_t block = a.slot_block[t];
  const int64_t slot = a.positions[t] % a.block_size;
  const int64_t base = (block * a.block_size + slot) * kv_size;
  for (int64_t i = threadIdx.x; i < kv_size; i += blockDim.x) {
    a.k_cache[base + i] = __float2bfloat16(row[q_size + i]);
    a.v_cache[base + i] = __float2bfloat16(row[q_size + kv_size + i]);
  }
}

// One block per (token, query head). Scores for every visible position go
// to shared memory, then a max/sum softmax, then each thread accumulates
// its output dimensions over the positions (V rows read coalesced).
__global__ void PagedAttentionKernel(AttentionArgs a) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int64_t hd = a.head_dim, kvh = h / (a.num_heads / a.num_kv_heads);
  float* q = smem;              // [head_dim]
  float* scores = smem + hd;    // [context]
  const float* qrow = a.qkv + t * a.qkv_stride + h * hd;
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) q[d] = qrow[d];
  __syncthreads();
  const int64_t ctx = a.positions[t] + 1;
  const int32_t* table = a.block_tables + a.table_offset[a.row_seq[t]];
  const int64_t kv_row = a.num_kv_heads * hd;
  const float scale = rsqrtf(static_cast<float>(hd));
  // Scores: one warp per position at a time, its lanes splitting the head
  // dimension, so each K row is read once, coalesced.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  float local_max = -FLT_MAX;
  for (int64_t p = warp; p < ctx; p += warps) {
    const __nv_bfloat16* k = a.k_cache + (static_cast<int64_t>(table[p / a.block_size]) * a.block_size +
                                          p % a.block_size) * kv_row + kvh * hd;
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
    const __nv_bfloat16* v = a.v_cache + (static_cast<int64_t>(table[p / a.block_size]) * a.block_size +
                                          p % a.block_size) * kv_row + kvh * hd;
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
    a.out[t * a.num_heads * hd + h * hd + d] = __float2bfloat16(sum);
  }
}

__global__ void SiluMulKernel(const float* gate_up, int64_t inter, __nv_bfloat16* out) {
  const int64_t r = blockIdx.x;
  for (int64_t i = threadIdx.x; i < inter; i += blockDim.x) {
    const float g = RoundBf16(gate_up[r * 2 * inter + i]);
    const float u = RoundBf16(gate_up[r * 2 * inter + inter + i]);
    out[r * inter + i] = __float2bfloat16(RoundBf16(g / (1.0f + __expf(-g))) * u);
  }
}

// The residual stream of a bf16 model is bf16: both terms and the sum
// are rounded.
__global__ void AddKernel(float* x, const float* d, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = RoundBf16(x[i] + RoundBf16(d[i]));
  }
}

__global__ void RoundKernel(float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = RoundBf16(x[i]);
  }
}

}  // namespace

void EmbeddingGather(const int32_t* tokens, const __nv_bfloat16* embed, int64_t rows, int64_t hidden, float* x,
                     cudaStream_t stream) {
  if (rows > 0) EmbeddingGatherKernel<<<rows, 256, 0, stream>>>(tokens, embed, hidden, x);
}

void RmsNorm(const float* x, const int32_t* src_rows, const __nv_bfloat16* weight, int64_t rows, int64_t dim,
             float eps, __nv_bfloat16* out, cudaStream_t stream) {
  if (rows > 0) RmsNormKernel<<<rows, 256, 0, stream>>>(x, src_rows, weight, dim, eps, out);
}

void RopeAndWriteCache(const RopeCacheArgs& a, cudaStream_t stream) {
  if (a.rows > 0) RopeCacheKernel<<<a.rows, 256, 0, stream>>>(a);
}

size_t PagedAttentionSharedBytes(int64_t max_context, int64_t head_dim) {
  // q, then the scores (reused for the 4 warps' partial P.V sums).
  return static_cast<size_t>(head_dim + std::max<int64_t>(max_context, 4 * head_dim)) * sizeof(float);
}

cudaError_t ConfigurePagedAttention(size_t max_shared_bytes) {
  return cudaFuncSetAttribute(PagedAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(max_shared_bytes));
}

void PagedAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return;
  const dim3 grid(static_cast<unsigned>(a.rows), static_cast<unsigned>(a.num_heads));
  PagedAttentionKernel<<<grid, 128, PagedAttentionSharedBytes(a.max_context, a.head_dim), stream>>>(a);
}

void SiluMul(const float* gate_up, int64_t rows, int64_t inter, __nv_bfloat16* out, cudaStream_t stream) {
  if (rows > 0) SiluMulKernel<<<rows, 256, 0, stream>>>(gate_up, inter, out);
}

void RoundToBf16(float* x, int64_t n, cudaStream_t stream) {
  if (n > 0) RoundKernel<<<static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096)), 256, 0, stream>>>(x, n);
}

void AddInPlace(float* x, const float* delta, int64_t n, cudaStream_t stream) {
  if (n > 0) AddKernel<<<static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096)), 256, 0, stream>>>(x, delta, n);
}

}  // namespace tandem::cuda
