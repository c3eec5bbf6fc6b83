// The fault-injecting KV transport wrapper: an injected failure is
// reported only after the real copies completed (the destination holds
// the data, so nothing writes it once the failure frees it), and the
// decode side's receiver is the inner transport's own (faults are the
// sender's). Host pools over the in-process and staged UCX transports.
#include "common/worker/fault_injecting_transport.h"

#include <cstring>

#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};

TEST(FaultInjectingTransportTest, AnInjectedFailureComesAfterTheRealCopies) {
  FaultInjector always(1.0, /*seed=*/7);
  auto inner = CreateKvTransport("inproc");
  ASSERT_TRUE(inner.ok()) << inner.status();
  std::unique_ptr<KvTransport> t = MakeFaultInjectingTransport(std::move(*inner), always);
  TestPool src(SmallLayout(), 4, 1.0f);
  TestPool dst(SmallLayout(), 4, -500.0f);
  auto desc = t->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok()) << desc.status();
  auto transfer = t->StartTransfer(src, kPrefill, *desc, {"f", {0, 1}, {3, 2}, absl::Now() + absl::Seconds(5)});
  ASSERT_TRUE(transfer.ok()) << transfer.status();
  for (int l = 0; l < SmallLayout().num_layers; ++l) ASSERT_TRUE((*transfer)->SendLayer(l).ok());
  const absl::Status s = (*transfer)->Finish();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("injected fault"), std::string::npos) << s;
  const size_t bytes = static_cast<size_t>(SmallLayout().block_bytes());
  for (int l = 0; l < SmallLayout().num_layers; ++l) {
    EXPECT_EQ(std::memcmp(src.At(l, 0, 0), dst.At(l, 0, 3), bytes), 0) << "layer " << l;
    EXPECT_EQ(std::memcmp(src.At(l, 1, 1), dst.At(l, 1, 2), bytes), 0) << "layer " << l;
  }
}

TEST(FaultInjectingTransportTest, TheReceiverIsTheInnerTransports) {
  FaultInjector always(1.0, /*seed=*/7);
  auto staged = CreateKvTransport("ucx_staged");
  ASSERT_TRUE(staged.ok()) << staged.status();
  KvReceiver* inner_receiver = (*staged)->receiver();
  ASSERT_NE(inner_receiver, nullptr);
  std::unique_ptr<KvTransport> wrapped = MakeFaultInjectingTransport(std::move(*staged), always);
  EXPECT_EQ(wrapped->receiver(), inner_receiver);

  auto inproc = CreateKvTransport("inproc");
  ASSERT_TRUE(inproc.ok()) << inproc.status();
  EXPECT_EQ(MakeFaultInjectingTransport(std::move(*inproc), always)->receiver(), nullptr);
}

}  // namespace
}  // namespace tandem
