// The prefix cache inside BlockAllocator: commit, lookup with references,
// LRU eviction only when an allocation needs room, and the cache events
// the router's prefix index is fed by.
#include <algorithm>
#include <thread>
#include <vector>

#include "common/kv/block_allocator.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

BlockHash Key(uint64_t n) { return BlockHash{n, ~n}; }

bool Contains(const std::vector<BlockHash>& v, const BlockHash& k) { return std::find(v.begin(), v.end(), k) != v.end(); }

TEST(BlockPoolCacheTest, ReleasedCommittedBlocksStayCachedAndCountAsFreeNotUsed) {
  BlockAllocator a(4);
  auto x = a.Allocate(2);
  ASSERT_TRUE(x.ok());
  ASSERT_TRUE(a.Commit((*x)[0], Key(1)).ok());
  ASSERT_TRUE(a.Release(*x).ok());
  EXPECT_EQ(a.num_used(), 0);  // a cached block nobody holds is not a leak
  EXPECT_EQ(a.num_free(), 4);
  EXPECT_EQ(a.num_cached(), 1);
  EXPECT_EQ(a.num_evictable(), 1);
  const std::vector<BlockHash> keys = {Key(1), Key(2)};
  std::vector<int32_t> hit = a.AcquireCached(keys);
  ASSERT_EQ(hit, std::vector<int32_t>{(*x)[0]});
  EXPECT_EQ(a.RefCount(hit[0]), 1);
  EXPECT_EQ(a.num_evictable(), 0);  // held again: not evictable
  EXPECT_EQ(a.num_used(), 1);
  ASSERT_TRUE(a.Release(hit).ok());
  EXPECT_EQ(a.num_used(), 0);
}

TEST(BlockPoolCacheTest, LookupIsAChainThatStopsAtTheFirstMiss) {
  BlockAllocator a(4);
  auto x = a.Allocate(3);
  ASSERT_TRUE(x.ok());
  ASSERT_TRUE(a.Commit((*x)[0], Key(1)).ok());
  ASSERT_TRUE(a.Commit((*x)[2], Key(3)).ok());
  const std::vector<BlockHash> keys = {Key(1), Key(2), Key(3)};
  std::vector<int32_t> hit = a.AcquireCached(keys);
  EXPECT_EQ(hit.size(), 1u);
  ASSERT_TRUE(a.Release(hit).ok());
  ASSERT_TRUE(a.Release(*x).ok());
  EXPECT_EQ(a.num_used(), 0);
}

TEST(BlockPoolCacheTest, EvictsOnlyWhenTheFreeListIsShortLeastRecentlyReleasedFirst) {
  BlockAllocator a(4);
  auto x = a.Allocate(3);
  ASSERT_TRUE(x.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a.Commit((*x)[i], Key(10 + i)).ok());
  // Released in this order: 12 is evicted first, 10 last.
  const std::vector<int32_t> order = {(*x)[2], (*x)[1], (*x)[0]};
  ASSERT_TRUE(a.Release(order).ok());
  auto y = a.Allocate(1);  // the one never-used block: no eviction
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(a.num_evictions(), 0);
  EXPECT_EQ(a.num_cached(), 3);
  auto z = a.Allocate(2);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(a.num_evictions(), 2);
  const std::vector<BlockHash> cached = a.CachedBlockHashes();
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_EQ(cached[0], Key(10));
  EXPECT_EQ(a.Allocate(2).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(a.Release(*y).ok());
  ASSERT_TRUE(a.Release(*z).ok());
  EXPECT_EQ(a.num_used(), 0);
  EXPECT_EQ(a.num_free(), 4);
}

TEST(BlockPoolCacheTest, AKeyIsCachedOnceAndABlockHasOneKey) {
  BlockAllocator a(4);
  auto x = a.Allocate(2);
  ASSERT_TRUE(x.ok());
  ASSERT_TRUE(a.Commit((*x)[0], Key(1)).ok());
  ASSERT_TRUE(a.Commit((*x)[0], Key(1)).ok());        // again: no-op
  ASSERT_TRUE(a.Commit((*x)[1], Key(1)).ok());        // same content elsewhere: stays private
  EXPECT_EQ(a.Commit((*x)[0], Key(2)).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.Commit(3, Key(5)).code(), absl::StatusCode::kFailedPrecondition);  // not held
  EXPECT_EQ(a.num_cached(), 1);
  ASSERT_TRUE(a.Release(*x).ok());
  EXPECT_EQ(a.num_evictable(), 1);  // the duplicate went to the free list
  EXPECT_EQ(a.num_free(), 4);
  // A block cannot be released twice, cached or not.
  EXPECT_EQ(a.Release(std::vector<int32_t>{(*x)[0]}).code(), absl::StatusCode::kFailedPrecondition);
  const std::vector<int32_t> twice = {(*x)[0], (*x)[0]};
  std::vector<int32_t> hit = a.AcquireCached(std::vector<BlockHash>{Key(1)});
  ASSERT_EQ(hit.size(), 1u);
  EXPECT_EQ(a.Release(twice).code(), absl::StatusCode::kFailedPrecondition);  // one reference only
  EXPECT_EQ(a.RefCount((*x)[0]), 1);
  ASSERT_TRUE(a.Release(hit).ok());
  EXPECT_EQ(a.num_used(), 0);
}

TEST(BlockPoolCacheTest, EventsAreNettedPerKeyForARemovalsFirstConsumer) {
  BlockAllocator a(2);
  auto x = a.Allocate(2);
  ASSERT_TRUE(x.ok());
  ASSERT_TRUE(a.Commit((*x)[0], Key(1)).ok());
  ASSERT_TRUE(a.Commit((*x)[1], Key(2)).ok());
  KvCacheEvents e = a.DrainCacheEvents();
  EXPECT_EQ(e.stored, (std::vector<BlockHash>{Key(1), Key(2)}));
  EXPECT_TRUE(e.removed.empty());
  EXPECT_TRUE(a.DrainCacheEvents().stored.empty());  // drained

  // 1 evicted; 3 stored and evicted; 1 stored again; 2 stays.
  ASSERT_TRUE(a.Release(*x).ok());
  auto y = a.Allocate(1);  // evicts key 1 (released first)
  ASSERT_TRUE(y.ok());
  ASSERT_TRUE(a.Commit((*y)[0], Key(3)).ok());
  ASSERT_TRUE(a.Release(*y).ok());
  auto z = a.Allocate(2);  // evicts 2, then 3
  ASSERT_TRUE(z.ok());
  ASSERT_TRUE(a.Commit((*z)[0], Key(1)).ok());
  e = a.DrainCacheEvents();
  EXPECT_EQ(e.stored, (std::vector<BlockHash>{Key(1)}));
  EXPECT_EQ(e.removed, (std::vector<BlockHash>{Key(3), Key(2)}));  // first touched order
  EXPECT_EQ(a.CachedBlockHashes(), (std::vector<BlockHash>{Key(1)}));
  ASSERT_TRUE(a.Release(*z).ok());
  EXPECT_EQ(a.num_used(), 0);
}

TEST(BlockPoolCacheTest, UndrainedEventsStayBoundedByThePool) {
  BlockAllocator a(2);
  for (uint64_t i = 0; i < 20000; ++i) {
    auto x = a.Allocate(1);
    ASSERT_TRUE(x.ok());
    ASSERT_TRUE(a.Commit((*x)[0], Key(i)).ok());
    ASSERT_TRUE(a.Release(*x).ok());
  }
  const KvCacheEvents e = a.DrainCacheEvents();
  EXPECT_LE(e.stored.size() + e.removed.size(), 2u * 2 + 1024 + 1);
  // Whatever was dropped, a consumer applying the batch holds what is cached.
  for (const BlockHash& k : a.CachedBlockHashes()) EXPECT_TRUE(Contains(e.stored, k));
  EXPECT_EQ(a.num_used(), 0);
}

TEST(BlockPoolCacheTest, ConcurrentLookupsCommitsAndAllocationsKeepTheCountsExact) {
  BlockAllocator a(32);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&a, t] {
      for (int i = 0; i < 2000; ++i) {
        std::vector<BlockHash> keys = {Key(i % 5), Key(100 + i % 3)};
        std::vector<int32_t> hit = a.AcquireCached(keys);
        auto x = a.Allocate(1 + (i + t) % 4);
        if (x.ok()) {
          a.Commit((*x)[0], Key(i % 5)).IgnoreError();
          ASSERT_TRUE(a.Release(*x).ok());
        }
        ASSERT_TRUE(a.Release(hit).ok());
        if (i % 100 == 0) a.DrainCacheEvents();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(a.num_used(), 0);
  EXPECT_EQ(a.num_free(), 32);
  EXPECT_EQ(a.num_evictable(), a.num_cached());
}

}  // namespace
}  // namespace tandem
