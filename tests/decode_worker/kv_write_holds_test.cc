// The decode side of DecodeService.HoldKvWrite over real gRPC on loopback,
// against real KvReservations: a hold pins a reservation so that a release
// meanwhile keeps its blocks (nothing else can be given them) until the
// hold ends; a hold is refused once the reservation is gone or for blocks
// not its own; a broken stream or the server's maximum ends the hold and
// frees the blocks. Every test ends with every block back in the allocator.
#include "decode_worker/kv_write_holds.h"

#include <memory>
#include <thread>

#include "decode_worker/kv_reservations.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/decode_worker/hold_server_test_base.h"

namespace tandem {
namespace {

using HoldStream = grpc::ClientReaderWriter<v1::KvWriteHoldRequest, v1::KvWriteHoldResponse>;

// One client-side hold, driven by hand.
struct RawHold {
  grpc::ClientContext ctx;
  std::unique_ptr<HoldStream> stream;
  v1::KvWriteHoldResponse granted;
  bool was_granted = false;
};

class KvWriteHoldsTest : public testing::HoldServerTest {
 protected:
  void TearDown() override {
    StopServer();
    EXPECT_EQ(reservations_.reserved_blocks(), 0);
    EXPECT_EQ(allocator_.num_free(), kBlocks);
  }

  // Sends the hold's request and waits for its answer: granted, or the
  // stream ends with the refusal (returned through `refusal`).
  std::unique_ptr<RawHold> Hold(const std::string& transfer_id, const std::vector<int32_t>& blocks,
                                grpc::Status* refusal = nullptr) {
    auto h = std::make_unique<RawHold>();
    h->stream = stub_->HoldKvWrite(&h->ctx);
    v1::KvWriteHoldRequest req;
    req.set_transfer_id(transfer_id);
    req.mutable_dst_blocks()->Add(blocks.begin(), blocks.end());
    EXPECT_TRUE(h->stream->Write(req));
    h->was_granted = h->stream->Read(&h->granted);
    if (!h->was_granted) {
      grpc::Status s = h->stream->Finish();
      if (refusal != nullptr) *refusal = s;
    }
    return h;
  }

  // The prefill worker's normal end: half-close, then the server's status.
  static grpc::Status End(RawHold& h) {
    EXPECT_TRUE(h.stream->WritesDone());
    v1::KvWriteHoldResponse more;
    EXPECT_FALSE(h.stream->Read(&more));
    return h.stream->Finish();
  }
};

TEST_F(KvWriteHoldsTest, AReleaseWhileHeldKeepsTheBlocksUntilTheHoldEnds) {
  auto blocks = reservations_.Reserve("t1", 6, Later());
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  std::unique_ptr<RawHold> h = Hold("t1", *blocks);
  ASSERT_TRUE(h->was_granted);
  EXPECT_DOUBLE_EQ(h->granted.max_hold_seconds(), absl::ToDoubleSeconds(KvWriteHolds::kDefaultMaxHold));
  EXPECT_EQ(holds_->active(), 1);

  // The router gives up on the request: the reservation is dead (no claim,
  // no new write) but its six blocks stay out of the pool.
  reservations_.Release("t1");
  EXPECT_EQ(reservations_.size(), 0u);
  EXPECT_EQ(reservations_.Claim("t1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reservations_.Reserve("bystander", 3, Later()).status().code(), absl::StatusCode::kResourceExhausted)
      << "a released reservation's blocks went to another request while a writer still held them";
  absl::SleepFor(absl::Milliseconds(50));  // and they stay held while the writer does
  EXPECT_EQ(reservations_.reserved_blocks(), 6);

  // The writer's transfer ended: it half-closes, the blocks go back.
  EXPECT_TRUE(End(*h).ok());
  EXPECT_EQ(reservations_.reserved_blocks(), 0);
  EXPECT_EQ(holds_->active(), 0);
  EXPECT_EQ(holds_->outlived_release(), 1);
  auto bystander = reservations_.Reserve("bystander", 3, Later());
  ASSERT_TRUE(bystander.ok()) << bystander.status();
  reservations_.Release("bystander");
}

TEST_F(KvWriteHoldsTest, AHoldEndedBeforeAnyReleaseLeavesTheReservationToItsClaim) {
  auto blocks = reservations_.Reserve("t1", 2, Later());
  ASSERT_TRUE(blocks.ok());
  std::unique_ptr<RawHold> h = Hold("t1", *blocks);
  ASSERT_TRUE(h->was_granted);
  // Decode's claim waits for the writer's hold, then gets the blocks.
  std::thread end([&] {
    absl::SleepFor(absl::Milliseconds(30));
    EXPECT_TRUE(End(*h).ok());
  });
  auto claimed = reservations_.Claim("t1", absl::Seconds(5));
  end.join();
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_EQ(*claimed, *blocks);
  EXPECT_EQ(holds_->outlived_release(), 0);
  EXPECT_TRUE(allocator_.Release(*claimed).ok());
}

TEST_F(KvWriteHoldsTest, AHoldIsRefusedForAGoneReservationOrBlocksNotItsOwn) {
  auto blocks = reservations_.Reserve("t1", 2, Later());
  ASSERT_TRUE(blocks.ok());
  auto other = reservations_.Reserve("t2", 2, Later());
  ASSERT_TRUE(other.ok());
  grpc::Status refusal;
  // Another reservation's block.
  EXPECT_FALSE(Hold("t1", {(*blocks)[0], (*other)[0]}, &refusal)->was_granted);
  EXPECT_EQ(refusal.error_code(), grpc::StatusCode::PERMISSION_DENIED) << refusal.error_message();
  // No blocks, or a malformed transfer id.
  EXPECT_FALSE(Hold("t1", {}, &refusal)->was_granted);
  EXPECT_EQ(refusal.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_FALSE(Hold("", *blocks, &refusal)->was_granted);
  EXPECT_EQ(refusal.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Released: the late writer is refused and writes nothing.
  reservations_.Release("t1");
  EXPECT_FALSE(Hold("t1", *blocks, &refusal)->was_granted);
  EXPECT_EQ(refusal.error_code(), grpc::StatusCode::NOT_FOUND) << refusal.error_message();
  // Never made.
  EXPECT_FALSE(Hold("nope", *blocks, &refusal)->was_granted);
  EXPECT_EQ(refusal.error_code(), grpc::StatusCode::NOT_FOUND);
  // Claimed: the blocks are the sequence's now.
  auto claimed = reservations_.Claim("t2");
  ASSERT_TRUE(claimed.ok());
  EXPECT_FALSE(Hold("t2", *other, &refusal)->was_granted);
  EXPECT_EQ(refusal.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(allocator_.Release(*claimed).ok());
  EXPECT_EQ(holds_->active(), 0);
}

TEST_F(KvWriteHoldsTest, ABrokenHoldStreamUnpinsAtOnce) {
  auto blocks = reservations_.Reserve("t1", 4, Later());
  ASSERT_TRUE(blocks.ok());
  std::unique_ptr<RawHold> h = Hold("t1", *blocks);
  ASSERT_TRUE(h->was_granted);
  reservations_.Release("t1");
  EXPECT_EQ(reservations_.reserved_blocks(), 4);
  // The writer goes away without a half-close (its process died, or it
  // cancelled): the stream breaks and the decode side unpins.
  h->ctx.TryCancel();
  EXPECT_TRUE(ReservedBlocksReach(0, absl::Seconds(2))) << reservations_.reserved_blocks() << " blocks still held";
  EXPECT_EQ(h->stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(ReservedBlocksReach(0, absl::Seconds(2)));
}

TEST_F(KvWriteHoldsTest, AHungWriterLosesItsHoldAtTheMaximum) {
  constexpr absl::Duration kMax = absl::Milliseconds(300);
  StartServer(kMax);
  auto blocks = reservations_.Reserve("t1", 3, Later());
  ASSERT_TRUE(blocks.ok());
  const absl::Time start = absl::Now();
  std::unique_ptr<RawHold> h = Hold("t1", *blocks);
  ASSERT_TRUE(h->was_granted);
  EXPECT_DOUBLE_EQ(h->granted.max_hold_seconds(), absl::ToDoubleSeconds(kMax));
  reservations_.Release("t1");
  // The writer never ends its hold; the decode side does, and frees them.
  EXPECT_TRUE(ReservedBlocksReach(0, absl::Seconds(3)));
  EXPECT_GE(absl::Now() - start, kMax);
  v1::KvWriteHoldResponse more;
  EXPECT_FALSE(h->stream->Read(&more));
  EXPECT_FALSE(h->stream->Finish().ok());
  EXPECT_EQ(holds_->active(), 0);
}

}  // namespace
}  // namespace tandem
