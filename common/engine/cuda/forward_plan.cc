#include "common/engine/cuda/forward_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

absl::Status CheckSequence(const SequenceChunk& c, size_t s, const PlanLimits& l) {
  const int64_t end = c.num_cached + static_cast<int64_t>(c.tokens.size());
  if (c.tokens.empty() || c.num_cached < 0 || static_cast<int64_t>(c.block_table.size()) * l.block_size < end) {
    return absl::InvalidArgumentError(absl::StrCat("batch sequence ", s, ": no tokens or a block table of ",
                                                   c.block_table.size(), " blocks for ", end, " positions"));
  }
  if (end > l.max_context) {
    return absl::InvalidArgumentError(absl::StrCat("batch sequence ", s, " reaches position ", end,
                                                   ", past the backend's max_context ", l.max_context));
  }
  for (int32_t b : c.block_table) {
    if (b < 0 || b >= l.num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("batch sequence ", s, ": block ", b, " is outside the KV pool"));
    }
  }
  for (int32_t t : c.tokens) {
    if (t < 0 || t >= l.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", t, " in batch sequence ", s,
                                                     " is outside the vocabulary [0, ", l.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

DecodeSplit DecodeSplitFor(int64_t rows, int64_t num_kv_heads, int64_t longest_context, int64_t num_sms,
                           int64_t max_row_splits, int64_t min_partition) {
  const int64_t ctx = std::max<int64_t>(longest_context, 1);
  auto splits = [ctx](int64_t p) { return (ctx + p - 1) / p; };
  DecodeSplit d;
  while (d.partition > std::max(min_partition, kPlanDecodeMinPartition) && rows * num_kv_heads * splits(d.partition) < 4 * num_sms &&
         rows * splits(d.partition / 2) <= max_row_splits) {
    d.partition /= 2;
  }
  d.splits = splits(d.partition);
  return d;
}

absl::StatusOr<ForwardPlan> PlanForward(const ForwardBatch& batch, const PlanLimits& l, int64_t pad_rows_to,
                                        int64_t decode_table_stride) {
  ForwardPlan p;
  const int32_t bs = l.block_size;
  bool pure_decode = !batch.seqs.empty();
  int64_t widest_decode_table = 1;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceChunk& c = batch.seqs[s];
    if (absl::Status st = CheckSequence(c, s, l); !st.ok()) return st;
    p.real_rows += static_cast<int64_t>(c.tokens.size());
    p.max_context = std::max<int64_t>(p.max_context, c.num_cached + static_cast<int64_t>(c.tokens.size()));
    if (c.tokens.size() == 1) {
      widest_decode_table = std::max<int64_t>(widest_decode_table, (c.num_cached + 1 + bs - 1) / bs);
    }
    pure_decode = pure_decode && c.tokens.size() == 1 && !c.all_logits;
  }
  if (pad_rows_to > 0 && (!pure_decode || pad_rows_to < static_cast<int64_t>(batch.seqs.size()))) {
    return absl::InternalError("row padding is only for pure-decode batches that fit");
  }
  p.pure_decode = pure_decode;
  p.rows = pad_rows_to > 0 ? pad_rows_to : p.real_rows;
  p.decode_table_stride = decode_table_stride > 0 ? decode_table_stride : widest_decode_table;
  if (p.decode_table_stride < widest_decode_table) return absl::InternalError("decode table stride too small");

  std::vector<int32_t> tokens, positions, slot_block, logit_rows, row_seq, seq_table, flat_tables;
  std::vector<int32_t> decode_rows, decode_ctx, decode_tables, tiles, prefill_tables;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceChunk& c = batch.seqs[s];
    const int32_t first_row = static_cast<int32_t>(tokens.size());
    seq_table.push_back(static_cast<int32_t>(flat_tables.size()));
    flat_tables.insert(flat_tables.end(), c.block_table.begin(), c.block_table.end());
    p.row_offset.push_back(static_cast<int64_t>(logit_rows.size()));
    for (size_t t = 0; t < c.tokens.size(); ++t) {
      const int32_t pos = static_cast<int32_t>(c.num_cached + static_cast<int64_t>(t));
      if (c.all_logits || t + 1 == c.tokens.size()) logit_rows.push_back(static_cast<int32_t>(tokens.size()));
      tokens.push_back(c.tokens[t]);
      positions.push_back(pos);
      slot_block.push_back(c.block_table[static_cast<size_t>(pos / bs)]);
      row_seq.push_back(static_cast<int32_t>(s));
    }
    const int32_t end = c.num_cached + static_cast<int32_t>(c.tokens.size());
    if (c.tokens.size() == 1) {
      decode_rows.push_back(first_row);
      decode_ctx.push_back(end);
      for (int64_t b = 0; b < p.decode_table_stride; ++b) {
        decode_tables.push_back(b < static_cast<int64_t>(c.block_table.size()) ? c.block_table[static_cast<size_t>(b)]
                                                                               : c.block_table.back());
      }
    } else {
      const int32_t table_at = static_cast<int32_t>(prefill_tables.size());
      prefill_tables.insert(prefill_tables.end(), c.block_table.begin(), c.block_table.end());
      for (int32_t t0 = 0; t0 < static_cast<int32_t>(c.tokens.size()); t0 += kPlanPrefillTile) {
        const int32_t n = std::min<int32_t>(kPlanPrefillTile, static_cast<int32_t>(c.tokens.size()) - t0);
        tiles.insert(tiles.end(), {first_row + t0, n, c.num_cached + t0, table_at});
      }
    }
  }
  // Graph padding: dummy single-token rows at position 0 of the trash block.
  for (int64_t r = p.real_rows; r < p.rows; ++r) {
    decode_rows.push_back(static_cast<int32_t>(tokens.size()));
    decode_ctx.push_back(1);
    decode_tables.insert(decode_tables.end(), static_cast<size_t>(p.decode_table_stride), l.trash_block);
    logit_rows.push_back(static_cast<int32_t>(tokens.size()));
    tokens.push_back(0);
    positions.push_back(0);
    slot_block.push_back(l.trash_block);
    row_seq.push_back(0);
  }
  for (int32_t ctx : decode_ctx) p.longest_decode = std::max<int64_t>(p.longest_decode, ctx);
  p.num_logit_rows = static_cast<int64_t>(logit_rows.size());
  p.num_decode_rows = static_cast<int64_t>(decode_rows.size());
  p.num_tiles = static_cast<int64_t>(tiles.size() / 4);

  auto append = [&p](const std::vector<int32_t>& v) {
    // 16-byte aligned starts, for the prefill tiles' struct loads.
    while (p.meta.size() % 4 != 0) p.meta.push_back(0);
    const int64_t at = static_cast<int64_t>(p.meta.size());
    p.meta.insert(p.meta.end(), v.begin(), v.end());
    return at;
  };
  p.at.tokens = append(tokens);
  p.at.positions = append(positions);
  p.at.slot_block = append(slot_block);
  p.at.logit_rows = append(logit_rows);
  p.at.decode_rows = append(decode_rows);
  p.at.decode_ctx = append(decode_ctx);
  p.at.decode_tables = append(decode_tables);
  p.at.prefill_tiles = append(tiles);
  p.at.prefill_tables = append(prefill_tables);
  p.at.row_seq = append(row_seq);
  p.at.seq_table = append(seq_table);
  p.at.flat_tables = append(flat_tables);
  return p;
}

}  // namespace tandem
