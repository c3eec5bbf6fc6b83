// One warp per output column (weight row, or gate and up row) at a time;
// its lanes split the row in 16-byte chunks, four chunks in flight per
// lane per weight row, and keep one fp32 sum per input row; the x rows are
// tiny and come from L1.
#include "common/engine/cuda/small_gemm.h"

#include <algorithm>

#include "common/engine/cuda/device_helpers.cuh"
#include "common/engine/cuda/launch.cuh"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 8;  // 16-byte loads per lane per weight row in flight

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

// kGated: the weight is a fused [2 n][k] gate/up projection and the
// output is act[m][n] = bf16(bf16(silu(bf16(gate))) * bf16(up)), exactly
// what the bf16 product followed by SiluMul gives, in one pass.
template <int M, bool kGated>
__global__ void __launch_bounds__(kThreads) SmallGemmKernel(const __nv_bfloat16* x, int64_t k,
                                                            const __nv_bfloat16* w, int64_t n, void* y,
                                                            bool y_bf16) {
  constexpr int kMats = kGated ? 2 : 1;
  const int lane = threadIdx.x & 31;
  const int64_t chunks = k / 8;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  // The weights do not depend on the previous kernel: start pulling this
  // warp's first rows into L2 while that kernel finishes.
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (lane < kMats && first < n) PrefetchL2(w + (first + lane * n) * k, static_cast<uint32_t>(k * 2));
  WaitForPrecedingGrid();
  AllowDependentLaunch();
  for (int64_t row = first; row < n; row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const uint4* wv[kMats];
#pragma unroll
    for (int t = 0; t < kMats; ++t) wv[t] = reinterpret_cast<const uint4*>(w + (row + t * n) * k);
    float acc[kMats][M] = {};
    int64_t c = lane;
    for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
      uint4 wr[kMats][kUnroll];
#pragma unroll
      for (int t = 0; t < kMats; ++t) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) wr[t][u] = __ldg(wv[t] + c + 32 * u);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          const uint4 xr = xv[m * chunks + c + 32 * u];
#pragma unroll
          for (int t = 0; t < kMats; ++t) acc[t][m] += Dot8(wr[t][u], xr);
        }
      }
    }
    for (; c < chunks; c += 32) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int t = 0; t < kMats; ++t) acc[t][m] += Dot8(__ldg(wv[t] + c), xv[m * chunks + c]);
      }
    }
#pragma unroll
    for (int t = 0; t < kMats; ++t) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc[t][m] += __shfl_xor_sync(0xffffffff, acc[t][m], o);
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if constexpr (kGated) {
          static_cast<__nv_bfloat16*>(y)[m * n + row] =
              __float2bfloat16(SiluRounded(RoundBf16(acc[0][m])) * RoundBf16(acc[1][m]));
        } else if (y_bf16) {
          static_cast<__nv_bfloat16*>(y)[m * n + row] = __float2bfloat16(acc[0][m]);
        } else {
          static_cast<float*>(y)[m * n + row] = acc[0][m];
        }
      }
    }
  }
}

template <bool kGated>
void Launch(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w, int64_t n, void* y, bool y_bf16,
            cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + kWarps - 1) / kWarps, 132 * 16));
  switch (m) {
    case 1: LaunchPdl(SmallGemmKernel<1, kGated>, dim3(blocks), dim3(kThreads), 0, stream, x, k, w, n, y, y_bf16); break;
    case 2: LaunchPdl(SmallGemmKernel<2, kGated>, dim3(blocks), dim3(kThreads), 0, stream, x, k, w, n, y, y_bf16); break;
    case 3: LaunchPdl(SmallGemmKernel<3, kGated>, dim3(blocks), dim3(kThreads), 0, stream, x, k, w, n, y, y_bf16); break;
    case 4: LaunchPdl(SmallGemmKernel<4, kGated>, dim3(blocks), dim3(kThreads), 0, stream, x, k, w, n, y, y_bf16); break;
    default: break;
  }
}

}  // namespace

void SmallGemm(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w, int64_t n, void* y,
               bool y_bf16, cudaStream_t stream) {
  Launch<false>(x, m, k, w, n, y, y_bf16, stream);
}

void SmallGemmSiluMul(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w_gate_up, int64_t inter,
                      __nv_bfloat16* act, cudaStream_t stream) {
  Launch<true>(x, m, k, w_gate_up, inter, act, true, stream);
}

}  // namespace tandem::cuda
