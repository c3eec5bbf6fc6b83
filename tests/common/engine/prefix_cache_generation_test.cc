// Prefix caching end to end in one process (LocalGenerator over the CPU
// backend and the built-in model): outputs with cache hits are bit-equal to
// outputs without (the CPU backend is batch- and chunk-invariant), hits are
// real (the prefix is not computed again), and no block leaks.
#include <string>
#include <vector>

#include "common/engine/local_generator.h"
#include "gtest/gtest.h"
#include "tests/testing/default_model_test.h"

namespace tandem {
namespace {

class PrefixCacheGenerationTest : public testing::DefaultModelTest {
 protected:
  std::unique_ptr<Engine> MakeEngine(int32_t num_blocks, int32_t block_size = 16) {
    BackendOptions o;
    o.num_kv_blocks = num_blocks;
    o.block_size = block_size;
    o.num_threads = 2;
    auto backend = CreateBackend(*model_, o);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return std::make_unique<Engine>(std::move(*backend));
  }

  // A prompt of exactly `n` valid token ids, from repeated text.
  std::vector<int32_t> Prompt(const std::string& text, size_t n) {
    std::vector<int32_t> ids;
    while (ids.size() < n) {
      std::vector<int32_t> more = model_->tokenizer->Encode(text, ids.empty());
      ids.insert(ids.end(), more.begin(), more.end());
    }
    ids.resize(n);
    return ids;
  }

  GenerationRequest Request(std::vector<int32_t> prompt, float temperature, uint64_t seed, int max_new_tokens) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.stopping.max_new_tokens = max_new_tokens;
    r.stopping.ignore_eos = true;
    return r;
  }

  // Token ids of each request, run together; checks that every request
  // finished without error and nothing stays held.
  std::vector<std::vector<int32_t>> Run(Engine& engine, const std::vector<GenerationRequest>& requests,
                                        LocalGeneratorOptions options = {}) {
    std::vector<std::vector<int32_t>> out(requests.size());
    LocalGenerator generator(engine, *model_->tokenizer, options);
    absl::Status s = generator.Run(requests, [&](const GenerationEvent& e) {
      EXPECT_TRUE(e.error.ok()) << e.error;
      if (e.token >= 0) out[e.request].push_back(e.token);
    });
    EXPECT_TRUE(s.ok()) << s;
    last_preemptions_ = generator.num_preemptions();
    EXPECT_EQ(engine.kv_cache().num_used_blocks(), 0) << "leaked KV blocks";
    return out;
  }

  // The outputs of `requests` on a fresh engine without the cache, each
  // request alone.
  std::vector<std::vector<int32_t>> Reference(const std::vector<GenerationRequest>& requests) {
    auto engine = MakeEngine(512);
    LocalGeneratorOptions off;
    off.enable_prefix_caching = false;
    std::vector<std::vector<int32_t>> out;
    for (const GenerationRequest& r : requests) out.push_back(Run(*engine, {r}, off)[0]);
    EXPECT_EQ(engine->kv_cache().num_cached_blocks(), 0);
    return out;
  }

  int64_t last_preemptions_ = 0;
};

TEST_F(PrefixCacheGenerationTest, TheSamePromptTwiceHitsAndGivesTheSameTokens) {
  const std::vector<GenerationRequest> requests = {
      Request(Prompt("The history of the lighthouse keepers on the northern coast ", 150), 0.0f, 0, 12),
      Request(Prompt("The history of the lighthouse keepers on the northern coast ", 150), 0.8f, 7, 12),
  };
  const auto expected = Reference(requests);
  auto engine = MakeEngine(512);
  EXPECT_EQ(Run(*engine, {requests[0]})[0], expected[0]);
  EXPECT_EQ(engine->kv_cache().prefix_hit_tokens(), 0);
  // 150 tokens: 9 full blocks cached; the second run computes 6 tokens.
  EXPECT_EQ(Run(*engine, {requests[0]})[0], expected[0]);
  EXPECT_EQ(engine->kv_cache().prefix_hit_tokens(), 144);
  EXPECT_EQ(Run(*engine, {requests[1]})[0], expected[1]);  // seeded sampling over the same prefix
  EXPECT_EQ(engine->kv_cache().prefix_hit_tokens(), 288);
}

TEST_F(PrefixCacheGenerationTest, SharedPrefixesOnAndOffBlockBoundariesAtChunks1_7_64) {
  const std::vector<int32_t> base = Prompt("A system prompt that many requests share, with tools: ", 120);
  std::vector<GenerationRequest> requests;
  requests.push_back(Request(base, 0.0f, 0, 10));
  // Shares 64 tokens (a block boundary), then 70 (inside a block), then all
  // of it and more (a next turn).
  for (size_t shared : {size_t{64}, size_t{70}, size_t{120}}) {
    std::vector<int32_t> p(base.begin(), base.begin() + shared);
    const std::vector<int32_t> tail = Prompt("and then a different user question about boats ", 37);
    p.insert(p.end(), tail.begin(), tail.end());
    requests.push_back(Request(std::move(p), shared == 70 ? 0.9f : 0.0f, 3, 10));
  }
  const auto expected = Reference(requests);
  for (int32_t chunk : {1, 7, 64}) {
    auto engine = MakeEngine(512);
    LocalGeneratorOptions o;
    o.max_chunk_tokens = chunk;
    EXPECT_EQ(Run(*engine, {requests[0]}, o)[0], expected[0]) << chunk;
    const auto got = Run(*engine, {requests.begin() + 1, requests.end()}, o);
    for (size_t i = 1; i < requests.size(); ++i) EXPECT_EQ(got[i - 1], expected[i]) << "chunk " << chunk << " request " << i;
    // At least 64 + 64 + 112 tokens came from the cache.
    EXPECT_GE(engine->kv_cache().prefix_hit_tokens(), 64 + 64 + 112) << chunk;
  }
}

TEST_F(PrefixCacheGenerationTest, PreemptionAndEvictionUnderPressureKeepOutputsAndLeakNothing) {
  std::vector<GenerationRequest> requests;
  const std::vector<int32_t> shared = Prompt("It was the best of times, it was the worst of times, ", 24);
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> p = shared;
    const std::vector<int32_t> own = Prompt(std::string("request number ") + std::to_string(i) + " asks ", 9 + i);
    p.insert(p.end(), own.begin(), own.end());
    requests.push_back(Request(std::move(p), i % 2 == 0 ? 0.0f : 0.9f, 100 + i, 30));
  }
  const auto expected = Reference(requests);
  // 8 sequences of ~37 + 30 tokens need ~136 blocks of 4 at once; 40 makes
  // them preempt one another and evict the cache to make room.
  auto tight = MakeEngine(40, 4);
  for (int round = 0; round < 2; ++round) {
    const auto got = Run(*tight, requests);
    EXPECT_GT(last_preemptions_, 0);
    for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "round " << round << " request " << i;
  }
  EXPECT_GT(tight->kv_cache().num_evictions(), 0);
  EXPECT_GT(tight->kv_cache().prefix_hit_tokens(), 0);
  EXPECT_EQ(tight->kv_cache().num_used_blocks(), 0);
  EXPECT_EQ(tight->kv_cache().num_free_blocks(), 40);
}

TEST_F(PrefixCacheGenerationTest, SaltsDoNotShare) {
  GenerationRequest a = Request(Prompt("Private notes of tenant one about the merger ", 80), 0.0f, 0, 5);
  GenerationRequest b = a;
  a.cache_salt = "tenant-1";
  b.cache_salt = "tenant-2";
  auto engine = MakeEngine(512);
  const auto first = Run(*engine, {a})[0];
  EXPECT_EQ(Run(*engine, {b})[0], first);  // same tokens, computed again
  EXPECT_EQ(engine->kv_cache().prefix_hit_tokens(), 0);
  EXPECT_EQ(Run(*engine, {a})[0], first);
  EXPECT_EQ(engine->kv_cache().prefix_hit_tokens(), 64);
}

}  // namespace
}  // namespace tandem
