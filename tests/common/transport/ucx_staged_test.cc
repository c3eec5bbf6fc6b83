// The staged UCX transport end to end over host pools (the protocol is the
// one GPU pools use; only the copies differ), and its wire format. Slots
// are made tiny so that every transfer is many chunks through few slots:
// the flow control and the shared slot pool are what is under test. Block
// lists come from block allocators, and every test checks at its end that
// all blocks went back.
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/kv/block_allocator.h"
#include "common/transport/kv_transport.h"
#include "common/transport/ucx_staged_protocol.h"
#include "common/transport/ucx_staged_transport.h"
#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};
constexpr int32_t kBlocks = 12;

// Two blocks (K+V) per slot, two slots a side.
StagedOptions TinySlots() {
  return {static_cast<uint64_t>(2 * 2 * SmallLayout().block_bytes()), 2};
}

TEST(StagedProtocolTest, HeadersRoundTrip) {
  const StagedPoolInfo info{1 << 20, 6};
  EXPECT_EQ(*DecodeStagedPoolInfo(EncodeStagedPoolInfo(info), "d"), info);
  StagedChunkHeader chunk{"xfer-1", 3, 7, {{0, 10, 2}, {0, 40, 1}}};
  absl::StatusOr<StagedChunkHeader> c = DecodeStagedChunk(EncodeStagedChunk(chunk));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->transfer_id, "xfer-1");
  EXPECT_EQ(c->layer, 3);
  EXPECT_EQ(c->chunk, 7);
  EXPECT_EQ(c->runs, (std::vector<BlockRun>{{0, 10, 2}, {0, 40, 1}}));  // src does not travel
  EXPECT_EQ(c->blocks(), 3);
  const StagedFinishHeader finish{"xfer-1", 96};
  EXPECT_EQ(*DecodeStagedFinish(EncodeStagedFinish(finish)), finish);
  const StagedAckHeader ack{"xfer-1", 3, "destination blocks out of range"};
  EXPECT_EQ(*DecodeStagedAck(EncodeStagedAck(ack)), ack);
}

TEST(StagedProtocolTest, MalformedHeadersAreRefused) {
  const std::string chunk = EncodeStagedChunk({"x", 0, 0, {{0, 1, 1}}});
  EXPECT_FALSE(DecodeStagedChunk(chunk.substr(0, chunk.size() - 1)).ok());
  EXPECT_FALSE(DecodeStagedChunk(chunk + "z").ok());
  EXPECT_FALSE(DecodeStagedChunk(EncodeStagedFinish({"x", 1})).ok());  // wrong record
  EXPECT_FALSE(DecodeStagedFinish(EncodeStagedAck({"x", 0, ""})).ok());
  EXPECT_FALSE(DecodeStagedAck("").ok());
  EXPECT_FALSE(DecodeStagedPoolInfo(EncodeStagedPoolInfo({0, 4}), "d").ok());
  EXPECT_FALSE(DecodeStagedPoolInfo(EncodeStagedPoolInfo({64, 0}), "d").ok());
}

TEST(StagedProtocolTest, ChunksAreCheckedAgainstThePool) {
  const uint64_t bb = 256;
  const StagedChunkHeader ok{"x", 1, 0, {{0, 3, 2}, {0, 9, 1}}};
  EXPECT_TRUE(CheckStagedChunk(ok, 2 * 3 * bb, 3, 10, bb, 4096).ok());
  EXPECT_FALSE(CheckStagedChunk(ok, 2 * 3 * bb - 1, 3, 10, bb, 4096).ok());  // short data
  EXPECT_FALSE(CheckStagedChunk(ok, 2 * 3 * bb, 3, 10, bb, 1024).ok());      // bigger than a slot
  EXPECT_FALSE(CheckStagedChunk({"x", 3, 0, {{0, 0, 1}}}, 2 * bb, 3, 10, bb, 4096).ok());  // layer
  EXPECT_FALSE(CheckStagedChunk({"x", 0, 0, {{0, 9, 2}}}, 4 * bb, 3, 10, bb, 4096).ok());  // past the pool
  EXPECT_FALSE(CheckStagedChunk({"x", 0, 0, {{0, -1, 1}}}, 2 * bb, 3, 10, bb, 4096).ok());
  EXPECT_FALSE(CheckStagedChunk({"x", 0, 0, {}}, 0, 3, 10, bb, 4096).ok());
  absl::Status s = CheckStagedChunk({"xfer-9", 0, 4, {{0, 20, 1}}}, 2 * bb, 3, 10, bb, 4096);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("xfer-9"), std::string::npos) << s;
  EXPECT_EQ(StagedBlocksPerChunk(4096, 2048, bb), 4);
  EXPECT_EQ(StagedBlocksPerChunk(256, 4096, bb), 0);
}

// A decode side with its pool and allocator, and a prefill side with its own.
class StagedTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = MakeUcxStagedTransport(TinySlots());
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = std::move(*r);
    auto s = MakeUcxStagedTransport(TinySlots());
    ASSERT_TRUE(s.ok()) << s.status();
    sender_ = std::move(*s);
    auto d = receiver_->ExportPool(dst_, kDecode);
    ASSERT_TRUE(d.ok()) << d.status();
    desc_ = *d;
    EXPECT_EQ(desc_.transport(), "ucx_staged");
  }
  void TearDown() override {
    // Every block allocated by a test went back.
    EXPECT_EQ(src_blocks_.num_free(), kBlocks);
    EXPECT_EQ(dst_blocks_.num_free(), kBlocks);
  }

  // Allocations that leave holes, so the block lists are not one run.
  std::vector<int32_t> Scattered(BlockAllocator& a, int32_t n) {
    auto gap = a.Allocate(1);
    auto first = a.Allocate(n / 2);
    auto gap2 = a.Allocate(1);
    auto second = a.Allocate(n - n / 2);
    EXPECT_TRUE(gap.ok() && first.ok() && gap2.ok() && second.ok());
    EXPECT_TRUE(a.Release(*gap).ok());
    EXPECT_TRUE(a.Release(*gap2).ok());
    std::vector<int32_t> blocks = *second;  // out of order too
    blocks.insert(blocks.end(), first->begin(), first->end());
    return blocks;
  }

  void ExpectLanded(TestPool& src, const KvTransferSpec& spec) {
    const size_t bytes = static_cast<size_t>(SmallLayout().block_bytes());
    for (int l = 0; l < SmallLayout().num_layers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        for (size_t i = 0; i < spec.src_blocks.size(); ++i) {
          EXPECT_EQ(std::memcmp(dst_.At(l, kv, spec.dst_blocks[i]), src.At(l, kv, spec.src_blocks[i]), bytes), 0)
              << "layer " << l << " kv " << kv << " block " << spec.dst_blocks[i];
        }
      }
    }
  }

  // Whether every destination block already holds its source's bytes,
  // read while the receiver may still be writing them: that race is the
  // point (only Finish orders the two), so the thread sanitizer is told to
  // look away, and the loads are volatile so each call reads memory anew.
  __attribute__((no_sanitize("thread"))) bool Landed(TestPool& src, const KvTransferSpec& spec) {
    const size_t bytes = static_cast<size_t>(SmallLayout().block_bytes());
    for (int l = 0; l < SmallLayout().num_layers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        for (size_t i = 0; i < spec.src_blocks.size(); ++i) {
          const volatile char* d = reinterpret_cast<const volatile char*>(dst_.At(l, kv, spec.dst_blocks[i]));
          const char* s = reinterpret_cast<const char*>(src.At(l, kv, spec.src_blocks[i]));
          for (size_t b = 0; b < bytes; ++b) {
            if (d[b] != s[b]) return false;
          }
        }
      }
    }
    return true;
  }

  TestPool dst_{SmallLayout(), kBlocks, -5000.0f};
  BlockAllocator src_blocks_{kBlocks}, dst_blocks_{kBlocks};
  std::unique_ptr<KvTransport> receiver_, sender_;
  v1::KvPoolDescriptor desc_;
};

TEST_F(StagedTransportTest, ManyChunksThroughTwoSlotsLandInTheReservedBlocks) {
  TestPool src(SmallLayout(), kBlocks, 1000.0f);
  KvTransferSpec spec{"t-many", Scattered(src_blocks_, 7), Scattered(dst_blocks_, 7), absl::Now() + absl::Seconds(20)};
  auto t = sender_->StartTransfer(src, kPrefill, desc_, spec);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->transport(), "ucx_staged");
  for (int l = 0; l < SmallLayout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok()) << l;
  absl::Status s = (*t)->Finish();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ((*t)->bytes_sent(), 7 * 2 * SmallLayout().num_layers * SmallLayout().block_bytes());
  ExpectLanded(src, spec);
  EXPECT_TRUE(src_blocks_.Release(spec.src_blocks).ok());
  EXPECT_TRUE(dst_blocks_.Release(spec.dst_blocks).ok());
}

TEST_F(StagedTransportTest, InterleavedTransfersShareTheSlots) {
  // As in a prefill batch: layer l of every transfer, then layer l + 1.
  TestPool src(SmallLayout(), kBlocks, 2000.0f);
  KvTransferSpec a{"t-a", Scattered(src_blocks_, 4), Scattered(dst_blocks_, 4), absl::Now() + absl::Seconds(20)};
  KvTransferSpec b{"t-b", Scattered(src_blocks_, 5), Scattered(dst_blocks_, 5), absl::Now() + absl::Seconds(20)};
  auto ta = sender_->StartTransfer(src, kPrefill, desc_, a);
  auto tb = sender_->StartTransfer(src, kPrefill, desc_, b);
  ASSERT_TRUE(ta.ok() && tb.ok()) << ta.status() << " " << tb.status();
  for (int l = 0; l < SmallLayout().num_layers; ++l) {
    ASSERT_TRUE((*ta)->SendLayer(l).ok());
    ASSERT_TRUE((*tb)->SendLayer(l).ok());
  }
  absl::Status sb = (*tb)->Finish(), sa = (*ta)->Finish();
  ASSERT_TRUE(sa.ok()) << sa;
  ASSERT_TRUE(sb.ok()) << sb;
  ExpectLanded(src, a);
  ExpectLanded(src, b);
  for (const KvTransferSpec* s : {&a, &b}) {
    EXPECT_TRUE(src_blocks_.Release(s->src_blocks).ok());
    EXPECT_TRUE(dst_blocks_.Release(s->dst_blocks).ok());
  }
}

TEST_F(StagedTransportTest, ADecodeSideRefusalFailsTheTransferAndTheNextOneWorks) {
  TestPool src(SmallLayout(), kBlocks, 3000.0f);
  // A descriptor claiming more blocks than the decode pool has: the
  // sender's range check passes, the receiver's own check refuses.
  v1::KvPoolDescriptor lying = desc_;
  lying.set_num_blocks(100);
  auto src_blocks = src_blocks_.Allocate(2);
  ASSERT_TRUE(src_blocks.ok());
  const absl::Time start = absl::Now();
  auto t = sender_->StartTransfer(src, kPrefill, lying, {"t-bad", *src_blocks, {60, 61}, absl::Now() + absl::Seconds(20)});
  ASSERT_TRUE(t.ok()) << t.status();
  absl::Status s;
  for (int l = 0; l < SmallLayout().num_layers && s.ok(); ++l) s = (*t)->SendLayer(l);
  if (s.ok()) s = (*t)->Finish();
  EXPECT_FALSE(s.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << s;
  t->reset();

  auto dst_blocks = dst_blocks_.Allocate(2);
  ASSERT_TRUE(dst_blocks.ok());
  KvTransferSpec good{"t-good", *src_blocks, *dst_blocks, absl::Now() + absl::Seconds(20)};
  auto t2 = sender_->StartTransfer(src, kPrefill, desc_, good);
  ASSERT_TRUE(t2.ok()) << t2.status();
  for (int l = 0; l < SmallLayout().num_layers; ++l) ASSERT_TRUE((*t2)->SendLayer(l).ok());
  absl::Status s2 = (*t2)->Finish();
  ASSERT_TRUE(s2.ok()) << s2;
  ExpectLanded(src, good);
  EXPECT_TRUE(src_blocks_.Release(*src_blocks).ok());
  EXPECT_TRUE(dst_blocks_.Release(*dst_blocks).ok());
}

// The layer-wise overlap: a transfer moves while the prefill worker
// computes, between SendLayer calls and before Finish, because the sender's
// progress thread posts the chunks whose copies are done and drives their
// rendezvous. Without it the last chunks would wait for Finish (over TCP
// the rendezvous needs the sender's progress to move the data at all).
TEST_F(StagedTransportTest, ChunksLandBeforeFinishIsCalled) {
  TestPool src(SmallLayout(), kBlocks, 4000.0f);
  KvTransferSpec spec{"t-overlap", Scattered(src_blocks_, 7), Scattered(dst_blocks_, 7),
                      absl::Now() + absl::Seconds(20)};
  auto t = sender_->StartTransfer(src, kPrefill, desc_, spec);
  ASSERT_TRUE(t.ok()) << t.status();
  for (int l = 0; l < SmallLayout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok()) << l;
  // The forward pass would compute here; nothing calls into the transport.
  const absl::Time until = absl::Now() + absl::Seconds(5);
  bool landed = Landed(src, spec);
  while (!landed && absl::Now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    landed = Landed(src, spec);
  }
  EXPECT_TRUE(landed) << "the KV did not reach the decode pool within 5 s of the last SendLayer without Finish";
  absl::Status s = (*t)->Finish();
  ASSERT_TRUE(s.ok()) << s;
  ExpectLanded(src, spec);
  EXPECT_TRUE(src_blocks_.Release(spec.src_blocks).ok());
  EXPECT_TRUE(dst_blocks_.Release(spec.dst_blocks).ok());
}

// The prefill side torn down right after the last SendLayer, its progress
// thread busy with the chunks: the transfer's destructor lets them go out
// (no Finish was called) and the transport's joins the thread first.
TEST_F(StagedTransportTest, TheSenderShutsDownWithChunksInFlight) {
  TestPool src(SmallLayout(), kBlocks, 6000.0f);
  KvTransferSpec spec{"t-drop", Scattered(src_blocks_, 7), Scattered(dst_blocks_, 7), absl::Now() + absl::Seconds(20)};
  const absl::Time start = absl::Now();
  auto t = sender_->StartTransfer(src, kPrefill, desc_, spec);
  ASSERT_TRUE(t.ok()) << t.status();
  for (int l = 0; l < SmallLayout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok()) << l;
  t->reset();
  sender_.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_TRUE(src_blocks_.Release(spec.src_blocks).ok());
  EXPECT_TRUE(dst_blocks_.Release(spec.dst_blocks).ok());
}

// The decode side stopping (its transport destroyed) while chunks are on
// their way: the receiver finishes or fails what it started receiving
// before its UCX worker goes, and the sender's transfer fails, not hangs.
TEST_F(StagedTransportTest, TheReceiverShutsDownWithChunksInFlight) {
  TestPool src(SmallLayout(), kBlocks, 7000.0f);
  KvTransferSpec spec{"t-gone", Scattered(src_blocks_, 7), Scattered(dst_blocks_, 7), absl::Now() + absl::Seconds(5)};
  auto t = sender_->StartTransfer(src, kPrefill, desc_, spec);
  ASSERT_TRUE(t.ok()) << t.status();
  for (int l = 0; l < SmallLayout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok()) << l;
  receiver_.reset();
  const absl::Time start = absl::Now();
  EXPECT_FALSE((*t)->Finish().ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
  t->reset();
  sender_.reset();
  EXPECT_TRUE(src_blocks_.Release(spec.src_blocks).ok());
  EXPECT_TRUE(dst_blocks_.Release(spec.dst_blocks).ok());
}

TEST_F(StagedTransportTest, BlocksLargerThanTheSlotsAreRefusedUpFront) {
  auto big = MakeUcxStagedTransport({16, 1});  // raised to one block by the receiver, not the descriptor below
  ASSERT_TRUE(big.ok()) << big.status();
  v1::KvPoolDescriptor small = desc_;
  small.set_remote_key(EncodeStagedPoolInfo({64, 2}));  // a peer with 64-byte slots
  TestPool src(SmallLayout(), kBlocks, 0.0f);
  auto t = (*big)->StartTransfer(src, kPrefill, small, {"t", {0}, {1}, absl::Now() + absl::Seconds(5)});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition) << t.status();
}

}  // namespace
}  // namespace tandem
