// The decode (and aggregated) worker's loop with real components in one
// process: the default model on the CPU backend and the Scheduler. The
// monolithic reference is LocalGenerator (what `tandem generate` runs) on
// its own engine. Adopted sequences get their prompt KV the way a transfer
// delivers it: computed by another engine and copied, block by block, into
// blocks reserved from this loop's pool. What it must do: adopted and
// locally prefilled sequences decode to the monolithic tokens, also when a
// small pool forces preemption; a cancel frees the blocks; max tokens and
// EOS stop a sequence. Every test ends with every block back in the pool.
#include "decode_worker/decode_loop.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/default_model/default_model.h"
#include "common/engine/local_generator.h"
#include "common/engine/model_loader.h"
#include "gtest/gtest.h"
#include "tests/testing/default_model_test.h"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

constexpr int32_t kBlockSize = 16;

struct Output {
  std::vector<int32_t> tokens;
  FinishReason reason = FinishReason::kNone;
  absl::Status error;
  int finishes = 0;
};

class DecodeLoopTest : public testing::DefaultModelTest {
 protected:

  static std::unique_ptr<Engine> MakeEngine(int32_t blocks) {
    BackendOptions o;
    o.num_kv_blocks = blocks;
    o.block_size = kBlockSize;
    o.num_threads = 1;
    auto backend = CreateBackend(*model_, o);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return std::make_unique<Engine>(std::move(*backend));
  }

  void Start(int32_t blocks, SchedulerOptions o = {}, std::vector<int32_t> eos = {}) {
    engine_ = MakeEngine(blocks);
    reservations_ = std::make_unique<KvReservations>(engine_->kv_cache().allocator());
    loop_ = std::make_unique<DecodeLoop>(*engine_, *reservations_, o, std::move(eos));
    loop_->Start();
  }

  void TearDown() override {
    if (loop_ == nullptr) return;
    // Blocks are freed right after a sequence's final event is pushed:
    // give the loop thread a moment.
    const absl::Time give_up = absl::Now() + absl::Seconds(2);
    while (engine_->kv_cache().num_used_blocks() != 0 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_EQ(engine_->kv_cache().num_used_blocks(), 0);
    loop_->Stop();
    EXPECT_EQ(engine_->kv_cache().num_sequences(), 0u);
  }

  static std::vector<int32_t> Prompt(int n, int salt) {
    std::vector<int32_t> p;
    const int32_t vocab = static_cast<int32_t>(model_->config.vocab_size);
    for (int i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 53 + salt * 97 + 5) % (vocab - 1)) + 1);
    return p;
  }

  static GenerationRequest Request(std::vector<int32_t> prompt, int max_new, float temperature = 0.0f,
                                   uint64_t seed = 1) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.stopping.max_new_tokens = max_new;
    r.stopping.ignore_eos = true;
    return r;
  }

  // The monolithic tokens of every request (one process, a large pool).
  static std::vector<std::vector<int32_t>> Monolithic(const std::vector<GenerationRequest>& reqs) {
    auto engine = MakeEngine(1024);
    LocalGenerator gen(*engine, *model_->tokenizer);
    std::vector<std::vector<int32_t>> out(reqs.size());
    EXPECT_TRUE(gen.Run(reqs, [&](const GenerationEvent& e) {
                     if (e.token >= 0) out[e.request].push_back(e.token);
                     EXPECT_TRUE(e.error.ok()) << e.error;
                   }).ok());
    return out;
  }

  static DecodeJob BaseJob(const GenerationRequest& r) {
    DecodeJob job;
    job.request_id = absl::StrCat("req-", r.sampling.seed.value_or(0), "-", r.prompt.size());
    job.prompt_len = static_cast<int32_t>(r.prompt.size());
    job.sampling = r.sampling;
    job.seed = *r.sampling.seed;
    job.stopping = r.stopping;
    job.stream = std::make_shared<DecodeStream>();
    return job;
  }

  // What the decode worker receives after a transfer: the prompt's KV in
  // blocks reserved from this pool, computed by a prefill engine (whose
  // first token it also returns), and the prompt followed by that token.
  DecodeJob Transferred(const GenerationRequest& r, Engine& prefill, SeqId prefill_id) {
    DecodeJob job = BaseJob(r);
    Sequence s;
    s.id = prefill_id;
    s.tokens = r.prompt;
    s.prompt_len = job.prompt_len;
    s.sampling = r.sampling;
    s.seed = job.seed;
    Sequence* seqs[] = {&s};
    auto plan = PlanWhole(prefill.kv_cache(), seqs);
    EXPECT_TRUE(plan.ok()) << plan.status();
    auto sampled = prefill.Step(*plan);
    EXPECT_TRUE(sampled.ok()) << sampled.status();
    auto src = prefill.kv_cache().BlockTable(prefill_id);
    EXPECT_TRUE(src.ok());
    const KvLayout& layout = engine_->kv_cache().layout();
    auto reserved = reservations_->Reserve(job.request_id, layout.BlocksForTokens(job.prompt_len + 1),
                                           absl::Now() + absl::Seconds(60));
    EXPECT_TRUE(reserved.ok()) << reserved.status();
    // The inproc transport's copy: every layer's K and V of the prompt's blocks.
    KvPoolView& from = prefill.backend().kv_pool();
    KvPoolView& to = engine_->backend().kv_pool();
    for (int l = 0; l < layout.num_layers; ++l) {
      for (size_t i = 0; i < src->size(); ++i) {
        std::memcpy(to.KeyBlock(l, (*reserved)[i]), from.KeyBlock(l, (*src)[i]), layout.block_bytes());
        std::memcpy(to.ValueBlock(l, (*reserved)[i]), from.ValueBlock(l, (*src)[i]), layout.block_bytes());
      }
    }
    prefill.kv_cache().Free(prefill_id);
    auto claimed = reservations_->Claim(job.request_id);
    EXPECT_TRUE(claimed.ok()) << claimed.status();
    job.blocks = *claimed;
    job.tokens = r.prompt;
    job.tokens.push_back((*sampled)[0].sample.token);
    return job;
  }

  // A job the loop prefills itself (aggregated role, conditional
  // disaggregation): no blocks, the prompt alone.
  static DecodeJob LocalPrefill(const GenerationRequest& r) {
    DecodeJob job = BaseJob(r);
    job.tokens = r.prompt;
    return job;
  }

  // Drains a stream to its final event. `first` (the prefill's token for a
  // transferred job) starts the output, as the router's relay does.
  static Output Collect(DecodeStream& stream, std::optional<int32_t> first = std::nullopt) {
    Output out;
    if (first.has_value()) out.tokens.push_back(*first);
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (out.finishes == 0 && absl::Now() < give_up) {
      for (DecodeEvent& e : stream.Take(absl::Milliseconds(100))) {
        EXPECT_EQ(out.finishes, 0) << "an event after the final one";
        if (e.sample.token >= 0) out.tokens.push_back(e.sample.token);
        if (e.finished) {
          ++out.finishes;
          out.reason = e.reason;
          out.error = e.error;
        }
      }
    }
    EXPECT_EQ(out.finishes, 1) << "no final event";
    return out;
  }

  std::unique_ptr<Engine> engine_;
  std::unique_ptr<KvReservations> reservations_;
  std::unique_ptr<DecodeLoop> loop_;
};


TEST_F(DecodeLoopTest, AdoptedSequencesDecodeToTheMonolithicTokens) {
  Start(256);
  std::vector<GenerationRequest> reqs = {Request(Prompt(37, 1), 20), Request(Prompt(64, 2), 15, 0.8f, 11),
                                         Request(Prompt(5, 3), 30, 1.0f, 12), Request(Prompt(120, 4), 8)};
  const auto want = Monolithic(reqs);
  auto prefill = MakeEngine(256);
  std::vector<std::shared_ptr<DecodeStream>> streams;
  std::vector<int32_t> firsts;
  for (size_t i = 0; i < reqs.size(); ++i) {
    DecodeJob job = Transferred(reqs[i], *prefill, static_cast<SeqId>(i));
    streams.push_back(job.stream);
    firsts.push_back(job.tokens.back());
    loop_->Submit(std::move(job));
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    Output o = Collect(*streams[i], firsts[i]);
    EXPECT_EQ(o.reason, FinishReason::kLength) << i;
    EXPECT_EQ(o.tokens, want[i]) << "request " << i;
  }
  // Nothing was prefilled here: the transfers brought every prompt.
  EXPECT_EQ(loop_->stats().prompt_tokens_computed, 0);
}

TEST_F(DecodeLoopTest, ALocalPrefillJobStreamsItsFirstTokenThenTheRest) {
  SchedulerOptions o;
  o.max_batch_tokens = 64;  // a 150-token prompt takes several steps
  o.max_chunk_tokens = 7;
  Start(256, o);
  std::vector<GenerationRequest> reqs = {Request(Prompt(150, 5), 12), Request(Prompt(9, 6), 12, 0.7f, 99)};
  const auto want = Monolithic(reqs);
  // An adopted sequence decodes while the local prompts are chunked in
  // beside it (mixed steps), and it too stays monolithic.
  std::vector<GenerationRequest> adopted_req = {Request(Prompt(40, 7), 25, 0.9f, 5)};
  const auto adopted_want = Monolithic(adopted_req);
  auto prefill = MakeEngine(64);
  DecodeJob adopted = Transferred(adopted_req[0], *prefill, 1);
  auto adopted_stream = adopted.stream;
  const int32_t adopted_first = adopted.tokens.back();
  loop_->Submit(std::move(adopted));
  std::vector<std::shared_ptr<DecodeStream>> streams;
  for (const GenerationRequest& r : reqs) {
    DecodeJob job = LocalPrefill(r);
    streams.push_back(job.stream);
    loop_->Submit(std::move(job));
  }
  // The first event carries exactly the first token (the prompt's), before
  // the final one.
  std::vector<DecodeEvent> first = streams[0]->Take(absl::Seconds(30));
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first[0].sample.token, want[0][0]);
  EXPECT_FALSE(first[0].finished);
  Output rest = Collect(*streams[0], first[0].sample.token);
  // Take may have returned more than one event: put them back in order.
  std::vector<int32_t> got = {first[0].sample.token};
  for (size_t i = 1; i < first.size(); ++i) got.push_back(first[i].sample.token);
  got.insert(got.end(), rest.tokens.begin() + 1, rest.tokens.end());
  EXPECT_EQ(got, want[0]);
  Output second = Collect(*streams[1]);
  EXPECT_EQ(second.tokens, want[1]);
  EXPECT_EQ(Collect(*adopted_stream, adopted_first).tokens, adopted_want[0]);
  EXPECT_EQ(loop_->stats().prompt_tokens_computed, 150 + 9);
}

TEST_F(DecodeLoopTest, ACancelFreesTheBlocks) {
  Start(64);
  auto prefill = MakeEngine(64);
  GenerationRequest r = Request(Prompt(50, 8), 2000);
  DecodeJob adopted = Transferred(r, *prefill, 1);
  auto adopted_stream = adopted.stream;
  const SeqId adopted_id = loop_->Submit(std::move(adopted));
  DecodeJob local = LocalPrefill(Request(Prompt(70, 9), 2000));
  auto local_stream = local.stream;
  const SeqId local_id = loop_->Submit(std::move(local));
  // Both are decoding (a few tokens each) and hold blocks.
  for (auto* s : {adopted_stream.get(), local_stream.get()}) {
    int tokens = 0;
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (tokens < 3 && absl::Now() < give_up) tokens += static_cast<int>(s->Take(absl::Milliseconds(100)).size());
    ASSERT_GE(tokens, 3);
  }
  EXPECT_GT(engine_->kv_cache().num_used_blocks(), 0);
  loop_->Cancel(adopted_id);
  loop_->Cancel(local_id);
  Output a = Collect(*adopted_stream), l = Collect(*local_stream);
  EXPECT_EQ(a.reason, FinishReason::kCancelled);
  EXPECT_EQ(l.reason, FinishReason::kCancelled);
  EXPECT_EQ(a.error.code(), absl::StatusCode::kCancelled);
  // TearDown checks every block came back.
}

// 14 blocks of 16 tokens (224 positions) for six sequences that reach
// ~100 tokens each: the scheduler must preempt and recompute, and
// recomputation gives the same tokens (batch-invariant backend, sampling
// keyed by seed and position).
TEST_F(DecodeLoopTest, PreemptionUnderASmallPoolStillGivesTheMonolithicTokens) {
  Start(14);
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    reqs.push_back(Request(Prompt(30 + 3 * i, 20 + i), 70, i % 2 ? 0.8f : 0.0f, 300 + i));
  }
  const auto want = Monolithic(reqs);
  auto prefill = MakeEngine(64);
  std::vector<std::shared_ptr<DecodeStream>> streams;
  std::vector<std::optional<int32_t>> firsts;
  // Every transfer's reservation is made before the loop sees any job: a
  // running loop fills the small pool, and a reservation refused then is
  // the router's to retry, not this test's subject.
  std::vector<DecodeJob> jobs;
  for (size_t i = 0; i < reqs.size(); ++i) {
    // Half adopted, half prefilled here.
    if (i % 2 == 0) {
      jobs.push_back(Transferred(reqs[i], *prefill, static_cast<SeqId>(i)));
      firsts.push_back(jobs.back().tokens.back());
    } else {
      jobs.push_back(LocalPrefill(reqs[i]));
      firsts.push_back(std::nullopt);
    }
    streams.push_back(jobs.back().stream);
  }
  for (DecodeJob& job : jobs) loop_->Submit(std::move(job));
  for (size_t i = 0; i < reqs.size(); ++i) {
    Output o = Collect(*streams[i], firsts[i]);
    EXPECT_TRUE(o.error.ok()) << o.error;
    EXPECT_EQ(o.tokens, want[i]) << "request " << i;
  }
  EXPECT_GT(loop_->stats().preemptions, 0) << "no preemption happened; the test lost its point";
}

TEST_F(DecodeLoopTest, StopsOnMaxTokensAndOnEos) {
  // The greedy continuation of a prompt; its 6th token (first seen there)
  // becomes the EOS id of a second loop.
  std::vector<GenerationRequest> reqs = {Request(Prompt(20, 30), 12)};
  const auto want = Monolithic(reqs);
  ASSERT_EQ(want[0].size(), 12u);
  size_t k = 5;
  while (k < want[0].size() &&
         std::find(want[0].begin(), want[0].begin() + static_cast<std::ptrdiff_t>(k), want[0][k]) !=
             want[0].begin() + static_cast<std::ptrdiff_t>(k)) {
    ++k;
  }
  ASSERT_LT(k, want[0].size()) << "no fresh token to stop on";
  const int32_t eos = want[0][k];

  Start(64, {}, {eos});
  // ignore_eos: the max token count ends it, EOS or not.
  DecodeJob capped = LocalPrefill(reqs[0]);
  Output c = [&] {
    auto s = capped.stream;
    loop_->Submit(std::move(capped));
    return Collect(*s);
  }();
  EXPECT_EQ(c.reason, FinishReason::kLength);
  EXPECT_EQ(c.tokens, want[0]);

  // Honouring EOS: ends with it (the EOS token is the last event).
  GenerationRequest stop_req = reqs[0];
  stop_req.stopping.ignore_eos = false;
  DecodeJob stopping = LocalPrefill(stop_req);
  auto s = stopping.stream;
  loop_->Submit(std::move(stopping));
  Output e = Collect(*s);
  EXPECT_EQ(e.reason, FinishReason::kStop);
  EXPECT_EQ(e.tokens, std::vector<int32_t>(want[0].begin(), want[0].begin() + static_cast<std::ptrdiff_t>(k) + 1));

  // Max tokens counts the transferred first token (the prefill's): with
  // max_new_tokens = 2 the loop generates exactly one more.
  GenerationRequest two = Request(Prompt(20, 30), 2);
  auto prefill = MakeEngine(16);
  DecodeJob t = Transferred(two, *prefill, 1);
  const int32_t first = t.tokens.back();
  auto ts = t.stream;
  loop_->Submit(std::move(t));
  Output o = Collect(*ts, first);
  EXPECT_EQ(o.reason, FinishReason::kLength);
  EXPECT_EQ(o.tokens, std::vector<int32_t>(want[0].begin(), want[0].begin() + 2));
}

}  // namespace
}  // namespace tandem
