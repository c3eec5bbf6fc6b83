// The prefill worker's loop with real components in one process: the
// default model on the CPU backend, the Scheduler, and the inproc KV
// transport into a second engine's pool (the decode side). What it must
// do: a prompt longer than the step's budget is computed in chunks and the
// KV that lands in the reserved destination blocks is the KV a monolithic
// prefill computes, bit for bit, with the same first token; a cancel or a
// deadline between chunks ends the job with its status and frees its
// scratch blocks; prompts that fit share a step. Every test ends with no
// scratch block left in use.
#include "prefill_worker/prefill_loop.h"

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/default_model/default_model.h"
#include "common/engine/model_loader.h"
#include "common/transport/inproc_transport.h"
#include "gtest/gtest.h"
#include "tests/testing/default_model_test.h"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

constexpr int32_t kBlockSize = 16;
constexpr int32_t kBlocks = 96;  // 1536 positions on each side

class PrefillLoopTest : public testing::DefaultModelTest {
 protected:

  static std::unique_ptr<Engine> MakeEngine(int32_t blocks = kBlocks) {
    BackendOptions o;
    o.num_kv_blocks = blocks;
    o.block_size = kBlockSize;
    o.num_threads = 1;
    auto backend = CreateBackend(*model_, o);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return std::make_unique<Engine>(std::move(*backend));
  }

  void SetUp() override {
    src_ = MakeEngine();
    dst_ = MakeEngine();
    ref_ = MakeEngine();
    // Endpoint names are process-wide in the inproc registry: one per test.
    const std::string suffix = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    self_ = KvEndpointInfo{"prefill-" + suffix, "default-model", src_->backend().numerics()};
    decode_ = KvEndpointInfo{"decode-" + suffix, "default-model", dst_->backend().numerics()};
    dst_transport_ = MakeInProcessTransport();
    auto desc = dst_transport_->ExportPool(dst_->backend().kv_pool(), decode_);
    ASSERT_TRUE(desc.ok()) << desc.status();
    pool_desc_ = *desc;
    src_transport_ = MakeInProcessTransport();
  }

  void TearDown() override {
    if (loop_ != nullptr) loop_->Stop();
    loop_.reset();
    // Scratch blocks go back as each job completes, whatever its end.
    EXPECT_EQ(src_->kv_cache().num_used_blocks(), 0);
    EXPECT_EQ(src_->kv_cache().num_sequences(), 0u);
    for (auto& [id, blocks] : reserved_) EXPECT_TRUE(dst_->kv_cache().allocator().Release(blocks).ok());
    EXPECT_EQ(dst_->kv_cache().num_used_blocks(), 0);
  }

  void StartLoop(SchedulerOptions o) {
    loop_ = std::make_unique<PrefillLoop>(*src_, *src_transport_, self_, o);
    loop_->set_worker_id(self_.worker_id);
    loop_->Start();
  }

  static std::vector<int32_t> Prompt(int n, int salt) {
    std::vector<int32_t> p;
    const int32_t vocab = static_cast<int32_t>(model_->config.vocab_size);
    for (int i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 37 + salt * 101 + 11) % (vocab - 1)) + 1);
    return p;
  }

  // A job whose destination is freshly reserved in the decode-side pool
  // (what DecodeService.ReserveKv would hand the router).
  std::shared_ptr<PrefillJob> Job(std::vector<int32_t> prompt, float temperature = 0.0f, uint64_t seed = 7) {
    auto job = std::make_shared<PrefillJob>();
    job->request_id = absl::StrCat("r", next_++);
    job->prompt = std::move(prompt);
    job->sampling.temperature = temperature;
    job->sampling.seed = seed;
    job->seed = seed;
    job->enqueued = absl::Now();
    auto blocks = dst_->kv_cache().allocator().Allocate(dst_->kv_cache().layout().BlocksForTokens(
        static_cast<int64_t>(job->prompt.size()) + 1));
    EXPECT_TRUE(blocks.ok()) << blocks.status();
    job->destination.set_transfer_id(job->request_id);
    for (int32_t b : *blocks) job->destination.add_block_ids(b);
    *job->destination.mutable_pool() = pool_desc_;
    reserved_[job->request_id] = *blocks;
    return job;
  }

  // The monolithic prefill: the whole prompt in one step on a fresh
  // sequence of the reference engine. Returns the first token; the KV stays
  // in ref_ under `id` for ExpectKvEqual.
  SampleResult Monolithic(SeqId id, const std::vector<int32_t>& prompt, float temperature = 0.0f,
                          uint64_t seed = 7) {
    Sequence s;
    s.id = id;
    s.tokens = prompt;
    s.prompt_len = static_cast<int32_t>(prompt.size());
    s.sampling.temperature = temperature;
    s.sampling.seed = seed;
    s.seed = seed;
    Sequence* seqs[] = {&s};
    auto plan = PlanWhole(ref_->kv_cache(), seqs);
    EXPECT_TRUE(plan.ok()) << plan.status();
    auto sampled = ref_->Step(*plan);
    EXPECT_TRUE(sampled.ok()) << sampled.status();
    EXPECT_EQ(sampled->size(), 1u);
    return sampled->empty() ? SampleResult{} : (*sampled)[0].sample;
  }

  // Every prompt position's K and V, every layer: the destination blocks
  // of `job` against the reference's sequence `id`. Only positions
  // [0, prompt) are compared: the rest of a last block is unwritten.
  void ExpectKvEqual(const PrefillJob& job, SeqId id) {
    auto ref_table = ref_->kv_cache().BlockTable(id);
    ASSERT_TRUE(ref_table.ok());
    const KvLayout& layout = ref_->kv_cache().layout();
    const size_t row = static_cast<size_t>(layout.block_bytes() / layout.block_size);
    KvPoolView& ref = ref_->backend().kv_pool();
    KvPoolView& dst = dst_->backend().kv_pool();
    int mismatches = 0;
    for (int l = 0; l < layout.num_layers; ++l) {
      for (size_t t = 0; t < job.prompt.size(); ++t) {
        const int32_t rb = (*ref_table)[t / layout.block_size];
        const int32_t db = job.destination.block_ids(static_cast<int>(t / layout.block_size));
        const size_t off = (t % layout.block_size) * row;
        const char* rk = static_cast<const char*>(ref.KeyBlock(l, rb)) + off;
        const char* dk = static_cast<const char*>(dst.KeyBlock(l, db)) + off;
        const char* rv = static_cast<const char*>(ref.ValueBlock(l, rb)) + off;
        const char* dv = static_cast<const char*>(dst.ValueBlock(l, db)) + off;
        if (std::memcmp(rk, dk, row) != 0 || std::memcmp(rv, dv, row) != 0) {
          if (++mismatches <= 3) ADD_FAILURE() << "KV differs at layer " << l << " token " << t;
        }
      }
    }
    EXPECT_EQ(mismatches, 0);
    ref_->kv_cache().Free(id);
  }

  static PrefillResult WaitFor(PrefillJob& job) {
    std::optional<PrefillResult> r = job.Wait(absl::Seconds(30));
    EXPECT_TRUE(r.has_value()) << "job " << job.request_id << " never completed";
    if (r.has_value()) return *r;
    PrefillResult timed_out;
    timed_out.status = absl::InternalError("timed out");
    return timed_out;
  }

  std::unique_ptr<Engine> src_, dst_, ref_;
  KvEndpointInfo self_, decode_;
  std::unique_ptr<KvTransport> dst_transport_, src_transport_;
  v1::KvPoolDescriptor pool_desc_;
  std::unique_ptr<PrefillLoop> loop_;
  std::map<std::string, std::vector<int32_t>> reserved_;
  int next_ = 0;
};


// Chunks of 1 (every token its own step), 7 (a chunk boundary inside a
// block) and 64 (several blocks per chunk), with a budget below the prompt
// so the budget cuts too; greedy and seeded sampling.
TEST_F(PrefillLoopTest, AChunkedPromptsKvAndFirstTokenEqualAMonolithicPrefill) {
  for (int32_t chunk : {1, 7, 64}) {
    SCOPED_TRACE(absl::StrCat("max_chunk_tokens=", chunk));
    SchedulerOptions o;
    o.max_batch_size = 8;
    o.max_batch_tokens = 50;  // less than the prompt: chunked by the budget as well
    o.max_chunk_tokens = chunk;
    StartLoop(o);
    auto greedy = Job(Prompt(203, chunk));
    // 160 tokens end on a block boundary: the reservation (prompt plus the
    // first token's slot) has one block more than the prompt's KV fills.
    auto sampled = Job(Prompt(160, chunk + 1), 0.9f, 4242);
    loop_->Submit(greedy);
    loop_->Submit(sampled);
    PrefillResult g = WaitFor(*greedy), s = WaitFor(*sampled);
    ASSERT_TRUE(g.status.ok()) << g.status;
    ASSERT_TRUE(s.status.ok()) << s.status;
    EXPECT_EQ(g.first_token.token, Monolithic(1, greedy->prompt).token);
    ExpectKvEqual(*greedy, 1);
    EXPECT_EQ(s.first_token.token, Monolithic(2, sampled->prompt, 0.9f, 4242).token);
    ExpectKvEqual(*sampled, 2);
    // Exactly the prompt's blocks travelled (the reservation has one more
    // slot for the first token only when the prompt fills its last block).
    const KvLayout& layout = src_->kv_cache().layout();
    EXPECT_EQ(g.kv_bytes, int64_t{layout.BlocksForTokens(203)} * layout.num_layers * 2 * layout.block_bytes());
    loop_->Stop();
    loop_.reset();
    EXPECT_EQ(src_->kv_cache().num_used_blocks(), 0);
  }
}

TEST_F(PrefillLoopTest, ACancelBetweenChunksEndsTheJobCancelledAndFreesItsBlocks) {
  SchedulerOptions o;
  o.max_chunk_tokens = 1;  // one token per step: hundreds of steps to cancel between
  StartLoop(o);
  auto job = Job(Prompt(400, 3));
  loop_->Submit(job);
  // Running: the loop planned its first chunk (and reserved the whole
  // prompt's scratch blocks), and it is not done.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (loop_->stats().running == 0 && absl::Now() < give_up) absl::SleepFor(absl::Microseconds(100));
  ASSERT_EQ(loop_->stats().running, 1);
  EXPECT_GT(src_->kv_cache().num_used_blocks(), 0);
  job->Cancel();
  PrefillResult r = WaitFor(*job);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled) << r.status;
  EXPECT_EQ(src_->kv_cache().num_used_blocks(), 0);
  // The loop goes on serving.
  auto next = Job(Prompt(20, 4));
  loop_->Submit(next);
  EXPECT_TRUE(WaitFor(*next).status.ok());
}

TEST_F(PrefillLoopTest, ADeadlineThatPassesMidPromptEndsItDeadlineExceeded) {
  SchedulerOptions o;
  o.max_chunk_tokens = 1;
  StartLoop(o);
  // How long the whole prompt takes here, one token per step.
  auto timed = Job(Prompt(400, 5));
  loop_->Submit(timed);
  PrefillResult full = WaitFor(*timed);
  ASSERT_TRUE(full.status.ok()) << full.status;
  const absl::Duration whole = absl::Seconds(full.prefill_seconds);
  ASSERT_GT(whole, absl::Milliseconds(5)) << "too fast to cut in the middle";

  auto job = Job(Prompt(400, 6));
  job->deadline = absl::Now() + whole / 3;
  loop_->Submit(job);
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (loop_->stats().running == 0 && !job->Wait(absl::ZeroDuration()).has_value() && absl::Now() < give_up) {
    absl::SleepFor(absl::Microseconds(100));
  }
  EXPECT_LT(absl::Now(), job->deadline) << "the box was too slow to see it start before its deadline";
  EXPECT_EQ(loop_->stats().running, 1) << "it never started";
  PrefillResult r = WaitFor(*job);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded) << r.status;
  EXPECT_EQ(src_->kv_cache().num_used_blocks(), 0);
}

// Jobs queued together are planned together while the budget lasts: the
// ones in the first step started at the same instant (queue_seconds from a
// common enqueue time are equal), and a prompt past the budget starts
// later, its first chunk sharing a step with the others' last ones.
TEST_F(PrefillLoopTest, SeveralPromptsShareAStep) {
  SchedulerOptions o;
  o.max_batch_size = 8;
  o.max_batch_tokens = 100;
  std::vector<std::shared_ptr<PrefillJob>> jobs = {Job(Prompt(30, 1)), Job(Prompt(40, 2)), Job(Prompt(25, 3)),
                                                   Job(Prompt(60, 4))};
  const absl::Time t0 = absl::Now();
  for (auto& j : jobs) j->enqueued = t0;
  // Submitted before Start: the loop's first Admit sees them all.
  loop_ = std::make_unique<PrefillLoop>(*src_, *src_transport_, self_, o);
  loop_->set_worker_id(self_.worker_id);
  for (auto& j : jobs) loop_->Submit(j);
  loop_->Start();
  std::vector<PrefillResult> r;
  for (auto& j : jobs) {
    r.push_back(WaitFor(*j));
    ASSERT_TRUE(r.back().status.ok()) << r.back().status;
  }
  // 30 + 40 + 25 = 95 of the budget of 100; the fourth gets 5 tokens of it.
  EXPECT_EQ(r[0].queue_seconds, r[1].queue_seconds);
  EXPECT_EQ(r[0].queue_seconds, r[2].queue_seconds);
  EXPECT_EQ(r[0].queue_seconds, r[3].queue_seconds);
  // The first three ended in that step together; the fourth needed another.
  EXPECT_EQ(r[0].prefill_seconds, r[1].prefill_seconds);
  EXPECT_EQ(r[0].prefill_seconds, r[2].prefill_seconds);
  EXPECT_GT(r[3].prefill_seconds, r[0].prefill_seconds);
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(r[i].first_token.token, Monolithic(static_cast<SeqId>(10 + i), jobs[i]->prompt).token) << i;
    ExpectKvEqual(*jobs[i], static_cast<SeqId>(10 + i));
  }
}

}  // namespace
}  // namespace tandem
