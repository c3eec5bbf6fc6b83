// The NCCL KV transport for real: a decode process on GPU 1 and this
// (prefill) process on GPU 0, two transfers (a scattered one, staged, and
// one run, direct) through MakeCudaNcclOps, and every byte of the decode
// pool checked, the untouched blocks too. The control RPC is a pipe here
// (the gRPC path is exercised by the device run's cluster). The decode
// side is forked before this process touches CUDA. Skips without two GPUs
// (CI compiles it; tests/cuda/nccl_device_run.sh runs it).
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/engine/cuda/cuda_kv_pool.h"
#include "common/transport/nccl_transport.h"
#include "gtest/gtest.h"
#include "tests/common/transport/gpu_test_pool.h"
#include "tests/common/transport/nccl_pipe_control.h"

namespace tandem {
namespace {

constexpr uint32_t kSrcSeed = 0x2345671, kDstSeed = 0x6543217;

enum : int { kOk = 0, kNoPool = 10, kNoTransport, kNoExport, kPipe, kNotReceived, kWrongBytes, kNoDevices };

int DecodeChild(int to_parent, int from_parent) {
  if (cudaSetDevice(1) != cudaSuccess) return kNoPool;
  CudaKvPool pool;
  if (!pool.Init(GpuTestLayout(), kGpuTestBlocks).ok() || !FillGpuTestPool(pool, kDstSeed).ok()) return kNoPool;
  absl::StatusOr<std::unique_ptr<NcclOps>> ops = MakeCudaNcclOps();
  if (!ops.ok()) return kNoTransport;
  std::unique_ptr<KvTransport> t = MakeNcclTransportWith(std::move(*ops), nullptr, {});
  auto desc = t->ExportPool(pool, {"decode-b", "model-1"});
  if (!desc.ok()) {
    fprintf(stderr, "export: %s\n", desc.status().ToString().c_str());
    return kNoExport;
  }
  if (!WriteMsg(to_parent, desc->SerializeAsString())) return kPipe;
  std::vector<std::string> ids;
  if (!ServeRequests(*t, from_parent, to_parent, &ids)) return kPipe;
  for (const std::string& id : ids) {
    absl::Status s = t->receiver()->WaitReceived(id, "", absl::Now() + absl::Seconds(60));
    if (!s.ok()) {
      fprintf(stderr, "%s: %s\n", id.c_str(), s.ToString().c_str());
      return kNotReceived;
    }
  }
  if (!GpuTestPoolHoldsTransfers(pool, GpuTestSpecs(absl::Seconds(60)), kSrcSeed, kDstSeed)) return kWrongBytes;
  t.reset();  // destroys the communicator while the parent still holds its end
  return kOk;
}

bool HaveTwoGpus() {
  const pid_t pid = fork();
  if (pid == 0) {
    int n = 0;
    _exit(cudaGetDeviceCount(&n) == cudaSuccess && n >= 2 ? kOk : kNoDevices);
  }
  int status = 0;
  return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == kOk;
}

TEST(NcclGpuTest, BlocksLandOnTheOtherGpuByteForByte) {
  if (!HaveTwoGpus()) GTEST_SKIP() << "needs two CUDA devices";
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(DecodeChild(to_parent[1], to_child[0]));
  close(to_parent[1]);
  close(to_child[0]);
  auto wait_child = [&] {
    close(to_child[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string bytes;
  v1::KvPoolDescriptor desc;
  if (!ReadMsg(to_parent[0], &bytes) || !desc.ParseFromString(bytes)) {
    FAIL() << "no descriptor from the decode child (exit " << wait_child() << ")";
  }
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  CudaKvPool src;
  ASSERT_TRUE(src.Init(GpuTestLayout(), kGpuTestBlocks).ok());
  ASSERT_TRUE(FillGpuTestPool(src, kSrcSeed).ok());
  absl::StatusOr<std::unique_ptr<NcclOps>> ops = MakeCudaNcclOps();
  ASSERT_TRUE(ops.ok()) << ops.status();
  std::unique_ptr<KvTransport> sender =
      MakeNcclTransportWith(std::move(*ops), std::make_unique<PipeControl>(to_child[1], to_parent[0]), {});
  for (KvTransferSpec spec : GpuTestSpecs(absl::Seconds(60))) {
    auto t = sender->StartTransfer(src, {"prefill-a", "model-1"}, desc, spec);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->transport(), "nccl");
    for (int l = 0; l < GpuTestLayout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok()) << l;
    absl::Status s = (*t)->Finish();
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ((*t)->bytes_sent(),
              static_cast<int64_t>(spec.src_blocks.size()) * GpuTestLayout().num_layers * 2 * GpuTestLayout().block_bytes());
  }
  ASSERT_TRUE(WriteMsg(to_child[1], ""));
  const int child = wait_child();
  sender.reset();
  close(to_parent[0]);
  EXPECT_EQ(child, kOk) << "the decode child found wrong bytes or failed to set up";
}

}  // namespace
}  // namespace tandem
