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

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};
constexpr int32_t kBlocks = 64;
constexpr uint32_t kSrcSeed = 0x1234567, kDstSeed = 0x7654321;

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

// Offset (in words) of block `b` of layer `l`, K (kv 0) or V, from the
// pool's base: CudaKvPool keeps num_blocks + 1 blocks per array.
size_t WordOffset(int l, int kv, int32_t b) {
  return ((static_cast<size_t>(l) * 2 + kv) * (kBlocks + 1) + b) * (Layout().block_bytes() / 4);
}

// The two transfers the parent makes: many short runs and one long run
// (both through the gather kernel; its index arithmetic differs by layout).
std::vector<KvTransferSpec> Specs() {
  KvTransferSpec scattered{"scattered", {}, {}, absl::Now() + absl::Seconds(30)};
  for (int32_t i = 0; i < 20; ++i) {
    scattered.src_blocks.push_back(2 * i);
    scattered.dst_blocks.push_back(63 - 2 * i);
  }
  KvTransferSpec run{"run", {}, {}, absl::Now() + absl::Seconds(30)};
  for (int32_t i = 0; i < 10; ++i) {
    run.src_blocks.push_back(41 + i);
    run.dst_blocks.push_back(2 + i);
  }
  return {scattered, run};
}

enum : int { kOk = 0, kNoTransport = 10, kNoPool, kNoExport, kPipe, kWrongBytes, kNoDevice };

int DecodeChild(const std::string& transport, int to_parent, int from_parent) {
  CudaKvPool pool;
  if (!pool.Init(Layout(), kBlocks).ok() || !Fill(pool, kDstSeed).ok()) return kNoPool;
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
  std::vector<uint32_t> got(static_cast<size_t>(pool.bytes()) / 4);
  if (cudaMemcpy(got.data(), pool.KeyBlock(0, 0), pool.bytes(), cudaMemcpyDeviceToHost) != cudaSuccess) return kNoPool;
  std::vector<int32_t> source_of(kBlocks + 1, -1);
  for (const KvTransferSpec& s : Specs()) {
    for (size_t i = 0; i < s.src_blocks.size(); ++i) source_of[s.dst_blocks[i]] = s.src_blocks[i];
  }
  const size_t words = Layout().block_bytes() / 4;
  for (int l = 0; l < Layout().num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int32_t b = 0; b <= kBlocks; ++b) {  // the trash block must be untouched too
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
  ASSERT_TRUE(src.Init(Layout(), kBlocks).ok());
  ASSERT_TRUE(Fill(src, kSrcSeed).ok());
  auto sender = CreateKvTransport(GetParam());
  ASSERT_TRUE(sender.ok()) << sender.status();
  BlockAllocator blocks(kBlocks);  // the scratch blocks a prefill would hold
  for (KvTransferSpec spec : Specs()) {
    auto held = blocks.Allocate(static_cast<int32_t>(spec.src_blocks.size()));
    ASSERT_TRUE(held.ok());
    auto t = (*sender)->StartTransfer(src, kPrefill, desc, spec);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->transport(), GetParam() == "auto" ? "cuda_ipc" : GetParam());
    for (int l = 0; l < Layout().num_layers; ++l) ASSERT_TRUE((*t)->SendLayer(l).ok()) << l;
    absl::Status s = (*t)->Finish();
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ((*t)->bytes_sent(),
              static_cast<int64_t>(spec.src_blocks.size()) * Layout().num_layers * 2 * Layout().block_bytes());
    ASSERT_TRUE(blocks.Release(*held).ok());
  }
  sender->reset();  // closes the IPC mapping before the exporter exits
  ASSERT_EQ(write(to_child[1], "x", 1), 1);
  EXPECT_EQ(wait_child(), kOk) << "the decode child found wrong bytes or failed to set up";
  EXPECT_EQ(blocks.num_free(), kBlocks);
}

INSTANTIATE_TEST_SUITE_P(Transports, CudaTransportTest, ::testing::Values("cuda_ipc", "ucx_staged", "auto"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
