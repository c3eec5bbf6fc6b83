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
    float out[kWarps][16][kPitch];  // padded: the warps' float2 stores hit distinct banks
  } u;
  float m[kWarps][16], l[kWarps][16];
  // Each position's slot in the pool (block x block_size + offset): 32
  // bits, so the widest split's table fits beside the tile in the 48 KB of
  // static shared memory.
  uint32_t slot[kDecodeMaxPartition];
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
  __shared__ __align__(128) DecodeSmem<HD> sm;
  constexpr int kChunks = HD / 8;  // 16-byte chunks per K/V row

  const int kvh = blockIdx.x;
  const int64_t i = blockIdx.y;
  const int split = blockIdx.z;
  const int group = static_cast<int>(kv.num_heads / kv.num_kv_heads);
  const int ctx = a.context_lens[i];
  const int start = split * a.partition;
  if (start >= ctx) {
    WaitForPrecedingGrid();
    AllowDependentLaunch();
    return;
  }
  const int n = min(ctx, start + a.partition) - start;
  const int row = a.rows[i];
  const int32_t* table = a.tables + i * a.table_stride;
  const int64_t kv_row = kv.num_kv_heads * HD;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;  // mma fragment coordinates

  // Before waiting for the previous kernel (programmatic dependent
  // launch): the plan's tables and every K/V row but the new token's were
  // written before this step's first kernel ran, so the first tile's loads
  // leave now and overlap the previous kernel's tail. The new token's row
  // (position ctx - 1, written by the RoPE kernel just before) is read
  // after the wait; no copy is issued into its shared-memory row before,
  // so the two cannot race.
  for (int j = threadIdx.x; j < n; j += kThreads) {
    const int p = start + j;
    sm.slot[j] = static_cast<uint32_t>(table[p / kv.block_size]) * kv.block_size + p % kv.block_size;
  }
  __syncthreads();
  const int fresh = ctx - 1 - start < min(n, kTile) ? ctx - 1 - start : -1;  // its row in tile 0, if there
  auto row_at = [&](int j) { return static_cast<int64_t>(sm.slot[j]) * kv_row + kvh * HD; };
  // Copies tile `kt` of K or V into `dst`, rows past the split zero-filled
  // (P is 0 there, and 0 x garbage could be NaN); row `skip` left alone.
  auto load_tile = [&](__nv_bfloat16 (*dst)[DecodeSmem<HD>::kPitch], const __nv_bfloat16* src, int kt, int skip) {
    for (int c = threadIdx.x; c < kTile * kChunks; c += kThreads) {
      const int r = c / kChunks, d = (c % kChunks) * 8;
      if (r == skip) continue;
      const int j = kt * kTile + r;
      const bool valid = j < n;
      CpAsync16(&dst[r][d], src + (valid ? row_at(j) : 0) + d, valid);
    }
    CpAsyncCommit();
  };
  load_tile(sm.u.kv.k, kv.k, 0, fresh);
  load_tile(sm.u.kv.v, kv.v, 0, fresh);

  WaitForPrecedingGrid();
  AllowDependentLaunch();
  // The group's queries (fp32, just written by the RoPE kernel): every
  // load of a thread leaves before its first store, one L2 round trip.
  constexpr int kQ = 16 * HD / kThreads;
  float qv[kQ];
#pragma unroll
  for (int u = 0; u < kQ; ++u) {
    const int e = threadIdx.x + u * kThreads, r = e / HD, d = e % HD;
    qv[u] = r < group ? a.qkv[row * a.qkv_stride + (kvh * group + r) * HD + d] : 0.0f;
  }
#pragma unroll
  for (int u = 0; u < kQ; ++u) {
    const int e = threadIdx.x + u * kThreads;
    sm.q[e / HD][e % HD] = __float2bfloat16(qv[u]);
  }
  if (fresh >= 0 && threadIdx.x < 2 * kChunks) {  // from L2: the previous kernel wrote it
    const bool is_v = threadIdx.x >= kChunks;
    const int d = (threadIdx.x % kChunks) * 8;
    const uint4 v = __ldcg(reinterpret_cast<const uint4*>((is_v ? kv.v : kv.k) + row_at(fresh) + d));
    *reinterpret_cast<uint4*>(is_v ? &sm.u.kv.v[fresh][d] : &sm.u.kv.k[fresh][d]) = v;
  }
  __syncthreads();

  const float scale_log2 = rsqrtf(static_cast<float>(HD)) * kLog2e;
  float o[HD / 8][4];
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // rows g and g + 8, log2 units
  float l[2] = {0.0f, 0.0f};            // this thread's share of the row sums

  // K and V of a tile are separate cp.async groups, so the scores and the
  // softmax run while V still lands, and the next tile's K (then V) is
  // loaded as soon as every warp is done with the current one: the loads
  // of a split are never idle while it computes. Pending groups at each
  // wait: the one waited for and the one committed after it.
  const int num_tiles = (n + kTile - 1) / kTile;
  for (int kt = 0; kt < num_tiles; ++kt) {
    CpAsyncWait<1>();  // K of tile kt
    __syncthreads();
    const int j0 = kt * kTile + warp * 16;  // this warp's first position in the split
    const bool active = j0 < n;             // uniform across the warp
    // The Q fragments come from shared memory tile by tile rather than
    // living in 32 registers per thread for the whole walk: with them held,
    // the kernel needed more than the 128 registers of 4 blocks per SM and
    // spilled. Each s[nt] still sums its 16-dim products in order.
    float s[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    if (active) {
#pragma unroll
      for (int kk = 0; kk < HD; kk += 32) {
        uint32_t qa[4], qb[4];
        LdMatrixX4(qa, &sm.q[lane & 15][kk + (lane >> 4) * 8]);
        LdMatrixX4(qb, &sm.q[lane & 15][kk + 16 + (lane >> 4) * 8]);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          uint32_t b[4];
          LdMatrixX4(b, &sm.u.kv.k[warp * 16 + nt * 8 + (lane & 7)][kk + (lane >> 3) * 8]);
          Mma(s[nt], qa, b[0], b[1]);
          Mma(s[nt], qb, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with K of tile kt
    if (kt + 1 < num_tiles) {
      load_tile(sm.u.kv.k, kv.k, kt + 1, -1);
    } else {
      CpAsyncCommit();  // an empty group keeps the count
    }
    uint32_t pf[4], pf_lo[4];
    if (active) {
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
      // P in two bf16 parts (hi + lo carries ~16 mantissa bits), so P.V is
      // as exact as fp32 probabilities; the tensor cores have time to spare.
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
    }
    CpAsyncWait<1>();  // V of tile kt
    __syncthreads();
    if (active) {
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
    __syncthreads();  // every warp is done with V of tile kt
    if (kt + 1 < num_tiles) {
      load_tile(sm.u.kv.v, kv.v, kt + 1, -1);
    } else {
      CpAsyncCommit();
    }
  }
  CpAsyncWaitAll();  // (only empty groups are left) before out reuses the tile's space

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
      *reinterpret_cast<float2*>(&sm.u.out[warp][g + 8 * r][j * 8 + 2 * t]) = make_float2(o[j][2 * r], o[j][2 * r + 1]);
    }
    if (t == 0) {
      sm.m[warp][g + 8 * r] = m[r];
      sm.l[warp][g + 8 * r] = l[r];
    }
  }
  __syncthreads();
  // A row of one split (every row of a large batch, with splits up to
  // kDecodeMaxPartition wide) is done here: its normalized output is
  // written directly, with no partials, fences, count or merge, each a
  // round trip on the block's critical path. The values are the merge's
  // own: it would scale this split by exp(0) = 1 and divide by its sum.
  const int splits = (ctx + a.partition - 1) / a.partition;
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
    if (splits == 1) {
      a.out[static_cast<int64_t>(row) * kv.num_heads * HD + (kvh * group + h) * HD + d] = __float2bfloat16(out / sum);
      continue;
    }
    const int64_t slot = (i * kv.num_heads + kvh * group + h) * a.max_splits + split;
    a.partial_out[slot * HD + d] = out;
    if (d == 0) {
      a.partial_max[slot] = mm * kLn2;  // the combine works in natural-log units
      a.partial_sum[slot] = sum;
    }
  }
  if (splits == 1) return;
  // Count this split in; the last one of the (row, kv head) merges them.
  // The fence before the count publishes this block's partials; the one
  // after it orders the merge's reads after every other split's count.
  __shared__ bool last;
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
