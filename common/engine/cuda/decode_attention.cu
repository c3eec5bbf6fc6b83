// Flash-decoding over the paged KV cache. Decode is memory-bound: the goal
// is to read each K/V row of the context exactly once (for all the query
// heads of its group at once), in coalesced 16-byte copies, with enough
// blocks to fill the GPU even at batch 1 (hence the split over the
// context, finer for small batches); the arithmetic runs on the tensor
// cores so that it never becomes the bottleneck.
#include <cfloat>

#include "common/engine/cuda/attention_kernels.h"
#include "common/engine/cuda/device_helpers.cuh"
#include "common/engine/cuda/launch.cuh"
#include "common/engine/cuda/mma_helpers.cuh"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = 16;  // query heads per kv head: the rows of one MMA tile

constexpr int kTile = 64;          // positions per block iteration: 16 per warp
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Shared memory of one block: the group's queries as 16 bf16 rows, one
// K/V tile (rows padded by 16 bytes against ldmatrix bank conflicts), and
// at the end the warps' partial outputs (over the K/V tile's space).
template <int HD>
struct DecodeSmem {
  static constexpr int kPitch = HD + 8;
  __nv_bfloat16 q[16][kPitch];
  union {
    struct {
      __nv_bfloat16 k[kTile][kPitch];
      __nv_bfloat16 v[kTile][kPitch];
    } kv;
    float out[kWarps][16][HD];
  } u;
  float m[kWarps][16], l[kWarps][16];
  int64_t base[kDecodeMaxPartition];  // element offset of each position's K/V row
};

// The merge of one row's splits for query heads [h0, h0 + group): each
// split's partial output rescaled to the row's max, summed in split order,
// normalized. A warp per head, a lane per 4 dims. Partials are read from
// L2 (__ldcg): other blocks wrote them. Done by the row's last split to
// finish rather than by a kernel of its own: a launch less per layer, and
// at batch 1 a separate merge (32 splits) cost as much as the attention.
template <int HD>
__device__ void CombineGroup(const DecodeAttentionArgs& a, int64_t num_heads, int64_t i, int h0, int group,
                             int splits) {
  constexpr int kLanes = HD / 4;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int h = h0 + warp; h < h0 + group; h += kThreads / 32) {
    const int64_t base = (i * num_heads + h) * a.max_splits;
    float m = -FLT_MAX;
    for (int s = lane; s < splits; s += 32) m = fmaxf(m, __ldcg(a.partial_max + base + s));
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    if (lane >= kLanes) continue;
    float4 num = make_float4(0, 0, 0, 0);
    float den = 0;
#pragma unroll 8
    for (int s = 0; s < splits; ++s) {
      const float w = __expf(__ldcg(a.partial_max + base + s) - m);
      const float4 o = __ldcg(reinterpret_cast<const float4*>(a.partial_out + (base + s) * HD) + lane);
      num = make_float4(num.x + w * o.x, num.y + w * o.y, num.z + w * o.z, num.w + w * o.w);
      den += w * __ldcg(a.partial_sum + base + s);
    }
    __nv_bfloat16* out = a.out + static_cast<int64_t>(a.rows[i]) * num_heads * HD + h * HD + 4 * lane;
    reinterpret_cast<__nv_bfloat162*>(out)[0] = __floats2bfloat162_rn(num.x / den, num.y / den);
    reinterpret_cast<__nv_bfloat162*>(out)[1] = __floats2bfloat162_rn(num.z / den, num.w / den);
  }
}

// Grid (kv head, row, split); a split is `partition` consecutive positions.
// The kv head's query heads (its group, at most 16) are the 16 rows of an
// m16n8k16 tensor-core tile, so K and V are read once for all of them:
// S = Q K^T and O += P V run on the tensor cores, FlashAttention-style,
// over K/V tiles of 64 positions staged in shared memory with cp.async;
// each warp owns 16 positions of every tile and keeps its own online
// softmax state, and the warps' states are merged at the end. Numerics:
// fp32 scores and softmax, probabilities exact to ~16 bits in P.V, fp32
// accumulation. The split's
// unnormalized output, max and sum go to the partial buffers.
template <int HD>
__global__ void __launch_bounds__(kThreads, 4) DecodeKernel(KvCacheRef kv, DecodeAttentionArgs a) {
  WaitForPrecedingGrid();
  AllowDependentLaunch();
  __shared__ __align__(128) DecodeSmem<HD> sm;
  constexpr int P = DecodeSmem<HD>::kPitch;
  constexpr int kChunks = HD / 8;  // 16-byte chunks per K/V row

  const int kvh = blockIdx.x;
  const int64_t i = blockIdx.y;
  const int split = blockIdx.z;
  const int group = static_cast<int>(kv.num_heads / kv.num_kv_heads);
  const int ctx = a.context_lens[i];
  const int start = split * a.partition;
  if (start >= ctx) return;
  const int n = min(ctx, start + a.partition) - start;
  const int row = a.rows[i];
  const int32_t* table = a.tables + i * a.table_stride;
  const int64_t kv_row = kv.num_kv_heads * HD;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;  // mma fragment coordinates

  for (int j = threadIdx.x; j < n; j += kThreads) {
    const int p = start + j;
    sm.base[j] = (static_cast<int64_t>(table[p / kv.block_size]) * kv.block_size + p % kv.block_size) * kv_row +
                 kvh * HD;
  }
  for (int e = threadIdx.x; e < 16 * HD; e += kThreads) {
    const int r = e / HD, d = e % HD;
    sm.q[r][d] = __float2bfloat16(r < group ? a.qkv[row * a.qkv_stride + (kvh * group + r) * HD + d] : 0.0f);
  }
  __syncthreads();
  uint32_t qf[HD / 16][4];
#pragma unroll
  for (int ks = 0; ks < HD / 16; ++ks) LdMatrixX4(qf[ks], &sm.q[lane & 15][ks * 16 + (lane >> 4) * 8]);

  const float scale_log2 = rsqrtf(static_cast<float>(HD)) * kLog2e;
  float o[HD / 8][4];
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // rows g and g + 8, log2 units
  float l[2] = {0.0f, 0.0f};            // this thread's share of the row sums

  const int num_tiles = (n + kTile - 1) / kTile;
  for (int kt = 0; kt < num_tiles; ++kt) {
    if (kt > 0) __syncthreads();  // every warp is done with the previous tile
    for (int c = threadIdx.x; c < kTile * kChunks; c += kThreads) {
      const int r = c / kChunks, d = (c % kChunks) * 8;
      const int j = kt * kTile + r;
      const bool valid = j < n;
      const int64_t at = (valid ? sm.base[j] : 0) + d;
      CpAsync16(&sm.u.kv.k[r][d], kv.k + at, valid);
      CpAsync16(&sm.u.kv.v[r][d], kv.v + at, valid);
    }
    CpAsyncCommit();
    CpAsyncWaitAll();
    __syncthreads();
    const int j0 = kt * kTile + warp * 16;  // this warp's first position in the split
    if (j0 >= n) continue;                  // uniform across the warp

    float s[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < HD; kk += 32) {
        uint32_t b[4];
        LdMatrixX4(b, &sm.u.kv.k[warp * 16 + nt * 8 + (lane & 7)][kk + (lane >> 3) * 8]);
        Mma(s[nt], qf[kk / 16], b[0], b[1]);
        Mma(s[nt], qf[kk / 16 + 1], b[2], b[3]);
      }
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = j0 + nt * 8 + 2 * t + (e & 1);
        const float v = j < n ? s[nt][e] * scale_log2 : -INFINITY;
        s[nt][e] = v;
        mx[e >> 1] = fmaxf(mx[e >> 1], v);
      }
    }
    float alpha[2];
    OnlineSoftmaxStep(m, mx, alpha);
    // P in two bf16 parts (hi + lo carries ~16 mantissa bits), so P.V is as
    // exact as fp32 probabilities; the tensor cores have time to spare.
    uint32_t pf[4], pf_lo[4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const float p0 = exp2f(s[nt][0] - mx[0]), p1 = exp2f(s[nt][1] - mx[0]);
      const float p2 = exp2f(s[nt][2] - mx[1]), p3 = exp2f(s[nt][3] - mx[1]);
      l[0] = (nt == 0 ? l[0] * alpha[0] : l[0]) + p0 + p1;
      l[1] = (nt == 0 ? l[1] * alpha[1] : l[1]) + p2 + p3;
      pf[nt * 2 + 0] = PackBf16(p0, p1);
      pf[nt * 2 + 1] = PackBf16(p2, p3);
      pf_lo[nt * 2 + 0] = PackBf16(p0 - RoundBf16(p0), p1 - RoundBf16(p1));
      pf_lo[nt * 2 + 1] = PackBf16(p2 - RoundBf16(p2), p3 - RoundBf16(p3));
    }
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }
#pragma unroll
    for (int j = 0; j < HD / 8; j += 2) {
      uint32_t b[4];
      LdMatrixX4Trans(b, &sm.u.kv.v[warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8][j * 8 + (lane >> 4) * 8]);
      Mma(o[j], pf, b[0], b[1]);
      Mma(o[j + 1], pf, b[2], b[3]);
      Mma(o[j], pf_lo, b[0], b[1]);
      Mma(o[j + 1], pf_lo, b[2], b[3]);
    }
  }

  // Merge the warps: their row states into shared memory (over the K/V
  // tile), then each (head, dim) sums the rescaled outputs.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 2);
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) {
      sm.u.out[warp][g + 8 * r][j * 8 + 2 * t] = o[j][2 * r];
      sm.u.out[warp][g + 8 * r][j * 8 + 2 * t + 1] = o[j][2 * r + 1];
    }
    if (t == 0) {
      sm.m[warp][g + 8 * r] = m[r];
      sm.l[warp][g + 8 * r] = l[r];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < group * HD; e += kThreads) {
    const int h = e / HD, d = e % HD;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, sm.m[w][h]);
    float out = 0, sum = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = sm.m[w][h] == -INFINITY ? 0.0f : exp2f(sm.m[w][h] - mm);
      out += sm.u.out[w][h][d] * f;
      sum += sm.l[w][h] * f;
    }
    const int64_t slot = (i * kv.num_heads + kvh * group + h) * a.max_splits + split;
    a.partial_out[slot * HD + d] = out;
    if (d == 0) {
      a.partial_max[slot] = mm * kLn2;  // the combine works in natural-log units
      a.partial_sum[slot] = sum;
    }
  }
  // Count this split in; the last one of the (row, kv head) merges them.
  // The fence before the count publishes this block's partials; the one
  // after it orders the merge's reads after every other split's count.
  __shared__ bool last;
  const int splits = (ctx + a.partition - 1) / a.partition;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t* counter = a.arrivals + i * kv.num_kv_heads + kvh;
    last = atomicAdd(counter, 1) == splits - 1;
    if (last) *counter = 0;  // every split has arrived: ready for the next launch
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  CombineGroup<HD>(a, kv.num_heads, i, kvh * group, group, splits);
}

}  // namespace

bool DecodeAttentionSupported(int64_t head_dim, int64_t group) {
  return (head_dim == 64 || head_dim == 128) && group >= 1 && group <= kMaxGroup;
}

void DecodeAttention(const KvCacheRef& kv, const DecodeAttentionArgs& a, cudaStream_t stream) {
  if (a.num_rows == 0) return;
  const dim3 grid(static_cast<unsigned>(kv.num_kv_heads), static_cast<unsigned>(a.num_rows),
                  static_cast<unsigned>(a.max_splits));
  if (kv.head_dim == 64) {
    LaunchPdl(DecodeKernel<64>, grid, dim3(kThreads), 0, stream, kv, a);
  } else {
    LaunchPdl(DecodeKernel<128>, grid, dim3(kThreads), 0, stream, kv, a);
  }
}

}  // namespace tandem::cuda
