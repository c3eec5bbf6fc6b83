// Blocks of 256 threads walk the output columns (weight rows) in groups:
// `split` warps share a column, each lane of them loading every
// (32 split)-th 16-byte chunk of it, `unroll` chunks of `columns` columns
// in flight per lane before the first multiply; per-warp sums are reduced
// with shuffles, across the split through shared memory. The x rows are
// tiny and come from L1. Sums run in a fixed order, so results do not
// depend on the grid, nor on m among m = 2..4 (graph replay pads batches
// of 3 to 4); m = 1 widens to fp32 in another place and may round
// differently.
#include "common/engine/cuda/small_gemm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "common/engine/cuda/device_helpers.cuh"
#include "common/engine/cuda/launch.cuh"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

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

// For m > 1, each input and weight chunk is widened to fp32 once, however
// many columns and rows use it (widening both sides of every product
// repeats the conversions columns x m times; batch 4 decode went from 7.7
// to 7.2 ms with this and the 64-position attention split together).
// m = 1 widens in Dot8: fewer registers, so more resident blocks.
__device__ inline void Widen8(const uint4& a, float (&f)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&a);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

__device__ inline float Dot8(const float (&w)[8], const float (&x)[8]) {
  float s = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) s += w[2 * i] * x[2 * i] + w[2 * i + 1] * x[2 * i + 1];
  return s;
}

struct GemmArgs {
  const __nv_bfloat16* x;
  int64_t k;
  const __nv_bfloat16* w;
  int64_t n;
  void* y;
  bool y_bf16;
};

// kGated: the weight is a fused [2 n][k] gate/up projection and the
// output is act[m][n] = bf16(bf16(silu(bf16(gate))) * bf16(up)), exactly
// what the bf16 product followed by SiluMul gives, in one pass.
template <int M, bool kGated, int S, int R, int U>
__global__ void __launch_bounds__(kThreads) SmallGemmKernel(GemmArgs a) {
  constexpr int kMats = kGated ? 2 : 1;
  constexpr int kGroups = kWarps / S;  // column groups per block
  constexpr int kVals = kMats * R * M;
  static_assert(kWarps % S == 0 && kMats * R * U <= 16, "at most 16 loads of 16 bytes in flight per lane");
  __shared__ float partial[S > 1 ? kWarps * kVals : 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = warp / S, sub = warp % S;
  const int64_t k = a.k, n = a.n, chunks = k / 8;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kGroups * R;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kGroups * R;

  uint4 wr[kMats][R][U];
  const uint4* wv[kMats][R];
  auto point = [&](int64_t col0) {
#pragma unroll
    for (int t = 0; t < kMats; ++t) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int64_t col = min(col0 + r, n - 1);  // a column past n is computed and dropped
        wv[t][r] = reinterpret_cast<const uint4*>(a.w + (col + t * n) * k);
      }
    }
  };
  auto load = [&](int64_t c0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + static_cast<int64_t>(u) * 32 * S;
#pragma unroll
      for (int t = 0; t < kMats; ++t) {
#pragma unroll
        for (int r = 0; r < R; ++r) wr[t][r][u] = c < chunks ? __ldg(wv[t][r] + c) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // The weights do not depend on the previous kernel: this block's first
  // loads leave before waiting for it (programmatic dependent launch), so
  // they overlap its tail.
  bool preloaded = first + group * R < n;
  if (preloaded) {
    point(first + group * R);
    load(sub * 32 + lane);
  }
  WaitForPrecedingGrid();
  AllowDependentLaunch();
  const uint4* xv = reinterpret_cast<const uint4*>(a.x);
  // The loop bounds are block-uniform (the shared-memory reduction needs
  // every warp at its barriers); a group past the end computes nothing.
  for (int64_t base = first; base < n; base += stride) {
    const int64_t col0 = base + group * R;
    float acc[kMats][R][M] = {};
    if (col0 < n) {
      if (!preloaded) point(col0);
      for (int64_t c0 = sub * 32 + lane; c0 < chunks; c0 += 32 * S * U) {
        if (!preloaded) load(c0);
        preloaded = false;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t c = c0 + static_cast<int64_t>(u) * 32 * S;
          if (c >= chunks) break;
          if constexpr (M == 1) {
            const uint4 xr = xv[c];
#pragma unroll
            for (int t = 0; t < kMats; ++t) {
#pragma unroll
              for (int r = 0; r < R; ++r) acc[t][r][0] += Dot8(wr[t][r][u], xr);
            }
          } else {
            float xf[M][8];
#pragma unroll
            for (int m = 0; m < M; ++m) Widen8(xv[m * chunks + c], xf[m]);
#pragma unroll
            for (int t = 0; t < kMats; ++t) {
#pragma unroll
              for (int r = 0; r < R; ++r) {
                float wf[8];
                Widen8(wr[t][r][u], wf);
#pragma unroll
                for (int m = 0; m < M; ++m) acc[t][r][m] += Dot8(wf, xf[m]);
              }
            }
          }
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kMats; ++t) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
          for (int o = 16; o > 0; o >>= 1) acc[t][r][m] += __shfl_xor_sync(0xffffffff, acc[t][r][m], o);
        }
      }
    }
    if constexpr (S > 1) {
      if (lane == 0) {
#pragma unroll
        for (int t = 0; t < kMats; ++t) {
#pragma unroll
          for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int m = 0; m < M; ++m) partial[warp * kVals + (t * R + r) * M + m] = acc[t][r][m];
          }
        }
      }
      __syncthreads();
      if (sub == 0) {
#pragma unroll
        for (int t = 0; t < kMats; ++t) {
#pragma unroll
          for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int m = 0; m < M; ++m) {
              float s = 0;
#pragma unroll
              for (int j = 0; j < S; ++j) s += partial[(group * S + j) * kVals + (t * R + r) * M + m];
              acc[t][r][m] = s;
            }
          }
        }
      }
      __syncthreads();
    }
    if (sub == 0 && lane == 0 && col0 < n) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int64_t col = col0 + r;
        if (col >= n) break;
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if constexpr (kGated) {
            static_cast<__nv_bfloat16*>(a.y)[m * n + col] =
                __float2bfloat16(SiluRounded(RoundBf16(acc[0][r][m])) * RoundBf16(acc[1][r][m]));
          } else if (a.y_bf16) {
            static_cast<__nv_bfloat16*>(a.y)[m * n + col] = __float2bfloat16(acc[0][r][m]);
          } else {
            static_cast<float*>(a.y)[m * n + col] = acc[0][r][m];
          }
        }
      }
    }
  }
}

using Launcher = void (*)(const GemmArgs&, unsigned grid, cudaStream_t);

template <int M, bool kGated, int S, int R, int U>
void LaunchKernel(const GemmArgs& a, unsigned grid, cudaStream_t stream) {
  LaunchPdl(SmallGemmKernel<M, kGated, S, R, U>, dim3(grid), dim3(kThreads), 0, stream, a);
}

// One compiled (split, columns, unroll): launchers by [m - 1][gated].
// Shapes compiled for tuning (m == 1) have null launchers for m > 1.
struct CompiledShape {
  int split, columns, unroll;
  Launcher launch[kSmallGemmMaxRows][2];
};

#define TANDEM_GEMM_M(M, S, R, U) {&LaunchKernel<M, false, S, R, U>, &LaunchKernel<M, true, S, R, U>}
#define TANDEM_GEMM_ALL_M(S, R, U) \
  {S, R, U, {TANDEM_GEMM_M(1, S, R, U), TANDEM_GEMM_M(2, S, R, U), TANDEM_GEMM_M(3, S, R, U), TANDEM_GEMM_M(4, S, R, U)}}
#define TANDEM_GEMM_M1(S, R, U) {S, R, U, {TANDEM_GEMM_M(1, S, R, U), {}, {}, {}}}

// Measured on an H200 (tandem-gemv-bench, docs/benchmarks.md): the whole
// block on a column group (split 8) wins for every product of an 8B
// model; the others stay for tuning on other devices and models.
const CompiledShape kShapes[] = {
    TANDEM_GEMM_ALL_M(1, 1, 8), TANDEM_GEMM_M1(1, 2, 4), TANDEM_GEMM_M1(2, 2, 4),  TANDEM_GEMM_M1(4, 2, 4),
    TANDEM_GEMM_M1(8, 1, 2),    TANDEM_GEMM_ALL_M(8, 2, 2), TANDEM_GEMM_ALL_M(8, 4, 2), TANDEM_GEMM_M1(8, 2, 4),
};

#undef TANDEM_GEMM_M
#undef TANDEM_GEMM_ALL_M
#undef TANDEM_GEMM_M1

// Compiled for every m: what runs when an overridden shape is not.
constexpr SmallGemmShape kFallbackShape{1, 1, 8, 16};

int NumSms() {
  static const int sms = [] {
    int device = 0, n = 0;
    if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) !=
                                                     cudaSuccess) {
      cudaGetLastError();
      return 132;
    }
    return n;
  }();
  return sms;
}

bool Launch(const SmallGemmShape& shape, bool gated, const __nv_bfloat16* x, int64_t m, int64_t k,
            const __nv_bfloat16* w, int64_t n, void* y, bool y_bf16, cudaStream_t stream) {
  if (m < 1 || m > kSmallGemmMaxRows || n <= 0) return false;
  for (const CompiledShape& c : kShapes) {
    if (c.split != shape.split || c.columns != shape.columns || c.unroll != shape.unroll) continue;
    const Launcher launch = c.launch[m - 1][gated ? 1 : 0];
    if (launch == nullptr) return false;
    const int64_t per_block = static_cast<int64_t>(kWarps / c.split) * c.columns;
    int64_t grid = (n + per_block - 1) / per_block;
    if (shape.blocks_per_sm > 0) grid = std::min<int64_t>(grid, static_cast<int64_t>(shape.blocks_per_sm) * NumSms());
    launch(GemmArgs{x, k, w, n, y, y_bf16}, static_cast<unsigned>(grid), stream);
    return true;
  }
  return false;
}

void LaunchDefault(bool gated, const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w, int64_t n,
                   void* y, bool y_bf16, cudaStream_t stream) {
  if (!Launch(DefaultSmallGemmShape(m, k, n, gated), gated, x, m, k, w, n, y, y_bf16, stream)) {
    Launch(kFallbackShape, gated, x, m, k, w, n, y, y_bf16, stream);
  }
}

}  // namespace

std::string SmallGemmShape::Name() const {
  return "split" + std::to_string(split) + "_cols" + std::to_string(columns) + "_unroll" + std::to_string(unroll) +
         "_bps" + std::to_string(blocks_per_sm);
}

std::vector<SmallGemmShape> SmallGemmShapes() {
  std::vector<SmallGemmShape> v;
  for (const CompiledShape& c : kShapes) v.push_back({c.split, c.columns, c.unroll, 0});
  return v;
}

SmallGemmShape DefaultSmallGemmShape(int64_t /*m*/, int64_t /*k*/, int64_t /*n*/, bool gated) {
  // TANDEM_SMALL_GEMM_SHAPE="split,columns,unroll,blocks_per_sm" overrides
  // the shape of every small GEMM (for measuring; a shape not compiled for
  // an m falls back to kFallbackShape).
  static const SmallGemmShape override_shape = [] {
    SmallGemmShape s{0, 0, 0, 0};
    if (const char* e = std::getenv("TANDEM_SMALL_GEMM_SHAPE")) {
      std::sscanf(e, "%d,%d,%d,%d", &s.split, &s.columns, &s.unroll, &s.blocks_per_sm);
    }
    return s;
  }();
  if (override_shape.split > 0) return override_shape;
  // The same shape for every m, so a row's result does not depend on how
  // many rows (2..4) share the step, as graph replay pads batches. On an H200 at
  // m = 1 (8B model): qkv 3.6, o 3.3, down 4.1, lm_head 4.5 TB/s with
  // four columns per block and a grid of 8 blocks per SM; gate/up 4.3
  // TB/s with two columns (four gated columns are 16 loads per lane) and
  // one block per column pair.
  if (gated) return {8, 2, 2, 0};
  return {8, 4, 2, 8};
}

void SmallGemm(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w, int64_t n, void* y,
               bool y_bf16, cudaStream_t stream) {
  LaunchDefault(false, x, m, k, w, n, y, y_bf16, stream);
}

void SmallGemmSiluMul(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w_gate_up, int64_t inter,
                      __nv_bfloat16* act, cudaStream_t stream) {
  LaunchDefault(true, x, m, k, w_gate_up, inter, act, true, stream);
}

bool SmallGemmWith(const SmallGemmShape& shape, const __nv_bfloat16* x, int64_t m, int64_t k,
                   const __nv_bfloat16* w, int64_t n, void* y, bool y_bf16, cudaStream_t stream) {
  return Launch(shape, false, x, m, k, w, n, y, y_bf16, stream);
}

bool SmallGemmSiluMulWith(const SmallGemmShape& shape, const __nv_bfloat16* x, int64_t m, int64_t k,
                          const __nv_bfloat16* w_gate_up, int64_t inter, __nv_bfloat16* act, cudaStream_t stream) {
  return Launch(shape, true, x, m, k, w_gate_up, inter, act, true, stream);
}

}  // namespace tandem::cuda
