// Matrix products for decode steps of a few sequences: y = x . w^T with
// M <= kSmallGemmMaxRows rows of x. Such a product is one pass over the
// weights (every byte read once, 16 bytes per lane, many loads in
// flight); cuBLAS's small-M kernels leave bandwidth unused there.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::cuda {

inline constexpr int64_t kSmallGemmMaxRows = 4;

// How a small GEMM's blocks of 256 threads divide the weights:
//   split   warps that share one output column (weight row), each taking
//           every split-th 16-byte chunk of it (1: a warp per column; 8:
//           the whole block per column, reduced through shared memory);
//   columns output columns a warp group computes at once;
//   unroll  16-byte loads per lane per column issued before the first
//           multiply (columns x unroll x 16 bytes per lane in flight);
//   blocks_per_sm  grid size cap (0: one block per column group, as many
//           waves as that takes; else a persistent grid that loops).
// A block's first loads leave before the previous kernel has finished
// (programmatic dependent launch): the weights depend on nothing.
// Only the shapes in SmallGemmShapes() are compiled.
struct SmallGemmShape {
  int split = 1;
  int columns = 1;
  int unroll = 8;
  int blocks_per_sm = 0;
  std::string Name() const;
};

// The compiled (split, columns, unroll) combinations for one input row;
// blocks_per_sm and prefetch_mb are free. For tuning (tandem-gemv-bench).
std::vector<SmallGemmShape> SmallGemmShapes();

// The shape the engine uses for an [n][k] weight (gated: the fused
// gate/up projection of n columns each).
SmallGemmShape DefaultSmallGemmShape(int64_t m, int64_t k, int64_t n, bool gated);

// x [m][k] bf16, w [n][k] bf16, y [m][n] fp32 (y_bf16 false) or bf16.
// k must be a multiple of 8.
void SmallGemm(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w, int64_t n, void* y,
               bool y_bf16, cudaStream_t stream);

// The gate/up projection fused with SiLU-and-multiply: w_gate_up is
// [2 inter][k] (gate rows, then up rows), act [m][inter] bf16 equals the
// bf16 product followed by SiluMul bit for bit.
void SmallGemmSiluMul(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w_gate_up, int64_t inter,
                      __nv_bfloat16* act, cudaStream_t stream);

// The products with an explicit shape (m == 1 for every
// shape of SmallGemmShapes(); other m only for the engine's defaults).
// Return false, launching nothing, for a shape that is not compiled.
bool SmallGemmWith(const SmallGemmShape& shape, const __nv_bfloat16* x, int64_t m, int64_t k,
                   const __nv_bfloat16* w, int64_t n, void* y, bool y_bf16, cudaStream_t stream);
bool SmallGemmSiluMulWith(const SmallGemmShape& shape, const __nv_bfloat16* x, int64_t m, int64_t k,
                          const __nv_bfloat16* w_gate_up, int64_t inter, __nv_bfloat16* act, cudaStream_t stream);

}  // namespace tandem::cuda
