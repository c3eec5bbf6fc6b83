// The staged UCX receiver behind the decode worker's write gate (its KV
// reservations): chunks land only in their own live reservation. A late
// sender, whose reservation was released, and a sender naming blocks of
// another reservation both fail, and the blocks they aimed at keep their
// bytes. Host pools; every block goes back to the allocator.
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kv/block_allocator.h"
#include "common/transport/kv_transport.h"
#include "common/transport/ucx_staged_transport.h"
#include "decode_worker/kv_reservations.h"
#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};
constexpr int32_t kBlocks = 12;
constexpr float kDestTag = -5000.0f;

class StagedGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two blocks per slot, two slots: several chunks per transfer.
    const StagedOptions tiny{static_cast<uint64_t>(2 * 2 * SmallLayout().block_bytes()), 2};
    auto r = MakeUcxStagedTransport(tiny);
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = std::move(*r);
    receiver_->receiver()->SetWriteGate(&reservations_);
    auto s = MakeUcxStagedTransport(tiny);
    ASSERT_TRUE(s.ok()) << s.status();
    sender_ = std::move(*s);
    auto d = receiver_->ExportPool(dst_, kDecode);
    ASSERT_TRUE(d.ok()) << d.status();
    desc_ = *d;
  }
  void TearDown() override {
    receiver_.reset();  // no write in flight any more
    EXPECT_EQ(reservations_.reserved_blocks(), 0);
    EXPECT_EQ(dst_blocks_.num_free(), kBlocks);
  }

  absl::Status Send(const std::string& id, std::vector<int32_t> dst) {
    std::vector<int32_t> src;
    for (size_t i = 0; i < dst.size(); ++i) src.push_back(static_cast<int32_t>(i));
    auto t = sender_->StartTransfer(src_, kPrefill, desc_, {id, src, dst, absl::Now() + absl::Seconds(20)});
    if (!t.ok()) return t.status();
    // As the prefill loop does: after a failed send, Finish may say why.
    for (int l = 0; l < SmallLayout().num_layers; ++l) {
      if (absl::Status s = (*t)->SendLayer(l); !s.ok()) {
        absl::Status end = (*t)->Finish();
        return end.ok() ? s : end;
      }
    }
    return (*t)->Finish();
  }
  // Whether destination block `b` still holds the bytes it started with, in
  // every layer's K and V.
  bool Untouched(int32_t b) {
    TestPool fresh(SmallLayout(), kBlocks, kDestTag);
    for (int l = 0; l < SmallLayout().num_layers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        if (std::memcmp(dst_.At(l, kv, b), fresh.At(l, kv, b), SmallLayout().block_bytes()) != 0) return false;
      }
    }
    return true;
  }
  bool Landed(int32_t b, int32_t src_block) {
    for (int l = 0; l < SmallLayout().num_layers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        if (std::memcmp(dst_.At(l, kv, b), src_.At(l, kv, src_block), SmallLayout().block_bytes()) != 0) return false;
      }
    }
    return true;
  }

  TestPool src_{SmallLayout(), kBlocks, 1000.0f};
  TestPool dst_{SmallLayout(), kBlocks, kDestTag};
  BlockAllocator dst_blocks_{kBlocks};
  KvReservations reservations_{dst_blocks_};
  std::unique_ptr<KvTransport> receiver_, sender_;
  v1::KvPoolDescriptor desc_;
};

TEST_F(StagedGateTest, ChunksLandInTheirOwnReservation) {
  auto blocks = reservations_.Reserve("t-ok", 5, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(blocks.ok());
  absl::Status s = Send("t-ok", *blocks);
  ASSERT_TRUE(s.ok()) << s;
  for (size_t i = 0; i < blocks->size(); ++i) EXPECT_TRUE(Landed((*blocks)[i], static_cast<int32_t>(i))) << i;
  auto claimed = reservations_.Claim("t-ok", absl::ZeroDuration());  // nothing pins it after the ack
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_TRUE(dst_blocks_.Release(*claimed).ok());
}

TEST_F(StagedGateTest, ALateSenderFailsAndItsBlocksNowSomeoneElsesKeepTheirBytes) {
  auto gone = reservations_.Reserve("t-late", 4, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(gone.ok());
  const std::vector<int32_t> aimed = *gone;
  reservations_.Release("t-late");  // the router gave up on it
  // Its blocks go to the next request before the late transfer arrives.
  auto next = reservations_.Reserve("t-next", 4, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(next.ok());
  // The sender hears the decode side's reason (NOT_FOUND: no live
  // reservation), whether every chunk went out before the refusal or a
  // later chunk was turned away (its rendezvous cancelled) first.
  absl::Status s = Send("t-late", aimed);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_NE(s.message().find("the decode worker reports"), std::string::npos) << s;
  EXPECT_NE(s.message().find("t-late"), std::string::npos) << s;
  for (int32_t b : aimed) EXPECT_TRUE(Untouched(b)) << "block " << b;
  reservations_.Release("t-next");
}

TEST_F(StagedGateTest, ASenderNamingAnotherReservationsBlocksIsRefused) {
  auto mine = reservations_.Reserve("t-mine", 2, absl::Now() + absl::Seconds(30));
  auto theirs = reservations_.Reserve("t-theirs", 2, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(mine.ok() && theirs.ok());
  absl::Status s = Send("t-mine", {(*mine)[0], (*theirs)[1]});
  EXPECT_TRUE(absl::IsPermissionDenied(s)) << s;
  EXPECT_NE(s.message().find("the decode worker reports"), std::string::npos) << s;
  EXPECT_TRUE(Untouched((*theirs)[1]));
  // The refusal left the reservations as they were: the right transfer works.
  absl::Status ok = Send("t-theirs", *theirs);
  EXPECT_TRUE(ok.ok()) << ok;
  EXPECT_TRUE(Landed((*theirs)[1], 1));
  reservations_.Release("t-mine");
  reservations_.Release("t-theirs");
}

// Stalls the decode side's receiving thread at its first write until
// released (a decode worker that stopped making progress), then refuses
// every write; nothing is ever pinned.
class StallingGate final : public KvWriteGate {
 public:
  absl::Status PinForWrite(const std::string& transfer_id, const std::vector<int32_t>&) override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return released_; });
    return absl::NotFoundError(absl::StrCat("no live reservation for ", transfer_id));
  }
  void Unpin(const std::string&) override { ADD_FAILURE() << "Unpin without a pin"; }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
};

// A decode side that stops acknowledging ends Finish at the transfer's
// finish timeout, UNAVAILABLE (the peer's failure), long before its
// deadline; the destination blocks keep their bytes.
TEST(StagedFinishTimeoutTest, AStalledDecodeSideFailsFinishAtTheFinishTimeout) {
  StallingGate gate;
  TestPool src(SmallLayout(), kBlocks, 1000.0f);
  TestPool dst(SmallLayout(), kBlocks, kDestTag);
  // Default slots: every chunk of the transfer fits the sender's slots, so
  // SendLayer never waits for one.
  auto receiver = MakeUcxStagedTransport();
  auto sender = MakeUcxStagedTransport();
  ASSERT_TRUE(receiver.ok() && sender.ok());
  (*receiver)->receiver()->SetWriteGate(&gate);
  auto desc = (*receiver)->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok()) << desc.status();
  KvTransferSpec spec{"stalled", {0, 1, 2}, {4, 5, 6}, absl::Now() + absl::Seconds(30)};
  spec.finish_timeout = absl::Milliseconds(300);
  auto t = (*sender)->StartTransfer(src, kPrefill, *desc, spec);
  ASSERT_TRUE(t.ok()) << t.status();
  for (int l = 0; l < SmallLayout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok());
  const absl::Time start = absl::Now();
  const absl::Status s = (*t)->Finish();
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("did not confirm"), std::string::npos) << s;
  EXPECT_GE(waited, absl::Milliseconds(250));
  EXPECT_LT(waited, absl::Seconds(10)) << "waited for the deadline, not the finish timeout";
  gate.Release();
  t->reset();
  sender->reset();
  receiver->reset();  // its thread, released, refuses the chunks and stops
  TestPool fresh(SmallLayout(), kBlocks, kDestTag);
  for (int32_t b : {4, 5, 6}) {
    for (int l = 0; l < SmallLayout().num_layers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        EXPECT_EQ(std::memcmp(dst.At(l, kv, b), fresh.At(l, kv, b), SmallLayout().block_bytes()), 0) << b;
      }
    }
  }
}

}  // namespace
}  // namespace tandem
