// Choosing a KV transport per destination (--transport=auto), the offer
// list an auto descriptor carries, the transport names, and what the CUDA
// IPC transport refuses before it touches a GPU (host pools, other hosts).
#include "common/transport/transport_selection.h"

#include <cstdlib>

#include "common/transport/cuda_ipc_descriptor.h"
#include "common/transport/cuda_ipc_transport.h"
#include "common/transport/host_id.h"
#include "common/transport/kv_transport.h"
#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};

const std::vector<std::string> kAutoParts = {"cuda_ipc", "ucx", "ucx_staged"};

std::vector<TransportOffer> GpuOffers(const std::string& host) {
  return {{"cuda_ipc", host, "ipc-key"}, {"ucx_staged", "ucx-address", "staging-info"}};
}

TEST(TransportSelectionTest, ExportsSuitTheKindOfPool) {
  EXPECT_EQ(TransportsToExport(/*pool_on_device=*/true), (std::vector<std::string>{"cuda_ipc", "nccl", "ucx_staged"}));
  EXPECT_EQ(TransportsToExport(/*pool_on_device=*/false), (std::vector<std::string>{"ucx"}));
}

TEST(TransportSelectionTest, SameHostGpuToGpuIsCudaIpc) {
  absl::StatusOr<TransportOffer> c = ChooseTransport(GpuOffers("h1"), {true, "h1", kAutoParts}, "decode-b");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->transport, "cuda_ipc");
  EXPECT_EQ(c->remote_key, "ipc-key");
}

TEST(TransportSelectionTest, AnotherHostIsStagedUcx) {
  absl::StatusOr<TransportOffer> c = ChooseTransport(GpuOffers("h2"), {true, "h1", kAutoParts}, "decode-b");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->transport, "ucx_staged");
  EXPECT_EQ(c->endpoint, "ucx-address");
}

TEST(TransportSelectionTest, AHostSourcePoolNeverPicksCudaIpc) {
  absl::StatusOr<TransportOffer> c = ChooseTransport(GpuOffers("h1"), {false, "h1", kAutoParts}, "decode-b");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->transport, "ucx_staged");
}

TEST(TransportSelectionTest, HostPoolsUseUcxPuts) {
  const std::vector<TransportOffer> offers = {{"ucx", "addr", "rkeys"}};
  absl::StatusOr<TransportOffer> c = ChooseTransport(offers, {false, "h1", kAutoParts}, "decode-b");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->transport, "ucx");
  // A GPU prefill worker cannot put from device memory with this UCX.
  absl::StatusOr<TransportOffer> gpu = ChooseTransport(offers, {true, "h1", kAutoParts}, "decode-b");
  ASSERT_FALSE(gpu.ok());
  EXPECT_EQ(gpu.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(gpu.status().message().find("puts from host memory only"), std::string::npos) << gpu.status();
}

TEST(TransportSelectionTest, NothingReachableNamesPeerOffersAndReasons) {
  absl::StatusOr<TransportOffer> c = ChooseTransport(GpuOffers("h2"), {true, "h1", {"cuda_ipc"}}, "decode-b");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  for (const char* word : {"decode-b", "cuda_ipc, ucx_staged", "another host"}) {
    EXPECT_NE(c.status().message().find(word), std::string::npos) << word << ": " << c.status();
  }
  EXPECT_FALSE(ChooseTransport(GpuOffers("h1"), {true, "h1", {"inproc"}}, "d").ok());
}

TEST(TransportSelectionTest, PreferenceIsThisSidesOrder) {
  // A prefill worker started with --transport=ucx runs no cuda_ipc part,
  // so it takes the staged offer of a same-host GPU peer.
  absl::StatusOr<TransportOffer> c =
      ChooseTransport(GpuOffers("h1"), {true, "h1", {"ucx", "ucx_staged"}}, "decode-b");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->transport, "ucx_staged");
}

TEST(TransportOffersTest, RoundTripAndOffersOfADescriptor) {
  const std::vector<TransportOffer> offers = GpuOffers("boot/host");
  absl::StatusOr<std::vector<TransportOffer>> back = DecodeTransportOffers(EncodeTransportOffers(offers), "d");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, offers);

  v1::KvPoolDescriptor d;
  d.set_worker_id("decode-b");
  d.set_transport("auto");
  d.set_remote_key(EncodeTransportOffers(offers));
  d.set_num_blocks(7);
  EXPECT_EQ(*OffersOf(d), offers);
  const v1::KvPoolDescriptor as_staged = WithOffer(d, offers[1]);
  EXPECT_EQ(as_staged.transport(), "ucx_staged");
  EXPECT_EQ(as_staged.endpoint(), "ucx-address");
  EXPECT_EQ(as_staged.remote_key(), "staging-info");
  EXPECT_EQ(as_staged.num_blocks(), 7);

  v1::KvPoolDescriptor single;
  single.set_transport("ucx");
  single.set_endpoint("addr");
  EXPECT_EQ(*OffersOf(single), (std::vector<TransportOffer>{{"ucx", "addr", ""}}));
}

TEST(TransportOffersTest, MalformedListsAreRefused) {
  const std::string good = EncodeTransportOffers(GpuOffers("h"));
  const std::string nested = EncodeTransportOffers({{"auto", "", ""}});
  for (const std::string& bad : {std::string(), good.substr(0, good.size() - 2), good + "!", nested,
                                 EncodeTransportOffers({})}) {
    absl::StatusOr<std::vector<TransportOffer>> o = DecodeTransportOffers(bad, "decode-b");
    ASSERT_FALSE(o.ok());
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(o.status().message().find("decode-b"), std::string::npos) << o.status();
  }
}

TEST(TransportFactoryNamesTest, EveryNameIsKnownAndNamedInErrors) {
  EXPECT_EQ(KvTransportNames(), (std::vector<std::string>{"auto", "cuda_ipc", "nccl", "ucx", "ucx_staged", "inproc"}));
  for (const char* name : {"auto", "ucx", "ucx_staged", "inproc"}) {
    auto t = CreateKvTransport(name);
    ASSERT_TRUE(t.ok()) << name << ": " << t.status();
    EXPECT_EQ((*t)->name(), name);
  }
  auto ipc = CreateKvTransport("cuda_ipc");
#ifdef TANDEM_TRANSPORT_CUDA
  ASSERT_TRUE(ipc.ok()) << ipc.status();  // no GPU is touched before a pool is exported
  EXPECT_EQ((*ipc)->name(), "cuda_ipc");
#else
  EXPECT_EQ(ipc.status().code(), absl::StatusCode::kUnimplemented) << ipc.status();
#endif
  auto nccl = CreateKvTransport("nccl");
#ifdef TANDEM_TRANSPORT_NCCL
  ASSERT_TRUE(nccl.ok()) << nccl.status();  // loads libnccl; no GPU before a pool is exported
  EXPECT_EQ((*nccl)->name(), "nccl");
  EXPECT_STREQ(std::getenv("NCCL_NVLS_ENABLE"), "0");
#else
  EXPECT_EQ(nccl.status().code(), absl::StatusCode::kUnimplemented) << nccl.status();
#endif
  auto bad = CreateKvTransport("nvlink-pigeon");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* name : {"auto", "cuda_ipc", "ucx", "ucx_staged", "inproc"}) {
    EXPECT_NE(bad.status().message().find(name), std::string::npos) << bad.status();
  }
}

TEST(AutoTransportTest, AHostPoolIsExportedOverUcxAlone) {
  auto t = CreateKvTransport("auto");
  ASSERT_TRUE(t.ok()) << t.status();
  TestPool pool(SmallLayout(), 6, 0);
  auto d = (*t)->ExportPool(pool, kDecode);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->transport(), "ucx");  // one offer: ucx's own descriptor, readable by a plain ucx peer
}

#ifdef TANDEM_TRANSPORT_CUDA
// A cuda_ipc descriptor as a decode worker on `host` would publish it.
v1::KvPoolDescriptor IpcDescriptor(TestPool& like, const std::string& host) {
  v1::KvPoolDescriptor d = DescribePool(like, kDecode, "cuda_ipc");
  d.set_endpoint(host);
  CudaIpcExport e;
  e.handle = std::string(kCudaIpcHandleBytes, '\1');
  e.base = d.key_base(0);
  e.size = static_cast<uint64_t>(like.layout().block_bytes_all_layers()) * like.num_blocks();
  e.pci_bus_id = "0000:00:00.0";
  e.pid = 1;
  d.set_remote_key(EncodeCudaIpcExport(e));
  return d;
}

TEST(CudaIpcRefusalTest, HostPoolsAreRefused) {
  auto t = CreateKvTransport("cuda_ipc");
  ASSERT_TRUE(t.ok()) << t.status();
  TestPool pool(SmallLayout(), 6, 0);
  auto d = (*t)->ExportPool(pool, kDecode);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition) << d.status();
  EXPECT_NE(d.status().message().find("host memory"), std::string::npos) << d.status();

  TestPool src(SmallLayout(), 6, 0), dst(SmallLayout(), 6, 0);
  auto transfer = (*t)->StartTransfer(src, kPrefill, IpcDescriptor(dst, LocalHostId()),
                                      {"t", {0}, {1}, absl::Now() + absl::Seconds(5)});
  ASSERT_FALSE(transfer.ok());
  EXPECT_EQ(transfer.status().code(), absl::StatusCode::kFailedPrecondition) << transfer.status();
  EXPECT_NE(transfer.status().message().find("host memory"), std::string::npos) << transfer.status();
}

TEST(CudaIpcRefusalTest, ADescriptorFromAnotherHostIsRefused) {
  auto t = CreateKvTransport("cuda_ipc");
  ASSERT_TRUE(t.ok()) << t.status();
  TestPool src(SmallLayout(), 6, 0), dst(SmallLayout(), 6, 0);
  auto transfer = (*t)->StartTransfer(src, kPrefill, IpcDescriptor(dst, "other-boot/other-host"),
                                      {"t", {0}, {1}, absl::Now() + absl::Seconds(5)});
  ASSERT_FALSE(transfer.ok());
  EXPECT_EQ(transfer.status().code(), absl::StatusCode::kFailedPrecondition) << transfer.status();
  // The composite's view: nothing reaches the peer, and it says why.
  EXPECT_NE(transfer.status().message().find("another host"), std::string::npos) << transfer.status();

  // The CUDA IPC transport itself checks the host before anything else.
  auto bare = MakeCudaIpcTransport();
  ASSERT_TRUE(bare.ok()) << bare.status();
  auto direct = (*bare)->StartTransfer(src, kPrefill, IpcDescriptor(dst, "other-boot/other-host"),
                                       {"t", {0}, {1}, absl::Now() + absl::Seconds(5)});
  ASSERT_FALSE(direct.ok());
  EXPECT_EQ(direct.status().code(), absl::StatusCode::kFailedPrecondition) << direct.status();
  EXPECT_NE(direct.status().message().find("another host"), std::string::npos) << direct.status();
  auto same_host = (*bare)->StartTransfer(src, kPrefill, IpcDescriptor(dst, LocalHostId()),
                                          {"t", {0}, {1}, absl::Now() + absl::Seconds(5)});
  ASSERT_FALSE(same_host.ok());
  EXPECT_EQ(same_host.status().code(), absl::StatusCode::kFailedPrecondition) << same_host.status();
  EXPECT_NE(same_host.status().message().find("host memory"), std::string::npos) << same_host.status();
}
#endif

}  // namespace
}  // namespace tandem
