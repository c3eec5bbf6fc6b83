// The CUDA forward pass's host-side plan (plain C++): validation with
// INVALID_ARGUMENT, the layout of decode rows, prefill tiles and graph
// padding, and how decode rows split their contexts.
#include "common/engine/cuda/forward_plan.h"

#include <deque>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

PlanLimits Limits() {
  PlanLimits l;
  l.block_size = 16;
  l.num_blocks = 64;
  l.trash_block = 64;
  l.vocab_size = 100;
  l.max_context = 1024;
  return l;
}

// A ForwardBatch with storage for the spans its chunks point into.
struct Batch {
  ForwardBatch batch;
  std::deque<std::vector<int32_t>> storage;
  Batch& Add(std::vector<int32_t> tokens, int32_t cached, std::vector<int32_t> table) {
    const auto& t = storage.emplace_back(std::move(tokens));
    const auto& b = storage.emplace_back(std::move(table));
    batch.seqs.push_back({t, cached, b, false});
    return *this;
  }
};

// Read back one of the plan's arrays.
std::vector<int32_t> At(const ForwardPlan& p, int64_t offset, int64_t count) {
  return std::vector<int32_t>(p.meta.begin() + offset, p.meta.begin() + offset + count);
}

TEST(ForwardPlanTest, RejectsBadSequencesWithInvalidArgument) {
  struct Case {
    std::vector<int32_t> tokens;
    int32_t cached;
    std::vector<int32_t> table;
    const char* what;
  };
  const std::vector<Case> cases = {
      {{}, 0, {0, 1}, "no tokens"},
      {{5, 100}, 0, {0, 1}, "vocabulary"},
      {{5}, 40, {0, 1}, "positions"},  // 41 positions, 2 blocks of 16
      {{5}, 0, {0, 64}, "outside the KV pool"},
  };
  for (const Case& c : cases) {
    Batch b;
    b.Add(c.tokens, c.cached, c.table);
    auto plan = PlanForward(b.batch, Limits());
    ASSERT_FALSE(plan.ok()) << c.what;
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(plan.status().message().find(c.what), std::string_view::npos) << plan.status();
  }
  PlanLimits short_ctx = Limits();
  short_ctx.max_context = 20;
  Batch b;
  b.Add({5}, 25, {0, 1});
  EXPECT_EQ(PlanForward(b.batch, short_ctx).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ForwardPlanTest, MixedBatchHasDecodeRowsAndPrefillTiles) {
  Batch b;
  b.Add({7}, 20, {3, 4});                                    // decode row at position 20
  b.Add(std::vector<int32_t>(70, 9), 0, {5, 6, 7, 8, 9});  // 70 new tokens: tiles of 64 and 6
  auto p = PlanForward(b.batch, Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->pure_decode);
  EXPECT_EQ(p->rows, 71);
  EXPECT_EQ(p->num_decode_rows, 1);
  EXPECT_EQ(p->longest_decode, 21);
  EXPECT_EQ(p->num_logit_rows, 2);
  EXPECT_EQ(At(*p, p->at.logit_rows, 2), (std::vector<int32_t>{0, 70}));
  EXPECT_EQ(At(*p, p->at.decode_ctx, 1), (std::vector<int32_t>{21}));
  ASSERT_EQ(p->num_tiles, 2);
  // {first_row, num_rows, first_pos, table}
  EXPECT_EQ(At(*p, p->at.prefill_tiles, 8), (std::vector<int32_t>{1, 64, 0, 0, 65, 6, 64, 0}));
  // The decode row's K/V slot is in block 4 (position 20 / 16 = 1).
  EXPECT_EQ(At(*p, p->at.slot_block, 1), (std::vector<int32_t>{4}));
  EXPECT_EQ(p->row_offset, (std::vector<int64_t>{0, 1}));
}

TEST(ForwardPlanTest, GraphPaddingUsesOnlyTheTrashBlock) {
  Batch b;
  b.Add({7}, 3, {2}).Add({8}, 17, {0, 1});
  auto p = PlanForward(b.batch, Limits(), /*pad_rows_to=*/4, /*decode_table_stride=*/8);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->pure_decode);
  EXPECT_EQ(p->rows, 4);
  EXPECT_EQ(p->real_rows, 2);
  EXPECT_EQ(p->decode_table_stride, 8);
  EXPECT_EQ(At(*p, p->at.slot_block, 4), (std::vector<int32_t>{2, 1, 64, 64}));
  EXPECT_EQ(At(*p, p->at.decode_ctx, 4), (std::vector<int32_t>{4, 18, 1, 1}));
  const std::vector<int32_t> tables = At(*p, p->at.decode_tables, 32);
  // Short tables repeat their last block; padded rows see only the trash block.
  EXPECT_EQ(std::vector<int32_t>(tables.begin(), tables.begin() + 8), std::vector<int32_t>(8, 2));
  EXPECT_EQ(std::vector<int32_t>(tables.begin() + 8, tables.begin() + 10), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(std::vector<int32_t>(tables.begin() + 16, tables.end()), std::vector<int32_t>(16, 64));
  // Padding is only for pure-decode batches that fit.
  EXPECT_FALSE(PlanForward(b.batch, Limits(), /*pad_rows_to=*/1).ok());
  b.Add({1, 2}, 0, {3});
  EXPECT_FALSE(PlanForward(b.batch, Limits(), /*pad_rows_to=*/4).ok());
}

TEST(ForwardPlanTest, SmallDecodeBatchesSplitTheirContextsFiner) {
  const int64_t sms = 132, cap = 256 * 32;
  // One sequence of 1k tokens, 8 kv heads: 8 blocks at the widest
  // partition, so it halves down to the narrowest (8 x 32 splits).
  DecodeSplit one = DecodeSplitFor(1, 8, 1024, sms, cap);
  EXPECT_EQ(one.partition, kPlanDecodeMinPartition);
  EXPECT_EQ(one.splits, 32);
  // 256 sequences already give 256 x 8 x 1 = 2048 blocks: the widest.
  DecodeSplit wide = DecodeSplitFor(256, 8, 1024, sms, cap);
  EXPECT_EQ(wide.partition, kPlanDecodeMaxPartition);
  EXPECT_EQ(wide.splits, 1);
  // 64 give 512 blocks there (under 4 per SM): halved once.
  DecodeSplit b64 = DecodeSplitFor(64, 8, 1024, sms, cap);
  EXPECT_EQ(b64.partition, 512);
  EXPECT_EQ(b64.splits, 2);
  // In between: 8 x 8 x ceil(1024 / p) >= 4 x 132 first at p = 64.
  DecodeSplit mid = DecodeSplitFor(8, 8, 1024, sms, cap);
  EXPECT_EQ(mid.partition, 64);
  EXPECT_EQ(mid.splits, 16);
  // A wider narrowest split stops the halving there.
  DecodeSplit coarse = DecodeSplitFor(1, 8, 1024, sms, cap, /*min_partition=*/64);
  EXPECT_EQ(coarse.partition, 64);
  EXPECT_EQ(coarse.splits, 16);
  // The partial buffers bound rows x splits.
  DecodeSplit bounded = DecodeSplitFor(1, 1, 8192, sms, /*max_row_splits=*/64);
  EXPECT_EQ(bounded.partition, 128);
  EXPECT_EQ(bounded.splits, 64);
  // Every split covers the context; never a split of nothing.
  for (int64_t ctx : {1, 31, 32, 33, 255, 256, 257, 4000}) {
    const DecodeSplit d = DecodeSplitFor(2, 8, ctx, sms, cap);
    EXPECT_GE(d.partition * d.splits, ctx);
    EXPECT_LT(d.partition * (d.splits - 1), ctx);
  }
}

}  // namespace
}  // namespace tandem
