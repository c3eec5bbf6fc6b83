// Matrix products for decode steps of a few sequences: y = x . w^T with
// M <= kSmallGemmMaxRows rows of x. Such a product is a pass over the
// weights (every byte read once, 16 bytes per lane, many loads in
// flight); cuBLAS's small-M kernels leave bandwidth unused there.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

inline constexpr int64_t kSmallGemmMaxRows = 4;

// x [m][k] bf16, w [n][k] bf16, y [m][n] fp32 (y_bf16 false) or bf16.
// k must be a multiple of 8.
void SmallGemm(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w, int64_t n, void* y,
               bool y_bf16, cudaStream_t stream);

// The gate/up projection fused with SiLU-and-multiply: w_gate_up is
// [2 inter][k] (gate rows, then up rows), act [m][inter] bf16 equals the
// bf16 product followed by SiluMul bit for bit.
void SmallGemmSiluMul(const __nv_bfloat16* x, int64_t m, int64_t k, const __nv_bfloat16* w_gate_up, int64_t inter,
                      __nv_bfloat16* act, cudaStream_t stream);

}  // namespace tandem::cuda
