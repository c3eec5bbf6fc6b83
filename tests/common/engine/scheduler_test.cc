// The step planner as plain C++: plans are checked against a KvCacheManager
// alone (no model), by "running" them the way the Engine does (advance
// num_computed, append a token to chunks that reach their end).
#include "common/engine/scheduler.h"

#include <algorithm>

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

Sequence Seq(SeqId id, int32_t prompt_len) {
  Sequence s;
  s.id = id;
  s.tokens.assign(static_cast<size_t>(prompt_len), 7);
  s.prompt_len = prompt_len;
  return s;
}

// What Engine::Step does to the sequences of a plan, minus the math.
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

// Every planned chunk's blocks are reserved and the plan keeps the budget.
void CheckPlan(const StepPlan& plan, const KvCacheManager& kv, const SchedulerOptions& o) {
  int64_t tokens = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    ASSERT_GT(c.num_tokens, 0);
    auto table = kv.BlockTable(c.seq->id);
    ASSERT_TRUE(table.ok());
    EXPECT_GE(static_cast<int64_t>(table->size()) * kv.layout().block_size,
              static_cast<int64_t>(c.seq->num_computed) + c.num_tokens);
    tokens += c.num_tokens;
  }
  EXPECT_EQ(tokens, plan.num_tokens);
  if (o.chunked_prefill) EXPECT_LE(tokens, o.max_batch_tokens);
  EXPECT_LE(static_cast<int64_t>(plan.chunks.size()), o.max_batch_size);
}

TEST(SchedulerTest, ValidatesOptions) {
  EXPECT_TRUE(ValidateSchedulerOptions({}).ok());
  EXPECT_FALSE(ValidateSchedulerOptions({.max_batch_size = 0}).ok());
  EXPECT_FALSE(ValidateSchedulerOptions({.max_batch_size = 64, .max_batch_tokens = 64}).ok());
  EXPECT_FALSE(ValidateSchedulerOptions({.max_chunk_tokens = -1}).ok());
}

TEST(SchedulerTest, ChunksLongPromptsUnderTheTokenBudget) {
  KvCacheManager kv(Layout(4), 64);
  SchedulerOptions o{.max_batch_size = 8, .max_batch_tokens = 10};
  Scheduler sched(kv, o);
  sched.Add(Seq(1, 25));
  std::vector<int32_t> chunks;
  while (sched.Find(1)->tokens.size() == 25u) {
    StepPlan plan = sched.Schedule();
    CheckPlan(plan, kv, o);
    ASSERT_EQ(plan.chunks.size(), 1u);
    chunks.push_back(plan.chunks[0].num_tokens);
    EXPECT_EQ(plan.chunks[0].samples(), chunks.size() == 3);
    Execute(plan);
  }
  EXPECT_EQ(chunks, (std::vector<int32_t>{10, 10, 5}));
  // Reserved chunk by chunk: 25 tokens need 7 blocks of 4.
  EXPECT_EQ(kv.BlockTable(1)->size(), 7u);
  sched.Remove(1);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerTest, ChunkSizeCapAndWholeReservation) {
  KvCacheManager kv(Layout(4), 64);
  SchedulerOptions o{.max_batch_size = 8, .max_batch_tokens = 100, .max_chunk_tokens = 7, .reserve_whole = true};
  Scheduler sched(kv, o);
  sched.Add(Seq(1, 20));
  StepPlan plan = sched.Schedule();
  EXPECT_EQ(Planned(plan, 1), 7);
  EXPECT_EQ(kv.BlockTable(1)->size(), 5u);  // all 20 tokens' blocks at once
  Execute(plan);
  EXPECT_EQ(Planned(sched.Schedule(), 1), 7);
  sched.Remove(1);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerTest, DecodeStepsComeFirstAndPromptsGetTheRest) {
  KvCacheManager kv(Layout(4), 256);
  SchedulerOptions o{.max_batch_size = 16, .max_batch_tokens = 12};
  Scheduler sched(kv, o);
  for (SeqId id = 1; id <= 4; ++id) sched.Add(Seq(id, 2));
  Execute(sched.Schedule());  // the four short prompts: 8 tokens
  sched.Add(Seq(9, 40));  // a long prompt arrives
  StepPlan plan = sched.Schedule();
  CheckPlan(plan, kv, o);
  ASSERT_EQ(plan.chunks.size(), 5u);
  EXPECT_EQ(plan.num_decode, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(plan.chunks[i].num_tokens, 1);  // decodes first
  EXPECT_EQ(plan.chunks[4].seq->id, 9);
  EXPECT_EQ(plan.chunks[4].num_tokens, 8);  // 12 - 4 decode tokens
  for (SeqId id : {1, 2, 3, 4, 9}) sched.Remove(id);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerTest, WithoutChunkingAnOversizedPromptRunsAlone) {
  KvCacheManager kv(Layout(4), 256);
  SchedulerOptions o{.max_batch_size = 8, .max_batch_tokens = 16, .chunked_prefill = false};
  Scheduler sched(kv, o);
  sched.Add(Seq(1, 40));
  sched.Add(Seq(2, 3));
  StepPlan plan = sched.Schedule();
  ASSERT_EQ(plan.chunks.size(), 1u);
  EXPECT_EQ(plan.chunks[0].num_tokens, 40);
  Execute(plan);
  plan = sched.Schedule();  // now the short one joins the decode step
  EXPECT_EQ(Planned(plan, 1), 1);
  EXPECT_EQ(Planned(plan, 2), 3);
  sched.Remove(1);
  sched.Remove(2);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerTest, ServesPriorityThenDeadlineThenArrival) {
  KvCacheManager kv(Layout(4), 256);
  SchedulerOptions o{.max_batch_size = 2, .max_batch_tokens = 100};
  Scheduler sched(kv, o);
  const absl::Time now = absl::Now();
  sched.Add(Seq(1, 4), {0, absl::InfiniteFuture()});
  sched.Add(Seq(2, 4), {0, now + absl::Seconds(1)});
  sched.Add(Seq(3, 4), {5, absl::InfiniteFuture()});
  sched.Add(Seq(4, 4), {0, now + absl::Seconds(1)});
  StepPlan plan = sched.Schedule();
  ASSERT_EQ(plan.chunks.size(), 2u);
  EXPECT_EQ(plan.chunks[0].seq->id, 3);  // priority
  EXPECT_EQ(plan.chunks[1].seq->id, 2);  // earliest deadline, then arrival (2 before 4)
  for (SeqId id = 1; id <= 4; ++id) sched.Remove(id);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerTest, PreemptsTheLastInServiceOrderWhenThePoolRunsOut) {
  // 6 blocks of 2 tokens. Two prompts of 6 tokens take 3 blocks each; the
  // next decode step of either (7 tokens) needs a 4th.
  KvCacheManager kv(Layout(2), 6);
  SchedulerOptions o{.max_batch_size = 8, .max_batch_tokens = 64};
  Scheduler sched(kv, o);
  sched.Add(Seq(1, 6), {1});
  sched.Add(Seq(2, 6), {0});
  Execute(sched.Schedule());
  ASSERT_EQ(kv.num_free_blocks(), 0);
  StepPlan plan = sched.Schedule();
  CheckPlan(plan, kv, o);
  ASSERT_EQ(plan.preempted, std::vector<SeqId>{2});  // the lower priority
  EXPECT_EQ(Planned(plan, 1), 1);
  EXPECT_EQ(sched.Find(2)->num_computed, 0);  // recomputed later, tokens kept
  EXPECT_EQ(sched.Find(2)->tokens.size(), 7u);
  EXPECT_FALSE(kv.Contains(2));
  EXPECT_EQ(sched.total_preemptions(), 1);
  sched.Remove(1);
  // Once room is back, the preempted sequence recomputes only what its own
  // cached blocks (committed when it was preempted) do not hold: its 3
  // full blocks hold 6 of its 7 tokens.
  plan = sched.Schedule();
  EXPECT_EQ(Planned(plan, 2), 1);
  EXPECT_EQ(kv.prefix_hit_tokens(), 6);
  sched.Remove(2);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerTest, FailsOnlyWhatCanNeverFitAndKeepsTheRest) {
  KvCacheManager kv(Layout(4), 4);  // 16 tokens in all
  SchedulerOptions o{.max_batch_size = 8, .max_batch_tokens = 64};
  Scheduler sched(kv, o);
  sched.Add(Seq(1, 30));
  sched.Add(Seq(2, 5));
  StepPlan plan = sched.Schedule();
  ASSERT_EQ(plan.failed.size(), 1u);
  EXPECT_EQ(plan.failed[0].first, 1);
  EXPECT_EQ(plan.failed[0].second.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Planned(plan, 2), 5);
  EXPECT_EQ(sched.Find(1), nullptr);
  sched.Remove(2);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerTest, WaitsWhileAnotherThreadHoldsThePool) {
  KvCacheManager kv(Layout(4), 4);
  auto held = kv.allocator().Allocate(4);  // an incoming transfer's reservation
  ASSERT_TRUE(held.ok());
  SchedulerOptions o{.max_batch_size = 8, .max_batch_tokens = 64};
  Scheduler sched(kv, o);
  sched.Add(Seq(1, 5));
  StepPlan plan = sched.Schedule();
  EXPECT_TRUE(plan.empty());
  EXPECT_TRUE(plan.failed.empty());
  ASSERT_TRUE(kv.allocator().Release(*held).ok());
  EXPECT_EQ(Planned(sched.Schedule(), 1), 5);
  sched.Remove(1);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerTest, AdoptedSequencesDecodeAndLoseTheirBlocksBeforeARunningOneFails) {
  KvCacheManager kv(Layout(2), 6);
  // Without the prefix cache, so the recompute below is a whole one.
  SchedulerOptions o{.max_batch_size = 1, .max_batch_tokens = 64, .enable_prefix_caching = false};
  Scheduler sched(kv, o);
  // Running: 9 tokens computed in 5 blocks... grows into the 6th, then needs a 7th.
  sched.Add(Seq(1, 9));
  Execute(sched.Schedule());
  // A transferred sequence waits (the batch is full) holding its 1 block.
  Sequence adopted = Seq(2, 2);
  adopted.num_computed = 2;
  adopted.tokens.push_back(3);  // the prefill's first token
  auto blocks = kv.allocator().Allocate(1);
  ASSERT_TRUE(blocks.ok());
  ASSERT_TRUE(kv.Adopt(2, *blocks).ok());
  sched.Add(std::move(adopted));
  ASSERT_EQ(kv.num_free_blocks(), 0);
  Execute(sched.Schedule());  // 10 tokens: still 5 blocks
  StepPlan plan = sched.Schedule();  // 11 tokens need a 6th: the waiting one's
  EXPECT_EQ(Planned(plan, 1), 1);
  EXPECT_EQ(plan.preempted, std::vector<SeqId>{2});
  EXPECT_FALSE(kv.Contains(2));
  EXPECT_EQ(sched.Find(2)->num_computed, 0);
  sched.Remove(1);
  plan = sched.Schedule();
  EXPECT_EQ(Planned(plan, 2), 3);  // recomputed here, prompt and first token
  sched.Remove(2);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

TEST(SchedulerTest, NoStarvation) {
  // A full decode batch keeps running while prompts arrive every step; each
  // prompt still gets its first token within a bounded number of steps, and
  // the long one goes in chunks beside the decodes.
  KvCacheManager kv(Layout(16), 4096);
  SchedulerOptions o{.max_batch_size = 64, .max_batch_tokens = 96};
  Scheduler sched(kv, o);
  SeqId next = 1;
  for (int i = 0; i < 32; ++i) sched.Add(Seq(next++, 8));
  const SeqId long_one = next++;
  sched.Add(Seq(long_one, 500));
  int steps = 0;
  while (sched.Find(long_one)->tokens.size() == 500u) {
    StepPlan plan = sched.Schedule();
    CheckPlan(plan, kv, o);
    ASSERT_FALSE(plan.empty());
    Execute(plan);
    sched.Add(Seq(next++, 8));  // a steady stream of newcomers
    ASSERT_LT(++steps, 60) << "the long prompt starved";
  }
  // Every sequence that arrived before the long one has its first token.
  for (SeqId id = 1; id < long_one; ++id) EXPECT_GT(sched.Find(id)->tokens.size(), 8u) << id;
  for (SeqId id = 1; id < next; ++id) sched.Remove(id);
  EXPECT_EQ(kv.num_used_blocks(), 0);
}

}  // namespace
}  // namespace tandem
