// Engine bookkeeping over the CPU backend: batch independence of sampled
// tokens, all-or-nothing KV reservation, and no leaked blocks.
#include "common/engine/engine.h"

#include <memory>

#include "common/engine/cpu_backend.h"
#include "common/model/weight_store.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 512;
  c.torch_dtype = DType::kF32;
  c.eos_token_ids = {1};
  return c;
}

std::unique_ptr<Engine> MakeEngine(int32_t num_blocks, int32_t block_size = 4, int threads = 2) {
  ModelConfig config = SmallConfig();
  auto weights = MakeDummyWeightStore(config, /*seed=*/7, DType::kF32, /*scale=*/0.2f);
  CpuBackendOptions o;
  o.num_kv_blocks = num_blocks;
  o.block_size = block_size;
  o.num_threads = threads;
  auto backend = CpuBackend::Create(config, *weights, o);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return std::make_unique<Engine>(std::move(*backend));
}

Sequence MakeSequence(SeqId id, std::vector<int32_t> prompt, float temperature, uint64_t seed) {
  Sequence s;
  s.id = id;
  s.tokens = std::move(prompt);
  s.prompt_len = static_cast<int32_t>(s.tokens.size());
  s.sampling.temperature = temperature;
  s.seed = seed;
  return s;
}

std::vector<int32_t> Prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back((i * 31 + salt * 17 + 3) % 97);
  return p;
}

// Plans every sequence's whole gap (reserving) and computes it.
absl::StatusOr<std::vector<StepSample>> StepWhole(Engine& engine, std::span<Sequence* const> seqs) {
  absl::StatusOr<StepPlan> plan = PlanWhole(engine.kv_cache(), seqs);
  if (!plan.ok()) return plan.status();
  return engine.Step(*plan);
}

// Runs `seqs` for `steps` steps together and returns each one's output.
std::vector<std::vector<int32_t>> RunTogether(Engine& engine, std::vector<Sequence>& seqs, int steps) {
  std::vector<Sequence*> batch;
  for (Sequence& s : seqs) batch.push_back(&s);
  for (int i = 0; i < steps; ++i) {
    auto r = StepWhole(engine, batch);
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) EXPECT_EQ(r->size(), batch.size());
  }
  std::vector<std::vector<int32_t>> out;
  for (Sequence& s : seqs) {
    out.emplace_back(s.output().begin(), s.output().end());
    engine.Release(s);
  }
  return out;
}

TEST(EngineTest, StepAppendsOneTokenAndAdvancesTheComputedPrefix) {
  auto engine = MakeEngine(64);
  Sequence s = MakeSequence(1, Prompt(9, 1), 0.0f, 0);
  Sequence* batch[] = {&s};
  ASSERT_TRUE(StepWhole(*engine, batch).ok());
  EXPECT_EQ(s.tokens.size(), 10u);
  EXPECT_EQ(s.num_computed, 9);  // the sampled token is not yet in the cache
  EXPECT_EQ(engine->kv_cache().BlockTable(1)->size(), 3u);  // ceil(10 / 4)
  ASSERT_TRUE(StepWhole(*engine, batch).ok());
  EXPECT_EQ(s.num_computed, 10);
  engine->Release(s);
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
}

TEST(EngineTest, TokensDoNotDependOnTheRestOfTheBatch) {
  for (float temperature : {0.0f, 0.9f}) {
    auto engine = MakeEngine(256);
    std::vector<Sequence> alone = {MakeSequence(1, Prompt(13, 1), temperature, 42)};
    const auto expected = RunTogether(*engine, alone, 12)[0];

    // The same sequence joined by others: a longer prompt, a one-token prompt,
    // and one that joins later (its prefill runs beside the first one's decode).
    std::vector<Sequence> crowd = {MakeSequence(5, Prompt(29, 2), temperature, 1),
                                   MakeSequence(1, Prompt(13, 1), temperature, 42),
                                   MakeSequence(9, Prompt(1, 3), temperature, 2)};
    const auto got = RunTogether(*engine, crowd, 12);
    EXPECT_EQ(got[1], expected) << "temperature " << temperature;

    std::vector<Sequence> staggered = {MakeSequence(1, Prompt(13, 1), temperature, 42)};
    Sequence* first[] = {&staggered[0]};
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(StepWhole(*engine, first).ok());
    Sequence late = MakeSequence(3, Prompt(21, 4), temperature, 3);
    Sequence* both[] = {&late, &staggered[0]};
    for (int i = 0; i < 7; ++i) ASSERT_TRUE(StepWhole(*engine, both).ok());
    EXPECT_EQ(std::vector<int32_t>(staggered[0].output().begin(), staggered[0].output().end()),
              expected);
    engine->Release(staggered[0]);
    engine->Release(late);
    EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
  }
}

TEST(EngineTest, SeedsMakeSamplingRepeatableAndDifferentSeedsDiffer) {
  auto engine = MakeEngine(128);
  std::vector<Sequence> a = {MakeSequence(1, Prompt(5, 1), 1.5f, 123)};
  std::vector<Sequence> b = {MakeSequence(1, Prompt(5, 1), 1.5f, 123)};
  std::vector<Sequence> c = {MakeSequence(1, Prompt(5, 1), 1.5f, 124)};
  const auto ta = RunTogether(*engine, a, 20)[0];
  const auto tb = RunTogether(*engine, b, 20)[0];
  const auto tc = RunTogether(*engine, c, 20)[0];
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
}

TEST(EngineTest, ExhaustedKvCacheFailsThePlanWithoutChangingTokens) {
  auto engine = MakeEngine(/*num_blocks=*/5, /*block_size=*/4);
  Sequence a = MakeSequence(1, Prompt(13, 1), 0.0f, 0);  // 4 blocks
  Sequence b = MakeSequence(2, Prompt(6, 2), 0.0f, 0);   // 2 blocks: 6 > 5 in all
  Sequence* batch[] = {&a, &b};
  auto r = StepWhole(*engine, batch);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_EQ(a.tokens.size(), 13u);
  EXPECT_EQ(b.tokens.size(), 6u);
  EXPECT_EQ(a.num_computed, 0);
  engine->Release(a);
  engine->Release(b);
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
  // Alone, each fits.
  Sequence* just_a[] = {&a};
  EXPECT_TRUE(StepWhole(*engine, just_a).ok());
  engine->Release(a);
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
}

TEST(EngineTest, RecomputeAfterReleaseContinuesTheSameTokens) {
  // Preemption by recompute is only sound if the recomputed KV gives the
  // same next tokens; the backend's batch/chunk invariance guarantees it.
  auto engine = MakeEngine(128);
  std::vector<Sequence> straight = {MakeSequence(1, Prompt(10, 5), 0.8f, 9)};
  const auto expected = RunTogether(*engine, straight, 16)[0];

  Sequence s = MakeSequence(1, Prompt(10, 5), 0.8f, 9);
  Sequence* batch[] = {&s};
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(StepWhole(*engine, batch).ok());
  engine->Release(s);  // preempted: its KV is gone, its tokens stay
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(StepWhole(*engine, batch).ok());
  EXPECT_EQ(std::vector<int32_t>(s.output().begin(), s.output().end()), expected);
  engine->Release(s);
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
}

TEST(EngineTest, RejectsSequencesWithNothingToComputeOrPastTheContext) {
  auto engine = MakeEngine(512);
  Sequence s = MakeSequence(1, Prompt(4, 1), 0.0f, 0);
  s.num_computed = 4;
  Sequence* batch[] = {&s};
  EXPECT_EQ(StepWhole(*engine, batch).status().code(), absl::StatusCode::kInvalidArgument);
  Sequence long_one = MakeSequence(2, Prompt(513, 1), 0.0f, 0);
  Sequence* batch2[] = {&long_one};
  EXPECT_EQ(StepWhole(*engine, batch2).status().code(), absl::StatusCode::kInvalidArgument);
  // The planner reserved; the engine refused without computing.
  EXPECT_EQ(long_one.num_computed, 0);
  engine->Release(s);
  engine->Release(long_one);
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
}

// A prompt computed in chunks of any size leaves the same KV and samples
// the same tokens as the prompt computed at once: what chunked prefill and
// disaggregated == monolithic rest on.
TEST(EngineTest, ChunkedPromptEqualsWholePrompt) {
  for (float temperature : {0.0f, 0.9f}) {
    auto engine = MakeEngine(256);
    std::vector<Sequence> whole = {MakeSequence(1, Prompt(37, 6), temperature, 5)};
    const auto expected = RunTogether(*engine, whole, 8)[0];
    for (int32_t chunk : {1, 7, 16, 36}) {
      Sequence s = MakeSequence(2, Prompt(37, 6), temperature, 5);
      while (s.num_computed < s.prompt_len) {
        const int32_t n = std::min(chunk, s.prompt_len - s.num_computed);
        ASSERT_TRUE(engine->kv_cache().Reserve(s.id, s.num_computed + n).ok());
        StepPlan plan;
        plan.chunks.push_back({&s, n});
        auto r = engine->Step(plan);
        ASSERT_TRUE(r.ok()) << r.status();
        // Only the chunk that reaches the end samples.
        EXPECT_EQ(r->size(), s.tokens.size() > 37u ? 1u : 0u);
      }
      ASSERT_EQ(s.tokens.size(), 38u);
      Sequence* batch[] = {&s};
      for (int i = 1; i < 8; ++i) ASSERT_TRUE(StepWhole(*engine, batch).ok());
      EXPECT_EQ(std::vector<int32_t>(s.output().begin(), s.output().end()), expected)
          << "chunk " << chunk << ", temperature " << temperature;
      engine->Release(s);
    }
    EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
  }
}

TEST(EngineTest, StepRefusesAPlanWhoseBlocksAreNotReserved) {
  auto engine = MakeEngine(64);
  Sequence s = MakeSequence(1, Prompt(9, 1), 0.0f, 0);
  ASSERT_TRUE(engine->kv_cache().Reserve(s.id, 4).ok());  // 1 block of 4
  StepPlan plan;
  plan.chunks.push_back({&s, 9});
  EXPECT_EQ(engine->Step(plan).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.num_computed, 0);
  EXPECT_EQ(s.tokens.size(), 9u);
  engine->Release(s);
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
}

}  // namespace
}  // namespace tandem
