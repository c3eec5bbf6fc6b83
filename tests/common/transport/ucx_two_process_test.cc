// UCX (puts, and staged active messages) between two real processes, as
// between a prefill and a decode worker:
// the decode side is a forked child (forked before this process creates
// any UCX context) that exports its pool and sends the descriptor over a
// pipe. The child checks the bytes it received itself and reports through
// its exit status.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/transport/kv_transport.h"
#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

const KvEndpointInfo kPrefill{"prefill-a", "model-1"};
const KvEndpointInfo kDecode{"decode-b", "model-1"};
constexpr float kSourceTag = 1000.0f;
constexpr float kDestTag = -500000.0f;

// Child exit codes.
enum : int { kChildOk = 0, kNoTransport = 10, kNoExport, kPipe, kWrongBytes };

bool WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// The decode worker of these tests, run in the child. Exports a pool,
// sends its descriptor, waits for one byte per transfer the parent made,
// and then checks: block 5 holds the parent's block 2, block 0 its block 3,
// every other block is untouched. With `exit_after_export` it dies right
// after sending the descriptor (a crashed decode worker).
int RunDecodeChild(const std::string& transport, int to_parent, int from_parent, bool exit_after_export) {
  // The pool outlives the transport (ExportPool's contract): puts may land
  // until the transport is gone.
  TestPool dst(SmallLayout(), 6, kDestTag);
  auto receiver = CreateKvTransport(transport);
  if (!receiver.ok()) return kNoTransport;
  auto desc = (*receiver)->ExportPool(dst, kDecode);
  if (!desc.ok()) return kNoExport;
  const std::string bytes = desc->SerializeAsString();
  const uint64_t n = bytes.size();
  if (!WriteAll(to_parent, &n, sizeof(n)) || !WriteAll(to_parent, bytes.data(), n)) return kPipe;
  if (exit_after_export) return kChildOk;
  char done;
  if (!ReadAll(from_parent, &done, 1)) return kPipe;
  TestPool src(SmallLayout(), 6, kSourceTag);  // what the parent sent from
  TestPool pristine(SmallLayout(), 6, kDestTag);
  const size_t block_bytes = static_cast<size_t>(SmallLayout().block_bytes());
  for (int l = 0; l < SmallLayout().num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int32_t b = 0; b < 6; ++b) {
        const float* want = b == 5 ? src.At(l, kv, 2) : b == 0 ? src.At(l, kv, 3) : pristine.At(l, kv, b);
        if (std::memcmp(dst.At(l, kv, b), want, block_bytes) != 0) return kWrongBytes;
      }
    }
  }
  return kChildOk;
}

class DecodeChild {
 public:
  // Forks the child; false (with a gtest failure) if that failed.
  bool Start(const std::string& transport, bool exit_after_export) {
    int to_parent[2], to_child[2];
    if (pipe(to_parent) != 0 || pipe(to_child) != 0) return false;
    pid_ = fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      close(to_parent[0]);
      close(to_child[1]);
      _exit(RunDecodeChild(transport, to_parent[1], to_child[0], exit_after_export));
    }
    close(to_parent[1]);
    close(to_child[0]);
    from_child_ = to_parent[0];
    to_child_ = to_child[1];
    return true;
  }
  ~DecodeChild() {
    if (pid_ > 0) {
      close(to_child_);  // a child still waiting reads EOF and exits
      Wait();
    }
  }

  bool ReadDescriptor(v1::KvPoolDescriptor* desc) {
    uint64_t n = 0;
    if (!ReadAll(from_child_, &n, sizeof(n)) || n > (1u << 20)) return false;
    std::string bytes(n, '\0');
    return ReadAll(from_child_, bytes.data(), n) && desc->ParseFromString(bytes);
  }
  bool SignalDone() { return WriteAll(to_child_, "x", 1); }
  // A crash: nothing of the child's UCX state is torn down or flushed.
  bool Kill() { return kill(pid_, SIGKILL) == 0; }
  // The child's exit code; -1 if it did not exit normally, -2 if it had
  // not exited after `limit` (then it is killed: a hang).
  int WaitFor(absl::Duration limit) {
    const absl::Time until = absl::Now() + limit;
    int status = 0;
    pid_t waited = 0;
    while ((waited = waitpid(pid_, &status, WNOHANG)) == 0 && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    if (waited == 0) {
      Kill();
      Wait();
      return -2;
    }
    pid_ = -1;
    close(from_child_);
    if (waited < 0 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
  }
  // The child's exit code, or -1 if it did not exit normally.
  int Wait() {
    int status = 0;
    const pid_t waited = waitpid(pid_, &status, 0);
    pid_ = -1;
    close(from_child_);
    if (waited <= 0 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
  }

 private:
  pid_t pid_ = -1;
  int from_child_ = -1, to_child_ = -1;
};

absl::Status RunTransfer(KvTransport& sender, TestPool& src, const v1::KvPoolDescriptor& desc,
                         KvTransferSpec spec) {
  auto t = sender.StartTransfer(src, kPrefill, desc, std::move(spec));
  if (!t.ok()) return t.status();
  for (int l = 0; l < SmallLayout().num_layers; ++l) {
    absl::Status s = (*t)->SendLayer(l);
    if (!s.ok()) return s;
  }
  return (*t)->Finish();
}

class UcxTwoProcessTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Forks the decode child, reads its pool descriptor and makes the sender
  // (after the fork: the child must not inherit a UCX context).
  void StartBoth(bool exit_after_export) {
    ASSERT_TRUE(child_.Start(GetParam(), exit_after_export));
    ASSERT_TRUE(child_.ReadDescriptor(&desc_));
    auto sender = CreateKvTransport(GetParam());
    ASSERT_TRUE(sender.ok()) << sender.status();
    sender_ = std::move(*sender);
  }
  // A transfer of blocks 2 and 3 into the child's 5 and 0, layer 0 sent.
  std::unique_ptr<KvTransfer> StartWithLayerZero(absl::Duration timeout) {
    auto t = sender_->StartTransfer(src_, kPrefill, desc_, {"a", {2, 3}, {5, 0}, absl::Now() + timeout});
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return nullptr;
    EXPECT_TRUE((*t)->SendLayer(0).ok());
    return std::move(*t);
  }
  // The layers after 0, then Finish; the first error.
  static absl::Status SendTheRest(KvTransfer& t) {
    absl::Status s;
    for (int l = 1; l < SmallLayout().num_layers && s.ok(); ++l) s = t.SendLayer(l);
    return s.ok() ? t.Finish() : s;
  }

  DecodeChild child_;  // destroyed last: waits for the child
  v1::KvPoolDescriptor desc_;
  TestPool src_{SmallLayout(), 6, kSourceTag};
  std::unique_ptr<KvTransport> sender_;
};

TEST_P(UcxTwoProcessTest, BlocksArriveInAnotherProcess) {
  ASSERT_NO_FATAL_FAILURE(StartBoth(/*exit_after_export=*/false));
  // Two transfers over the one cached connection.
  absl::Status s = RunTransfer(*sender_, src_, desc_, {"a", {2}, {5}, absl::Now() + absl::Seconds(20)});
  ASSERT_TRUE(s.ok()) << s;
  s = RunTransfer(*sender_, src_, desc_, {"b", {3}, {0}, absl::Now() + absl::Seconds(20)});
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(child_.SignalDone());
  EXPECT_EQ(child_.Wait(), kChildOk) << "the child found wrong bytes or failed to set up";
}

TEST_P(UcxTwoProcessTest, ADeadDecodeProcessIsAnErrorNotAHang) {
  ASSERT_NO_FATAL_FAILURE(StartBoth(/*exit_after_export=*/true));
  ASSERT_EQ(child_.Wait(), kChildOk);  // gone now
  const absl::Time start = absl::Now();
  absl::Status s = RunTransfer(*sender_, src_, desc_, {"a", {2}, {5}, absl::Now() + absl::Seconds(60)});
  EXPECT_FALSE(s.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << s;
}

TEST_P(UcxTwoProcessTest, ADecodeProcessDyingAfterATransferFailsTheNext) {
  ASSERT_NO_FATAL_FAILURE(StartBoth(/*exit_after_export=*/false));
  absl::Status s = RunTransfer(*sender_, src_, desc_, {"a", {2}, {5}, absl::Now() + absl::Seconds(20)});
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(child_.SignalDone());
  child_.Wait();  // exits (its check fails: block 0 was never sent)
  const absl::Time start = absl::Now();
  s = RunTransfer(*sender_, src_, desc_, {"b", {3}, {0}, absl::Now() + absl::Seconds(60)});
  EXPECT_FALSE(s.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(15)) << s;
}

// The decode process is killed while the transfer is under way (staged: with
// chunks of it in flight, the sender's progress thread driving them): the
// transfer fails instead of hanging, and the prefill side then shuts down
// cleanly.
TEST_P(UcxTwoProcessTest, ADecodeProcessKilledMidTransferFailsItAndTheSenderShutsDown) {
  ASSERT_NO_FATAL_FAILURE(StartBoth(/*exit_after_export=*/false));
  std::unique_ptr<KvTransfer> t = StartWithLayerZero(absl::Seconds(60));
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(child_.Kill());
  child_.Wait();
  const absl::Time start = absl::Now();
  absl::Status s = SendTheRest(*t);
  EXPECT_FALSE(s.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(15)) << s;
  t.reset();
  sender_.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20)) << s;
}

// A decode worker shutting down (its transport destroyed in order, as on
// SIGTERM) while a transfer into it is in flight: it exits normally and in
// time, without UCX asserting or hanging in its teardown, and the sender
// neither hangs nor crashes.
TEST_P(UcxTwoProcessTest, ADecodeProcessStoppingMidTransferExitsNormally) {
  ASSERT_NO_FATAL_FAILURE(StartBoth(/*exit_after_export=*/false));
  std::unique_ptr<KvTransfer> t = StartWithLayerZero(absl::Seconds(5));
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(child_.SignalDone());  // the child checks what it has and tears down while the rest comes
  const absl::Time start = absl::Now();
  // OK if all of it landed before the teardown, else an error; by the
  // deadline at the latest (shm notices no peer gone).
  absl::Status s = SendTheRest(*t);
  const int code = child_.WaitFor(absl::Seconds(15));
  EXPECT_GE(code, 0) << (code == -2 ? "the decode process hung in its teardown" : "the decode process crashed");
  EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << s;
  t.reset();
  sender_.reset();
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxTwoProcessTest, ::testing::Values("ucx", "ucx_staged"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
