// The NCCL KV transport's logic without GPUs: a fake NcclOps moves bytes
// between two in-process "ranks" in stream order, and can hold messages
// (a hang) or fail the communicator (an async error). Also the records,
// the checks on a request, the plan and the selection of nccl.
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "common/transport/nccl_protocol.h"
#include "common/transport/nccl_transport.h"
#include "common/transport/transport_selection.h"
#include "decode_worker/kv_reservations.h"
#include "gtest/gtest.h"
#include "tests/common/transport/test_pool.h"

namespace tandem {
namespace {

// Both ranks' shared state. Streams are queues of ops run in order; a
// send lands in the peer's wire, a receive waits for the wire's head.
struct Fabric {
  std::mutex mu;
  bool hold = false;       // sends never arrive (a hang)
  absl::Status error;      // the communicators' async error
  int unique_ids = 0, aborts = 0, destroys = 0;
  std::map<std::string, int> joined;  // unique id -> ranks that called init
  std::deque<std::string> wire[2];    // to rank r
  struct Op {
    int kind;  // 0 copy, 1 send, 2 recv
    void* dst;
    const void* src;
    size_t bytes;
    int to;
  };
  struct Stream {
    int rank;
    std::deque<Op> ops;
  };
  std::deque<Stream> streams;
  void Pump() {
    for (Stream& s : streams) {
      while (!s.ops.empty()) {
        Op& op = s.ops.front();
        if (op.kind == 0) {
          std::memcpy(op.dst, op.src, op.bytes);
        } else if (op.kind == 1) {
          if (hold) break;
          wire[op.to].emplace_back(static_cast<const char*>(op.src), op.bytes);
        } else {
          if (wire[s.rank].empty()) break;
          if (wire[s.rank].front().size() != op.bytes) {
            error = absl::InternalError("size mismatch");
            break;
          }
          std::memcpy(op.dst, wire[s.rank].front().data(), op.bytes);
          wire[s.rank].pop_front();
        }
        s.ops.pop_front();
      }
    }
  }
};

class FakeOps final : public NcclOps {
 public:
  FakeOps(Fabric& f, int rank) : f_(f), rank_(rank) {}
  absl::StatusOr<std::string> GetUniqueId() override {
    std::lock_guard<std::mutex> l(f_.mu);
    return std::string(kNcclUniqueIdBytes, static_cast<char>('a' + f_.unique_ids++));
  }
  absl::StatusOr<NcclCommHandle> CommInitRank(const std::string& uid, int, int, int) override {
    std::lock_guard<std::mutex> l(f_.mu);
    ++f_.joined[uid];
    return static_cast<NcclCommHandle>(new std::string(uid));
  }
  NcclCommState CommState(NcclCommHandle comm, absl::Status* error) override {
    std::lock_guard<std::mutex> l(f_.mu);
    f_.Pump();
    if (!f_.error.ok()) {
      *error = f_.error;
      return NcclCommState::kFailed;
    }
    return f_.joined[*static_cast<std::string*>(comm)] == 2 ? NcclCommState::kReady : NcclCommState::kInProgress;
  }
  void CommAbort(NcclCommHandle comm) override {
    std::lock_guard<std::mutex> l(f_.mu);
    ++f_.aborts;
    delete static_cast<std::string*>(comm);
  }
  void CommDestroy(NcclCommHandle comm) override {
    std::lock_guard<std::mutex> l(f_.mu);
    ++f_.destroys;
    delete static_cast<std::string*>(comm);
  }
  absl::Status GroupStart() override { return absl::OkStatus(); }
  absl::Status GroupEnd() override { return absl::OkStatus(); }
  absl::Status Send(const void* buf, size_t bytes, int peer, NcclCommHandle, GpuStreamHandle s) override {
    return Push(s, {1, nullptr, buf, bytes, peer});
  }
  absl::Status Recv(void* buf, size_t bytes, int, NcclCommHandle, GpuStreamHandle s) override {
    return Push(s, {2, buf, nullptr, bytes, rank_});
  }
  absl::StatusOr<GpuStreamHandle> CreateStream(int) override {
    std::lock_guard<std::mutex> l(f_.mu);
    f_.streams.push_back({rank_, {}});
    return static_cast<GpuStreamHandle>(&f_.streams.back());
  }
  void DestroyStream(int, GpuStreamHandle) override {}
  absl::StatusOr<GpuEventHandle> CreateEvent(int) override { return static_cast<GpuEventHandle>(new GpuStreamHandle()); }
  void DestroyEvent(GpuEventHandle e) override { delete static_cast<GpuStreamHandle*>(e); }
  absl::Status RecordEvent(GpuEventHandle e, GpuStreamHandle s) override {
    *static_cast<GpuStreamHandle*>(e) = s;
    return absl::OkStatus();
  }
  // Done when its stream is drained (the fake records only at the end).
  absl::StatusOr<bool> EventDone(GpuEventHandle e) override {
    std::lock_guard<std::mutex> l(f_.mu);
    f_.Pump();
    return static_cast<Fabric::Stream*>(*static_cast<GpuStreamHandle*>(e))->ops.empty();
  }
  absl::Status CopyAsync(void* dst, const void* src, size_t bytes, GpuStreamHandle s) override {
    return Push(s, {0, dst, src, bytes, 0});
  }
  absl::StatusOr<void*> Alloc(int, size_t bytes) override { return std::malloc(bytes); }
  void Free(int, void* p) override { std::free(p); }
  absl::Status BindThread(int) override { return absl::OkStatus(); }
  absl::StatusOr<int> DeviceOf(const void*) override { return rank_; }
  absl::StatusOr<std::string> PciBusId(int d) override { return absl::StrCat("0000:0", d, ":00.0"); }

 private:
  absl::Status Push(GpuStreamHandle s, Fabric::Op op) {
    std::lock_guard<std::mutex> l(f_.mu);
    static_cast<Fabric::Stream*>(s)->ops.push_back(op);
    return absl::OkStatus();
  }
  Fabric& f_;
  int rank_;
};

// Delivers requests straight to the decode transport; the reservation
// map stands in for KvReservations (on_failed frees an entry).
struct Reservations {
  std::mutex mu;
  std::map<std::string, std::vector<int32_t>> live;
};

class DirectControl final : public NcclControl {
 public:
  DirectControl(KvTransport*& decode, Reservations& r) : decode_(decode), r_(r) {}
  absl::Status Send(const std::string&, const v1::NcclTransferRequest& req, absl::Time) override {
    std::vector<int32_t> reserved;
    {
      std::lock_guard<std::mutex> l(r_.mu);
      reserved = r_.live[req.transfer_id()];
    }
    // The callback may run on the decode side's receiver thread after the
    // prefill transport (which owns this object) is gone: it holds the
    // fixture's Reservations, which outlive both transports, not `this`.
    return decode_->receiver()->AcceptAnnouncedTransfer(req, reserved, [&r = r_](const std::string& id) {
      std::lock_guard<std::mutex> l(r.mu);
      r.live.erase(id);
    });
  }

 private:
  KvTransport*& decode_;
  Reservations& r_;
};

class NcclTransportTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(kNcclMaxDirectRuns); }
  void Make(size_t max_direct_runs) {
    NcclTransportOptions o;
    o.require_device_pools = false;
    o.host_id = "h";
    o.init_timeout = absl::Seconds(5);
    o.max_direct_runs = max_direct_runs;
    decode_ = MakeNcclTransportWith(std::make_shared<FakeOps>(fabric_, 1), nullptr, o);
    decode_raw_ = decode_.get();
    decode_->receiver()->SetWriteGate(gate_);
    prefill_ = MakeNcclTransportWith(std::make_shared<FakeOps>(fabric_, 0),
                                     std::make_unique<DirectControl>(decode_raw_, res_), o);
    auto d = decode_->ExportPool(dst_pool_, {"d0:1", "fp"});
    ASSERT_TRUE(d.ok()) << d.status();
    desc_ = *d;
  }
  absl::StatusOr<std::unique_ptr<KvTransfer>> Start(const std::string& id, std::vector<int32_t> src,
                                                    std::vector<int32_t> dst, absl::Duration timeout = absl::Seconds(5),
                                                    absl::Duration finish_timeout = absl::InfiniteDuration()) {
    {
      std::lock_guard<std::mutex> l(res_.mu);
      res_.live[id] = dst;
    }
    KvTransferSpec spec{id, std::move(src), std::move(dst), absl::Now() + timeout, finish_timeout};
    return prefill_->StartTransfer(src_pool_, {"p0:1", "fp"}, desc_, std::move(spec));
  }
  void ExpectCopied(const std::vector<int32_t>& src, const std::vector<int32_t>& dst) {
    const size_t bytes = SmallLayout().block_bytes();
    for (int l = 0; l < SmallLayout().num_layers; ++l) {
      for (size_t i = 0; i < src.size(); ++i) {
        for (int kv = 0; kv < 2; ++kv) {
          EXPECT_EQ(std::memcmp(src_pool_.At(l, kv, src[i]), dst_pool_.At(l, kv, dst[i]), bytes), 0)
              << "layer " << l << " kv " << kv << " block " << src[i] << "->" << dst[i];
        }
      }
    }
  }
  NcclTransportStats& Stats(const std::unique_ptr<KvTransport>& t) { return dynamic_cast<NcclTransportStats&>(*t); }

  Fabric fabric_;
  Reservations res_;
  KvWriteGate* gate_ = nullptr;  // for the decode side Make builds
  TestPool src_pool_{SmallLayout(), 16, 1.0f};
  TestPool dst_pool_{SmallLayout(), 16, 5000.0f};
  std::unique_ptr<KvTransport> decode_;  // destroyed last (declared first)
  KvTransport* decode_raw_ = nullptr;
  std::unique_ptr<KvTransport> prefill_;
  v1::KvPoolDescriptor desc_;
};

void SendAll(KvTransfer& t) {
  for (int l = 0; l < SmallLayout().num_layers; ++l) ASSERT_TRUE(t.SendLayer(l).ok());
}

TEST_F(NcclTransportTest, MovesEveryByteAndCachesTheCommunicator) {
  for (int round = 0; round < 2; ++round) {
    const std::string id = absl::StrCat("t", round);
    auto t = Start(id, {0, 1, 2, 7}, {3, 4, 5, 9});
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->transport(), "nccl");
    SendAll(**t);
    ASSERT_TRUE((*t)->Finish().ok());
    ASSERT_TRUE(decode_->receiver()->WaitReceived(id, "", absl::Now() + absl::Seconds(5)).ok());
    ExpectCopied({0, 1, 2, 7}, {3, 4, 5, 9});
  }
  EXPECT_EQ(fabric_.unique_ids, 1);  // one communicator for both transfers
  EXPECT_EQ(Stats(prefill_).send_peers(), 1u);
  EXPECT_EQ(Stats(decode_).receive_pairs(), 1u);
  prefill_->Disconnect("d0:1");
  EXPECT_EQ(Stats(prefill_).send_peers(), 0u);
  EXPECT_EQ(fabric_.destroys, 1);
  EXPECT_EQ(fabric_.aborts, 0);
}

TEST(NcclPlanTest, ManyRunsAreStaged) {
  EXPECT_FALSE(PlanNcclTransfer({0, 1, 2}, {5, 6, 7}).staged);
  NcclPlan p = PlanNcclTransfer({0, 2, 4}, {1, 3, 5}, 2);
  EXPECT_TRUE(p.staged);
  EXPECT_EQ(p.runs.size(), 3u);
  EXPECT_EQ(p.blocks, 3);
}

TEST_F(NcclTransportTest, StagedTransferMovesEveryByte) {
  Make(1);
  auto t = Start("s", {0, 2, 4, 5}, {9, 1, 12, 13});
  ASSERT_TRUE(t.ok()) << t.status();
  SendAll(**t);
  ASSERT_TRUE((*t)->Finish().ok());
  ASSERT_TRUE(decode_->receiver()->WaitReceived("s", "", absl::Now() + absl::Seconds(5)).ok());
  ExpectCopied({0, 2, 4, 5}, {9, 1, 12, 13});
}

TEST_F(NcclTransportTest, InterleavedTransfersToOnePeerStayMatched) {
  auto a = Start("a", {0, 1}, {2, 3});
  auto b = Start("b", {4, 8}, {10, 6});
  ASSERT_TRUE(a.ok() && b.ok());
  for (int l = 0; l < SmallLayout().num_layers; ++l) {
    ASSERT_TRUE((*b)->SendLayer(l).ok());  // b first: held back until a is out
    ASSERT_TRUE((*a)->SendLayer(l).ok());
  }
  ASSERT_TRUE((*a)->Finish().ok());
  ASSERT_TRUE((*b)->Finish().ok());
  ASSERT_TRUE(decode_->receiver()->WaitReceived("b", "", absl::Now() + absl::Seconds(5)).ok());
  ExpectCopied({0, 1, 4, 8}, {2, 3, 10, 6});
}

TEST_F(NcclTransportTest, AnAbandonedTransferIsRetriedOnTheSamePair) {
  // The prefill loop's fallback: a batch abandoned after layer 0, then the
  // same transfer id again. The pair stays matched and is not rebuilt.
  {
    auto t = Start("r", {0, 1}, {6, 7});
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE((*t)->SendLayer(0).ok());
  }
  auto t = Start("r", {0, 1}, {6, 7});
  ASSERT_TRUE(t.ok()) << t.status();
  SendAll(**t);
  ASSERT_TRUE((*t)->Finish().ok());
  ASSERT_TRUE(decode_->receiver()->WaitReceived("r", "", absl::Now() + absl::Seconds(5)).ok());
  ExpectCopied({0, 1}, {6, 7});
  EXPECT_EQ(fabric_.unique_ids, 1);
  EXPECT_EQ(fabric_.aborts, 0);
}

TEST_F(NcclTransportTest, AsyncErrorAbortsDropsAndFreesTheReservation) {
  auto t = Start("e", {0, 1}, {2, 3});
  ASSERT_TRUE(t.ok());
  {
    std::lock_guard<std::mutex> l(fabric_.mu);
    fabric_.hold = true;
    fabric_.error = absl::InternalError("remote process exited");
  }
  SendAll(**t);
  absl::Status s = (*t)->Finish();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_EQ(Stats(prefill_).send_peers(), 0u);
  EXPECT_FALSE(decode_->receiver()->WaitReceived("e", "", absl::Now() + absl::Seconds(5)).ok());
  EXPECT_GE(fabric_.aborts, 2);  // both sides
  std::lock_guard<std::mutex> l(res_.mu);
  EXPECT_FALSE(res_.live.contains("e"));  // no block leaked
}

TEST_F(NcclTransportTest, HangEndsAtTheDeadlineAndTheNextTransferReconnects) {
  auto t = Start("h", {0}, {1}, absl::Milliseconds(200));
  ASSERT_TRUE(t.ok());
  {
    std::lock_guard<std::mutex> l(fabric_.mu);
    fabric_.hold = true;
  }
  SendAll(**t);
  absl::Status s = (*t)->Finish();
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  EXPECT_EQ(Stats(prefill_).send_peers(), 0u);
  EXPECT_FALSE(decode_->receiver()->WaitReceived("h", "", absl::Now() + absl::Seconds(5)).ok());  // its own timeout
  {
    std::lock_guard<std::mutex> l(res_.mu);
    EXPECT_FALSE(res_.live.contains("h"));
  }
  {
    std::lock_guard<std::mutex> l(fabric_.mu);
    fabric_.hold = false;
    fabric_.wire[0].clear();
    fabric_.wire[1].clear();
  }
  t->reset();
  auto again = Start("h2", {3}, {4});
  ASSERT_TRUE(again.ok()) << again.status();
  SendAll(**again);
  ASSERT_TRUE((*again)->Finish().ok());
  EXPECT_EQ(fabric_.unique_ids, 2);
}

// A decode side that stops receiving (held sends) ends Finish at the finish
// timeout, well before the deadline, UNAVAILABLE: the pair is aborted
// (which ends the pending sends, so the source blocks may be freed) and
// the decode side frees the reservation at its own receive timeout.
TEST_F(NcclTransportTest, AStalledDecodeSideFailsFinishAtTheFinishTimeout) {
  auto t = Start("ft", {0, 1}, {2, 3}, absl::Milliseconds(800), absl::Milliseconds(100));
  ASSERT_TRUE(t.ok()) << t.status();
  {
    std::lock_guard<std::mutex> l(fabric_.mu);
    fabric_.hold = true;
  }
  SendAll(**t);
  const absl::Time start = absl::Now();
  const absl::Status s = (*t)->Finish();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_NE(s.message().find("did not confirm"), std::string::npos) << s;
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(700)) << "waited for the deadline";
  EXPECT_EQ(Stats(prefill_).send_peers(), 0u);
  EXPECT_GE(fabric_.aborts, 1);
  EXPECT_FALSE(decode_->receiver()->WaitReceived("ft", "", absl::Now() + absl::Seconds(5)).ok());
  std::lock_guard<std::mutex> l(res_.mu);
  EXPECT_FALSE(res_.live.contains("ft"));  // no block leaked
}

// With the decode worker's reservations as the gate: the router releasing
// a reservation while its receives are posted (it gave up on the request)
// must not hand the blocks to anyone before the receives are over, by
// completing or by the abort at their deadline.
TEST_F(NcclTransportTest, AReservationReleasedWhileReceivingKeepsItsBlocksUntilTheyEnd) {
  BlockAllocator blocks(16);
  KvReservations reservations(blocks);
  prefill_.reset();
  decode_.reset();
  gate_ = &reservations;
  Make(kNcclMaxDirectRuns);
  auto Held = [&] { return 16 - blocks.num_free(); };

  for (const bool arrives : {true, false}) {
    SCOPED_TRACE(arrives ? "receives complete" : "receives aborted at their deadline");
    const std::string id = arrives ? "done" : "late";
    auto dst = reservations.Reserve(id, 2, absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(dst.ok());
    {
      std::lock_guard<std::mutex> l(fabric_.mu);
      fabric_.hold = true;
    }
    auto t = Start(id, {0, 1}, *dst, arrives ? absl::Seconds(5) : absl::Milliseconds(300));
    ASSERT_TRUE(t.ok()) << t.status();
    SendAll(**t);  // the decode side accepted (pinned) and posted its receives
    reservations.Release(id);
    EXPECT_EQ(Held(), 2);  // dead, but still written
    EXPECT_EQ(reservations.Claim(id).status().code(), absl::StatusCode::kNotFound);
    if (arrives) {
      std::lock_guard<std::mutex> l(fabric_.mu);
      fabric_.hold = false;
    }
    absl::Status s = (*t)->Finish();
    EXPECT_EQ(s.ok(), arrives) << s;
    decode_->receiver()->WaitReceived(id, "", absl::Now() + absl::Seconds(5)).IgnoreError();
    const absl::Time give_up = absl::Now() + absl::Seconds(5);
    while (Held() != 0 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(5));
    EXPECT_EQ(Held(), 0);
    if (arrives) ExpectCopied({0, 1}, *dst);
    {
      std::lock_guard<std::mutex> l(fabric_.mu);
      fabric_.hold = false;
      fabric_.wire[0].clear();
      fabric_.wire[1].clear();
    }
  }
  prefill_.reset();
  decode_.reset();  // before the gate goes
  EXPECT_EQ(reservations.reserved_blocks(), 0);
}

v1::NcclTransferRequest GoodRequest() {
  v1::NcclTransferRequest r;
  r.set_transfer_id("t");
  r.set_prefill_worker_id("p");
  r.set_unique_id(std::string(kNcclUniqueIdBytes, 'x'));
  r.set_num_layers(3);
  r.set_block_stride(64);
  r.set_timeout_seconds(1);
  SetNcclPlan(PlanNcclTransfer({0, 1, 5}, {4, 5, 9}), &r);
  return r;
}

TEST(NcclRequestTest, ChecksEveryField) {
  const std::vector<int32_t> reserved = {4, 5, 9};
  auto ok = ValidateNcclRequest(GoodRequest(), 3, 10, 64, reserved);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->runs, (std::vector<NcclRecvRun>{{4, 2}, {9, 1}}));
  auto r = GoodRequest();
  r.set_unique_id("short");
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateNcclRequest(r, 3, 10, 64, reserved).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(ValidateNcclRequest(GoodRequest(), 4, 10, 64, reserved).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(ValidateNcclRequest(GoodRequest(), 3, 10, 32, reserved).status()));
  EXPECT_TRUE(absl::IsOutOfRange(ValidateNcclRequest(GoodRequest(), 3, 9, 64, reserved).status()));
  EXPECT_TRUE(absl::IsPermissionDenied(ValidateNcclRequest(GoodRequest(), 3, 10, 64, {4, 5}).status()));
  r = GoodRequest();
  r.set_run_lengths(0, 3);
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateNcclRequest(r, 3, 10, 64, reserved).status()));
  r = GoodRequest();
  r.add_run_lengths(1);
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateNcclRequest(r, 3, 10, 64, reserved).status()));
}

TEST(NcclExportTest, RoundTripsAndRefusesGarbage) {
  NcclExport e{"d:1", "0000:01:00.0", 42};
  auto back = DecodeNcclExport(EncodeNcclExport(e), "d");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, e);
  std::string bytes = EncodeNcclExport(e);
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeNcclExport(bytes.substr(0, bytes.size() - 1), "d").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeNcclExport(bytes + "x", "d").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeNcclExport(EncodeNcclExport({"", "b", 1}), "d").status()));
}

TEST(NcclSelectionTest, SameHostIpcElseNcclElseStaged) {
  const std::vector<TransportOffer> offers = {{"cuda_ipc", "h1", ""}, {"nccl", "h1", ""}, {"ucx_staged", "e", ""}};
  TransportChoiceInput in{true, "h1", {"cuda_ipc", "nccl", "ucx", "ucx_staged"}};
  EXPECT_EQ(ChooseTransport(offers, in, "d")->transport, "cuda_ipc");
  in.local_host_id = "h2";
  EXPECT_EQ(ChooseTransport(offers, in, "d")->transport, "nccl");
  in.available = {"cuda_ipc", "ucx", "ucx_staged"};  // a build without NCCL
  EXPECT_EQ(ChooseTransport(offers, in, "d")->transport, "ucx_staged");
  in = {false, "h2", {"cuda_ipc", "nccl", "ucx_staged"}};
  EXPECT_EQ(ChooseTransport(offers, in, "d")->transport, "ucx_staged");
  EXPECT_EQ(TransportsToExport(true), (std::vector<std::string>{"cuda_ipc", "nccl", "ucx_staged"}));
}

}  // namespace
}  // namespace tandem
