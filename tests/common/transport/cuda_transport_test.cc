// GPU KV pools through the real transports between two processes, as
// between a prefill and a decode worker on one host: cuda_ipc, ucx_staged
// and auto (which must pick cuda_ipc here). The decode side is a child
// forked before this process touches CUDA; it fills its pool, exports it,
// and after the parent's transfers copies the pool back and checks every
// block itself, reporting through its exit status. So each case must run
// in a fresh process (CTest runs one per case; run the binary by hand
// with --gtest_filter for one case). Skips where no GPU is (CI compiles
// it; tests/cuda/disagg_device_run.sh runs it).
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/engine/cuda/cuda_kv_pool.h"
#include "common/kv/block_allocator.h"
#include "common/transport/kv_transport.h"
#include "gtest/gtest.h"
#include "tests/common/transport/gpu_test_pool.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};
constexpr uint32_t kSrcSeed = 0x1234567, kDstSeed = 0x7654321;

enum : int { kOk = 0, kNoTransport = 10, kNoPool, kNoExport, kPipe, kWrongBytes, kNoDevice };

int DecodeChild(const std::string& transport, int to_parent, int from_parent) {
  CudaKvPool pool;
  if (!pool.Init(GpuTestLayout(), kGpuTestBlocks).ok() || !FillGpuTestPool(pool, kDstSeed).ok()) return kNoPool;
  auto t = CreateKvTransport(transport);
  if (!t.ok()) return kNoTransport;
  auto desc = (*t)->ExportPool(pool, kDecode);
  if (!desc.ok()) {
    fprintf(stderr, "export: %s\n", desc.status().ToString().c_str());
    return kNoExport;
  }
  const std::string bytes = desc->SerializeAsString();
  const uint64_t n = bytes.size();
  if (write(to_parent, &n, sizeof(n)) != sizeof(n) || write(to_parent, bytes.data(), n) != static_cast<ssize_t>(n)) {
    return kPipe;
  }
  char done;
  if (read(from_parent, &done, 1) != 1) return kPipe;
  if (!GpuTestPoolHoldsTransfers(pool, GpuTestSpecs(absl::Seconds(30)), kSrcSeed, kDstSeed)) return kWrongBytes;
  return kOk;
}

// Whether a GPU is usable, asked in a child so that this process has not
// initialized CUDA when it forks the decode side.
bool HaveGpu() {
  const pid_t pid = fork();
  if (pid == 0) {
    int n = 0;
    _exit(cudaGetDeviceCount(&n) == cudaSuccess && n > 0 ? kOk : kNoDevice);
  }
  int status = 0;
  return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == kOk;
}

class CudaTransportTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaTransportTest, GpuBlocksLandInAnotherProcess) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(DecodeChild(GetParam(), to_parent[1], to_child[0]));
  close(to_parent[1]);
  close(to_child[0]);
  auto wait_child = [&] {
    close(to_child[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  uint64_t n = 0;
  v1::KvPoolDescriptor desc;
  std::string bytes;
  if (read(to_parent[0], &n, sizeof(n)) == sizeof(n) && n < (1u << 20)) {
    bytes.resize(n);
    size_t got = 0;
    while (got < n) {
      const ssize_t r = read(to_parent[0], bytes.data() + got, n - got);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
  }
  close(to_parent[0]);
  if (bytes.empty() || !desc.ParseFromString(bytes)) {
    FAIL() << "no descriptor from the decode child (exit " << wait_child() << ")";
  }

  CudaKvPool src;
  ASSERT_TRUE(src.Init(GpuTestLayout(), kGpuTestBlocks).ok());
  ASSERT_TRUE(FillGpuTestPool(src, kSrcSeed).ok());
  auto sender = CreateKvTransport(GetParam());
  ASSERT_TRUE(sender.ok()) << sender.status();
  BlockAllocator blocks(kGpuTestBlocks);  // the scratch blocks a prefill would hold
  for (KvTransferSpec spec : GpuTestSpecs(absl::Seconds(30))) {
    auto held = blocks.Allocate(static_cast<int32_t>(spec.src_blocks.size()));
    ASSERT_TRUE(held.ok());
    auto t = (*sender)->StartTransfer(src, kPrefill, desc, spec);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->transport(), GetParam() == "auto" ? "cuda_ipc" : GetParam());
    for (int l = 0; l < GpuTestLayout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok()) << l;
    absl::Status s = (*t)->Finish();
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ((*t)->bytes_sent(),
              static_cast<int64_t>(spec.src_blocks.size()) * GpuTestLayout().num_layers * 2 * GpuTestLayout().block_bytes());
    ASSERT_TRUE(blocks.Release(*held).ok());
  }
  sender->reset();  // closes the IPC mapping before the exporter exits
  ASSERT_EQ(write(to_child[1], "x", 1), 1);
  EXPECT_EQ(wait_child(), kOk) << "the decode child found wrong bytes or failed to set up";
  EXPECT_EQ(blocks.num_free(), kGpuTestBlocks);
}

INSTANTIATE_TEST_SUITE_P(Transports, CudaTransportTest, ::testing::Values("cuda_ipc", "ucx_staged", "auto"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
