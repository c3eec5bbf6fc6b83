// KV transports: blocks land exactly where the reservation says, layer by
// layer; the handshake refuses every mismatched field by name; failures
// are errors within a timeout, never hangs. UCX runs in one process here
// (two transports, as prefill and decode) and across two real processes.
#include "common/transport/kv_transport.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

// A host KV pool filled with a pattern unique to (pool, layer, K/V, block, element).
class TestPool final : public KvPoolView {
 public:
  TestPool(KvLayout layout, int32_t blocks, float tag)
      : layout_(layout), blocks_(blocks), floats_(layout.block_bytes() / 4),
        data_(static_cast<size_t>(2 * layout.num_layers * blocks * floats_)) {
    for (size_t i = 0; i < data_.size(); ++i) data_[i] = tag + static_cast<float>(i);
  }
  const KvLayout& layout() const override { return layout_; }
  int32_t num_blocks() const override { return blocks_; }
  void* KeyBlock(int layer, int32_t block) override { return At(layer, 0, block); }
  void* ValueBlock(int layer, int32_t block) override { return At(layer, 1, block); }
  bool on_device() const override { return false; }
  float* At(int layer, int kv, int32_t block) {
    return data_.data() + ((static_cast<int64_t>(layer) * 2 + kv) * blocks_ + block) * floats_;
  }
  int64_t floats_per_block() const { return floats_; }

 private:
  KvLayout layout_;
  int32_t blocks_;
  int64_t floats_;
  std::vector<float> data_;
};

KvLayout Layout() {
  KvLayout l;
  l.num_layers = 3;
  l.num_kv_heads = 2;
  l.head_dim = 8;
  l.block_size = 4;
  l.dtype = DType::kF32;
  return l;
}

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};

// Copies blocks {3,1,4} of `src` into {0,5,2} of `dst` layer by layer and
// checks every block of dst: copied ones equal the source, others untouched.
void TransferAndCheck(KvTransport& sender, KvTransport& receiver) {
  TestPool src(Layout(), 6, 1000.0f), dst(Layout(), 6, -5000.0f);
  TestPool untouched(Layout(), 6, -5000.0f);
  auto desc = receiver.ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok()) << desc.status();
  KvTransferSpec spec;
  spec.transfer_id = "t1";
  spec.src_blocks = {3, 1, 4};
  spec.dst_blocks = {0, 5, 2};
  spec.deadline = absl::Now() + absl::Seconds(10);
  auto t = sender.StartTransfer(src, kPrefill, *desc, spec);
  ASSERT_TRUE(t.ok()) << t.status();
  for (int l = 0; l < 3; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok());
  ASSERT_TRUE((*t)->Finish().ok());
  EXPECT_EQ((*t)->bytes_sent(), 3 * 3 * 2 * Layout().block_bytes());
  const size_t bytes = static_cast<size_t>(Layout().block_bytes());
  for (int l = 0; l < 3; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int32_t b = 0; b < 6; ++b) {
        const auto it = std::find(spec.dst_blocks.begin(), spec.dst_blocks.end(), b);
        const float* want = it == spec.dst_blocks.end()
                                ? untouched.At(l, kv, b)
                                : src.At(l, kv, spec.src_blocks[it - spec.dst_blocks.begin()]);
        EXPECT_EQ(std::memcmp(dst.At(l, kv, b), want, bytes), 0) << "layer " << l << " kv " << kv << " block " << b;
      }
    }
  }
}

class TransportTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<KvTransport> Make() {
    auto t = CreateKvTransport(GetParam());
    EXPECT_TRUE(t.ok()) << t.status();
    return std::move(*t);
  }
};

TEST_P(TransportTest, BlocksLandInTheReservedBlocks) {
  auto sender = Make(), receiver = Make();
  TransferAndCheck(*sender, *receiver);
  // The connection is cached and reused for a second transfer.
  auto another = Make();
  TransferAndCheck(*sender, *another);
}

TEST_P(TransportTest, HandshakeRefusesEachMismatchedFieldByName) {
  auto sender = Make(), receiver = Make();
  TestPool dst(Layout(), 6, 0);
  auto desc = receiver->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok());
  struct Case {
    std::string field;
    std::function<void(KvLayout&, KvEndpointInfo&)> change;
  } cases[] = {
      {"model_fingerprint", [](KvLayout&, KvEndpointInfo& e) { e.model_fingerprint = "model-2"; }},
      {"num_layers", [](KvLayout& l, KvEndpointInfo&) { l.num_layers = 2; }},
      {"num_kv_heads", [](KvLayout& l, KvEndpointInfo&) { l.num_kv_heads = 1; }},
      {"head_dim", [](KvLayout& l, KvEndpointInfo&) { l.head_dim = 16; }},
      {"block_size", [](KvLayout& l, KvEndpointInfo&) { l.block_size = 8; }},
      {"dtype", [](KvLayout& l, KvEndpointInfo&) { l.dtype = DType::kBF16; }},
  };
  for (const Case& c : cases) {
    KvLayout layout = Layout();
    KvEndpointInfo self = kPrefill;
    c.change(layout, self);
    TestPool src(layout, 6, 0);
    KvTransferSpec spec{"t", {0}, {1}, absl::Now() + absl::Seconds(5)};
    auto t = sender->StartTransfer(src, self, *desc, spec);
    ASSERT_FALSE(t.ok()) << c.field;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition) << t.status();
    EXPECT_NE(t.status().message().find(c.field), std::string::npos) << t.status();
    EXPECT_NE(t.status().message().find("decode-b"), std::string::npos) << t.status();
  }
  TestPool src(Layout(), 6, 0);
  auto out_of_range = sender->StartTransfer(src, kPrefill, *desc, {"t", {0}, {6}, absl::InfiniteFuture()});
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(TransportTest, APassedDeadlineIsDeadlineExceeded) {
  auto sender = Make(), receiver = Make();
  TestPool src(Layout(), 6, 0), dst(Layout(), 6, 0);
  auto desc = receiver->ExportPool(dst, kDecode);
  ASSERT_TRUE(desc.ok());
  auto t = sender->StartTransfer(src, kPrefill, *desc, {"late", {0, 1}, {2, 3}, absl::Now() - absl::Seconds(1)});
  ASSERT_TRUE(t.ok());
  for (int l = 0; l < 3; ++l) (*t)->SendLayer(l).IgnoreError();
  absl::Status s = (*t)->Finish();
  // A transfer that happens to complete at once has nothing to wait for;
  // one that waits must notice the deadline.
  if (!s.ok()) EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  if (GetParam() == "inproc") EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
}

INSTANTIATE_TEST_SUITE_P(Transports, TransportTest, ::testing::Values("inproc", "ucx"));

TEST(InProcessTransportTest, AGonePeerIsUnavailable) {
  auto sender = *CreateKvTransport("inproc");
  TestPool src(Layout(), 6, 0), dst(Layout(), 6, 0);
  v1::KvPoolDescriptor desc;
  {
    auto receiver = *CreateKvTransport("inproc");
    desc = *receiver->ExportPool(dst, kDecode);
  }
  auto t = sender->StartTransfer(src, kPrefill, desc, {"t", {0}, {1}, absl::InfiniteFuture()});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->SendLayer(0).code(), absl::StatusCode::kUnavailable);
}

TEST(TransportFactoryTest, UnknownNamesAreRefused) {
  auto t = CreateKvTransport("carrier-pigeon");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("ucx"), std::string::npos);
}

// The decode side in a child process (fork before any UCX context exists),
// the prefill side here; the child checks the bytes it received.
TEST(UcxTransportTest, TwoRealProcesses) {
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto receiver = CreateKvTransport("ucx");
    if (!receiver.ok()) _exit(10);
    TestPool dst(Layout(), 6, -1.0f);
    auto desc = (*receiver)->ExportPool(dst, kDecode);
    if (!desc.ok()) _exit(11);
    const std::string bytes = desc->SerializeAsString();
    const uint64_t n = bytes.size();
    if (write(to_parent[1], &n, 8) != 8 || write(to_parent[1], bytes.data(), n) != static_cast<ssize_t>(n)) _exit(12);
    char done;
    if (read(to_child[0], &done, 1) != 1) _exit(13);
    TestPool src(Layout(), 6, 1000.0f);  // the parent's pattern
    for (int l = 0; l < 3; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        if (std::memcmp(dst.At(l, kv, 5), src.At(l, kv, 2), Layout().block_bytes()) != 0) _exit(14);
      }
    }
    _exit(0);
  }
  uint64_t n = 0;
  ASSERT_EQ(read(to_parent[0], &n, 8), 8);
  std::string bytes(n, '\0');
  size_t got = 0;
  while (got < n) {
    const ssize_t r = read(to_parent[0], bytes.data() + got, n - got);
    ASSERT_GT(r, 0);
    got += static_cast<size_t>(r);
  }
  v1::KvPoolDescriptor desc;
  ASSERT_TRUE(desc.ParseFromString(bytes));
  auto sender = CreateKvTransport("ucx");
  ASSERT_TRUE(sender.ok());
  TestPool src(Layout(), 6, 1000.0f);
  auto t = (*sender)->StartTransfer(src, kPrefill, desc, {"x", {2}, {5}, absl::Now() + absl::Seconds(20)});
  ASSERT_TRUE(t.ok()) << t.status();
  for (int l = 0; l < 3; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok());
  ASSERT_TRUE((*t)->Finish().ok());
  ASSERT_EQ(write(to_child[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child found wrong bytes (or failed to set up)";
}

}  // namespace
}  // namespace tandem
