// Paged attention on the GPU: one kernel for decode rows (one new token of
// a sequence), one for prefill tiles (many new tokens of one sequence),
// and the simple reference kernel both are checked against.
//
// KV layout (KvLayout, shared with the CPU backend and the transports):
// per layer a K and a V array of [block][slot][kv_head][head_dim] bf16.
// q comes rotated and bf16-rounded in fp32 rows of the qkv buffer; the
// output is [rows][num_heads * head_dim] bf16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

struct KvCacheRef {
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  int64_t num_heads, num_kv_heads, head_dim, block_size;
};

// --- Decode: flash-decoding ---
// Each (row, kv head, context split of `partition` positions) is one
// thread block that reads its K/V slice once for all the query heads of
// its group, keeping an unnormalized partial output with its running max
// and sum; the last split of a (row, kv head) to finish merges them. Big batches fill
// the GPU with the widest partition; small ones split finer
// (DecodeSplitFor in forward_plan.h) so that even one sequence keeps
// every SM busy.
inline constexpr int kDecodeMaxPartition = 1024;
inline constexpr int kDecodeMinPartition = 32;

struct DecodeAttentionArgs {
  const float* qkv;
  int64_t qkv_stride;
  const int32_t* rows;          // [num_rows] rows of qkv/out to attend for
  const int32_t* context_lens;  // [num_rows] positions visible (own included)
  const int32_t* tables;        // [num_rows][table_stride] block ids
  int64_t table_stride;
  int64_t num_rows;
  int32_t partition;            // positions per split: a power of two in [kDecodeMinPartition, kDecodeMaxPartition]
  int64_t max_splits;           // grid size; splits past a row's context exit at once
  float* partial_out;           // [num_rows][num_heads][max_splits][head_dim]
  float* partial_max;           // [num_rows][num_heads][max_splits]
  float* partial_sum;           // [num_rows][num_heads][max_splits]
  __nv_bfloat16* out;
  // [num_rows][num_kv_heads] zeros: the last split of a (row, kv head)
  // to finish merges the group's splits into `out` and sets its counter
  // back to 0 for the next launch.
  int32_t* arrivals;
};
// True when the decode kernel handles this shape (head_dim 64 or 128,
// at most 16 query heads per kv head); otherwise use ReferenceAttention.
bool DecodeAttentionSupported(int64_t head_dim, int64_t group);
void DecodeAttention(const KvCacheRef& kv, const DecodeAttentionArgs& a, cudaStream_t stream);
inline int64_t DecodeSplits(int64_t context, int64_t partition = kDecodeMaxPartition) {
  return (context + partition - 1) / partition;
}

// --- Prefill: FlashAttention-style tiles on the tensor cores ---
// A tile is up to 64 consecutive new tokens of one sequence; each (tile,
// query head) block walks the sequence's K/V in 64-position tiles up to
// the causal limit with an online softmax. Numerics are FlashAttention's:
// fp32 scores and softmax, probabilities rounded to bf16 for P.V, fp32
// accumulation.
inline constexpr int kPrefillTile = 64;

struct PrefillTile {
  int32_t first_row;  // row of the tile's first token
  int32_t num_rows;   // 1..kPrefillTile
  int32_t first_pos;  // position of the first token; the rest follow
  int32_t table;      // offset of the sequence's block table in `tables`
};

struct PrefillAttentionArgs {
  const float* qkv;
  int64_t qkv_stride;
  const PrefillTile* tiles;
  int64_t num_tiles;
  const int32_t* tables;
  __nv_bfloat16* out;
};
bool PrefillAttentionSupported(int64_t head_dim);
// Raises the kernels' dynamic shared memory limit; call once per device.
cudaError_t ConfigurePrefillAttention();
void PrefillAttention(const KvCacheRef& kv, const PrefillAttentionArgs& a, cudaStream_t stream);

// --- Reference: one block per (row, query head), every score in shared
// memory. Slow; any head_dim <= 256 and group size. Rounds like a bf16
// eager-attention model (bf16 scores and probabilities).
struct ReferenceAttentionArgs {
  const float* qkv;
  int64_t qkv_stride;
  const int32_t* positions;     // [rows] the token's own position
  const int32_t* row_seq;       // [rows] index of the row's sequence
  const int32_t* block_tables;  // flattened per sequence
  const int32_t* table_offset;  // [seqs] start of each table
  int64_t rows, max_context;
  __nv_bfloat16* out;
};
void ReferenceAttention(const KvCacheRef& kv, const ReferenceAttentionArgs& a, cudaStream_t stream);
size_t ReferenceAttentionSharedBytes(int64_t max_context, int64_t head_dim);
cudaError_t ConfigureReferenceAttention(size_t max_shared_bytes);

}  // namespace tandem::cuda
