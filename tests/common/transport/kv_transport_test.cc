// Every host-memory transport (in-process, UCX puts, staged UCX, and auto,
// which picks UCX puts for host pools), prefill and decode side in one process: blocks land
// exactly where the reservation says and nowhere else; the handshake
// refuses mismatches by name; failures are errors within a bounded time,
// never hangs. (ucx_two_process_test.cc runs UCX across real processes.)
#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/transport/kv_transport.h"
#include "common/transport/ucx_remote_keys.h"
#include "common/transport/ucx_staged_protocol.h"
#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1", "cpu, fp32 activations"};
const KvEndpointInfo kDecode{"decode-b", "model-1", "cpu, fp32 activations"};
constexpr float kSourceTag = 1000.0f;
constexpr float kDestTag = -500000.0f;

// The bytes of every block of `pool`, indexed [(layer * 2 + kv) * blocks + block].
std::vector<std::string> Snapshot(TestPool& pool) {
  std::vector<std::string> blocks;
  const size_t bytes = static_cast<size_t>(pool.layout().block_bytes());
  for (int l = 0; l < pool.layout().num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int32_t b = 0; b < pool.num_blocks(); ++b) {
        blocks.emplace_back(reinterpret_cast<const char*>(pool.At(l, kv, b)), bytes);
      }
    }
  }
  return blocks;
}

// Checks every block of `dst`: the ones named in `spec` hold the source's
// bytes, all others still hold what `before` recorded.
void ExpectBlocksCopied(TestPool& src, TestPool& dst, const std::vector<std::string>& before,
                        const KvTransferSpec& spec) {
  const size_t bytes = static_cast<size_t>(dst.layout().block_bytes());
  for (int l = 0; l < dst.layout().num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int32_t b = 0; b < dst.num_blocks(); ++b) {
        const auto it = std::find(spec.dst_blocks.begin(), spec.dst_blocks.end(), b);
        const void* want = it == spec.dst_blocks.end()
                               ? before[(l * 2 + kv) * dst.num_blocks() + b].data()
                               : static_cast<const void*>(src.At(l, kv, spec.src_blocks[it - spec.dst_blocks.begin()]));
        EXPECT_EQ(std::memcmp(dst.At(l, kv, b), want, bytes), 0) << "layer " << l << " kv " << kv << " block " << b;
      }
    }
  }
}

// A decode side: a transport that exported `pool` (which outlives it).
struct Destination {
  std::unique_ptr<TestPool> pool;
  std::unique_ptr<KvTransport> transport;
  v1::KvPoolDescriptor desc;
};

class TransportTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<KvTransport> Make() {
    auto t = CreateKvTransport(GetParam());
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }

  Destination Export(bool scattered = false) {
    Destination d;
    d.pool = std::make_unique<TestPool>(SmallLayout(), 6, kDestTag, scattered);
    d.transport = Make();
    auto desc = d.transport->ExportPool(*d.pool, kDecode);
    EXPECT_TRUE(desc.ok()) << desc.status();
    if (desc.ok()) d.desc = *desc;
    if (GetParam() == "ucx" || GetParam() == "auto") {
      // A scattered pool is registered as several regions, a contiguous one as one.
      auto regions = DecodeUcxRemoteRegions(d.desc.remote_key(), "decode-b");
      EXPECT_TRUE(regions.ok()) << regions.status();
      if (regions.ok()) {
        EXPECT_EQ(regions->size() > 1, scattered) << regions->size();
      }
    }
    if (GetParam() == "ucx_staged") {
      EXPECT_EQ(d.desc.transport(), "ucx_staged");
      EXPECT_TRUE(DecodeStagedPoolInfo(d.desc.remote_key(), "decode-b").ok());
    }
    return d;
  }

  // Moves `src_blocks` of a fresh source pool into `dst_blocks` of `to`,
  // then checks every block of the destination.
  void TransferAndCheck(KvTransport& sender, Destination& to, std::vector<int32_t> src_blocks,
                        std::vector<int32_t> dst_blocks, bool scattered = false) {
    TestPool src(SmallLayout(), 6, kSourceTag + static_cast<float>(src_blocks.size()), scattered);
    const std::vector<std::string> before = Snapshot(*to.pool);
    KvTransferSpec spec{"t1", std::move(src_blocks), std::move(dst_blocks), absl::Now() + absl::Seconds(10)};
    auto t = sender.StartTransfer(src, kPrefill, to.desc, spec);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->id(), "t1");
    EXPECT_EQ((*t)->transport(), GetParam() == "auto" ? "ucx" : GetParam());
    for (int l = 0; l < SmallLayout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok()) << "layer " << l;
    absl::Status finished = (*t)->Finish();
    ASSERT_TRUE(finished.ok()) << finished;
    EXPECT_EQ((*t)->bytes_sent(),
              static_cast<int64_t>(spec.src_blocks.size()) * SmallLayout().num_layers * 2 * SmallLayout().block_bytes());
    ExpectBlocksCopied(src, *to.pool, before, spec);
  }
};

TEST_P(TransportTest, BlocksLandInTheReservedBlocks) {
  auto sender = Make();
  Destination to = Export();
  TransferAndCheck(*sender, to, {3, 1, 4}, {0, 5, 2});
}

TEST_P(TransportTest, ScatteredPoolArraysAreReachable) {
  auto sender = Make();
  Destination to = Export(/*scattered=*/true);
  TransferAndCheck(*sender, to, {3, 1, 4}, {0, 5, 2}, /*scattered=*/true);
}

TEST_P(TransportTest, RunsOfConsecutiveBlocksArriveWhole) {
  // Runs {1,2,3}->{2,3,4} and {5}->{0} (puts may be merged per run).
  auto sender = Make();
  Destination to = Export();
  TransferAndCheck(*sender, to, {1, 2, 3, 5}, {2, 3, 4, 0});
}

TEST_P(TransportTest, ConnectionsAreReusedAndRebuiltAfterDisconnect) {
  auto sender = Make();
  Destination to = Export();
  TransferAndCheck(*sender, to, {0}, {1});
  TransferAndCheck(*sender, to, {2, 3}, {3, 0});  // the cached connection
  sender->Disconnect("decode-b");
  TransferAndCheck(*sender, to, {4, 5}, {5, 4});
  // A restarted decode worker: same id, new transport and pool.
  Destination restarted = Export();
  TransferAndCheck(*sender, restarted, {1}, {1});
}

TEST_P(TransportTest, HandshakeRefusesEachMismatchedFieldByName) {
  TestPool dst(SmallLayout(), 6, 0);  // first: a pool outlives the transport it is exported over
  auto sender = Make(), receiver = Make();
  auto desc = receiver->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok()) << desc.status();
  struct Case {
    std::string field;
    std::function<void(KvLayout&, KvEndpointInfo&)> change;
  } cases[] = {
      {"model_fingerprint", [](KvLayout&, KvEndpointInfo& e) { e.model_fingerprint = "model-2"; }},
      {"engine numerics", [](KvLayout&, KvEndpointInfo& e) { e.numerics = "cpu, bf16 activations"; }},
      {"num_layers", [](KvLayout& l, KvEndpointInfo&) { l.num_layers = 2; }},
      {"num_kv_heads", [](KvLayout& l, KvEndpointInfo&) { l.num_kv_heads = 1; }},
      {"head_dim", [](KvLayout& l, KvEndpointInfo&) { l.head_dim = 16; }},
      {"block_size", [](KvLayout& l, KvEndpointInfo&) { l.block_size = 8; }},
      {"dtype", [](KvLayout& l, KvEndpointInfo&) { l.dtype = DType::kBF16; }},
  };
  for (const Case& c : cases) {
    KvLayout layout = SmallLayout();
    KvEndpointInfo self = kPrefill;
    c.change(layout, self);
    TestPool src(layout, 6, 0);
    auto t = sender->StartTransfer(src, self, *desc, {"t", {0}, {1}, absl::Now() + absl::Seconds(5)});
    ASSERT_FALSE(t.ok()) << c.field;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition) << t.status();
    EXPECT_NE(t.status().message().find(c.field), std::string::npos) << t.status();
    EXPECT_NE(t.status().message().find("decode-b"), std::string::npos) << t.status();
  }
  // The refusals left nothing behind: a matching transfer still works.
  TestPool src(SmallLayout(), 6, kSourceTag);
  auto t = sender->StartTransfer(src, kPrefill, *desc, {"ok", {0}, {1}, absl::Now() + absl::Seconds(10)});
  ASSERT_TRUE(t.ok()) << t.status();
  for (int l = 0; l < 3; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok());
  EXPECT_TRUE((*t)->Finish().ok());
  EXPECT_EQ(std::memcmp(dst.At(2, 1, 1), src.At(2, 1, 0), SmallLayout().block_bytes()), 0);
}

TEST_P(TransportTest, BadBlockListsAreInvalidArguments) {
  TestPool src(SmallLayout(), 6, 0), dst(SmallLayout(), 6, 0);  // first: pools outlive the transports
  auto sender = Make(), receiver = Make();
  auto desc = receiver->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok()) << desc.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  EXPECT_EQ(sender->StartTransfer(src, kPrefill, *desc, {"t", {0}, {6}, deadline}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sender->StartTransfer(src, kPrefill, *desc, {"t", {0}, {-1}, deadline}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sender->StartTransfer(src, kPrefill, *desc, {"t", {9}, {1}, deadline}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sender->StartTransfer(src, kPrefill, *desc, {"t", {0, 1}, {1}, deadline}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(TransportTest, APassedDeadlineIsDeadlineExceeded) {
  // The pools first: a receiver's thread may still touch its pool (a late
  // chunk) until the transport is destroyed.
  TestPool src(SmallLayout(), 6, 0), dst(SmallLayout(), 6, kDestTag);
  auto sender = Make(), receiver = Make();
  auto desc = receiver->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok()) << desc.status();
  auto t = sender->StartTransfer(src, kPrefill, *desc, {"late", {0, 1}, {2, 3}, absl::Now() - absl::Seconds(1)});
  ASSERT_TRUE(t.ok()) << t.status();
  for (int l = 0; l < 3; ++l) (*t)->SendLayer(l).IgnoreError();
  absl::Status s = (*t)->Finish();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("late"), std::string::npos) << s;
}

TEST_P(TransportTest, AGonePeerIsAnErrorNotAHang) {
  TestPool src(SmallLayout(), 6, 0), dst(SmallLayout(), 6, 0);  // first: pools outlive the transports
  auto sender = Make();
  v1::KvPoolDescriptor desc;
  {
    auto receiver = Make();
    auto d = receiver->ExportPool(dst, kDecode);
    ASSERT_TRUE(d.ok()) << d.status();
    desc = *d;
  }
  const absl::Time start = absl::Now();
  auto t = sender->StartTransfer(src, kPrefill, desc, {"t", {0}, {1}, absl::Now() + absl::Seconds(60)});
  absl::Status s = t.status();
  if (t.ok()) {
    for (int l = 0; l < 3 && s.ok(); ++l) s = (*t)->SendLayer(l);
    if (s.ok()) s = (*t)->Finish();
  }
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << s;
}

INSTANTIATE_TEST_SUITE_P(Transports, TransportTest, ::testing::Values("inproc", "ucx", "ucx_staged", "auto"),
                         [](const auto& info) { return info.param; });

TEST(TransportFactoryTest, KnownNamesAndRefusals) {
  for (const char* name : {"inproc", "ucx"}) {
    auto t = CreateKvTransport(name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->name(), name);
  }
  auto t = CreateKvTransport("carrier-pigeon");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("ucx"), std::string::npos);
  EXPECT_NE(t.status().message().find("inproc"), std::string::npos);
}

TEST(TransportMismatchTest, ADescriptorOfAnotherTransportIsRefused) {
  TestPool src(SmallLayout(), 6, 0), dst(SmallLayout(), 6, 0);  // first: pools outlive the transports
  auto inproc = *CreateKvTransport("inproc");
  auto ucx = *CreateKvTransport("ucx");
  auto desc = inproc->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok());
  auto t = ucx->StartTransfer(src, kPrefill, *desc, {"t", {0}, {1}, absl::InfiniteFuture()});
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(t.status().message().find("inproc"), std::string::npos) << t.status();
}

}  // namespace
}  // namespace tandem
