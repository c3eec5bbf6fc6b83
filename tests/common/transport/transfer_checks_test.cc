// Forged transfer descriptors are refused before any copy: destination
// blocks out of range, named twice, or whose address range wraps, and a
// transfer past its deadline. Through the real host transports too, with
// every destination byte checked untouched afterwards.
#include "common/transport/transfer_checks.h"

#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/transport/kv_transport.h"
#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1", "cpu, fp32 activations"};
const KvEndpointInfo kDecode{"decode-b", "model-1", "cpu, fp32 activations"};

v1::KvPoolDescriptor Descriptor(int32_t blocks, uint64_t base, uint64_t stride) {
  v1::KvPoolDescriptor d;
  d.set_worker_id("decode-b");
  d.set_num_blocks(blocks);
  d.set_block_stride(stride);
  d.add_key_base(base);
  d.add_value_base(base + static_cast<uint64_t>(blocks) * stride);
  return d;
}

TEST(TransferChecksTest, DestinationBlocksMustBeInRangeOnceAndNotWrap) {
  const v1::KvPoolDescriptor d = Descriptor(8, 4096, 256);
  EXPECT_TRUE(CheckDestinationBlocks(d, std::vector<int32_t>{0, 7, 3}).ok());
  for (std::vector<int32_t> bad : {std::vector<int32_t>{8}, std::vector<int32_t>{-1},
                                   std::vector<int32_t>{std::numeric_limits<int32_t>::max()}}) {
    absl::Status s = CheckDestinationBlocks(d, bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad[0];
    EXPECT_NE(s.message().find("outside the pool"), std::string::npos) << s;
  }
  absl::Status twice = CheckDestinationBlocks(d, std::vector<int32_t>{2, 5, 2});
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(twice.message().find("twice"), std::string::npos) << twice;
  // A base near the top of the address space: block 3's end wraps.
  const v1::KvPoolDescriptor high = Descriptor(8, std::numeric_limits<uint64_t>::max() - 1000, 256);
  EXPECT_TRUE(CheckDestinationBlocks(high, std::vector<int32_t>{}).ok());
  absl::Status wraps = CheckDestinationBlocks(high, std::vector<int32_t>{3});
  EXPECT_EQ(wraps.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wraps.message().find("overflows"), std::string::npos) << wraps;
  // A forged stride so large that (block + 1) * stride alone overflows.
  absl::Status huge = CheckDestinationBlocks(Descriptor(8, 0, uint64_t{1} << 62), std::vector<int32_t>{5});
  EXPECT_EQ(huge.code(), absl::StatusCode::kInvalidArgument) << huge;
}

// Finish waits until the earlier of the deadline and the finish timeout;
// only a timeout that comes first makes the failure the peer's.
TEST(TransferChecksTest, FinishWaitsUntilTheEarlierOfDeadlineAndFinishTimeout) {
  const absl::Time now = absl::Now();
  KvTransferSpec spec;
  spec.transfer_id = "t";
  bool by_timeout = true;
  EXPECT_EQ(FinishDeadline(spec, now, &by_timeout), absl::InfiniteFuture());
  EXPECT_FALSE(by_timeout);
  spec.finish_timeout = absl::Seconds(3);
  EXPECT_EQ(FinishDeadline(spec, now, &by_timeout), now + absl::Seconds(3));
  EXPECT_TRUE(by_timeout);
  spec.deadline = now + absl::Seconds(1);
  EXPECT_EQ(FinishDeadline(spec, now, &by_timeout), now + absl::Seconds(1));
  EXPECT_FALSE(by_timeout);
  const absl::Status timed_out = FinishTimedOut(spec);
  EXPECT_EQ(timed_out.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(timed_out.message().find("3s"), absl::string_view::npos) << timed_out;
}

TEST(TransferChecksTest, ATransferPastItsDeadlineIsRefused) {
  KvTransferSpec spec;
  spec.transfer_id = "t1";
  const absl::Time now = absl::Now();
  spec.deadline = now + absl::Milliseconds(1);
  EXPECT_TRUE(CheckTransferDeadline(spec, now).ok());
  EXPECT_EQ(CheckTransferDeadline(spec, now + absl::Milliseconds(2)).code(), absl::StatusCode::kDeadlineExceeded);
  spec.deadline = absl::InfiniteFuture();
  EXPECT_TRUE(CheckTransferDeadline(spec, now + absl::Hours(1000)).ok());
}

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

class ForgedDescriptorTest : public ::testing::TestWithParam<std::string> {};

// Out of range, named twice, a descriptor whose stride was forged so that a
// block's range wraps: each StartTransfer is refused with INVALID_ARGUMENT
// and not one destination byte changes.
TEST_P(ForgedDescriptorTest, IsRefusedBeforeAnyCopy) {
  TestPool dst(SmallLayout(), 6, -7.0f);
  TestPool src(SmallLayout(), 6, 42.0f);
  auto decode = CreateKvTransport(GetParam());
  auto prefill = CreateKvTransport(GetParam());
  ASSERT_TRUE(decode.ok() && prefill.ok());
  auto desc = (*decode)->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok()) << desc.status();
  const std::vector<std::string> before = Snapshot(dst);

  struct Forgery {
    std::string name;
    std::vector<int32_t> dst_blocks;
    std::function<void(v1::KvPoolDescriptor&)> forge;
  };
  const std::vector<Forgery> forgeries = {
      {"out of range", {0, 6}, [](v1::KvPoolDescriptor&) {}},
      {"negative", {-1, 1}, [](v1::KvPoolDescriptor&) {}},
      {"twice", {2, 2}, [](v1::KvPoolDescriptor&) {}},
      {"wrapping base", {1, 2},
       [](v1::KvPoolDescriptor& d) { d.set_key_base(0, std::numeric_limits<uint64_t>::max() - 16); }},
  };
  for (const Forgery& f : forgeries) {
    v1::KvPoolDescriptor forged = *desc;
    f.forge(forged);
    KvTransferSpec spec;
    spec.transfer_id = "forged-" + f.name;
    spec.src_blocks = {0, 1};
    spec.dst_blocks = f.dst_blocks;
    auto t = (*prefill)->StartTransfer(src, kPrefill, forged, spec);
    if (t.ok()) {
      // Never reached for a forgery; if it were, the copies must fail.
      EXPECT_FALSE((*t)->SendLayer(0).ok() && (*t)->Finish().ok()) << f.name;
      ADD_FAILURE() << f.name << " was accepted by StartTransfer";
      continue;
    }
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << f.name << ": " << t.status();
  }
  EXPECT_EQ(Snapshot(dst), before) << "a refused transfer wrote into the destination";
}

INSTANTIATE_TEST_SUITE_P(HostTransports, ForgedDescriptorTest, ::testing::Values("inproc", "ucx"));

}  // namespace
}  // namespace tandem
