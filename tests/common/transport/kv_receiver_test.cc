// The decode side's one interface (kv_receiver.h) over the transports the
// decode worker creates by name: which have a receiver, that a composite
// hands the write gate on to the part whose threads write the pool (so a
// staged chunk the gate refuses never lands), and that an announced
// transfer goes to the nccl part only. Host pools; every pin the gate
// granted is released by the end.
#include "common/transport/kv_receiver.h"

#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/transport/kv_transport.h"
#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};
constexpr int32_t kBlocks = 8;

// Lets writes through only for the transfer ids in `allowed`; counts pins
// so a test can check none is left behind.
class RecordingGate final : public KvWriteGate {
 public:
  explicit RecordingGate(std::set<std::string> allowed) : allowed_(std::move(allowed)) {}
  absl::Status PinForWrite(const std::string& transfer_id, const std::vector<int32_t>&) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!allowed_.contains(transfer_id)) return absl::NotFoundError("no live reservation for " + transfer_id);
    ++pins_;
    ++held_;
    return absl::OkStatus();
  }
  void Unpin(const std::string&) override {
    std::lock_guard<std::mutex> lock(mu_);
    --held_;
  }
  int pins() {
    std::lock_guard<std::mutex> lock(mu_);
    return pins_;
  }
  int held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_;
  }

 private:
  const std::set<std::string> allowed_;
  std::mutex mu_;
  int pins_ = 0;
  int held_ = 0;
};

absl::Status Move(KvTransport& sender, TestPool& src, const v1::KvPoolDescriptor& dest, const std::string& id) {
  KvTransferSpec spec{id, {0, 1, 2}, {5, 6, 7}, absl::Now() + absl::Seconds(20)};
  auto t = sender.StartTransfer(src, kPrefill, dest, std::move(spec));
  if (!t.ok()) return t.status();
  for (int l = 0; l < SmallLayout().num_layers; ++l) {
    if (absl::Status s = (*t)->SendLayer(l); !s.ok()) {
      absl::Status end = (*t)->Finish();  // as the prefill loop does: it may say why
      return end.ok() ? s : end;
    }
  }
  return (*t)->Finish();
}

bool BlockEquals(TestPool& a, int32_t block_a, TestPool& b, int32_t block_b) {
  const size_t bytes = static_cast<size_t>(SmallLayout().block_bytes());
  for (int l = 0; l < SmallLayout().num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      if (std::memcmp(a.At(l, kv, block_a), b.At(l, kv, block_b), bytes) != 0) return false;
    }
  }
  return true;
}

TEST(KvReceiverTest, TransportsWhoseWritesAreTheSendersHaveNone) {
  auto inproc = CreateKvTransport("inproc");
  ASSERT_TRUE(inproc.ok()) << inproc.status();
  EXPECT_EQ((*inproc)->receiver(), nullptr);
  // What the decode worker answers an announced transfer with then.
  const absl::Status none = NoAnnouncedTransfers("inproc");
  EXPECT_EQ(none.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(none.message().find("'inproc'"), std::string::npos) << none;
  for (const char* name : {"ucx", "ucx_staged", "auto"}) {
    auto t = CreateKvTransport(name);
    ASSERT_TRUE(t.ok()) << name << ": " << t.status();
    KvReceiver* r = (*t)->receiver();
    ASSERT_NE(r, nullptr) << name;
    EXPECT_EQ(r, (*t)->receiver()) << name << ": not the same object on every call";
  }
}

// The gate set on the composite's receiver is the one the staged part's
// receiving thread asks: a transfer it refuses fails NOT_FOUND and leaves
// the destination untouched; one it lets through lands, and every pin is
// released once the chunks are in the pool.
TEST(KvReceiverTest, TheCompositeHandsTheGateToThePartThatWritesThePool) {
  RecordingGate gate({"allowed"});
  TestPool dst(SmallLayout(), kBlocks, -9000.0f);
  TestPool untouched(SmallLayout(), kBlocks, -9000.0f);
  TestPool src(SmallLayout(), kBlocks, 42.0f);
  auto decode = CreateKvTransport("ucx_staged");
  auto prefill = CreateKvTransport("ucx_staged");
  ASSERT_TRUE(decode.ok() && prefill.ok());
  (*decode)->receiver()->SetWriteGate(&gate);
  auto desc = (*decode)->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok()) << desc.status();

  const absl::Status refused = Move(**prefill, src, *desc, "late");
  EXPECT_EQ(refused.code(), absl::StatusCode::kNotFound) << refused;
  for (int32_t b = 0; b < kBlocks; ++b) EXPECT_TRUE(BlockEquals(dst, b, untouched, b)) << "block " << b;
  EXPECT_EQ(gate.pins(), 0);

  ASSERT_TRUE(Move(**prefill, src, *desc, "allowed").ok());
  for (int32_t i = 0; i < 3; ++i) EXPECT_TRUE(BlockEquals(dst, 5 + i, src, i)) << "block " << 5 + i;
  // Staged UCX's Finish already had the decode side's acknowledgement.
  EXPECT_TRUE((*decode)->receiver()->WaitReceived("allowed", "", absl::Now()).ok());
  EXPECT_GT(gate.pins(), 0);
  prefill->reset();
  decode->reset();  // joins the receiving thread
  EXPECT_EQ(gate.held(), 0);
}

TEST(KvReceiverTest, AnnouncedTransfersGoToTheNcclPartOnly) {
  auto t = CreateKvTransport("ucx_staged");
  ASSERT_TRUE(t.ok()) << t.status();
  v1::NcclTransferRequest req;
  req.set_transfer_id("t");
  req.set_prefill_worker_id("p");
  bool failed_called = false;
  const absl::Status s =
      (*t)->receiver()->AcceptAnnouncedTransfer(req, {1, 2}, [&](const std::string&) { failed_called = true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("no nccl"), std::string::npos) << s;
  EXPECT_FALSE(failed_called);
}

}  // namespace
}  // namespace tandem
