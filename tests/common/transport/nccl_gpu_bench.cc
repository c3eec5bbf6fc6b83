// KV transfer throughput of the NCCL transport between GPU 0 (prefill,
// this process) and GPU 1 (decode, a forked child), next to the NCCL
// all-reduce bus bandwidth of the same two GPUs measured in the same run:
// for 512..16k-token prompts of a Llama-3-8B-shaped KV layout (32 layers,
// 8 KV heads, head_dim 128, bf16, 16-token blocks: 128 KiB per token),
// once with blocks consecutive on both sides (direct: one send per layer
// for K and V) and once scattered (reversed destination: staged). One JSON
// line per point on stdout ("NCCL_BENCH {...}"). A benchmark, not a check:
// DISABLED_ so CTest skips it; tests/cuda/nccl_device_run.sh runs it with
// --gtest_also_run_disabled_tests. Skips without two GPUs.
#include <nccl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "common/engine/cuda/cuda_kv_pool.h"
#include "common/transport/nccl_transport.h"
#include "gtest/gtest.h"
#include "tests/common/transport/nccl_pipe_control.h"

namespace tandem {
namespace {

constexpr int32_t kBlocks = 1024;  // 16k tokens, 2 GiB per pool
constexpr size_t kAllReduceBytes = size_t{256} << 20;
constexpr int kAllReduceIters = 20;
constexpr int kRepeats = 3;

KvLayout Layout() {
  KvLayout l;
  l.num_layers = 32;
  l.num_kv_heads = 8;
  l.head_dim = 128;
  l.block_size = 16;
  l.dtype = DType::kBF16;
  return l;
}

// An all-reduce of kAllReduceBytes (float sum), kAllReduceIters timed after
// a warm-up, on a communicator of its own; returns seconds per iteration.
double AllReduce(const std::string& uid, int rank) {
  ncclUniqueId id;
  std::memcpy(id.internal, uid.data(), sizeof(id.internal));
  ncclComm_t comm = nullptr;
  if (ncclCommInitRank(&comm, 2, id, rank) != ncclSuccess) return -1;
  void* buf = nullptr;
  cudaStream_t s = nullptr;
  if (cudaMalloc(&buf, kAllReduceBytes) != cudaSuccess || cudaStreamCreate(&s) != cudaSuccess) return -1;
  cudaMemset(buf, 0, kAllReduceBytes);
  const size_t n = kAllReduceBytes / sizeof(float);
  double per = -1;
  if (ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, s) == ncclSuccess && cudaStreamSynchronize(s) == cudaSuccess) {
    const auto t0 = std::chrono::steady_clock::now();
    bool ok = true;
    for (int i = 0; i < kAllReduceIters && ok; ++i) ok = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, s) == ncclSuccess;
    if (ok && cudaStreamSynchronize(s) == cudaSuccess) {
      per = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kAllReduceIters;
    }
  }
  ncclCommDestroy(comm);
  cudaStreamDestroy(s);
  cudaFree(buf);
  return per;
}

int DecodeChild(int to_parent, int from_parent) {
  if (cudaSetDevice(1) != cudaSuccess) return 10;
  std::string uid;
  if (!ReadMsg(from_parent, &uid) || AllReduce(uid, 1) < 0) return 11;
  CudaKvPool pool;
  if (!pool.Init(Layout(), kBlocks).ok()) return 12;
  absl::StatusOr<std::unique_ptr<NcclOps>> ops = MakeCudaNcclOps();
  if (!ops.ok()) return 13;
  std::unique_ptr<KvTransport> t = MakeNcclTransportWith(std::move(*ops), nullptr, {});
  auto desc = t->ExportPool(pool, {"decode-b", "model-1"});
  if (!desc.ok() || !WriteMsg(to_parent, desc->SerializeAsString())) return 14;
  std::vector<std::string> ids;
  if (!ServeRequests(*t, from_parent, to_parent, &ids)) return 15;
  for (const std::string& id : ids) {
    if (!t->receiver()->WaitReceived(id, "", absl::Now() + absl::Seconds(60)).ok()) return 16;
  }
  return 0;
}

bool HaveTwoGpus() {
  const pid_t pid = fork();
  if (pid == 0) {
    int n = 0;
    _exit(cudaGetDeviceCount(&n) == cudaSuccess && n >= 2 ? 0 : 1);
  }
  int status = 0;
  return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(NcclGpuBench, DISABLED_KvBytesPerSecondVsAllReduce) {
  if (!HaveTwoGpus()) GTEST_SKIP() << "needs two CUDA devices";
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(DecodeChild(to_parent[1], to_child[0]));
  close(to_parent[1]);
  close(to_child[0]);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ASSERT_TRUE(WriteMsg(to_child[1], std::string(id.internal, sizeof(id.internal))));
  const double ar = AllReduce(std::string(id.internal, sizeof(id.internal)), 0);
  ASSERT_GT(ar, 0);
  // Bus bandwidth of an all-reduce over n ranks: size * 2 (n - 1) / n / time.
  printf("NCCL_BENCH {\"kind\":\"allreduce\",\"bytes\":%zu,\"busbw_gbps\":%.2f}\n", kAllReduceBytes,
         kAllReduceBytes * 2.0 * (2 - 1) / 2 / ar / 1e9);
  std::string bytes;
  v1::KvPoolDescriptor desc;
  ASSERT_TRUE(ReadMsg(to_parent[0], &bytes) && desc.ParseFromString(bytes));
  CudaKvPool src;
  ASSERT_TRUE(src.Init(Layout(), kBlocks).ok());
  absl::StatusOr<std::unique_ptr<NcclOps>> ops = MakeCudaNcclOps();
  ASSERT_TRUE(ops.ok()) << ops.status();
  std::unique_ptr<KvTransport> sender =
      MakeNcclTransportWith(std::move(*ops), std::make_unique<PipeControl>(to_child[1], to_parent[0]), {});
  int serial = 0;
  for (int tokens : {512, 1024, 2048, 4096, 8192, 16384}) {
    const int32_t n = tokens / Layout().block_size;
    for (const bool scattered : {false, true}) {
      std::vector<double> secs;
      for (int r = 0; r <= kRepeats; ++r) {  // r == 0 warms up
        KvTransferSpec spec{absl::StrCat("b", serial++), {}, {}, absl::Now() + absl::Seconds(60)};
        for (int32_t i = 0; i < n; ++i) {
          spec.src_blocks.push_back(i);
          spec.dst_blocks.push_back(scattered ? kBlocks - 1 - i : i);
        }
        const auto t0 = std::chrono::steady_clock::now();
        auto t = sender->StartTransfer(src, {"prefill-a", "model-1"}, desc, spec);
        ASSERT_TRUE(t.ok()) << t.status();
        for (int l = 0; l < Layout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok());
        ASSERT_TRUE((*t)->Finish().ok());
        if (r > 0) secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(secs.begin(), secs.end());
      const double kv = static_cast<double>(n) * Layout().block_bytes_all_layers();
      printf("NCCL_BENCH {\"kind\":\"kv\",\"tokens\":%d,\"plan\":\"%s\",\"bytes\":%.0f,\"seconds\":%.6f,"
             "\"gbps\":%.2f}\n", tokens, scattered ? "staged" : "direct", kv, secs[secs.size() / 2],
             kv / secs[secs.size() / 2] / 1e9);
      fflush(stdout);
    }
  }
  ASSERT_TRUE(WriteMsg(to_child[1], ""));
  close(to_child[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  sender.reset();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "decode child failed: " << status;
}

}  // namespace
}  // namespace tandem
