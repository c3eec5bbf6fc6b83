// The CUDA IPC export record and the checks the prefill side makes before
// touching a GPU: same host, arrays inside the exported allocation. Also
// the host id itself.
#include "common/transport/cuda_ipc_descriptor.h"

#include <cstdlib>

#include "common/transport/host_id.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

CudaIpcExport SampleExport() {
  CudaIpcExport e;
  e.handle = std::string(kCudaIpcHandleBytes, '\x5a');
  e.handle[0] = '\0';  // binary-safe
  e.base = 0x7f0000000000;
  e.size = 4 << 20;
  e.pci_bus_id = "0000:19:00.0";
  e.pid = 4242;
  return e;
}

// A descriptor of 2 layers, 8 blocks of 1 KiB, K/V arrays back to back
// from the allocation base (the CudaKvPool layout, trash block included).
v1::KvPoolDescriptor SampleDescriptor(const CudaIpcExport& e) {
  v1::KvPoolDescriptor d;
  d.set_worker_id("decode-0");
  d.set_transport("cuda_ipc");
  d.set_endpoint("boot-a/host-a");
  d.set_num_blocks(8);
  d.set_block_stride(1024);
  for (int l = 0; l < 2; ++l) {
    d.add_key_base(e.base + (2 * l) * 9 * 1024);
    d.add_value_base(e.base + (2 * l + 1) * 9 * 1024);
  }
  return d;
}

TEST(CudaIpcDescriptorTest, RoundTrips) {
  const CudaIpcExport e = SampleExport();
  absl::StatusOr<CudaIpcExport> back = DecodeCudaIpcExport(EncodeCudaIpcExport(e), "decode-0");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, e);
}

TEST(CudaIpcDescriptorTest, MalformedRecordsAreRefusedByName) {
  const std::string good = EncodeCudaIpcExport(SampleExport());
  for (const std::string& bad : {std::string(), good.substr(0, good.size() - 1), good + "x", std::string("TPI1") + good.substr(4, 3)}) {
    absl::StatusOr<CudaIpcExport> e = DecodeCudaIpcExport(bad, "decode-0");
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(e.status().message().find("decode-0"), std::string::npos) << e.status();
  }
  CudaIpcExport short_handle = SampleExport();
  short_handle.handle.resize(10);
  EXPECT_FALSE(DecodeCudaIpcExport(EncodeCudaIpcExport(short_handle), "d").ok());
  CudaIpcExport empty = SampleExport();
  empty.size = 0;
  EXPECT_FALSE(DecodeCudaIpcExport(EncodeCudaIpcExport(empty), "d").ok());
}

TEST(CudaIpcDescriptorTest, CompletionRecordsRoundTripAndMalformedOnesAreRefused) {
  CudaIpcCompletion c;
  c.event_handle = std::string(kCudaIpcHandleBytes, '\x33');
  c.event_handle[7] = '\0';
  c.pid = 77;
  const std::string good = EncodeCudaIpcCompletion(c);
  absl::StatusOr<CudaIpcCompletion> back = DecodeCudaIpcCompletion(good, "t1");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, c);
  // An export record is not a completion record, nor the reverse.
  EXPECT_FALSE(DecodeCudaIpcCompletion(EncodeCudaIpcExport(SampleExport()), "t1").ok());
  EXPECT_FALSE(DecodeCudaIpcExport(good, "d").ok());
  for (const std::string& bad : {std::string(), good.substr(0, good.size() - 1), good + "x"}) {
    absl::StatusOr<CudaIpcCompletion> r = DecodeCudaIpcCompletion(bad, "t1");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("t1"), std::string::npos) << r.status();
  }
  CudaIpcCompletion short_handle = c;
  short_handle.event_handle.resize(63);
  EXPECT_FALSE(DecodeCudaIpcCompletion(EncodeCudaIpcCompletion(short_handle), "t1").ok());
}

TEST(CudaIpcDescriptorTest, ADescriptorFromAnotherHostIsRefused) {
  const v1::KvPoolDescriptor d = SampleDescriptor(SampleExport());
  EXPECT_TRUE(CheckSameHost(d, "boot-a/host-a").ok());
  absl::Status s = CheckSameHost(d, "boot-b/host-b");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("another host"), std::string::npos) << s;
  EXPECT_NE(s.message().find("decode-0"), std::string::npos) << s;
  // Same boot, different container host name: not the same host either.
  EXPECT_FALSE(CheckSameHost(d, "boot-a/host-b").ok());
}

TEST(CudaIpcDescriptorTest, OffsetsAreFromTheAllocationBase) {
  const CudaIpcExport e = SampleExport();
  absl::StatusOr<CudaIpcOffsets> o = ComputeCudaIpcOffsets(SampleDescriptor(e), e);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->key, (std::vector<uint64_t>{0, 2 * 9 * 1024}));
  EXPECT_EQ(o->value, (std::vector<uint64_t>{9 * 1024, 3 * 9 * 1024}));
}

TEST(CudaIpcDescriptorTest, ArraysOutsideTheAllocationAreRefused) {
  const CudaIpcExport e = SampleExport();
  v1::KvPoolDescriptor below = SampleDescriptor(e);
  below.set_key_base(0, e.base - 1024);
  v1::KvPoolDescriptor past_end = SampleDescriptor(e);
  past_end.set_value_base(1, e.base + e.size - 1024);  // 8 blocks do not fit
  v1::KvPoolDescriptor far = SampleDescriptor(e);
  far.set_key_base(1, ~0ull - 10);
  v1::KvPoolDescriptor uneven = SampleDescriptor(e);
  uneven.add_key_base(e.base);
  for (const v1::KvPoolDescriptor& d : {below, past_end, far, uneven}) {
    absl::StatusOr<CudaIpcOffsets> o = ComputeCudaIpcOffsets(d, e);
    ASSERT_FALSE(o.ok());
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument) << o.status();
  }
}

TEST(HostIdTest, BootIdAndHostNameOrTheOverride) {
  unsetenv("TANDEM_HOST_ID");
  absl::StatusOr<std::string> id = ComputeHostId();
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_NE(id->find('/'), std::string::npos) << *id;
  EXPECT_GT(id->size(), 2u);
  absl::StatusOr<std::string> again = ComputeHostId();
  EXPECT_EQ(*again, *id);
  setenv("TANDEM_HOST_ID", "rack7-node3", 1);
  EXPECT_EQ(*ComputeHostId(), "rack7-node3");
  unsetenv("TANDEM_HOST_ID");
  EXPECT_FALSE(LocalHostId().empty());
}

}  // namespace
}  // namespace tandem
