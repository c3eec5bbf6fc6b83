// GPU KV pools through the real transports between two processes, as
// between a prefill and a decode worker on one host: cuda_ipc (its gather
// kernel, and its cudaMemcpyAsync path as "cuda_ipc_memcpy"), ucx_staged
// and auto (which must pick cuda_ipc here). The decode side is a child
// forked before this process touches CUDA; it fills its pool, exports it,
// and after the parent's transfers copies the pool back and checks every
// block itself, reporting through its exit status. So each case must run
// in a fresh process (CTest runs one per case; run the binary by hand
// with --gtest_filter for one case). Skips where no GPU is (CI compiles
// it; tests/cuda/disagg_device_run.sh runs it).
//
// One case per transport runs every pattern below in a row (they share
// the decode child's final check), on a layout chosen to reach every path
// of the CUDA IPC copies: 34 layers (a burst of all of them needs two
// kernel launches of at most 32), 36 KB blocks (two work items per block,
// the second partial), transfers of up to 20 blocks (the table in the
// kernel's parameters) and of 300 (uploaded to the device).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/engine/cuda/cuda_kv_pool.h"
#include "common/kv/block_allocator.h"
#include "common/transport/cuda_ipc_descriptor.h"
#include "common/transport/cuda_ipc_transport.h"
#include "common/transport/kv_transport.h"
#include "gtest/gtest.h"
#include "tests/common/transport/gpu_test_pool.h"
#include "tests/common/transport/pipe_messages.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};
constexpr uint32_t kSrcSeed = 0x1234567, kDstSeed = 0x7654321;
constexpr int32_t kBlocks = 640;  // in both pools

enum : int { kOk = 0, kNoTransport = 10, kNoPool, kNoExport, kPipe, kWrongBytes, kNoDevice, kCompletion };

// The decode side's check of the prefill side's completion signals: every
// finished transfer's (CUDA IPC: its copy lane's interprocess event) must
// be seen complete; a well-formed record naming an event that the live
// sender never made must not pass, nor a malformed one.
bool CompletionsHold(KvTransport& t, const std::string& transport, const std::vector<std::string>& completions,
                     uint64_t sender_pid) {
  const bool ipc = transport != "ucx_staged";
  for (const std::string& c : completions) {
    if (c.empty() == ipc) {
      fprintf(stderr, "completion record of %zu bytes over %s\n", c.size(), transport.c_str());
      return false;
    }
    absl::Status s = t.receiver()->WaitReceived("done", c, absl::Now() + absl::Seconds(10));
    if (!s.ok()) {
      fprintf(stderr, "WaitReceived: %s\n", s.ToString().c_str());
      return false;
    }
  }
  if (!ipc) return true;
  const std::string forged = EncodeCudaIpcCompletion({std::string(kCudaIpcHandleBytes, '\x42'), sender_pid});
  absl::Status f = t.receiver()->WaitReceived("forged", forged, absl::Now() + absl::Seconds(2));
  absl::Status m = t.receiver()->WaitReceived("malformed", "not a record", absl::Now() + absl::Seconds(2));
  if (f.ok() || !absl::IsInvalidArgument(m)) {
    fprintf(stderr, "forged: %s; malformed: %s\n", f.ToString().c_str(), m.ToString().c_str());
    return false;
  }
  return true;
}

KvLayout TestLayout() {
  KvLayout l;
  l.num_layers = 34;
  l.num_kv_heads = 9;
  l.head_dim = 128;
  l.block_size = 16;
  l.dtype = DType::kBF16;
  return l;
}

// One step of the parent: one transfer, or two alive at once with their
// layers interleaved. Each transfer's layers go in its `orders` entry's
// order; `finish` false: the transfer is dropped without Finish after
// those layers (only a later transfer's blocks may cover its blocks).
// `expire`: its deadline passes between its last SendLayer and Finish
// (cuda_ipc only: Finish must say DEADLINE_EXCEEDED; what it copied before
// stays in its blocks until a later transfer covers them).
struct Step {
  std::string what;
  std::vector<KvTransferSpec> specs;
  std::vector<std::vector<int>> orders;
  bool finish = true;
  bool expire = false;
};

std::vector<int> InOrder() {
  std::vector<int> v(static_cast<size_t>(TestLayout().num_layers));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// The same list in the parent and the decode child (fixed seed).
std::vector<Step> Steps(const std::string& transport) {
  std::mt19937 rng(20240611);
  // Destination blocks 600.. are the run's; the rest are handed out shuffled.
  std::vector<int32_t> src_perm(kBlocks), dst_perm(600);
  std::iota(src_perm.begin(), src_perm.end(), 0);
  std::iota(dst_perm.begin(), dst_perm.end(), 0);
  std::shuffle(src_perm.begin(), src_perm.end(), rng);
  std::shuffle(dst_perm.begin(), dst_perm.end(), rng);
  size_t next_src = 0, next_dst = 0;
  // `n` blocks scattered over both pools: sources cycle through the source
  // pool (a block may go out again in a later transfer), each destination
  // is written by one transfer unless a step below says otherwise.
  auto scattered = [&](const std::string& id, int n) {
    KvTransferSpec s{id, {}, {}, absl::InfiniteFuture()};
    for (int i = 0; i < n; ++i) {
      s.src_blocks.push_back(src_perm[next_src++ % kBlocks]);
      s.dst_blocks.push_back(dst_perm.at(next_dst++));
    }
    return s;
  };
  std::vector<Step> steps;
  // A long run each side, layers in order (the pattern of a fresh prompt).
  KvTransferSpec run{"run", {}, {}, absl::InfiniteFuture()};
  for (int32_t i = 0; i < 16; ++i) {
    run.src_blocks.push_back(100 + i);
    run.dst_blocks.push_back(600 + i);
  }
  steps.push_back({"run", {run}, {InOrder()}});
  // Scattered blocks, layers in order: every layer in one tight burst, so
  // the layers are held and go out together at the last one (coalesced).
  steps.push_back({"scattered", {scattered("scattered", 20)}, {InOrder()}});
  // Layers reversed, and in a random order.
  std::vector<int> reversed = InOrder();
  std::reverse(reversed.begin(), reversed.end());
  steps.push_back({"reversed", {scattered("reversed", 12)}, {reversed}});
  std::vector<int> shuffled = InOrder();
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  steps.push_back({"shuffled", {scattered("shuffled", 12)}, {shuffled}});
  // A table too long for the kernel's parameters (uploaded), twice in a
  // row on the same pooled stream: the second must not copy by the first's
  // table.
  const KvTransferSpec long1 = scattered("long-1", 300);
  KvTransferSpec long2 = scattered("long-2", 0);
  for (int i = 0; i < 260; ++i) {  // over most of long-1's blocks, from other sources
    long2.src_blocks.push_back(src_perm[next_src++ % kBlocks]);
    long2.dst_blocks.push_back(long1.dst_blocks[static_cast<size_t>(i)]);
  }
  steps.push_back({"long", {long1}, {InOrder()}});
  steps.push_back({"long again", {long2}, {shuffled}});
  // Many short transfers in a row, each on the stream the previous one
  // gave back; a pause between layers now and then, so that the layer
  // after a pause launches alone at once and the others are held.
  for (int k = 0; k < 16; ++k) {
    std::vector<int> order = InOrder();
    if (k % 2 == 1) std::shuffle(order.begin(), order.end(), rng);
    steps.push_back({"many", {scattered("many-" + std::to_string(k), 1 + k % 5)}, {order}});
  }
  // Two transfers alive at once (two streams), layers interleaved.
  steps.push_back({"two at once", {scattered("two-a", 10), scattered("two-b", 14)}, {InOrder(), reversed}});
  // CUDA IPC: dropped halfway without Finish (its destructor waits for
  // what it launched), and one that expires; a later transfer writes their
  // blocks. (Staged UCX lets a dropped transfer's chunks finish on its own
  // time, and the decode child here has no write gate to hold them.)
  KvTransferSpec dropped = scattered("dropped", 10);
  if (transport.starts_with("cuda_ipc")) {
    std::vector<int> half = InOrder();
    half.resize(half.size() / 2);
    steps.push_back({"dropped", {dropped}, {half}, /*finish=*/false});
    KvTransferSpec late = scattered("late", 8);
    late.dst_blocks = {dropped.dst_blocks.begin(), dropped.dst_blocks.begin() + 8};
    steps.push_back({"expired", {late}, {half}, /*finish=*/true, /*expire=*/true});
  }
  KvTransferSpec cover = dropped;
  cover.transfer_id = "cover";
  std::reverse(cover.src_blocks.begin(), cover.src_blocks.end());
  steps.push_back({"cover", {cover}, {InOrder()}});
  return steps;
}

// What the decode pool must hold: the blocks of every finished transfer.
std::vector<KvTransferSpec> Landed(const std::vector<Step>& steps) {
  std::vector<KvTransferSpec> specs;
  for (const Step& s : steps) {
    if (s.finish && !s.expire) specs.insert(specs.end(), s.specs.begin(), s.specs.end());
  }
  return specs;
}

int DecodeChild(const std::string& transport, int to_parent, int from_parent, uint64_t sender_pid) {
  CudaKvPool pool;
  if (!pool.Init(TestLayout(), kBlocks).ok() || !FillGpuTestPool(pool, kDstSeed).ok()) return kNoPool;
  auto t = CreateKvTransport(transport.starts_with("cuda_ipc") ? "cuda_ipc" : transport);
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
  // The finished transfers' completion records, while the sender (and so
  // its events) still lives; then the sender lets go of the pool.
  std::string count, c;
  if (!ReadMsg(from_parent, &count)) return kPipe;
  std::vector<std::string> completions;
  for (size_t i = 0; i < std::stoul(count); ++i) {
    if (!ReadMsg(from_parent, &c)) return kPipe;
    completions.push_back(c);
  }
  const bool completions_hold = CompletionsHold(**t, transport, completions, sender_pid);
  if (write(to_parent, "c", 1) != 1) return kPipe;
  char done;
  if (read(from_parent, &done, 1) != 1) return kPipe;
  if (!GpuTestPoolHoldsTransfers(pool, Landed(Steps(transport)), kSrcSeed, kDstSeed)) return kWrongBytes;
  return completions_hold ? kOk : kCompletion;
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

absl::StatusOr<std::unique_ptr<KvTransport>> Sender(const std::string& transport) {
  if (transport == "cuda_ipc_memcpy") return MakeCudaIpcTransport({.gather_kernel = false});
  return CreateKvTransport(transport);
}

class CudaTransportTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaTransportTest, GpuBlocksLandInAnotherProcess) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  const std::string transport = GetParam();
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  const uint64_t sender_pid = static_cast<uint64_t>(getpid());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(DecodeChild(transport, to_parent[1], to_child[0], sender_pid));
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
  if (bytes.empty() || !desc.ParseFromString(bytes)) {
    close(to_parent[0]);
    FAIL() << "no descriptor from the decode child (exit " << wait_child() << ")";
  }

  const KvLayout layout = TestLayout();
  CudaKvPool src;
  ASSERT_TRUE(src.Init(layout, kBlocks).ok());
  ASSERT_TRUE(FillGpuTestPool(src, kSrcSeed).ok());
  auto sender = Sender(transport);
  ASSERT_TRUE(sender.ok()) << sender.status();
  BlockAllocator blocks(kBlocks);  // the scratch blocks a prefill would hold
  std::vector<std::string> completions;  // of every transfer that finished
  for (Step& step : Steps(transport)) {
    SCOPED_TRACE(step.what);
    std::vector<std::unique_ptr<KvTransfer>> transfers;
    std::vector<std::vector<int32_t>> held;
    for (KvTransferSpec& spec : step.specs) {
      auto h = blocks.Allocate(static_cast<int32_t>(spec.src_blocks.size()));
      ASSERT_TRUE(h.ok());
      held.push_back(*h);
      if (step.expire) spec.deadline = absl::Now() + absl::Milliseconds(200);
      auto t = (*sender)->StartTransfer(src, kPrefill, desc, spec);
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ((*t)->transport(), transport == "auto" ? "cuda_ipc" : transport.substr(0, transport.find("_memcpy")));
      transfers.push_back(std::move(*t));
    }
    size_t longest = 0;
    for (const auto& o : step.orders) longest = std::max(longest, o.size());
    for (size_t k = 0; k < longest; ++k) {
      for (size_t j = 0; j < transfers.size(); ++j) {
        if (k < step.orders[j].size()) {
          ASSERT_TRUE(transfers[j]->SendLayer(step.orders[j][k]).ok()) << k;
        }
      }
      // Now and then a pause, as between a real prefill's layers: the next
      // layer launches at once (with what was held before it).
      if (step.what == "many" && k % 9 == 4) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (step.expire) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (size_t j = 0; step.finish && j < transfers.size(); ++j) {
      absl::Status s = transfers[j]->Finish();
      if (step.expire) {
        EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
        continue;
      }
      ASSERT_TRUE(s.ok()) << s;
      completions.push_back(transfers[j]->completion());
      EXPECT_EQ(transfers[j]->bytes_sent(), static_cast<int64_t>(step.specs[j].src_blocks.size()) *
                                                 layout.num_layers * 2 * layout.block_bytes());
    }
    transfers.clear();  // dropped ones included: their copies end here
    for (const auto& h : held) ASSERT_TRUE(blocks.Release(h).ok());
  }
  ASSERT_TRUE(WriteMsg(to_child[1], std::to_string(completions.size())));
  for (const std::string& c : completions) ASSERT_TRUE(WriteMsg(to_child[1], c));
  char checked = 0;
  ASSERT_EQ(read(to_parent[0], &checked, 1), 1) << "the decode child did not check the completions";
  close(to_parent[0]);
  sender->reset();  // closes the IPC mapping before the exporter exits
  ASSERT_EQ(write(to_child[1], "x", 1), 1);
  EXPECT_EQ(wait_child(), kOk) << "the decode child found wrong bytes or failed to set up";
  EXPECT_EQ(blocks.num_free(), kBlocks);
}

INSTANTIATE_TEST_SUITE_P(Transports, CudaTransportTest,
                         ::testing::Values("cuda_ipc", "cuda_ipc_memcpy", "ucx_staged", "auto"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
