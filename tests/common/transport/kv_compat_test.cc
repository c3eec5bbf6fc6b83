// The layout handshake (every field compared, named with both values and
// the peer), descriptor sanity checks, and the UCX remote-key list format.
#include <functional>
#include <string>

#include "common/transport/kv_transport.h"
#include "common/transport/ucx_remote_keys.h"
#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

// What a decode worker with `layout` and 6 blocks would publish.
v1::KvPoolDescriptor DescriptorFor(const KvLayout& layout, const std::string& fingerprint) {
  v1::KvPoolDescriptor d;
  d.set_worker_id("localhost:5001");
  d.set_model_fingerprint(fingerprint);
  *d.mutable_layout() = ToProto(layout);
  d.set_num_blocks(6);
  for (int l = 0; l < layout.num_layers; ++l) {
    d.add_key_base(0x10000 + l * 0x1000);
    d.add_value_base(0x80000 + l * 0x1000);
  }
  d.set_block_stride(layout.block_bytes());
  return d;
}

TEST(KvCompatTest, ToProtoSpellsEveryField) {
  KvLayout l = SmallLayout();
  v1::KvLayoutSpec s = ToProto(l);
  EXPECT_EQ(s.num_layers(), 3);
  EXPECT_EQ(s.num_kv_heads(), 2);
  EXPECT_EQ(s.head_dim(), 8);
  EXPECT_EQ(s.block_size(), 4);
  EXPECT_EQ(s.dtype(), "float32");
  l.dtype = DType::kBF16;
  EXPECT_EQ(ToProto(l).dtype(), "bfloat16");
  l.dtype = DType::kF16;
  EXPECT_EQ(ToProto(l).dtype(), "float16");
}

TEST(KvCompatTest, IdenticalLayoutsAreCompatible) {
  EXPECT_TRUE(CheckKvCompatible({"p0", "fp"}, SmallLayout(), DescriptorFor(SmallLayout(), "fp")).ok());
}

TEST(KvCompatTest, EachDifferingFieldIsNamedWithBothValues) {
  struct Case {
    std::string expected;  // a substring of the message
    std::function<void(KvLayout&)> change_remote;
    std::string remote_fingerprint = "fp";
  } cases[] = {
      {"model_fingerprint is fp here but other there", [](KvLayout&) {}, "other"},
      {"num_layers is 3 here but 4 there", [](KvLayout& l) { l.num_layers = 4; }},
      {"num_kv_heads is 2 here but 1 there", [](KvLayout& l) { l.num_kv_heads = 1; }},
      {"head_dim is 8 here but 16 there", [](KvLayout& l) { l.head_dim = 16; }},
      {"block_size is 4 here but 32 there", [](KvLayout& l) { l.block_size = 32; }},
      {"dtype is float32 here but bfloat16 there", [](KvLayout& l) { l.dtype = DType::kBF16; }},
  };
  for (const Case& c : cases) {
    KvLayout remote = SmallLayout();
    c.change_remote(remote);
    absl::Status s = CheckKvCompatible({"p0", "fp"}, SmallLayout(), DescriptorFor(remote, c.remote_fingerprint));
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << c.expected;
    EXPECT_NE(s.message().find(c.expected), std::string::npos) << s;
    EXPECT_NE(s.message().find("decode worker localhost:5001"), std::string::npos) << s;
  }
}

TEST(KvCompatTest, InconsistentDescriptorsAreRefused) {
  v1::KvPoolDescriptor missing_base = DescriptorFor(SmallLayout(), "fp");
  missing_base.mutable_value_base()->RemoveLast();
  absl::Status s = CheckKvCompatible({"p0", "fp"}, SmallLayout(), missing_base);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("value"), std::string::npos) << s;

  v1::KvPoolDescriptor bad_stride = DescriptorFor(SmallLayout(), "fp");
  bad_stride.set_block_stride(bad_stride.block_stride() + 4);
  s = CheckKvCompatible({"p0", "fp"}, SmallLayout(), bad_stride);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("block_stride"), std::string::npos) << s;
}

TEST(KvCompatTest, DestinationBlocksMustBeInThePool) {
  const v1::KvPoolDescriptor d = DescriptorFor(SmallLayout(), "fp");
  EXPECT_TRUE(CheckBlocksInRange(d, {0, 5, 2}).ok());
  EXPECT_EQ(CheckBlocksInRange(d, {0, 6}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckBlocksInRange(d, {-1}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(UcxRemoteKeysTest, RegionsRoundTrip) {
  std::vector<UcxRemoteRegion> regions = {{0x1000, 4096, "key-a"}, {0xffffffff0000ull, 1, std::string("\0b\xff", 3)}};
  auto decoded = DecodeUcxRemoteRegions(EncodeUcxRemoteRegions(regions), "d0");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, regions);
}

TEST(UcxRemoteKeysTest, MalformedListsAreRefused) {
  const std::string good = EncodeUcxRemoteRegions({{0x1000, 4096, "key-a"}});
  for (size_t cut = 0; cut < good.size(); ++cut) {
    auto r = DecodeUcxRemoteRegions(good.substr(0, cut), "d0");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << "cut at " << cut;
  }
  auto trailing = DecodeUcxRemoteRegions(good + "x", "d0");
  EXPECT_EQ(trailing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(trailing.status().message().find("d0"), std::string::npos);
  EXPECT_FALSE(DecodeUcxRemoteRegions(EncodeUcxRemoteRegions({}), "d0").ok());
}

TEST(UcxRemoteKeysTest, AdjacentRangesMergeAndGapsStay) {
  EXPECT_EQ(MergeAddressRanges({{300, 100}, {100, 100}, {200, 100}}), (std::vector<AddressRange>{{100, 300}}));
  EXPECT_EQ(MergeAddressRanges({{100, 50}, {200, 50}}), (std::vector<AddressRange>{{100, 50}, {200, 50}}));
  EXPECT_EQ(MergeAddressRanges({{100, 100}, {150, 10}, {190, 30}}), (std::vector<AddressRange>{{100, 120}}));
}

}  // namespace
}  // namespace tandem
