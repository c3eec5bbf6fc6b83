// Causal multi-head attention with grouped KV heads, reading K/V from the
// paged pool, for the CPU backend.
#pragma once

#include <cstdint>
#include <span>

#include "common/engine/cpu_kv_pool.h"
#include "common/util/thread_pool.h"

namespace tandem {

// One sequence's new tokens in a forward pass: rows [row_begin, row_begin +
// num_new) of the batch, at positions num_cached .. num_cached+num_new-1,
// whose K/V are already written into `block_table`'s blocks.
struct AttentionSeq {
  int64_t row_begin = 0;
  int64_t num_new = 0;
  int64_t num_cached = 0;
  std::span<const int32_t> block_table;
};

// For every new token and query head: softmax(q . k / sqrt(head_dim)) over
// positions 0..its own position, weighted sum of v. q is [rows][num_heads *
// head_dim], out the same shape. Query head h reads kv head
// h / (num_heads / num_kv_heads).
//
// bf16 follows FlashAttention's numerics (what a bf16 Hugging Face model
// with SDPA attention and the CUDA backend compute): scores and the
// softmax's max and sum in fp32, the unnormalized probabilities
// exp(s - max) rounded to bf16 for P.V, fp32 accumulation, then the
// division by the fp32 sum and the output rounded to bf16.
void PagedAttention(ThreadPool& pool, CpuKvPool& kv, int layer, std::span<const AttentionSeq> seqs,
                    int64_t num_heads, const float* q, float* out, bool bf16 = false);

}  // namespace tandem
