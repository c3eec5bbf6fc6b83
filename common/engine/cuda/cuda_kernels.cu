#include "common/engine/cuda/cuda_kernels.h"

#include <algorithm>

#include "common/engine/cuda/device_helpers.cuh"
#include "common/engine/cuda/launch.cuh"

namespace tandem::cuda {
namespace {

__global__ void EmbeddingGatherKernel(const int32_t* tokens, const __nv_bfloat16* embed, int64_t hidden,
                                      __nv_bfloat16* x) {
  WaitForPrecedingGrid();
  AllowDependentLaunch();
  const int64_t t = blockIdx.x;
  const __nv_bfloat16* row = embed + static_cast<int64_t>(tokens[t]) * hidden;
  __nv_bfloat16* out = x + t * hidden;
  if (hidden % 8 == 0) {
    // 16-byte words (a row is 8 KB at hidden 4096: 2 per thread, not 16).
    for (int64_t i = 8 * threadIdx.x; i < hidden; i += 8 * blockDim.x) {
      *reinterpret_cast<uint4*>(out + i) = *reinterpret_cast<const uint4*>(row + i);
    }
    return;
  }
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) out[i] = row[i];
}

// One block per row, each thread holding up to kNormChunks chunks of 4
// values in registers, so the row is read once and written once (and, for
// small batches, its loads all leave at the same time).
constexpr int kNormChunks = 4;
constexpr int kNormMaxThreads = 1024;

__device__ inline float4 LoadBf16x4(const __nv_bfloat16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(a.x, a.y, b.x, b.y);
}

__device__ inline void StoreBf16x4(__nv_bfloat16* p, float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 packed;
  packed.x = *reinterpret_cast<const uint32_t*>(&lo);
  packed.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(p) = packed;
}

// kAdd: x[row] = bf16(x[row] + delta[row]) first (x is then the row read).
// out[r] = bf16(w * bf16(x / rms)).
template <bool kAdd>
__global__ void __launch_bounds__(kNormMaxThreads) NormKernel(__nv_bfloat16* x, const int32_t* src_rows,
                                                              const __nv_bfloat16* delta, const __nv_bfloat16* w,
                                                              int64_t dim, float eps, __nv_bfloat16* out) {
  WaitForPrecedingGrid();
  AllowDependentLaunch();
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  __nv_bfloat16* xr = x + (src_rows != nullptr ? src_rows[r] : r) * dim;
  const int64_t chunks = dim / 4;
  float4 v[kNormChunks];
  float ss = 0;
#pragma unroll
  for (int j = 0; j < kNormChunks; ++j) {
    const int64_t c = threadIdx.x + static_cast<int64_t>(j) * blockDim.x;
    if (c >= chunks) break;
    v[j] = LoadBf16x4(xr + 4 * c);
    if constexpr (kAdd) {
      const float4 d = LoadBf16x4(delta + r * dim + 4 * c);
      v[j] = make_float4(RoundBf16(v[j].x + d.x), RoundBf16(v[j].y + d.y), RoundBf16(v[j].z + d.z),
                         RoundBf16(v[j].w + d.w));
      StoreBf16x4(xr + 4 * c, v[j]);
    }
    ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
  }
  const float inv = rsqrtf(BlockSum(ss, scratch) / static_cast<float>(dim) + eps);
#pragma unroll
  for (int j = 0; j < kNormChunks; ++j) {
    const int64_t c = threadIdx.x + static_cast<int64_t>(j) * blockDim.x;
    if (c >= chunks) break;
    const float4 g = LoadBf16x4(w + 4 * c);
    StoreBf16x4(out + r * dim + 4 * c, make_float4(g.x * RoundBf16(v[j].x * inv), g.y * RoundBf16(v[j].y * inv),
                                                   g.z * RoundBf16(v[j].z * inv), g.w * RoundBf16(v[j].w * inv)));
  }
}

unsigned NormThreads(int64_t dim) {
  const int64_t per_thread = (dim / 4 + kNormMaxThreads - 1) / kNormMaxThreads;  // <= kNormChunks
  const int64_t threads = (dim / 4 + per_thread - 1) / per_thread;
  return static_cast<unsigned>((threads + 31) / 32 * 32);
}

// V consecutive values as one memory word: fp32 (16 bytes at V = 4) or
// bf16 (8 bytes); V = 1 is the plain scalar access. Aligned to the word.
template <int V>
struct Vec;
template <>
struct Vec<1> {
  __device__ static void Load(const float* p, float (&v)[1]) { v[0] = *p; }
  __device__ static void Store(float* p, const float (&v)[1]) { *p = v[0]; }
  __device__ static void LoadBf16(const __nv_bfloat16* p, float (&v)[1]) { v[0] = __bfloat162float(*p); }
  __device__ static void StoreBf16(__nv_bfloat16* p, const float (&v)[1]) { *p = __float2bfloat16(v[0]); }
};
template <>
struct Vec<4> {
  __device__ static void Load(const float* p, float (&v)[4]) {
    const float4 w = *reinterpret_cast<const float4*>(p);
    v[0] = w.x, v[1] = w.y, v[2] = w.z, v[3] = w.w;
  }
  __device__ static void Store(float* p, const float (&v)[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  }
  __device__ static void LoadBf16(const __nv_bfloat16* p, float (&v)[4]) {
    const float4 w = LoadBf16x4(p);
    v[0] = w.x, v[1] = w.y, v[2] = w.z, v[3] = w.w;
  }
  __device__ static void StoreBf16(__nv_bfloat16* p, const float (&v)[4]) {
    StoreBf16x4(p, make_float4(v[0], v[1], v[2], v[3]));
  }
};

// Grid (row, pair group): each thread owns V consecutive (head, i) pairs
// of dims i and i + head_dim / 2 of one head of the row's q, k or v: bias
// and bf16 rounding for all three, RoPE for q and k, and the K/V cache
// write. V = 4 (head_dim % 8 == 0) moves 16-byte words of q/k/v and
// 8-byte words of the cache: the kernel is memory-bound at prefill (every
// q/k/v value read and q, k rewritten, in fp32), and one 4-byte word per
// load left it at under half the bandwidth. The arithmetic is per value
// either way. No thread reads what another writes, so there is no barrier.
template <int V>
__global__ void RopeCacheKernel(RopeCacheArgs a) {
  WaitForPrecedingGrid();
  AllowDependentLaunch();
  using Words = Vec<V>;
  const int64_t t = blockIdx.x;
  const int64_t half = a.head_dim / 2;
  const int64_t groups = (a.num_heads + 2 * a.num_kv_heads) * (half / V);
  const int64_t p = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (p >= groups) return;
  const int64_t head = p / (half / V), i = (p % (half / V)) * V;
  const int64_t q_size = a.num_heads * a.head_dim, kv_size = a.num_kv_heads * a.head_dim;
  float* row = a.qkv + t * (q_size + 2 * kv_size);
  const int64_t at = head * a.head_dim + i;  // q, k and v heads follow each other in the row
  // Projections come out of the matrix product rounded to bf16 (bias
  // added first), as a bf16 model's nn.Linear does.
  float x1[V], x2[V];
  Words::Load(row + at, x1);
  Words::Load(row + at + half, x2);
  if (a.bias != nullptr) {
    float b1[V], b2[V];
    Words::LoadBf16(a.bias + at, b1);
    Words::LoadBf16(a.bias + at + half, b2);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      x1[k] += b1[k];
      x2[k] += b2[k];
    }
  }
#pragma unroll
  for (int k = 0; k < V; ++k) {
    x1[k] = RoundBf16(x1[k]);
    x2[k] = RoundBf16(x2[k]);
  }
  const int64_t pos = a.positions[t];
  const int64_t slot = (static_cast<int64_t>(a.slot_block[t]) * a.block_size + pos % a.block_size) * kv_size;
  if (head >= a.num_heads + a.num_kv_heads) {  // v: no rotation
    const int64_t d = at - q_size - kv_size;
    Words::StoreBf16(a.v_cache + slot + d, x1);
    Words::StoreBf16(a.v_cache + slot + d + half, x2);
    return;
  }
  // Angles in fp32, cos/sin and the products rounded to bf16: the
  // arithmetic of Hugging Face's apply_rotary_pos_emb in a bf16 model.
  float y1[V], y2[V];
#pragma unroll
  for (int k = 0; k < V; ++k) {
    float s, c;
    sincosf(static_cast<float>(pos) * a.inv_freq[i + k], &s, &c);
    s = RoundBf16(s);
    c = RoundBf16(c);
    y1[k] = RoundBf16(RoundBf16(x1[k] * c) - RoundBf16(x2[k] * s));
    y2[k] = RoundBf16(RoundBf16(x2[k] * c) + RoundBf16(x1[k] * s));
  }
  Words::Store(row + at, y1);
  Words::Store(row + at + half, y2);
  if (head >= a.num_heads) {  // k
    const int64_t d = at - q_size;
    Words::StoreBf16(a.k_cache + slot + d, y1);
    Words::StoreBf16(a.k_cache + slot + d + half, y2);
  }
}

// 8 values per thread over all rows: out = bf16(bf16(silu(gate)) * up).
__global__ void SiluMulKernel(const __nv_bfloat16* gate_up, int64_t rows, int64_t inter, __nv_bfloat16* out) {
  WaitForPrecedingGrid();
  AllowDependentLaunch();
  const int64_t per_row = inter / 8, total = rows * per_row;
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < total;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = u / per_row, c = (u % per_row) * 8;
    const uint4 graw = *reinterpret_cast<const uint4*>(gate_up + r * 2 * inter + c);
    const uint4 uraw = *reinterpret_cast<const uint4*>(gate_up + r * 2 * inter + inter + c);
    const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(&graw);
    const __nv_bfloat162* u2 = reinterpret_cast<const __nv_bfloat162*>(&uraw);
    uint4 o;
    __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(&o);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 g = __bfloat1622float2(g2[k]), up = __bfloat1622float2(u2[k]);
      o2[k] = __floats2bfloat162_rn(SiluRounded(g.x) * up.x, SiluRounded(g.y) * up.y);
    }
    *reinterpret_cast<uint4*>(out + r * inter + c) = o;
  }
}

// The residual stream of a bf16 model is bf16: the sum is rounded.
__global__ void AddKernel(__nv_bfloat16* x, const __nv_bfloat16* d, int64_t n) {
  WaitForPrecedingGrid();
  AllowDependentLaunch();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = __float2bfloat16(__bfloat162float(x[i]) + __bfloat162float(d[i]));
  }
}

__global__ void RoundKernel(float* x, int64_t n) {
  WaitForPrecedingGrid();
  AllowDependentLaunch();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = RoundBf16(x[i]);
  }
}

}  // namespace

void EmbeddingGather(const int32_t* tokens, const __nv_bfloat16* embed, int64_t rows, int64_t hidden,
                     __nv_bfloat16* x, cudaStream_t stream) {
  if (rows > 0) LaunchPdl(EmbeddingGatherKernel, dim3(static_cast<unsigned>(rows)), dim3(256), 0, stream, tokens, embed, hidden, x);
}

bool NormSupported(int64_t dim) { return dim % 4 == 0 && dim <= int64_t{4} * kNormChunks * kNormMaxThreads; }

void RmsNorm(const __nv_bfloat16* x, const int32_t* src_rows, const __nv_bfloat16* weight, int64_t rows, int64_t dim,
             float eps, __nv_bfloat16* out, cudaStream_t stream) {
  if (rows > 0) {
    LaunchPdl(NormKernel<false>, dim3(static_cast<unsigned>(rows)), dim3(NormThreads(dim)), 0, stream,
              const_cast<__nv_bfloat16*>(x), src_rows, static_cast<const __nv_bfloat16*>(nullptr), weight, dim, eps,
              out);
  }
}

void RopeAndWriteCache(const RopeCacheArgs& a, cudaStream_t stream) {
  if (a.rows <= 0) return;
  // 4 pairs per thread where every word is then aligned: head_dim % 8 == 0
  // makes i, half, the head offsets and the row length multiples of 4.
  const bool wide = a.head_dim % 8 == 0;
  const int64_t groups = (a.num_heads + 2 * a.num_kv_heads) * (a.head_dim / 2) / (wide ? 4 : 1);
  const dim3 grid(static_cast<unsigned>(a.rows), static_cast<unsigned>((groups + 127) / 128));
  if (wide) {
    LaunchPdl(RopeCacheKernel<4>, grid, dim3(128), 0, stream, a);
  } else {
    LaunchPdl(RopeCacheKernel<1>, grid, dim3(128), 0, stream, a);
  }
}

void AddRmsNorm(__nv_bfloat16* x, const __nv_bfloat16* delta, const __nv_bfloat16* weight, int64_t rows, int64_t dim,
                float eps, __nv_bfloat16* out, cudaStream_t stream) {
  if (rows > 0) {
    LaunchPdl(NormKernel<true>, dim3(static_cast<unsigned>(rows)), dim3(NormThreads(dim)), 0, stream, x,
              static_cast<const int32_t*>(nullptr), delta, weight, dim, eps, out);
  }
}

void SiluMul(const __nv_bfloat16* gate_up, int64_t rows, int64_t inter, __nv_bfloat16* out, cudaStream_t stream) {
  const int64_t units = rows * inter / 8;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((units + 255) / 256, 132 * 16));
  if (units > 0) LaunchPdl(SiluMulKernel, dim3(blocks), dim3(256), 0, stream, gate_up, rows, inter, out);
}

void RoundToBf16(float* x, int64_t n, cudaStream_t stream) {
  if (n > 0) LaunchPdl(RoundKernel, dim3(static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096))), dim3(256), 0, stream, x, n);
}

void AddInPlace(__nv_bfloat16* x, const __nv_bfloat16* delta, int64_t n, cudaStream_t stream) {
  if (n > 0) {
    LaunchPdl(AddKernel, dim3(static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096))), dim3(256), 0, stream,
              x, delta, n);
  }
}

}  // namespace tandem::cuda
