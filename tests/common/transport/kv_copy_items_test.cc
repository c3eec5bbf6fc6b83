// The gather kernel's work items (kv_copy_items.h), walked on the CPU the
// way the kernel's thread blocks walk them: every 16-byte word of K and V of every
// pair of every layer of a launch is copied exactly once, whatever the
// block size (under, at and over one item) and the grid.
#include "common/transport/kv_copy_items.h"

#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

// Counts, per (layer, pair, K/V, word), how often a simulated launch of
// `grid` thread blocks touches it.
std::vector<int> Touches(uint64_t block_bytes, int32_t pairs, int32_t layers, uint64_t grid) {
  const KvCopyShape s = MakeKvCopyShape(block_bytes, pairs, layers);
  const uint64_t words = s.words_per_block;
  std::vector<int> count(static_cast<size_t>(layers) * pairs * 2 * words, 0);
  for (uint64_t b = 0; b < grid; ++b) {
    for (uint64_t item = b; item < s.items; item += grid) {
      const KvCopyItem it = KvCopyItemAt(s, item);
      EXPECT_LT(it.layer, static_cast<uint64_t>(layers));
      EXPECT_LT(it.pair, static_cast<uint64_t>(pairs));
      EXPECT_GE(it.words, 1u);
      EXPECT_LE(it.words, kKvCopyItemWords);
      // One bulk copy of words [first_word, first_word + words).
      for (uint64_t i = 0; i < it.words; ++i) {
        const uint64_t w = it.first_word + i;
        EXPECT_LT(w, words);
        ++count[static_cast<size_t>(((it.layer * pairs + it.pair) * 2 + (it.value ? 1 : 0)) * words + w)];
      }
    }
  }
  return count;
}

TEST(KvCopyItemsTest, EveryWordOnceForBlocksUnderAtAndOverOneItem) {
  // 4 KB (a quarter item), 32 KB (one item), 36 KB (two, the second
  // partial), 64 KB (two full).
  for (uint64_t kb : {4u, 32u, 36u, 64u}) {
    for (uint64_t grid : {1u, 7u, 660u, 100000u}) {
      const std::vector<int> c = Touches(kb * 1024, 5, 3, grid);
      for (size_t i = 0; i < c.size(); ++i) ASSERT_EQ(c[i], 1) << kb << " KB, grid " << grid << ", word " << i;
    }
  }
}

TEST(KvCopyItemsTest, ItemsCountKAndVOfEveryPairOfEveryLayer) {
  EXPECT_EQ(MakeKvCopyShape(32 * 1024, 32, 32).items, 2u * 32 * 32);  // 512 tokens of Llama-3-8B, all layers
  EXPECT_EQ(MakeKvCopyShape(36 * 1024, 10, 1).items, 2u * 10 * 2);
  EXPECT_EQ(MakeKvCopyShape(32 * 1024, 0, 32).items, 0u);
  EXPECT_EQ(MakeKvCopyShape(32 * 1024, 4, 0).items, 0u);
}

}  // namespace
}  // namespace tandem
