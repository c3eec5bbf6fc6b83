// The copy planners: runs are maximal and cover every block once, in
// order; chunks respect their size and split runs at the boundary.
#include "common/transport/block_runs.h"

#include <random>

#include "gtest/gtest.h"

namespace tandem {
namespace {

TEST(PlanBlockRunsTest, GroupsBlocksConsecutiveOnBothSides) {
  const std::vector<int32_t> src = {1, 2, 3, 5, 6, 9};
  const std::vector<int32_t> dst = {7, 8, 9, 0, 2, 3};
  // 5->0 and 6->2 are consecutive at the source only: two runs.
  EXPECT_EQ(PlanBlockRuns(src, dst),
            (std::vector<BlockRun>{{1, 7, 3}, {5, 0, 1}, {6, 2, 1}, {9, 3, 1}}));
}

TEST(PlanBlockRunsTest, OneRunForAFreshSequenceAndNoneForNothing) {
  const std::vector<int32_t> src = {4, 5, 6, 7}, dst = {10, 11, 12, 13};
  EXPECT_EQ(PlanBlockRuns(src, dst), (std::vector<BlockRun>{{4, 10, 4}}));
  EXPECT_TRUE(PlanBlockRuns({}, {}).empty());
}

TEST(PlanStagingChunksTest, SplitsRunsAtTheChunkSize) {
  const std::vector<BlockRun> runs = {{0, 10, 5}, {20, 30, 2}};
  const std::vector<StagingChunk> chunks = PlanStagingChunks(runs, 3);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0], (StagingChunk{{{0, 10, 3}}, 3}));
  EXPECT_EQ(chunks[1], (StagingChunk{{{3, 13, 2}, {20, 30, 1}}, 3}));
  EXPECT_EQ(chunks[2], (StagingChunk{{{21, 31, 1}}, 1}));
  EXPECT_TRUE(PlanStagingChunks(runs, 0).empty());
}

TEST(PlanStagingChunksTest, EveryBlockOnceInOrderForRandomTables) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = static_cast<int>(rng() % 60);
    std::vector<int32_t> src, dst;
    int32_t s = 0, d = 100;
    for (int i = 0; i < n; ++i) {
      s += (rng() % 3 == 0) ? 2 : 1;  // occasional gaps on either side
      d += (rng() % 4 == 0) ? 3 : 1;
      src.push_back(s);
      dst.push_back(d);
    }
    const int32_t max_blocks = 1 + static_cast<int32_t>(rng() % 7);
    std::vector<int32_t> got_src, got_dst;
    for (const StagingChunk& c : PlanStagingChunks(PlanBlockRuns(src, dst), max_blocks)) {
      int32_t blocks = 0;
      for (const BlockRun& r : c.runs) {
        ASSERT_GT(r.count, 0);
        for (int32_t k = 0; k < r.count; ++k) {
          got_src.push_back(r.src + k);
          got_dst.push_back(r.dst + k);
        }
        blocks += r.count;
      }
      EXPECT_EQ(blocks, c.blocks);
      EXPECT_LE(c.blocks, max_blocks);
      EXPECT_GT(c.blocks, 0);
    }
    EXPECT_EQ(got_src, src) << "trial " << trial;
    EXPECT_EQ(got_dst, dst) << "trial " << trial;
  }
}

}  // namespace
}  // namespace tandem
