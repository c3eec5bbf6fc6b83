// The CUDA backend's kernels, one job each (the matrix products are
// cuBLAS's). Activations between kernels are bf16 rows (the residual
// stream x, whose every value a bf16 model rounds, and the inputs of the
// next matrix product) or fp32 rows (q/k/v, before their bias and RoPE);
// weights and the KV cache are bf16. All launch on `stream`.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

// x[t][:] = embed[tokens[t]][:].
void EmbeddingGather(const int32_t* tokens, const __nv_bfloat16* embed, int64_t rows, int64_t hidden,
                     __nv_bfloat16* x, cudaStream_t stream);

// The norm kernels keep a row in registers: dim % 4 == 0 and dim <= 16384.
bool NormSupported(int64_t dim);

// out[r] = bf16(weight * bf16(x[src_row[r]] / rms)), as Hugging Face's
// LlamaRMSNorm rounds in a bf16 model. `src_rows` may be null (r -> r).
void RmsNorm(const __nv_bfloat16* x, const int32_t* src_rows, const __nv_bfloat16* weight, int64_t rows, int64_t dim,
             float eps, __nv_bfloat16* out, cudaStream_t stream);

// The attention prologue for every new token: adds the q/k/v bias (may be
// null), applies RoPE (rotate_half pairs) to q and k at the token's
// position, writes k and v into the token's slot of its KV block (bf16),
// and leaves the rotated q in place in `qkv` ([rows][q + 2 kv] fp32).
struct RopeCacheArgs {
  float* qkv;
  const __nv_bfloat16* bias;
  const int32_t* positions;    // [rows]
  const int32_t* slot_block;   // [rows] block of the token's slot
  int64_t rows, num_heads, num_kv_heads, head_dim, block_size;
  const float* inv_freq;       // [head_dim / 2]
  __nv_bfloat16* k_cache;      // this layer's K pool
  __nv_bfloat16* v_cache;
};
void RopeAndWriteCache(const RopeCacheArgs& a, cudaStream_t stream);

// out[t][i] = bf16(silu(gate) * up) for a fused [rows][2 inter] bf16
// gate/up projection (the product rounded as a bf16 model does);
// inter % 8 == 0.
void SiluMul(const __nv_bfloat16* gate_up, int64_t rows, int64_t inter, __nv_bfloat16* out, cudaStream_t stream);

// The residual add fused with the next RMSNorm: x = bf16(x + delta) (the
// residual stream of a bf16 model), then out = RmsNorm(x) as above.
void AddRmsNorm(__nv_bfloat16* x, const __nv_bfloat16* delta, const __nv_bfloat16* weight, int64_t rows, int64_t dim,
                float eps, __nv_bfloat16* out, cudaStream_t stream);

// x = bf16(x + delta), n elements: the last residual add, whose norm runs
// only over the rows that produce logits.
void AddInPlace(__nv_bfloat16* x, const __nv_bfloat16* delta, int64_t n, cudaStream_t stream);

// Rounds fp32 values to the nearest bf16 (logits, as a bf16 lm_head gives).
void RoundToBf16(float* x, int64_t n, cudaStream_t stream);

}  // namespace tandem::cuda
