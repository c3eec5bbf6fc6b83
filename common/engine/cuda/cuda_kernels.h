// The CUDA backend's kernels, one job each (the matrix products are
// cuBLAS's). Activations between kernels are fp32 rows (the residual
// stream, projection outputs) or bf16 rows (inputs of the next matrix
// product); weights and the KV cache are bf16. All launch on `stream`.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

// x[t][:] = embed[tokens[t]][:] as fp32.
void EmbeddingGather(const int32_t* tokens, const __nv_bfloat16* embed, int64_t rows, int64_t hidden, float* x,
                     cudaStream_t stream);

// out[r] = bf16(weight * bf16(x[src_row[r]] / rms)), as Hugging Face's
// LlamaRMSNorm rounds in a bf16 model. `src_rows` may be null (r -> r).
void RmsNorm(const float* x, const int32_t* src_rows, const __nv_bfloat16* weight, int64_t rows, int64_t dim,
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

// Causal attention of each new token over its sequence's paged K/V,
// softmax(q.k / sqrt(d)) v, grouped-query: query head h reads kv head
// h / (num_heads / num_kv_heads). out is [rows][num_heads * head_dim] bf16.
struct AttentionArgs {
  const float* qkv;             // rotated q at the start of each row
  int64_t qkv_stride;           // floats per qkv row
  const int32_t* positions;     // [rows] the token's own position
  const int32_t* row_seq;       // [rows] index of the row's sequence
  const int32_t* block_tables;  // flattened per sequence
  const int32_t* table_offset;  // [seqs] start of each table
  int64_t rows, num_heads, num_kv_heads, head_dim, block_size, max_context;
  const __nv_bfloat16* k_cache;
  const __nv_bfloat16* v_cache;
  __nv_bfloat16* out;
};
void PagedAttention(const AttentionArgs& a, cudaStream_t stream);
// Dynamic shared memory the attention kernel needs for `max_context`.
size_t PagedAttentionSharedBytes(int64_t max_context, int64_t head_dim);
cudaError_t ConfigurePagedAttention(size_t max_shared_bytes);

// out[t][i] = bf16(silu(bf16(gate)) * bf16(up)) for a fused [rows][2 inter]
// gate/up projection.
void SiluMul(const float* gate_up, int64_t rows, int64_t inter, __nv_bfloat16* out, cudaStream_t stream);

// x = bf16(x + bf16(delta)), n elements: the residual add of a bf16 model.
void AddInPlace(float* x, const float* delta, int64_t n, cudaStream_t stream);

// Rounds fp32 values to the nearest bf16 (logits, as a bf16 lm_head gives).
void RoundToBf16(float* x, int64_t n, cudaStream_t stream);

}  // namespace tandem::cuda
