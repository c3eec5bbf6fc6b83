#include "common/kv/kv_cache_manager.h"

#include "gtest/gtest.h"

namespace tandem {
namespace {

KvLayout Layout(int32_t block_size) {
  KvLayout l;
  l.num_layers = 2;
  l.num_kv_heads = 2;
  l.head_dim = 8;
  l.block_size = block_size;
  l.dtype = DType::kF32;
  return l;
}

TEST(KvLayoutTest, BytesAndBlockCounts) {
  KvLayout l = Layout(16);
  EXPECT_EQ(l.block_bytes(), 16 * 2 * 8 * 4);
  EXPECT_EQ(l.block_bytes_all_layers(), 2 * 2 * 16 * 2 * 8 * 4);
  EXPECT_EQ(l.BlocksForTokens(0), 0);
  EXPECT_EQ(l.BlocksForTokens(1), 1);
  EXPECT_EQ(l.BlocksForTokens(16), 1);
  EXPECT_EQ(l.BlocksForTokens(17), 2);
}

TEST(KvCacheManagerTest, ReserveGrowsTheTableOnlyWhenABlockFillsUp) {
  KvCacheManager m(Layout(4), 10);
  ASSERT_TRUE(m.Reserve(1, 3).ok());
  EXPECT_EQ(m.BlockTable(1)->size(), 1u);
  ASSERT_TRUE(m.Reserve(1, 4).ok());
  EXPECT_EQ(m.BlockTable(1)->size(), 1u);
  ASSERT_TRUE(m.Reserve(1, 5).ok());
  EXPECT_EQ(m.BlockTable(1)->size(), 2u);
  EXPECT_EQ(m.BlocksNeeded(1, 12), 1);
  EXPECT_EQ(m.num_used_blocks(), 2);
  m.Free(1);
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_FALSE(m.Contains(1));
}

TEST(KvCacheManagerTest, FailedReserveLeavesEverythingAsItWas) {
  KvCacheManager m(Layout(4), 3);
  ASSERT_TRUE(m.Reserve(1, 8).ok());
  EXPECT_EQ(m.Reserve(2, 8).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(m.Contains(2));  // a new sequence that failed leaves no entry
  EXPECT_EQ(m.Reserve(1, 16).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(m.BlockTable(1)->size(), 2u);
  EXPECT_EQ(m.num_used_blocks(), 2);
  m.Free(1);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

TEST(KvCacheManagerTest, AdoptedBlocksAreFreedWithTheSequence) {
  KvCacheManager m(Layout(4), 6);
  auto blocks = m.allocator().Allocate(3);
  ASSERT_TRUE(blocks.ok());
  ASSERT_TRUE(m.Adopt(7, *blocks).ok());
  EXPECT_EQ(*m.BlockTable(7), *blocks);
  EXPECT_EQ(m.Adopt(7, {}).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(m.Reserve(7, 13).ok());  // grows past the adopted blocks
  EXPECT_EQ(m.BlockTable(7)->size(), 4u);
  m.Free(7);
  m.Free(7);  // unknown sequences are a no-op
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_EQ(m.BlockTable(7).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tandem
