// The checks every transport shares (transfer_checks.h). Forged transfer
// descriptors are refused before any copy: destination blocks out of
// range, named twice, or whose address range wraps, and a transfer past
// its deadline; source blocks outside the local pool or not one per
// destination; layers out of range, and SendLayer once the transfer is
// decided. A Finish that runs out blames the bound that came first. Through
// the real host transports too, with every destination byte checked
// untouched afterwards.
#include "common/transport/transfer_checks.h"

#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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

TEST(TransferChecksTest, SourceBlocksMustBeInTheLocalPoolAndMatchTheDestinations) {
  KvTransferSpec spec;
  spec.transfer_id = "t2";
  spec.src_blocks = {0, 3, 3};  // a source named twice is only read twice
  spec.dst_blocks = {1, 2, 4};
  EXPECT_TRUE(CheckSourceBlocks(spec, 4).ok());
  absl::Status outside = CheckSourceBlocks(spec, 3);
  EXPECT_EQ(outside.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(outside.message().find("source block 3 is outside the local pool (3 blocks)"), std::string::npos)
      << outside;
  spec.src_blocks = {0, -1, 2};
  EXPECT_EQ(CheckSourceBlocks(spec, 4).code(), absl::StatusCode::kInvalidArgument);
  spec.src_blocks = {0, 1};
  absl::Status lengths = CheckSourceBlocks(spec, 4);
  EXPECT_EQ(lengths.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(lengths.message().find("2 source blocks but 3 destinations"), std::string::npos) << lengths;
}

TEST(TransferChecksTest, AnEmptyPoolIsNotExported) {
  TestPool fine(SmallLayout(), 2, 0.0f);
  EXPECT_TRUE(CheckExportablePool(fine, "ucx").ok());
  TestPool no_blocks(SmallLayout(), 0, 0.0f);
  absl::Status s = CheckExportablePool(no_blocks, "ucx_staged");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cannot export an empty KV pool over ucx_staged"), std::string::npos) << s;
  KvLayout no_layers = SmallLayout();
  no_layers.num_layers = 0;
  TestPool layerless(no_layers, 2, 0.0f);
  EXPECT_EQ(CheckExportablePool(layerless, "nccl").code(), absl::StatusCode::kInvalidArgument);
  KvLayout no_bytes = SmallLayout();
  no_bytes.head_dim = 0;
  TestPool byteless(no_bytes, 2, 0.0f);
  EXPECT_EQ(CheckExportablePool(byteless, "cuda_ipc").code(), absl::StatusCode::kInvalidArgument);
}

TEST(TransferChecksTest, ADescriptorOfAnotherTransportIsRefused) {
  v1::KvPoolDescriptor d = Descriptor(8, 4096, 256);
  d.set_transport("ucx_staged");
  EXPECT_TRUE(CheckDescriptorTransport(d, "ucx_staged").ok());
  absl::Status other = CheckDescriptorTransport(d, "nccl");
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(other.message(), "decode worker decode-b exported its KV pool over 'ucx_staged', not nccl");
}

TEST(TransferChecksTest, LayersOutsideThePoolAreRefused) {
  EXPECT_TRUE(CheckLayer("KV transfer t", 0, 2).ok());
  EXPECT_TRUE(CheckLayer("KV transfer t", 1, 2).ok());
  for (int layer : {-1, 2, 1000}) {
    absl::Status s = CheckLayer("KV transfer t", layer, 2);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << layer;
    EXPECT_EQ(s.message(), absl::StrCat("KV transfer t: layer ", layer, " out of range"));
  }
}

// SendLayer writes only while the transfer is undecided: after a failure
// it repeats the failure, after a successful Finish it is a caller's error.
TEST(TransferChecksTest, SendingEndsWithTheTransfersOutcome) {
  std::optional<absl::Status> outcome;
  EXPECT_TRUE(CheckStillSending("KV transfer t", outcome).ok());
  outcome = absl::UnavailableError("peer gone");
  EXPECT_EQ(CheckStillSending("KV transfer t", outcome), absl::UnavailableError("peer gone"));
  outcome = absl::OkStatus();
  absl::Status after = CheckStillSending("KV transfer t", outcome);
  EXPECT_EQ(after.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(after.message().find("SendLayer after Finish"), std::string::npos) << after;
}

// What a Finish reports when its wait runs out: the peer's failure
// (UNAVAILABLE) when the finish timeout was the bound, the request's
// (DEADLINE_EXCEEDED, naming the transfer as the transport describes it)
// when the deadline was.
TEST(TransferChecksTest, AnExpiredFinishBlamesWhicheverBoundCameFirst) {
  const absl::Time now = absl::Now();
  KvTransferSpec spec;
  spec.transfer_id = "t3";
  spec.deadline = now + absl::Seconds(10);
  spec.finish_timeout = absl::Milliseconds(500);
  bool by_timeout = false;
  FinishDeadline(spec, now, &by_timeout);
  ASSERT_TRUE(by_timeout);
  const absl::Status peer = FinishExpired(spec, by_timeout, "KV transfer t3 to decode worker d (NCCL)");
  EXPECT_EQ(peer.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(peer, FinishTimedOut(spec));
  spec.finish_timeout = absl::Seconds(30);
  FinishDeadline(spec, now, &by_timeout);
  ASSERT_FALSE(by_timeout);
  const absl::Status late = FinishExpired(spec, by_timeout, "KV transfer t3 to decode worker d (NCCL)");
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(late.message(), "KV transfer t3 to decode worker d (NCCL) missed its deadline");
  EXPECT_FALSE(PastDeadline(spec, now + absl::Seconds(10)));
  EXPECT_TRUE(PastDeadline(spec, now + absl::Seconds(11)));
  EXPECT_EQ(CheckTransferDeadline(spec, now + absl::Seconds(11)), MissedDeadline("KV transfer t3"));
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
