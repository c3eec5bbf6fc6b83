#include "common/kv/block_allocator.h"

#include <set>
#include <thread>

#include "gtest/gtest.h"

namespace tandem {
namespace {

TEST(BlockAllocatorTest, AllocatesDistinctBlocksAndCountsThem) {
  BlockAllocator a(8);
  EXPECT_EQ(a.num_free(), 8);
  auto x = a.Allocate(3);
  ASSERT_TRUE(x.ok());
  auto y = a.Allocate(5);
  ASSERT_TRUE(y.ok());
  std::set<int32_t> all(x->begin(), x->end());
  all.insert(y->begin(), y->end());
  EXPECT_EQ(all.size(), 8u);
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), 7);
  EXPECT_EQ(a.num_free(), 0);
  EXPECT_EQ(a.num_used(), 8);
  ASSERT_TRUE(a.Release(*x).ok());
  ASSERT_TRUE(a.Release(*y).ok());
  EXPECT_EQ(a.num_used(), 0);
}

TEST(BlockAllocatorTest, ExhaustionIsAllOrNothingWithAClearMessage) {
  BlockAllocator a(4);
  auto x = a.Allocate(3);
  ASSERT_TRUE(x.ok());
  auto y = a.Allocate(2);
  EXPECT_EQ(y.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(y.status().message().find("need 2 blocks, 1 of 4 free"), std::string::npos)
      << y.status();
  EXPECT_EQ(a.num_free(), 1);  // the failed call took nothing
  ASSERT_TRUE(a.Release(*x).ok());
  EXPECT_EQ(a.num_used(), 0);
}

TEST(BlockAllocatorTest, SharedBlockIsFreedAfterTheLastOwner) {
  BlockAllocator a(2);
  auto x = a.Allocate(1);
  ASSERT_TRUE(x.ok());
  const int32_t b = (*x)[0];
  ASSERT_TRUE(a.AddRef(b).ok());
  EXPECT_EQ(a.RefCount(b), 2);
  ASSERT_TRUE(a.Release(*x).ok());
  EXPECT_EQ(a.num_used(), 1);  // still owned once
  ASSERT_TRUE(a.Release(*x).ok());
  EXPECT_EQ(a.num_used(), 0);
  EXPECT_EQ(a.RefCount(b), 0);
}

TEST(BlockAllocatorTest, DoubleFreeAndBadIndicesAreRejectedWithoutSideEffects) {
  BlockAllocator a(3);
  auto x = a.Allocate(2);
  ASSERT_TRUE(x.ok());
  const std::vector<int32_t> bad = {(*x)[0], 2};  // 2 was never allocated
  EXPECT_EQ(a.Release(bad).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.num_used(), 2);
  EXPECT_EQ(a.AddRef(-1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.AddRef(2).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(a.Release(*x).ok());
  EXPECT_EQ(a.Release(*x).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.num_used(), 0);
}

TEST(BlockAllocatorTest, ConcurrentAllocateAndReleaseKeepTheCountsExact) {
  BlockAllocator a(64);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&a] {
      for (int i = 0; i < 2000; ++i) {
        auto x = a.Allocate(1 + i % 7);
        if (x.ok()) {
          ASSERT_TRUE(a.Release(*x).ok());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(a.num_used(), 0);
  EXPECT_EQ(a.num_free(), 64);
}

}  // namespace
}  // namespace tandem
