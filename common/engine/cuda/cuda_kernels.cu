#include "common/engine/cuda/cuda_kernels.h"

#include <algorithm>

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

__device__ inline float RoundBf16(float v) { return __bfloat162float(__float2bfloat16(v)); }

__global__ void EmbeddingGatherKernel(const int32_t* tokens, const __nv_bfloat16* embed, int64_t hidden, float* x) {
  const int64_t t = blockIdx.x;
  const __nv_bfloat16* row = embed + static_cast<int64_t>(tokens[t]) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) x[t * hidden + i] = __bfloat162float(row[i]);
}

__device__ void NormRow(const float* xr, const __nv_bfloat16* w, int64_t dim, float eps, __nv_bfloat16* out,
                        float* scratch) {
  float ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  const float inv = rsqrtf(BlockSum(ss, scratch) / dim + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[i] = __float2bfloat16(__bfloat162float(w[i]) * RoundBf16(xr[i] * inv));
  }
}

__global__ void RmsNormKernel(const float* x, const int32_t* src_rows, const __nv_bfloat16* w, int64_t dim, float eps,
                              __nv_bfloat16* out) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  NormRow(x + (src_rows ? src_rows[r] : r) * dim, w, dim, eps, out + r * dim, scratch);
}

// Each thread adds its own elements before the norm reads them back, so
// the block's only barrier is the one inside BlockSum.
__global__ void AddRmsNormKernel(float* x, const __nv_bfloat16* delta, const __nv_bfloat16* w, int64_t dim, float eps,
                                 __nv_bfloat16* out) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  float* xr = x + r * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    xr[i] = RoundBf16(xr[i] + __bfloat162float(delta[r * dim + i]));
  }
  NormRow(xr, w, dim, eps, out + r * dim, scratch);
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

__global__ void SiluMulKernel(const __nv_bfloat16* gate_up, int64_t inter, __nv_bfloat16* out) {
  const int64_t r = blockIdx.x;
  for (int64_t i = threadIdx.x; i < inter; i += blockDim.x) {
    const float g = __bfloat162float(gate_up[r * 2 * inter + i]);
    const float u = __bfloat162float(gate_up[r * 2 * inter + inter + i]);
    out[r * inter + i] = __float2bfloat16(RoundBf16(g / (1.0f + __expf(-g))) * u);
  }
}

// The residual stream of a bf16 model is bf16: the sum is rounded.
__global__ void AddKernel(float* x, const __nv_bfloat16* d, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = RoundBf16(x[i] + __bfloat162float(d[i]));
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

void AddRmsNorm(float* x, const __nv_bfloat16* delta, const __nv_bfloat16* weight, int64_t rows, int64_t dim,
                float eps, __nv_bfloat16* out, cudaStream_t stream) {
  if (rows > 0) AddRmsNormKernel<<<rows, 256, 0, stream>>>(x, delta, weight, dim, eps, out);
}

void SiluMul(const __nv_bfloat16* gate_up, int64_t rows, int64_t inter, __nv_bfloat16* out, cudaStream_t stream) {
  if (rows > 0) SiluMulKernel<<<rows, 256, 0, stream>>>(gate_up, inter, out);
}

void RoundToBf16(float* x, int64_t n, cudaStream_t stream) {
  if (n > 0) RoundKernel<<<static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096)), 256, 0, stream>>>(x, n);
}

void AddInPlace(float* x, const __nv_bfloat16* delta, int64_t n, cudaStream_t stream) {
  if (n > 0) AddKernel<<<static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096)), 256, 0, stream>>>(x, delta, n);
}

}  // namespace tandem::cuda
