// Causal prefill attention over the paged KV cache, FlashAttention-2 style
// on the tensor cores (mma.sync m16n8k16 bf16, fp32 accumulation).
//
// A block owns 64 query rows of one head; each of its 4 warps owns 16 of
// them and keeps their Q fragments, scores, output accumulators and
// softmax statistics in registers for the whole walk over the sequence's
// K/V. K/V tiles of 64 positions are gathered from the paged cache with
// cp.async into a two-stage shared-memory ring, so the next tile's loads
// overlap this tile's math; they are visited last to first, as
// FlashAttention-2 (the kernel of a bf16 transformers model's SDPA) does.
// Rows never see each other and K/V tiles always start at multiples of 64
// positions, so a row's result does not depend on how the batch was cut
// into query tiles.
#include <cfloat>

#include "common/engine/cuda/attention_kernels.h"
#include "common/engine/cuda/mma_helpers.cuh"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps x 16 query rows
constexpr int kT = kPrefillTile;
constexpr float kLog2e = 1.4426950408889634f;

// Shared memory: Q and a 2-stage ring of K and V tiles, bf16 rows padded
// by 16 bytes so the 8 row addresses of an ldmatrix hit distinct banks.
template <int HD>
struct Smem {
  static constexpr int kPitch = HD + 8;  // elements
  static constexpr size_t kTileBytes = size_t{kT} * kPitch * 2;
  static constexpr size_t kTotal = 5 * kTileBytes;  // Q, K[2], V[2]
};

template <int HD>
__global__ void __launch_bounds__(kThreads, 2) PrefillKernel(KvCacheRef kv, PrefillAttentionArgs a) {
  using S = Smem<HD>;
  constexpr int P = S::kPitch;
  constexpr int kChunks = HD / 8;  // 16-byte chunks per row
  extern __shared__ __align__(128) unsigned char smem[];
  auto* q_s = reinterpret_cast<__nv_bfloat16*>(smem);
  auto* k_s = q_s + kT * P;      // [2][kT][P]
  auto* v_s = k_s + 2 * kT * P;  // [2][kT][P]

  // Longest tiles first: the grid's tail is then short ones.
  const PrefillTile tile = a.tiles[a.num_tiles - 1 - blockIdx.x];
  const int h = blockIdx.y;
  const int kvh = static_cast<int>(h / (kv.num_heads / kv.num_kv_heads));
  const int n = tile.num_rows;
  const int kv_len = tile.first_pos + n;
  const int32_t* table = a.tables + tile.table;
  const int64_t kv_row = kv.num_kv_heads * HD;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;  // mma fragment coordinates
  const float scale_log2 = rsqrtf(static_cast<float>(HD)) * kLog2e;

  auto load_kv = [&](int kt, int stage) {
    for (int c = threadIdx.x; c < kT * kChunks; c += kThreads) {
      const int r = c / kChunks, d = (c % kChunks) * 8;
      const int pos = kt * kT + r;
      const bool valid = pos < kv_len;
      const int p = valid ? pos : 0;
      const int64_t at =
          (static_cast<int64_t>(table[p / kv.block_size]) * kv.block_size + p % kv.block_size) * kv_row + kvh * HD + d;
      CpAsync16(k_s + (stage * kT + r) * P + d, kv.k + at, valid);
      CpAsync16(v_s + (stage * kT + r) * P + d, kv.v + at, valid);
    }
    CpAsyncCommit();
  };

  const int num_kv_tiles = (kv_len + kT - 1) / kT;
  load_kv(num_kv_tiles - 1, 0);
  // Q (fp32 in the qkv rows) to bf16 in shared memory: every load of a
  // thread is issued before its first store, so the tile's Q costs one
  // memory round trip, not one per row the thread visits (a 512-token
  // prompt's block walks only ~4.5 K/V tiles, so its prologue counts).
  constexpr int kQLoads = kT * HD / 4 / kThreads;  // float4 words per thread
  float4 qv[kQLoads];
#pragma unroll
  for (int u = 0; u < kQLoads; ++u) {
    const int e = threadIdx.x + u * kThreads;
    const int r = e / (HD / 4), d = (e % (HD / 4)) * 4;
    qv[u] = r < n ? *reinterpret_cast<const float4*>(a.qkv + (tile.first_row + r) * a.qkv_stride + h * HD + d)
                  : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
#pragma unroll
  for (int u = 0; u < kQLoads; ++u) {
    const int e = threadIdx.x + u * kThreads;
    const int r = e / (HD / 4), d = (e % (HD / 4)) * 4;
    auto* q2 = reinterpret_cast<__nv_bfloat162*>(q_s + r * P + d);
    q2[0] = __floats2bfloat162_rn(qv[u].x, qv[u].y);
    q2[1] = __floats2bfloat162_rn(qv[u].z, qv[u].w);
  }
  __syncthreads();

  // This warp's Q rows as A fragments, one per 16 dims.
  uint32_t qf[HD / 16][4];
#pragma unroll
  for (int ks = 0; ks < HD / 16; ++ks) {
    LdMatrixX4(qf[ks], q_s + (warp * 16 + (lane & 15)) * P + ks * 16 + (lane >> 4) * 8);
  }

  float o[HD / 8][4];
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // running max of rows g and g + 8 (log2 units)
  float l[2] = {0.0f, 0.0f};            // this thread's share of the running sums
  const int qpos0 = tile.first_pos + warp * 16 + g;  // position of row g; row g + 8 is 8 later

  // K/V tiles from the diagonal down to position 0, as FlashAttention-2
  // walks them: each row's running max then takes the same values in the
  // same order, so its bf16-rounded probabilities are the same ones.
  for (int it = 0; it < num_kv_tiles; ++it) {
    const int kt = num_kv_tiles - 1 - it, stage = it & 1;
    CpAsyncWaitAll();
    __syncthreads();  // tile kt is in shared memory; everyone is done with the previous one
    if (kt > 0) load_kv(kt - 1, stage ^ 1);
    const __nv_bfloat16* kb = k_s + stage * kT * P;
    const __nv_bfloat16* vb = v_s + stage * kT * P;

    // S = Q K^T: 8 column tiles of 8 positions.
    float s[kT / 8][4];
#pragma unroll
    for (int nt = 0; nt < kT / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < HD; kk += 32) {
        uint32_t b[4];
        LdMatrixX4(b, kb + (nt * 8 + (lane & 7)) * P + kk + (lane >> 3) * 8);
        Mma(s[nt], qf[kk / 16], b[0], b[1]);
        Mma(s[nt], qf[kk / 16 + 1], b[2], b[3]);
      }
    }

    // Mask (causal and past the sequence) only where the tile needs it.
    const int kpos0 = kt * kT;
    const bool needs_mask = kpos0 + kT - 1 > tile.first_pos + warp * 16 || kpos0 + kT > kv_len;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kT / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kpos = kpos0 + nt * 8 + 2 * t + (e & 1);
        const int qpos = qpos0 + (e >> 1) * 8;
        float v = s[nt][e] * scale_log2;
        if (needs_mask && (kpos > qpos || kpos >= kv_len)) v = -INFINITY;
        s[nt][e] = v;
        mx[e >> 1] = fmaxf(mx[e >> 1], v);
      }
    }
    float alpha[2];
    OnlineSoftmaxStep(m, mx, alpha);
    // P = exp2(S - m) as A fragments (two column tiles per 16 positions).
    uint32_t pf[kT / 16][4];
#pragma unroll
    for (int nt = 0; nt < kT / 8; ++nt) {
      const float p0 = exp2f(s[nt][0] - mx[0]), p1 = exp2f(s[nt][1] - mx[0]);
      const float p2 = exp2f(s[nt][2] - mx[1]), p3 = exp2f(s[nt][3] - mx[1]);
      l[0] = (nt == 0 ? l[0] * alpha[0] : l[0]) + p0 + p1;
      l[1] = (nt == 0 ? l[1] * alpha[1] : l[1]) + p2 + p3;
      pf[nt / 2][(nt & 1) * 2 + 0] = PackBf16(p0, p1);
      pf[nt / 2][(nt & 1) * 2 + 1] = PackBf16(p2, p3);
    }
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }
    // O += P V: V^T fragments by transposing loads, two dim tiles at once.
#pragma unroll
    for (int ks = 0; ks < kT / 16; ++ks) {
#pragma unroll
      for (int j = 0; j < HD / 8; j += 2) {
        uint32_t b[4];
        LdMatrixX4Trans(b, vb + (ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * P + j * 8 + (lane >> 4) * 8);
        Mma(o[j], pf[ks], b[0], b[1]);
        Mma(o[j + 1], pf[ks], b[2], b[3]);
      }
    }
  }

  // The row sums were kept per thread; the 4 threads of a row add up.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 2);
    l[r] = 1.0f / l[r];
  }
  const int row_stride = static_cast<int>(kv.num_heads * HD);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = warp * 16 + g + r * 8;
    if (row >= n) continue;
    __nv_bfloat16* out = a.out + static_cast<int64_t>(tile.first_row + row) * row_stride + h * HD + 2 * t;
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) {
      *reinterpret_cast<__nv_bfloat162*>(out + j * 8) =
          __floats2bfloat162_rn(o[j][2 * r] * l[r], o[j][2 * r + 1] * l[r]);
    }
  }
}

}  // namespace

bool PrefillAttentionSupported(int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

cudaError_t ConfigurePrefillAttention() {
  cudaError_t e = cudaFuncSetAttribute(PrefillKernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(Smem<64>::kTotal));
  if (e != cudaSuccess) return e;
  return cudaFuncSetAttribute(PrefillKernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(Smem<128>::kTotal));
}

void PrefillAttention(const KvCacheRef& kv, const PrefillAttentionArgs& a, cudaStream_t stream) {
  if (a.num_tiles == 0) return;
  const dim3 grid(static_cast<unsigned>(a.num_tiles), static_cast<unsigned>(kv.num_heads));
  if (kv.head_dim == 64) {
    PrefillKernel<64><<<grid, kThreads, Smem<64>::kTotal, stream>>>(kv, a);
  } else if (kv.head_dim == 128) {
    PrefillKernel<128><<<grid, kThreads, Smem<128>::kTotal, stream>>>(kv, a);
  }
}

}  // namespace tandem::cuda
