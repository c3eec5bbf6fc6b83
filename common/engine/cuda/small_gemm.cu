// One warp per output column (weight row) at a time; its lanes split the
// row in 16-byte chunks, four chunks in flight per lane, and keep one
// fp32 sum per input row; the x rows are tiny and come from L1.
#include "common/engine/cuda/small_gemm.h"

#include <algorithm>

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;

__device__ inline float Dot8(const uint4& a, const uint4& b) {
  const __nv_bfloat162* x = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* y = reinterpret_cast<const __nv_bfloat162*>(&b);
  float s = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fx = __bfloat1622float2(x[i]), fy = __bfloat1622float2(y[i]);
    s += fx.x * fy.x + fx.y * fy.y;
  }
  return s;
}

template <int M>
__global__ void __launch_bounds__(kThreads) SmallGemmKernel(const __nv_bfloat16* x, int64_t k,
                                                            const __nv_bfloat16* w, int64_t n, void* y,
                                                            bool y_bf16) {
  const int lane = threadIdx.x & 31;
  const int64_t chunks = k / 8;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); row < n;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const uint4* wv = reinterpret_cast<const uint4*>(w + row * k);
    float acc[M] = {};
    int64_t c = lane;
    for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
      uint4 wr[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) wr[u] = __ldg(wv + c + 32 * u);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int m = 0; m < M; ++m) acc[m] += Dot8(wr[u], xv[m * chunks + c + 32 * u]);
      }
    }
    for (; c < chunks; c += 32) {
      const uint4 wr = __ldg(wv + c);
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] += Dot8(wr, xv[m * chunks + c]);
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[m] += __shfl_xor_sync(0xffffffff, acc[m], o);
    }
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (y_bf16) {
          static_cast<__nv_bfloat16*>(y)[m * n + row] = __float2bfloat16(acc[m]);
        } else {
          static_cast<float*>(y)[m * n + row] = acc[m];
        }
      }
    }
  }
}

}  // namespace

void SmallGemm(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w, int64_t n, void* y,
               bool y_bf16, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + kWarps - 1) / kWarps, 132 * 16));
  switch (m) {
    case 1: SmallGemmKernel<1><<<blocks, kThreads, 0, stream>>>(x, k, w, n, y, y_bf16); break;
    case 2: SmallGemmKernel<2><<<blocks, kThreads, 0, stream>>>(x, k, w, n, y, y_bf16); break;
    case 3: SmallGemmKernel<3><<<blocks, kThreads, 0, stream>>>(x, k, w, n, y, y_bf16); break;
    case 4: SmallGemmKernel<4><<<blocks, kThreads, 0, stream>>>(x, k, w, n, y, y_bf16); break;
    default: break;
  }
}

}  // namespace tandem::cuda
