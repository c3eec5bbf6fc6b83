// The prefill side of DecodeService.HoldKvWrite (KvWriteHold) against the
// decode side's real KvWriteHolds and KvReservations over gRPC on
// loopback: a granted hold keeps a released reservation's blocks until the
// KvWriteHold is destroyed, without the destructor waiting; a refusal or
// an unreachable decode worker comes back as a status naming no address;
// a hold is due for renewal a quarter of the way and stops counting as held before the
// decode side's maximum. Every
// test ends with every block back in the allocator.
#include "prefill_worker/kv_write_hold.h"

#include <memory>

#include "decode_worker/kv_reservations.h"
#include "decode_worker/kv_write_holds.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/decode_worker/hold_server_test_base.h"

namespace tandem {
namespace {

class KvWriteHoldTest : public testing::HoldServerTest {
 protected:
  void TearDown() override {
    EXPECT_TRUE(ReservedBlocksReach(0, absl::Seconds(2)));
    StopServer();
    EXPECT_EQ(allocator_.num_free(), kBlocks);
  }
};

TEST_F(KvWriteHoldTest, AGrantedHoldKeepsAReleasedReservationsBlocksUntilItIsDestroyed) {
  auto blocks = reservations_.Reserve("t1", 5, Later());
  ASSERT_TRUE(blocks.ok());
  auto hold = std::make_unique<KvWriteHold>(*stub_, "t1", *blocks);
  ASSERT_TRUE(hold->WaitGranted(Soon()).ok());
  EXPECT_TRUE(hold->Held().ok());
  EXPECT_FALSE(hold->renewal_due());
  reservations_.Release("t1");
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_EQ(reservations_.reserved_blocks(), 5) << "released while held: the blocks must stay out of the pool";
  EXPECT_TRUE(hold->Held().ok());
  // The transfer is over: the destructor half-closes without waiting, and
  // the decode side unpins as soon as it reads that.
  const absl::Time before = absl::Now();
  hold.reset();
  EXPECT_LT(absl::Now() - before, absl::Milliseconds(100));
  EXPECT_TRUE(ReservedBlocksReach(0, absl::Seconds(2)));
  EXPECT_EQ(holds_->active(), 0);
}

TEST_F(KvWriteHoldTest, AHoldOnAReleasedReservationIsRefused) {
  auto blocks = reservations_.Reserve("t1", 2, Later());
  ASSERT_TRUE(blocks.ok());
  reservations_.Release("t1");
  KvWriteHold hold(*stub_, "t1", *blocks);
  absl::Status granted = hold.WaitGranted(Soon());
  EXPECT_EQ(granted.code(), absl::StatusCode::kNotFound) << granted;
  EXPECT_FALSE(hold.Held().ok());
  EXPECT_FALSE(hold.renewal_due());  // refused, never granted: not renewed
}

TEST_F(KvWriteHoldTest, AnUnreachableDecodeWorkerIsUnavailableNamingNoAddress) {
  StopServer();  // nothing listens on the port any more
  KvWriteHold hold(*stub_, "t1", {1, 2});
  absl::Status granted = hold.WaitGranted(Soon());
  EXPECT_EQ(granted.code(), absl::StatusCode::kUnavailable) << granted;
  EXPECT_EQ(granted.message().find("127.0.0.1"), std::string::npos) << granted;
  EXPECT_FALSE(hold.Held().ok());
}

// A decode worker of a version before holds (its DecodeService leaves
// HoldKvWrite to gRPC's default): UNIMPLEMENTED, which the prefill loop
// takes as "write unguarded" during a rolling upgrade, not as a refusal.
TEST_F(KvWriteHoldTest, ADecodeWorkerWithoutHoldsIsUnimplemented) {
  v1::DecodeService::Service older;
  std::unique_ptr<v1::DecodeService::Stub> stub;
  std::unique_ptr<grpc::Server> server = testing::ServeOnLoopback(older, &stub);
  ASSERT_NE(server, nullptr);
  {
    KvWriteHold hold(*stub, "t1", {1, 2});
    absl::Status granted = hold.WaitGranted(Soon());
    EXPECT_EQ(granted.code(), absl::StatusCode::kUnimplemented) << granted;
    EXPECT_FALSE(hold.Held().ok());
  }
  testing::StopLoopbackServer(*server);
}

TEST_F(KvWriteHoldTest, AHoldStopsCountingBeforeTheDecodeSidesMaximum) {
  StopServer();
  constexpr absl::Duration kMax = absl::Milliseconds(400);
  StartServer(kMax);
  auto blocks = reservations_.Reserve("t1", 2, Later());
  ASSERT_TRUE(blocks.ok());
  KvWriteHold hold(*stub_, "t1", *blocks);
  ASSERT_TRUE(hold.WaitGranted(Soon()).ok());
  // No put may be issued once Held fails: it fails first (a quarter of the
  // maximum before it, counted from before the request went out) ...
  const absl::Time give_up = absl::Now() + absl::Seconds(2);
  while (hold.Held().ok() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(2));
  EXPECT_FALSE(hold.Held().ok());
  EXPECT_TRUE(hold.renewal_due());  // the loop takes a fresh one if nothing was written yet
  // ... then the decode side ends the hold and frees the released blocks.
  reservations_.Release("t1");
  EXPECT_TRUE(ReservedBlocksReach(0, absl::Seconds(2)));
  const absl::Time ended_by = absl::Now() + absl::Seconds(2);
  while (hold.Held().code() != absl::StatusCode::kUnavailable && absl::Now() < ended_by) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_EQ(hold.Held().code(), absl::StatusCode::kUnavailable) << hold.Held() << ": the end was not seen";
}

}  // namespace
}  // namespace tandem
