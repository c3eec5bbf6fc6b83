// The step planner with the prefix cache, as plain C++ (no model): an
// admitted sequence starts past its cached prefix, full blocks become
// cached as they fill and when sequences end or are preempted, and the
// cache never changes which tokens a plan covers, only where it starts.
#include <numeric>

#include "common/engine/scheduler.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

KvLayout Layout(int32_t block_size) {
  KvLayout l;
  l.num_layers = 1;
  l.num_kv_heads = 1;
  l.head_dim = 2;
  l.block_size = block_size;
  return l;
}

// Prompt tokens first, first+1, ...: distinct, so blocks are keyed apart.
Sequence Seq(SeqId id, int32_t prompt_len, int32_t first = 1000, std::string salt = "") {
  Sequence s;
  s.id = id;
  s.tokens.resize(static_cast<size_t>(prompt_len));
  std::iota(s.tokens.begin(), s.tokens.end(), first);
  s.prompt_len = prompt_len;
  s.cache_salt = std::move(salt);
  return s;
}

void Execute(const StepPlan& plan) {
  for (const ScheduledChunk& c : plan.chunks) {
    const bool samples = c.samples();
    c.seq->num_computed += c.num_tokens;
    if (samples) c.seq->tokens.push_back(1);
  }
}

int32_t Planned(const StepPlan& plan, SeqId id) {
  for (const ScheduledChunk& c : plan.chunks) {
    if (c.seq->id == id) return c.num_tokens;
  }
  return 0;
}

// Runs `id` until it has sampled one token; returns the tokens it computed.
int32_t RunToFirstToken(Scheduler& sched, SeqId id) {
  int32_t computed = 0;
  const size_t len = sched.Find(id)->tokens.size();
  while (sched.Find(id)->tokens.size() == len) {
    StepPlan plan = sched.Schedule();
    EXPECT_FALSE(plan.empty());
    if (plan.empty()) return computed;
    computed += Planned(plan, id);
    Execute(plan);
  }
  return computed;
}

TEST(SchedulerPrefixCacheTest, TheSamePromptTwiceComputesOnlyItsLastPartialBlockTheSecondTime) {
  KvCacheManager kv(Layout(4), 64);
  Scheduler sched(kv, {.max_batch_size = 8, .max_batch_tokens = 64});
  sched.Add(Seq(1, 30));
  EXPECT_EQ(RunToFirstToken(sched, 1), 30);
  sched.Remove(1);
  EXPECT_EQ(kv.num_used_blocks(), 0);
  EXPECT_EQ(kv.num_cached_blocks(), 7);  // 28 of 30 tokens in full blocks

  sched.Add(Seq(2, 30));
  StepPlan plan = sched.Schedule();
  EXPECT_EQ(sched.Find(2)->num_computed, 28);
  EXPECT_EQ(Planned(plan, 2), 2);
  EXPECT_TRUE(plan.chunks[0].samples());
  EXPECT_EQ(kv.prefix_queried_tokens(), 60);
  EXPECT_EQ(kv.prefix_hit_tokens(), 28);
  sched.Remove(2);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerPrefixCacheTest, APromptOnABlockBoundaryStillComputesItsLastToken) {
  KvCacheManager kv(Layout(4), 64);
  Scheduler sched(kv, {.max_batch_size = 8, .max_batch_tokens = 64});
  sched.Add(Seq(1, 16));
  EXPECT_EQ(RunToFirstToken(sched, 1), 16);
  sched.Remove(1);
  sched.Add(Seq(2, 16));
  // 3 of 4 blocks hit; the 4th is computed again (into a block of its own),
  // so the step samples.
  EXPECT_EQ(RunToFirstToken(sched, 2), 4);
  sched.Remove(2);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerPrefixCacheTest, SharedPrefixesHitWholeBlocksOnlyAndSaltsKeepTenantsApart) {
  KvCacheManager kv(Layout(4), 64);
  Scheduler sched(kv, {.max_batch_size = 8, .max_batch_tokens = 64});
  sched.Add(Seq(1, 22));
  RunToFirstToken(sched, 1);
  sched.Remove(1);
  // Shares 10 tokens (2.5 blocks) with the first: 2 blocks hit.
  Sequence b = Seq(2, 20);
  for (int i = 10; i < 20; ++i) b.tokens[i] = 5;
  sched.Add(std::move(b));
  EXPECT_EQ(RunToFirstToken(sched, 2), 12);
  // The same tokens as the first under another salt: nothing.
  sched.Add(Seq(3, 22, 1000, "tenant-b"));
  EXPECT_EQ(RunToFirstToken(sched, 3), 22);
  // And again under that salt: hits its own.
  sched.Remove(3);
  sched.Add(Seq(4, 22, 1000, "tenant-b"));
  EXPECT_EQ(RunToFirstToken(sched, 4), 2);
  sched.Remove(2);
  sched.Remove(4);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerPrefixCacheTest, GeneratedTokensBlocksAreCachedForTheNextTurn) {
  KvCacheManager kv(Layout(4), 64);
  Scheduler sched(kv, {.max_batch_size = 8, .max_batch_tokens = 64});
  sched.Add(Seq(1, 6));
  for (int step = 0; step < 6; ++step) Execute(sched.Schedule());  // 6 prompt + 6 generated
  std::vector<int32_t> history = sched.Find(1)->tokens;             // 12 tokens, 11 computed
  sched.Remove(1);
  EXPECT_EQ(kv.num_cached_blocks(), 2);  // blocks [0,4) and [4,8); [8,12) is not all computed
  // The next turn resends the conversation plus a new message.
  Sequence next = Seq(2, 0);
  next.tokens = history;
  for (int i = 0; i < 5; ++i) next.tokens.push_back(2000 + i);
  next.prompt_len = static_cast<int32_t>(next.tokens.size());
  sched.Add(std::move(next));
  EXPECT_EQ(RunToFirstToken(sched, 2), 17 - 8);
  sched.Remove(2);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerPrefixCacheTest, ChunkedPrefillAfterAHitStartsAtTheHitAndKeepsTheBudget) {
  for (int32_t chunk : {1, 7, 64}) {
    KvCacheManager kv(Layout(4), 64);
    SchedulerOptions o{.max_batch_size = 8, .max_batch_tokens = 64, .max_chunk_tokens = chunk};
    Scheduler sched(kv, o);
    sched.Add(Seq(1, 40));
    EXPECT_EQ(RunToFirstToken(sched, 1), 40) << chunk;
    sched.Remove(1);
    sched.Add(Seq(2, 50));  // the first 40 tokens are the first prompt's
    StepPlan plan = sched.Schedule();
    EXPECT_EQ(sched.Find(2)->num_computed, 40) << chunk;
    EXPECT_EQ(Planned(plan, 2), std::min(chunk, 10)) << chunk;
    Execute(plan);
    if (chunk < 10) EXPECT_EQ(RunToFirstToken(sched, 2), 10 - chunk) << chunk;
    EXPECT_EQ(sched.Find(2)->tokens.size(), 51u) << chunk;
    sched.Remove(2);
    EXPECT_EQ(kv.num_used_blocks(), 0) << chunk;
  }
}

TEST(SchedulerPrefixCacheTest, ReserveWholeReservesOnlyPastTheHit) {
  KvCacheManager kv(Layout(4), 64);
  Scheduler sched(kv, {.max_batch_size = 8, .max_batch_tokens = 64, .max_chunk_tokens = 4, .reserve_whole = true});
  sched.Add(Seq(1, 24));
  RunToFirstToken(sched, 1);
  sched.Remove(1);
  sched.Add(Seq(2, 32));
  StepPlan plan = sched.Schedule();
  EXPECT_EQ(Planned(plan, 2), 4);
  EXPECT_EQ(kv.BlockTable(2)->size(), 8u);  // 6 cached + 2 new, the whole prompt
  EXPECT_EQ(kv.num_used_blocks(), 8);
  sched.Remove(2);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerPrefixCacheTest, AWaitingSequenceThatDoesNotFitGivesItsHitBack) {
  // 6 blocks of 4. A finished prompt leaves 3 blocks cached; a running
  // sequence takes the 3 free ones, then a 4th for its first decode step
  // (evicting the cached prompt's tail). The next prompt hits the cached
  // prompt's 2 remaining blocks but needs 6 more than that: nothing left.
  KvCacheManager kv(Layout(4), 6);
  Scheduler sched(kv, {.max_batch_size = 8, .max_batch_tokens = 64});
  sched.Add(Seq(1, 13));
  RunToFirstToken(sched, 1);
  sched.Remove(1);
  ASSERT_EQ(kv.num_cached_blocks(), 3);
  ASSERT_EQ(kv.num_evictable_blocks(), 3);
  sched.Add(Seq(2, 12, 50));  // unrelated
  RunToFirstToken(sched, 2);
  ASSERT_EQ(kv.num_used_blocks(), 3);
  sched.Add(Seq(3, 30));
  StepPlan plan = sched.Schedule();
  EXPECT_EQ(Planned(plan, 2), 1);
  EXPECT_EQ(kv.num_evictions(), 1);
  EXPECT_EQ(Planned(plan, 3), 0);
  EXPECT_EQ(sched.Find(3)->num_computed, 0);  // not admitted: the hit went back
  EXPECT_FALSE(kv.Contains(3));
  EXPECT_EQ(kv.num_used_blocks(), 4);
  EXPECT_EQ(kv.num_evictable_blocks(), 2);  // seq 1's first two, still cached
  sched.Remove(2);
  sched.Remove(3);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerPrefixCacheTest, OffMeansNoLookupAndNothingCached) {
  KvCacheManager kv(Layout(4), 64);
  Scheduler sched(kv, {.max_batch_size = 8, .max_batch_tokens = 64, .enable_prefix_caching = false});
  sched.Add(Seq(1, 30));
  RunToFirstToken(sched, 1);
  sched.Remove(1);
  sched.Add(Seq(2, 30));
  EXPECT_EQ(RunToFirstToken(sched, 2), 30);
  EXPECT_EQ(kv.num_cached_blocks(), 0);
  EXPECT_EQ(kv.prefix_queried_tokens(), 0);
  sched.Remove(2);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerPrefixCacheTest, EvictionUnderPressureKeepsEveryPlanCorrectAndLeaksNothing) {
  // Many prompts sharing a long prefix through a pool that holds about two
  // of them: the cache is evicted and refilled; every sequence gets its
  // tokens, every plan's blocks are reserved.
  KvCacheManager kv(Layout(4), 24);
  Scheduler sched(kv, {.max_batch_size = 4, .max_batch_tokens = 32, .max_chunk_tokens = 7});
  for (SeqId id = 1; id <= 12; ++id) {
    Sequence s = Seq(id, 36 + static_cast<int32_t>(id % 3) * 5, 1000);
    for (size_t i = 20; i < s.tokens.size(); ++i) s.tokens[i] = 3000 + static_cast<int32_t>(id * 100 + i);
    sched.Add(std::move(s));
  }
  int steps = 0;
  std::vector<bool> done(13, false);
  while (!sched.idle()) {
    StepPlan plan = sched.Schedule();
    ASSERT_TRUE(plan.failed.empty());
    for (const ScheduledChunk& c : plan.chunks) {
      auto table = kv.BlockTable(c.seq->id);
      ASSERT_TRUE(table.ok());
      ASSERT_GE(static_cast<int64_t>(table->size()) * 4, c.seq->num_computed + c.num_tokens);
    }
    Execute(plan);
    for (SeqId id = 1; id <= 12; ++id) {
      const Sequence* s = sched.Find(id);
      if (s != nullptr && s->num_generated() >= 4) sched.Remove(id);
    }
    ASSERT_LT(++steps, 500);
  }
  EXPECT_GT(kv.prefix_hit_tokens(), 0);
  EXPECT_GT(kv.num_evictions(), 0);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

}  // namespace
}  // namespace tandem
