// Causal prefill attention over the paged KV cache on the tensor cores
// (WMMA bf16 16x16x16, fp32 accumulation), FlashAttention-2 style: a block
// owns 64 query rows of one head (16 per warp) and streams the sequence's
// K/V through shared memory 64 positions at a time, keeping the output
// and the running max/sum of each row in shared memory. Rows never see
// each other, so results do not depend on how a batch is tiled, except
// through which positions share a K/V tile (never the math of a row).
#include <mma.h>

#include <cfloat>

#include "common/engine/cuda/attention_kernels.h"

namespace tandem::cuda {
namespace {

using namespace nvcuda;

constexpr int kThreads = 128;  // 4 warps x 16 query rows
constexpr int kT = kPrefillTile;

// Shared-memory pitches (elements), padded against bank conflicts and kept
// at multiples of 32 bytes per 16 rows for the WMMA loads.
template <int HD>
struct Smem {
  static constexpr int kQ = HD + 8;  // bf16 rows of Q, K, V
  static constexpr int kS = kT + 4;  // fp32 scores
  static constexpr int kP = kT + 8;  // bf16 probabilities
  static constexpr int kO = HD + 4;  // fp32 output accumulator
  static constexpr size_t kQBytes = size_t{kT} * kQ * 2;
  static constexpr size_t kSBytes = size_t{kT} * kS * 4;
  static constexpr size_t kPBytes = size_t{kT} * kP * 2;
  static constexpr size_t kOBytes = size_t{kT} * kO * 4;
  static constexpr size_t kStatBytes = size_t{3} * kT * 4;
  static constexpr size_t kTotal = 3 * kQBytes + kSBytes + kPBytes + kOBytes + kStatBytes;
};

template <int HD>
__global__ void __launch_bounds__(kThreads, 2) PrefillKernel(KvCacheRef kv, PrefillAttentionArgs a) {
  using S = Smem<HD>;
  extern __shared__ __align__(128) unsigned char smem[];
  auto* q_s = reinterpret_cast<__nv_bfloat16*>(smem);
  auto* k_s = reinterpret_cast<__nv_bfloat16*>(smem + S::kQBytes);
  auto* v_s = reinterpret_cast<__nv_bfloat16*>(smem + 2 * S::kQBytes);
  auto* s_s = reinterpret_cast<float*>(smem + 3 * S::kQBytes);
  auto* p_s = reinterpret_cast<__nv_bfloat16*>(smem + 3 * S::kQBytes + S::kSBytes);
  auto* o_s = reinterpret_cast<float*>(smem + 3 * S::kQBytes + S::kSBytes + S::kPBytes);
  float* m_s = reinterpret_cast<float*>(smem + 3 * S::kQBytes + S::kSBytes + S::kPBytes + S::kOBytes);
  float* l_s = m_s + kT;
  float* alpha_s = l_s + kT;

  // Longest tiles first: the grid's tail is then short ones.
  const PrefillTile tile = a.tiles[a.num_tiles - 1 - blockIdx.x];
  const int h = blockIdx.y;
  const int kvh = static_cast<int>(h / (kv.num_heads / kv.num_kv_heads));
  const int n = tile.num_rows;
  const int kv_len = tile.first_pos + n;
  const int32_t* table = a.tables + tile.table;
  const int64_t kv_row = kv.num_kv_heads * HD;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const float scale = rsqrtf(static_cast<float>(HD));

  for (int e = threadIdx.x; e < kT * HD; e += kThreads) {
    const int r = e / HD, d = e % HD;
    q_s[r * S::kQ + d] = __float2bfloat16(r < n ? a.qkv[(tile.first_row + r) * a.qkv_stride + h * HD + d] : 0.0f);
    o_s[r * S::kO + d] = 0.0f;
  }
  if (threadIdx.x < kT) {
    m_s[threadIdx.x] = -FLT_MAX;
    l_s[threadIdx.x] = 0.0f;
  }

  const int num_kv_tiles = (kv_len + kT - 1) / kT;
  for (int kt = 0; kt < num_kv_tiles; ++kt) {
    __syncthreads();  // every warp is done with the previous K/V tile
    constexpr int kChunks = HD / 8;
    for (int c = threadIdx.x; c < kT * kChunks; c += kThreads) {
      const int r = c / kChunks, d = (c % kChunks) * 8;
      const int pos = kt * kT + r;
      uint4 kval = make_uint4(0, 0, 0, 0), vval = make_uint4(0, 0, 0, 0);
      if (pos < kv_len) {
        const int64_t at =
            (static_cast<int64_t>(table[pos / kv.block_size]) * kv.block_size + pos % kv.block_size) * kv_row +
            kvh * HD + d;
        kval = *reinterpret_cast<const uint4*>(kv.k + at);
        vval = *reinterpret_cast<const uint4*>(kv.v + at);
      }
      *reinterpret_cast<uint4*>(k_s + r * S::kQ + d) = kval;
      *reinterpret_cast<uint4*>(v_s + r * S::kQ + d) = vval;
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 rows.
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kT / 16];
#pragma unroll
      for (int j = 0; j < kT / 16; ++j) wmma::fill_fragment(acc[j], 0.0f);
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> qa;
        wmma::load_matrix_sync(qa, q_s + warp * 16 * S::kQ + kk * 16, S::kQ);
#pragma unroll
        for (int j = 0; j < kT / 16; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> kb;
          wmma::load_matrix_sync(kb, k_s + j * 16 * S::kQ + kk * 16, S::kQ);
          wmma::mma_sync(acc[j], qa, kb, acc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < kT / 16; ++j) {
        wmma::store_matrix_sync(s_s + warp * 16 * S::kS + j * 16, acc[j], S::kS, wmma::mem_row_major);
      }
    }
    __syncwarp();

    // Online softmax: two lanes per row, 32 columns each.
    {
      const int r = warp * 16 + lane / 2, c0 = (lane % 2) * (kT / 2);
      const int qpos = tile.first_pos + r;
      float mx = -FLT_MAX;
      bool any = false;
      for (int c = c0; c < c0 + kT / 2; ++c) {
        const bool visible = r < n && kt * kT + c <= qpos;
        const float s = s_s[r * S::kS + c] * scale;
        s_s[r * S::kS + c] = visible ? s : -INFINITY;
        if (visible) {
          mx = fmaxf(mx, s);
          any = true;
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      any = __shfl_xor_sync(0xffffffff, any ? 1 : 0, 1) != 0 || any;
      const float m_old = m_s[r];
      const float m_new = any ? fmaxf(m_old, mx) : m_old;
      float sum = 0;
      for (int c = c0; c < c0 + kT / 2; ++c) {
        const float p = any ? __expf(s_s[r * S::kS + c] - m_new) : 0.0f;
        p_s[r * S::kP + c] = __float2bfloat16(p);
        sum += p;
      }
      sum += __shfl_xor_sync(0xffffffff, sum, 1);
      const float alpha = m_old == -FLT_MAX ? 0.0f : __expf(m_old - m_new);
      __syncwarp();
      if (lane % 2 == 0) {
        m_s[r] = m_new;
        l_s[r] = l_s[r] * alpha + sum;
        alpha_s[r] = alpha;
      }
    }
    __syncwarp();
    for (int e = lane; e < 16 * HD; e += 32) {
      const int r = warp * 16 + e / HD, d = e % HD;
      o_s[r * S::kO + d] *= alpha_s[r];
    }
    __syncwarp();

    // O += P V.
    {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pa[kT / 16];
#pragma unroll
      for (int kk = 0; kk < kT / 16; ++kk) wmma::load_matrix_sync(pa[kk], p_s + warp * 16 * S::kP + kk * 16, S::kP);
#pragma unroll
      for (int j = 0; j < HD / 16; ++j) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
        float* optr = o_s + warp * 16 * S::kO + j * 16;
        wmma::load_matrix_sync(o, optr, S::kO, wmma::mem_row_major);
#pragma unroll
        for (int kk = 0; kk < kT / 16; ++kk) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vb;
          wmma::load_matrix_sync(vb, v_s + kk * 16 * S::kQ + j * 16, S::kQ);
          wmma::mma_sync(o, pa[kk], vb, o);
        }
        wmma::store_matrix_sync(optr, o, S::kO, wmma::mem_row_major);
      }
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n * HD; e += kThreads) {
    const int r = e / HD, d = e % HD;
    a.out[static_cast<int64_t>(tile.first_row + r) * kv.num_heads * HD + h * HD + d] =
        __float2bfloat16(o_s[r * S::kO + d] / l_s[r]);
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
