#include "common/kv/kv_cache_manager.h"

#include <algorithm>
#include <span>

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


std::vector<int32_t> Tokens(int32_t n, int32_t first = 100) {
  std::vector<int32_t> t(n);
  for (int32_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

TEST(KvCachePrefixTest, ASecondSequenceStartsFromTheFirstOnesFullBlocksButComputesTheLastToken) {
  KvCacheManager m(Layout(4), 16);
  const std::vector<int32_t> prompt = Tokens(10);  // 2 full blocks + 2 tokens
  EXPECT_EQ(*m.MatchPrefix(1, prompt, ""), 0);
  EXPECT_FALSE(m.Contains(1));  // a miss creates no table
  ASSERT_TRUE(m.Reserve(1, 10).ok());
  ASSERT_TRUE(m.CommitFullBlocks(1, prompt, 10, "").ok());
  EXPECT_EQ(m.num_cached_blocks(), 2);
  const std::vector<int32_t> first_table = *m.BlockTable(1);
  m.Free(1);
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_EQ(m.num_cached_blocks(), 2);

  EXPECT_EQ(*m.MatchPrefix(2, prompt, ""), 8);
  const std::vector<int32_t> hit = *m.BlockTable(2);
  ASSERT_EQ(hit.size(), 2u);
  EXPECT_EQ(hit[0], first_table[0]);
  EXPECT_EQ(hit[1], first_table[1]);
  EXPECT_EQ(m.MatchPrefix(2, prompt, "").status().code(), absl::StatusCode::kFailedPrecondition);
  // A prompt of exactly two blocks hits only one: its last token computes.
  EXPECT_EQ(*m.MatchPrefix(3, std::span<const int32_t>(prompt).first(8), ""), 4);
  // Another salt, or another first block, shares nothing.
  EXPECT_EQ(*m.MatchPrefix(4, prompt, "tenant-b"), 0);
  std::vector<int32_t> other = prompt;
  other[0] = 7;
  EXPECT_EQ(*m.MatchPrefix(5, other, ""), 0);
  EXPECT_EQ(m.num_used_blocks(), 2);  // block 0 held twice, block 1 once
  m.Free(2);
  m.Free(3);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

TEST(KvCachePrefixTest, GeneratedTokensBlocksAreCommittedAsTheyFillAndKeysMatchTheRouters) {
  KvCacheManager m(Layout(4), 16);
  std::vector<int32_t> tokens = Tokens(6);
  ASSERT_TRUE(m.Reserve(1, 6).ok());
  ASSERT_TRUE(m.CommitFullBlocks(1, tokens, 6, "s").ok());
  EXPECT_EQ(m.num_cached_blocks(), 1);
  tokens.push_back(1);
  tokens.push_back(2);  // generated: block 1 is now full once computed
  ASSERT_TRUE(m.Reserve(1, 8).ok());
  ASSERT_TRUE(m.CommitFullBlocks(1, tokens, 7, "s").ok());
  EXPECT_EQ(m.num_cached_blocks(), 1);  // token 7 not computed yet
  ASSERT_TRUE(m.CommitFullBlocks(1, tokens, 8, "s").ok());
  EXPECT_EQ(m.num_cached_blocks(), 2);
  std::vector<BlockHash> cached = m.CachedBlockHashes();
  std::vector<BlockHash> expected = HashFullBlocks(tokens, 4, "s");
  std::sort(cached.begin(), cached.end(), [](auto& a, auto& b) { return a.hi < b.hi; });
  std::sort(expected.begin(), expected.end(), [](auto& a, auto& b) { return a.hi < b.hi; });
  EXPECT_EQ(cached, expected);
  EXPECT_EQ(m.CommitFullBlocks(9, tokens, 8, "s").code(), absl::StatusCode::kNotFound);
  m.Free(1);
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_EQ(m.num_evictable_blocks(), 2);
}

TEST(KvCachePrefixTest, EvictionUnderPressureTakesTheTailFirstAndLeaksNothing) {
  KvCacheManager m(Layout(4), 4);
  const std::vector<int32_t> a = Tokens(13);  // 3 full blocks + 1
  ASSERT_TRUE(m.Reserve(1, 13).ok());
  ASSERT_TRUE(m.CommitFullBlocks(1, a, 13, "").ok());
  m.Free(1);
  EXPECT_EQ(m.num_cached_blocks(), 3);
  ASSERT_TRUE(m.Reserve(2, 8).ok());  // 1 free + the tail block of `a`
  EXPECT_EQ(m.num_evictions(), 1);
  EXPECT_EQ(*m.MatchPrefix(3, a, ""), 8);  // its first two blocks survive
  KvCacheEvents e = m.DrainCacheEvents();
  EXPECT_EQ(e.stored.size(), 2u);  // the evicted one was stored and removed in this batch
  EXPECT_EQ(e.removed.size(), 1u);
  m.Free(2);
  m.Free(3);
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_EQ(m.num_free_blocks(), 4);
}

TEST(KvCachePrefixTest, AReservationTakesTheCachedPrefixAndAnAdoptingSequenceKeepsItCached) {
  KvCacheManager m(Layout(4), 8);
  const std::vector<int32_t> prompt = Tokens(11);
  ASSERT_TRUE(m.Reserve(1, 11).ok());
  ASSERT_TRUE(m.CommitFullBlocks(1, prompt, 11, "").ok());
  m.Free(1);
  std::vector<int32_t> cached = m.AcquireCachedPrefix(prompt, "");
  EXPECT_EQ(cached.size(), 2u);
  EXPECT_EQ(m.prefix_queried_tokens(), 11);
  EXPECT_EQ(m.prefix_hit_tokens(), 8);
  auto rest = m.allocator().Allocate(1);
  ASSERT_TRUE(rest.ok());
  std::vector<int32_t> table = cached;
  table.insert(table.end(), rest->begin(), rest->end());
  ASSERT_TRUE(m.Adopt(2, table).ok());
  ASSERT_TRUE(m.CommitFullBlocks(2, prompt, 11, "").ok());  // the shared blocks: same keys, no-op
  EXPECT_EQ(m.num_cached_blocks(), 2);
  EXPECT_EQ(m.num_used_blocks(), 3);
  m.Free(2);
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_TRUE(m.AcquireCachedPrefix(Tokens(3), "").empty());
}

}  // namespace
}  // namespace tandem
