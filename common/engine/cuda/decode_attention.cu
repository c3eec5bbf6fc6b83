// Flash-decoding over the paged KV cache. Decode is memory-bound: the goal
// is to read each K/V row of the context exactly once, 16 bytes per lane,
// with enough blocks in flight to fill the GPU even at batch 1 (hence the
// split over the context).
#include <cfloat>

#include "common/engine/cuda/attention_kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = 8;

__device__ inline void LoadBf16x8(const __nv_bfloat16* p, float (&out)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// Grid (kv head, row, split). A "group" of L = HD / 8 lanes covers one
// position (8 dims per lane); a warp covers 32 / L positions per load
// round and keeps kUnroll rounds of loads in flight. G is the largest
// group size the instance handles (the real one may be smaller).
constexpr int kUnroll = 4;

template <int HD, int G>
__global__ void __launch_bounds__(kThreads) DecodeKernel(KvCacheRef kv, DecodeAttentionArgs a) {
  constexpr int L = HD / 8;
  constexpr int kPosPerWarp = 32 / L;
  constexpr int kStride = kWarps * kPosPerWarp;  // positions per round, whole block
  __shared__ float q_s[G][HD];
  __shared__ float p_s[G][kDecodePartition];
  __shared__ float reduce_s[kWarps][G][HD];
  __shared__ float stat_s[G][2];
  __shared__ int64_t base_s[kDecodePartition];  // element offset of each position's K/V row

  const int kvh = blockIdx.x;
  const int64_t i = blockIdx.y;
  const int split = blockIdx.z;
  const int group = static_cast<int>(kv.num_heads / kv.num_kv_heads);
  const int ctx = a.context_lens[i];
  const int start = split * kDecodePartition;
  if (start >= ctx) return;
  const int n = min(ctx, start + kDecodePartition) - start;
  const int row = a.rows[i];
  const int32_t* table = a.tables + i * a.table_stride;
  const int64_t kv_row = kv.num_kv_heads * HD;

  for (int e = threadIdx.x; e < group * HD; e += kThreads) {
    q_s[e / HD][e % HD] = a.qkv[row * a.qkv_stride + (kvh * group) * HD + e];
  }
  // Resolve the block table once: later loads have no dependent lookup.
  for (int j = threadIdx.x; j < n; j += kThreads) {
    const int p = start + j;
    base_s[j] = (static_cast<int64_t>(table[p / kv.block_size]) * kv.block_size + p % kv.block_size) * kv_row +
                kvh * HD;
  }
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane / L;         // which position of the warp's round
  const int dim0 = (lane % L) * 8;  // this lane's 8 dims
  const float scale = rsqrtf(static_cast<float>(HD));

  // Scores q.k for every query head of the group.
  // The loop bound is uniform across the warp (shuffles need every lane).
  for (int r0 = warp * kPosPerWarp; r0 < n; r0 += kStride * kUnroll) {
    const int j0 = r0 + sub;
    float k[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * kStride;
      if (j < n) LoadBf16x8(kv.k + base_s[j] + dim0, k[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * kStride;
      float dot[G] = {};
#pragma unroll
      for (int g = 0; g < G; ++g) {
#pragma unroll
        for (int d = 0; d < 8; ++d) dot[g] += q_s[g][dim0 + d] * k[u][d];
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
#pragma unroll
        for (int o = L / 2; o > 0; o >>= 1) dot[g] += __shfl_xor_sync(0xffffffff, dot[g], o);
      }
      if (j < n && lane % L == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          if (g < group) p_s[g][j] = dot[g] * scale;
        }
      }
    }
  }
  __syncthreads();

  // Softmax statistics of this split, per head: warp w takes heads w, w+4.
  for (int g = warp; g < group; g += kWarps) {
    float m = -FLT_MAX;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, p_s[g][j]);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    float s = 0;
    for (int j = lane; j < n; j += 32) {
      const float e = __expf(p_s[g][j] - m);
      p_s[g][j] = e;
      s += e;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
    if (lane == 0) {
      stat_s[g][0] = m;
      stat_s[g][1] = s;
    }
  }
  __syncthreads();

  // P.V: same lane layout as the scores, 8 dims per lane per head.
  float acc[G][8] = {};
  // The loop bound is uniform across the warp (shuffles need every lane).
  for (int r0 = warp * kPosPerWarp; r0 < n; r0 += kStride * kUnroll) {
    const int j0 = r0 + sub;
    float v[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * kStride;
      if (j < n) {
        LoadBf16x8(kv.v + base_s[j] + dim0, v[u]);
      } else {
#pragma unroll
        for (int d = 0; d < 8; ++d) v[u][d] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * kStride;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float w = j < n ? p_s[g][j] : 0.0f;
#pragma unroll
        for (int d = 0; d < 8; ++d) acc[g][d] += w * v[u][d];
      }
    }
  }
  // Sum over the warp's position slots (lanes with equal dims), then warps.
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int d = 0; d < 8; ++d) {
#pragma unroll
      for (int o = L; o < 32; o <<= 1) acc[g][d] += __shfl_xor_sync(0xffffffff, acc[g][d], o);
    }
  }
  if (sub == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int d = 0; d < 8; ++d) reduce_s[warp][g][dim0 + d] = acc[g][d];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < group * HD; e += kThreads) {
    const int g = e / HD, d = e % HD;
    float s = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += reduce_s[w][g][d];
    const int64_t h = kvh * group + g;
    const int64_t slot = (i * kv.num_heads + h) * a.max_splits + split;
    a.partial_out[slot * HD + d] = s;
    if (d == 0) {
      a.partial_max[slot] = stat_s[g][0];
      a.partial_sum[slot] = stat_s[g][1];
    }
  }
}

// Grid (row, query head), head_dim threads: rescales each split's partial
// output to the row's global max and normalizes.
__global__ void CombineKernel(DecodeAttentionArgs a, int64_t num_heads, int64_t head_dim) {
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const int splits = (a.context_lens[i] + kDecodePartition - 1) / kDecodePartition;
  const int64_t base = (i * num_heads + h) * a.max_splits;
  float m = -FLT_MAX;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, a.partial_max[base + s]);
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float num = 0, den = 0;
    for (int s = 0; s < splits; ++s) {
      const float w = __expf(a.partial_max[base + s] - m);
      num += w * a.partial_out[(base + s) * head_dim + d];
      den += w * a.partial_sum[base + s];
    }
    a.out[static_cast<int64_t>(a.rows[i]) * num_heads * head_dim + h * head_dim + d] = __float2bfloat16(num / den);
  }
}

}  // namespace

bool DecodeAttentionSupported(int64_t head_dim, int64_t group) {
  return (head_dim == 64 || head_dim == 128) && group >= 1 && group <= kMaxGroup;
}

void DecodeAttention(const KvCacheRef& kv, const DecodeAttentionArgs& a, cudaStream_t stream) {
  if (a.num_rows == 0) return;
  const dim3 grid(static_cast<unsigned>(kv.num_kv_heads), static_cast<unsigned>(a.num_rows),
                  static_cast<unsigned>(a.max_splits));
  const int64_t group = kv.num_heads / kv.num_kv_heads;
#define TANDEM_DECODE_LAUNCH(HD, G) DecodeKernel<HD, G><<<grid, kThreads, 0, stream>>>(kv, a)
  if (kv.head_dim == 64) {
    if (group == 1) TANDEM_DECODE_LAUNCH(64, 1);
    else if (group == 2) TANDEM_DECODE_LAUNCH(64, 2);
    else if (group <= 4) TANDEM_DECODE_LAUNCH(64, 4);
    else TANDEM_DECODE_LAUNCH(64, 8);
  } else {
    if (group == 1) TANDEM_DECODE_LAUNCH(128, 1);
    else if (group == 2) TANDEM_DECODE_LAUNCH(128, 2);
    else if (group <= 4) TANDEM_DECODE_LAUNCH(128, 4);
    else TANDEM_DECODE_LAUNCH(128, 8);
  }
#undef TANDEM_DECODE_LAUNCH
  const dim3 cgrid(static_cast<unsigned>(a.num_rows), static_cast<unsigned>(kv.num_heads));
  CombineKernel<<<cgrid, static_cast<unsigned>(kv.head_dim), 0, stream>>>(a, kv.num_heads, kv.head_dim);
}

}  // namespace tandem::cuda
