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
#include "tests/common/transport/nccl_pipe_control.h"

namespace tandem {
namespace {

constexpr int32_t kBlocks = 64;
constexpr uint32_t kSrcSeed = 0x2345671, kDstSeed = 0x6543217;

KvLayout Layout() {
  KvLayout l;
  l.num_layers = 4;
  l.num_kv_heads = 2;
  l.head_dim = 64;
  l.block_size = 16;
  l.dtype = DType::kBF16;
  return l;
}

uint32_t Word(uint32_t seed, size_t index) { return seed ^ static_cast<uint32_t>(index * 2654435761u); }

absl::Status Fill(CudaKvPool& pool, uint32_t seed) {
  std::vector<uint32_t> host(static_cast<size_t>(pool.bytes()) / 4);
  for (size_t i = 0; i < host.size(); ++i) host[i] = Word(seed, i);
  return CudaStatus(cudaMemcpy(pool.KeyBlock(0, 0), host.data(), pool.bytes(), cudaMemcpyHostToDevice), "fill");
}

// CudaKvPool keeps num_blocks + 1 blocks per array.
size_t WordOffset(int l, int kv, int32_t b) {
  return ((static_cast<size_t>(l) * 2 + kv) * (kBlocks + 1) + b) * (Layout().block_bytes() / 4);
}

std::vector<KvTransferSpec> Specs() {
  KvTransferSpec scattered{"scattered", {}, {}, absl::Now() + absl::Seconds(60)};
  for (int32_t i = 0; i < 20; ++i) {
    scattered.src_blocks.push_back(2 * i);
    scattered.dst_blocks.push_back(63 - 2 * i);
  }
  KvTransferSpec run{"run", {}, {}, absl::Now() + absl::Seconds(60)};
  for (int32_t i = 0; i < 10; ++i) {
    run.src_blocks.push_back(41 + i);
    run.dst_blocks.push_back(2 + i);
  }
  return {scattered, run};
}

enum : int { kOk = 0, kNoPool = 10, kNoTransport, kNoExport, kPipe, kNotReceived, kWrongBytes, kNoDevices };

int DecodeChild(int to_parent, int from_parent) {
  if (cudaSetDevice(1) != cudaSuccess) return kNoPool;
  CudaKvPool pool;
  if (!pool.Init(Layout(), kBlocks).ok() || !Fill(pool, kDstSeed).ok()) return kNoPool;
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
    absl::Status s = t->WaitReceived(id, absl::Now() + absl::Seconds(60));
    if (!s.ok()) {
      fprintf(stderr, "%s: %s\n", id.c_str(), s.ToString().c_str());
      return kNotReceived;
    }
  }
  std::vector<uint32_t> got(static_cast<size_t>(pool.bytes()) / 4);
  if (cudaMemcpy(got.data(), pool.KeyBlock(0, 0), pool.bytes(), cudaMemcpyDeviceToHost) != cudaSuccess) return kNoPool;
  std::vector<int32_t> source_of(kBlocks + 1, -1);
  for (const KvTransferSpec& s : Specs()) {
    for (size_t i = 0; i < s.src_blocks.size(); ++i) source_of[s.dst_blocks[i]] = s.src_blocks[i];
  }
  const size_t words = Layout().block_bytes() / 4;
  for (int l = 0; l < Layout().num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int32_t b = 0; b <= kBlocks; ++b) {
        const bool copied = b < kBlocks && source_of[b] >= 0;
        for (size_t w = 0; w < words; ++w) {
          const uint32_t want = copied ? Word(kSrcSeed, WordOffset(l, kv, source_of[b]) + w)
                                       : Word(kDstSeed, WordOffset(l, kv, b) + w);
          if (got[WordOffset(l, kv, b) + w] != want) {
            fprintf(stderr, "layer %d kv %d block %d word %zu wrong\n", l, kv, b, w);
            return kWrongBytes;
          }
        }
      }
    }
  }
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
  ASSERT_TRUE(src.Init(Layout(), kBlocks).ok());
  ASSERT_TRUE(Fill(src, kSrcSeed).ok());
  absl::StatusOr<std::unique_ptr<NcclOps>> ops = MakeCudaNcclOps();
  ASSERT_TRUE(ops.ok()) << ops.status();
  std::unique_ptr<KvTransport> sender =
      MakeNcclTransportWith(std::move(*ops), std::make_unique<PipeControl>(to_child[1], to_parent[0]), {});
  for (KvTransferSpec spec : Specs()) {
    auto t = sender->StartTransfer(src, {"prefill-a", "model-1"}, desc, spec);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->transport(), "nccl");
    for (int l = 0; l < Layout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok()) << l;
    absl::Status s = (*t)->Finish();
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ((*t)->bytes_sent(),
              static_cast<int64_t>(spec.src_blocks.size()) * Layout().num_layers * 2 * Layout().block_bytes());
  }
  ASSERT_TRUE(WriteMsg(to_child[1], ""));
  const int child = wait_child();
  sender.reset();
  close(to_parent[0]);
  EXPECT_EQ(child, kOk) << "the decode child found wrong bytes or failed to set up";
}

}  // namespace
}  // namespace tandem
