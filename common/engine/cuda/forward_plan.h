// The host-side description of one CUDA forward pass: which token each
// row is, where its K/V goes, which attention kernel serves it, and which
// rows produce logits, flattened into one int32 array that is uploaded in
// a single copy. Plain C++ (no CUDA), so CPU-only tests check it.
//
// Rows of single-token sequences are "decode rows" (flash-decoding);
// sequences with several new tokens are cut into prefill tiles of up to
// kPlanPrefillTile rows. A plan built with `pad_rows_to` (CUDA graph
// replay) adds dummy decode rows that read and write only the trash block,
// and lays every array out at offsets that depend only on the padded row
// count, so a captured graph finds its inputs where it expects them.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/model_backend.h"

namespace tandem {

inline constexpr int32_t kPlanPrefillTile = 64;            // == cuda::kPrefillTile
inline constexpr int64_t kPlanDecodeMaxPartition = 1024;    // == cuda::kDecodeMaxPartition
inline constexpr int64_t kPlanDecodeMinPartition = 32;     // == cuda::kDecodeMinPartition

struct PlanLimits {
  int32_t block_size = 16;
  int32_t num_blocks = 0;     // valid block ids are [0, num_blocks)
  int32_t trash_block = -1;   // where padded rows write (>= num_blocks)
  int64_t vocab_size = 0;
  int64_t max_context = 0;    // longest sequence a row may reach
};

// Offsets (in int32 elements) of each array inside ForwardPlan::meta.
struct PlanLayout {
  int64_t tokens = 0, positions = 0, slot_block = 0, logit_rows = 0;
  int64_t decode_rows = 0, decode_ctx = 0, decode_tables = 0;
  int64_t prefill_tiles = 0, prefill_tables = 0;
  int64_t row_seq = 0, seq_table = 0, flat_tables = 0;  // reference attention
};

struct ForwardPlan {
  int64_t rows = 0;          // including padding
  int64_t real_rows = 0;
  int64_t num_logit_rows = 0;
  int64_t num_decode_rows = 0;
  int64_t decode_table_stride = 0;
  int64_t longest_decode = 0;  // longest context of a decode row (0: none)
  int64_t num_tiles = 0;      // prefill tiles, 4 int32 each
  int64_t max_context = 0;    // longest context in the batch
  bool pure_decode = false;   // every sequence brings exactly one token
  std::vector<int64_t> row_offset;  // per sequence, its first logits row
  std::vector<int32_t> meta;
  PlanLayout at;
};

// How decode rows split their contexts for flash-decoding: `partition`
// positions per split, `splits` splits for the longest row.
struct DecodeSplit {
  int64_t partition = kPlanDecodeMaxPartition;
  int64_t splits = 1;
};

// The split for `rows` decode rows whose longest context is
// `longest_context`: the partition is halved from the widest (down to
// `min_partition`, a power of two in [kPlanDecodeMinPartition,
// kPlanDecodeMaxPartition]) while the
// attention grid (rows x kv heads x splits blocks) has fewer than 4 blocks
// per SM and rows x splits stays within `max_row_splits` (the size of the
// partial-result buffers). It depends only on its arguments, so a captured
// graph's shape follows from them.
DecodeSplit DecodeSplitFor(int64_t rows, int64_t num_kv_heads, int64_t longest_context, int64_t num_sms,
                           int64_t max_row_splits, int64_t min_partition = kPlanDecodeMinPartition);

// INVALID_ARGUMENT for empty sequences, token ids outside the vocabulary,
// block ids outside the pool, too short block tables, or sequences past
// max_context. `pad_rows_to` > 0 only for pure-decode batches with at most
// that many sequences; `decode_table_stride` > 0 fixes the decode table
// width (graph replay), else it is the widest decode table.
absl::StatusOr<ForwardPlan> PlanForward(const ForwardBatch& batch, const PlanLimits& limits, int64_t pad_rows_to = 0,
                                        int64_t decode_table_stride = 0);

}  // namespace tandem
