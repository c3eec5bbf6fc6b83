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
// position (8 dims per lane); a warp covers 32 / L positions at a time.
template <int HD>
__global__ void __launch_bounds__(kThreads) DecodeKernel(KvCacheRef kv, DecodeAttentionArgs a) {
  constexpr int L = HD / 8;
  constexpr int kPosPerWarp = 32 / L;
  __shared__ float q_s[kMaxGroup][HD];
  __shared__ float p_s[kMaxGroup][kDecodePartition];
  __shared__ float reduce_s[kWarps][kMaxGroup][HD];
  __shared__ float stat_s[kMaxGroup][2];

  const int kvh = blockIdx.x;
  const int64_t i = blockIdx.y;
  const int split = blockIdx.z;
  const int group = static_cast<int>(kv.num_heads / kv.num_kv_heads);
  const int ctx = a.context_lens[i];
  const int start = split * kDecodePartition;
  if (start >= ctx) return;
  const int end = min(ctx, start + kDecodePartition);
  const int row = a.rows[i];
  const int32_t* table = a.tables + i * a.table_stride;
  const int64_t kv_row = kv.num_kv_heads * HD;

  for (int e = threadIdx.x; e < group * HD; e += kThreads) {
    q_s[e / HD][e % HD] = a.qkv[row * a.qkv_stride + (kvh * group) * HD + e];
  }
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane / L;         // which position of the warp's batch
  const int dim0 = (lane % L) * 8;  // this lane's 8 dims
  const float scale = rsqrtf(static_cast<float>(HD));

  // Scores q.k for every query head of the group.
  for (int p0 = start + warp * kPosPerWarp; p0 < end; p0 += kWarps * kPosPerWarp) {
    const int p = p0 + sub;
    float dot[kMaxGroup] = {};
    if (p < end) {
      const __nv_bfloat16* krow =
          kv.k + (static_cast<int64_t>(table[p / kv.block_size]) * kv.block_size + p % kv.block_size) * kv_row +
          kvh * HD + dim0;
      float k[8];
      LoadBf16x8(krow, k);
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g < group) {
#pragma unroll
          for (int d = 0; d < 8; ++d) dot[g] += q_s[g][dim0 + d] * k[d];
        }
      }
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
#pragma unroll
      for (int o = L / 2; o > 0; o >>= 1) dot[g] += __shfl_xor_sync(0xffffffff, dot[g], o);
    }
    if (p < end && lane % L == 0) {
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g < group) p_s[g][p - start] = dot[g] * scale;
      }
    }
  }
  __syncthreads();

  // Softmax statistics of this split, per head: warp w takes heads w, w+4.
  const int n = end - start;
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
  float acc[kMaxGroup][8] = {};
  for (int p0 = start + warp * kPosPerWarp; p0 < end; p0 += kWarps * kPosPerWarp) {
    const int p = p0 + sub;
    if (p < end) {
      const __nv_bfloat16* vrow =
          kv.v + (static_cast<int64_t>(table[p / kv.block_size]) * kv.block_size + p % kv.block_size) * kv_row +
          kvh * HD + dim0;
      float v[8];
      LoadBf16x8(vrow, v);
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g < group) {
          const float w = p_s[g][p - start];
#pragma unroll
          for (int d = 0; d < 8; ++d) acc[g][d] += w * v[d];
        }
      }
    }
  }
  // Sum over the warp's position slots (lanes with equal dims), then warps.
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
#pragma unroll
    for (int d = 0; d < 8; ++d) {
#pragma unroll
      for (int o = L; o < 32; o <<= 1) acc[g][d] += __shfl_xor_sync(0xffffffff, acc[g][d], o);
    }
  }
  if (sub == 0) {
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g < group) {
#pragma unroll
        for (int d = 0; d < 8; ++d) reduce_s[warp][g][dim0 + d] = acc[g][d];
      }
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
  switch (kv.head_dim) {
    case 64: DecodeKernel<64><<<grid, kThreads, 0, stream>>>(kv, a); break;
    case 128: DecodeKernel<128><<<grid, kThreads, 0, stream>>>(kv, a); break;
    default: return;
  }
  const dim3 cgrid(static_cast<unsigned>(a.num_rows), static_cast<unsigned>(kv.num_heads));
  CombineKernel<<<cgrid, static_cast<unsigned>(kv.head_dim), 0, stream>>>(a, kv.num_heads, kv.head_dim);
}

}  // namespace tandem::cuda
