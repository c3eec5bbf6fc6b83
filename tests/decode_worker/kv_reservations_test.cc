// The decode worker's KV reservations, as the destination of transfers and
// as the write gate of the transports that write them on their own threads.
// Every test ends with every block back in the allocator.
#include "decode_worker/kv_reservations.h"

#include <thread>

#include "gtest/gtest.h"

namespace tandem {
namespace {

constexpr int32_t kBlocks = 16;

class KvReservationsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    EXPECT_EQ(reservations_.reserved_blocks(), 0);
    EXPECT_EQ(allocator_.num_free(), kBlocks);
  }
  absl::Time Later() { return absl::Now() + absl::Seconds(30); }

  BlockAllocator allocator_{kBlocks};
  KvReservations reservations_{allocator_};
};

TEST_F(KvReservationsTest, ReserveClaimAndReleaseOwnTheBlocksOnce) {
  auto a = reservations_.Reserve("a", 3, Later());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(reservations_.Reserve("a", 1, Later()).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(reservations_.Reserve("big", kBlocks, Later()).status().code(), absl::StatusCode::kResourceExhausted);
  auto claimed = reservations_.Claim("a");
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_EQ(*claimed, *a);
  EXPECT_EQ(reservations_.Claim("a").status().code(), absl::StatusCode::kNotFound);
  reservations_.Release("a");  // claimed: the blocks are the caller's, not freed here
  EXPECT_EQ(allocator_.num_free(), kBlocks - 3);
  EXPECT_TRUE(allocator_.Release(*claimed).ok());

  ASSERT_TRUE(reservations_.Reserve("b", 2, Later()).ok());
  reservations_.Release("b");
  reservations_.Release("b");  // idempotent
  EXPECT_EQ(reservations_.size(), 0u);
}

TEST_F(KvReservationsTest, ExpiryFreesOnlyWhatIsPastItsTime) {
  ASSERT_TRUE(reservations_.Reserve("old", 2, absl::Now() - absl::Seconds(1)).ok());
  ASSERT_TRUE(reservations_.Reserve("new", 2, Later()).ok());
  EXPECT_EQ(reservations_.ExpireStale(absl::Now()), 1);
  EXPECT_EQ(reservations_.Claim("old").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reservations_.size(), 1u);
  reservations_.Release("new");
}

// A lost router's unclaimed reservations go at once; another router's
// stay, a claimed one is the sequence's, and a pinned one keeps its
// blocks until its write ends.
TEST_F(KvReservationsTest, ReleaseOwnedByFreesOnlyTheLostRoutersUnclaimedReservations) {
  auto gone1 = reservations_.Reserve("g1", 2, Later(), "router-a");
  auto gone2 = reservations_.Reserve("g2", 2, Later(), "router-a");
  auto claimed = reservations_.Reserve("c", 1, Later(), "router-a");
  auto other = reservations_.Reserve("o", 3, Later(), "router-b");
  auto untagged = reservations_.Reserve("u", 1, Later());
  ASSERT_TRUE(gone1.ok() && gone2.ok() && claimed.ok() && other.ok() && untagged.ok());
  auto adopted = reservations_.Claim("c");
  ASSERT_TRUE(adopted.ok());
  ASSERT_TRUE(reservations_.PinForWrite("g2", *gone2).ok());  // a write still landing

  EXPECT_EQ(reservations_.ReleaseOwnedBy(""), 0);
  EXPECT_EQ(reservations_.ReleaseOwnedBy("router-a"), 2);
  EXPECT_EQ(reservations_.Claim("g1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reservations_.Claim("g2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(allocator_.num_free(), kBlocks - 2 - 1 - 3 - 1) << "g2 is held while pinned";
  reservations_.Unpin("g2");
  EXPECT_EQ(allocator_.num_free(), kBlocks - 1 - 3 - 1);
  EXPECT_EQ(reservations_.ReleaseOwnedBy("router-a"), 0);
  EXPECT_EQ(reservations_.size(), 2u);

  EXPECT_TRUE(allocator_.Release(*adopted).ok());
  reservations_.Release("o");
  reservations_.Release("u");
}

TEST_F(KvReservationsTest, APinLetsWritesOnlyIntoTheTransfersOwnBlocks) {
  auto a = reservations_.Reserve("a", 2, Later());
  auto b = reservations_.Reserve("b", 2, Later());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(reservations_.PinForWrite("a", *a).ok());
  reservations_.Unpin("a");
  // b's block in a's chunk: refused, naming it.
  absl::Status stray = reservations_.PinForWrite("a", {(*a)[0], (*b)[1]});
  EXPECT_EQ(stray.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(stray.message().find(std::to_string((*b)[1])), std::string::npos) << stray;
  EXPECT_EQ(reservations_.PinForWrite("nobody", {0}).code(), absl::StatusCode::kNotFound);
  // A refused pin holds nothing: the claim goes through at once.
  EXPECT_TRUE(reservations_.Claim("a", absl::ZeroDuration()).ok());
  EXPECT_TRUE(allocator_.Release(*a).ok());
  reservations_.Release("b");
}

TEST_F(KvReservationsTest, AReleaseWhileAWriteRunsFreesTheBlocksAfterIt) {
  auto a = reservations_.Reserve("a", 4, Later());
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(reservations_.PinForWrite("a", {(*a)[1], (*a)[2]}).ok());
  ASSERT_TRUE(reservations_.PinForWrite("a", {(*a)[3]}).ok());
  reservations_.Release("a");  // the router gave up mid-transfer
  // Dead: no new writes, no claim; the blocks stay out of the allocator.
  EXPECT_EQ(reservations_.PinForWrite("a", {(*a)[0]}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reservations_.Claim("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reservations_.size(), 0u);
  EXPECT_EQ(allocator_.num_free(), kBlocks - 4);
  reservations_.Unpin("a");
  EXPECT_EQ(allocator_.num_free(), kBlocks - 4);
  reservations_.Unpin("a");  // the last write finished
  EXPECT_EQ(allocator_.num_free(), kBlocks);
}

TEST_F(KvReservationsTest, AnExpiryWhileAWriteRunsFreesTheBlocksAfterIt) {
  ASSERT_TRUE(reservations_.Reserve("a", 3, absl::Now() - absl::Seconds(1)).ok());
  auto blocks = reservations_.Blocks("a");
  ASSERT_TRUE(blocks.ok());
  ASSERT_TRUE(reservations_.PinForWrite("a", *blocks).ok());
  EXPECT_EQ(reservations_.ExpireStale(absl::Now()), 1);
  EXPECT_EQ(reservations_.ExpireStale(absl::Now()), 0);  // counted once
  EXPECT_EQ(reservations_.reserved_blocks(), 3);
  reservations_.Unpin("a");
}

TEST_F(KvReservationsTest, AClaimWaitsForTheWriteStillRunning) {
  auto a = reservations_.Reserve("a", 2, Later());
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(reservations_.PinForWrite("a", *a).ok());
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(100));
    reservations_.Unpin("a");
  });
  const absl::Time start = absl::Now();
  auto claimed = reservations_.Claim("a");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(90));
  writer.join();
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_TRUE(allocator_.Release(*claimed).ok());
}

TEST_F(KvReservationsTest, AClaimGivesUpOnAWriteThatDoesNotFinish) {
  auto a = reservations_.Reserve("a", 2, Later());
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(reservations_.PinForWrite("a", *a).ok());
  auto claimed = reservations_.Claim("a", absl::Milliseconds(20));
  EXPECT_EQ(claimed.status().code(), absl::StatusCode::kUnavailable) << claimed.status();
  // Left as it was: still live, still pinned.
  EXPECT_EQ(reservations_.size(), 1u);
  EXPECT_TRUE(reservations_.PinForWrite("a", *a).ok());
  reservations_.Unpin("a");
  reservations_.Unpin("a");
  reservations_.Release("a");
}

TEST_F(KvReservationsTest, ACachedPrefixLeadsTheReservationIsNeverWritableAndGoesBackWithIt) {
  // Two blocks the prefix cache handed over, one reference each.
  auto cached = allocator_.Allocate(2);
  ASSERT_TRUE(cached.ok());
  auto r = reservations_.Reserve("a", 5, Later(), "", *cached);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 5u);
  EXPECT_EQ((*r)[0], (*cached)[0]);
  EXPECT_EQ((*r)[1], (*cached)[1]);
  EXPECT_EQ(allocator_.num_used(), 5);  // 3 fresh, not 5
  EXPECT_EQ(*reservations_.Blocks("a"), *r);
  EXPECT_EQ(*reservations_.WritableBlocks("a"), std::vector<int32_t>(r->begin() + 2, r->end()));
  // A transfer may write the fresh blocks only.
  EXPECT_EQ(reservations_.PinForWrite("a", {(*r)[0]}).code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(reservations_.PinForWrite("a", {(*r)[2], (*r)[4]}).ok());
  reservations_.Unpin("a");
  reservations_.Release("a");
  EXPECT_EQ(allocator_.num_used(), 0);

  // On a refusal the handed-over blocks are given back too.
  ASSERT_TRUE(reservations_.Reserve("b", 1, Later()).ok());
  auto more = allocator_.Allocate(1);
  ASSERT_TRUE(more.ok());
  EXPECT_EQ(reservations_.Reserve("b", 3, Later(), "", *more).status().code(), absl::StatusCode::kAlreadyExists);
  auto again = allocator_.Allocate(1);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(reservations_.Reserve("c", kBlocks + 1, Later(), "", *again).status().code(),
            absl::StatusCode::kResourceExhausted);
  reservations_.Release("b");
  EXPECT_EQ(allocator_.num_used(), 0);
}

}  // namespace
}  // namespace tandem
