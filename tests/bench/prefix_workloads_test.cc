// The prefix-sharing workloads and the oracle hit rate: system prompts are
// shared, conversation turns are interleaved and must fit the context, and
// the oracle counts exactly the full blocks computed before a request left.
#include "bench/tandem_bench/prefix_workloads.h"

#include <numeric>

#include "gtest/gtest.h"

namespace tandem::bench {
namespace {

WorkloadOptions Options(WorkloadKind kind) {
  WorkloadOptions o;
  o.kind = kind;
  o.num_requests = 12;
  o.input = LengthSpec{LengthSpec::Kind::kFixed, 20, 20};
  o.output = LengthSpec{LengthSpec::Kind::kFixed, 8, 8};
  o.vocab_size = 1000;
  o.max_context = 512;
  return o;
}

TEST(PrefixWorkloadsTest, SystemPromptsAreSharedAndUserPartsDiffer) {
  WorkloadOptions o = Options(WorkloadKind::kSystemPrompt);
  o.system_prompts = 3;
  o.system_prompt_len = LengthSpec{LengthSpec::Kind::kUniform, 100, 200};
  absl::StatusOr<std::vector<BenchRequest>> w = MakeWorkload(o);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->size(), 12u);
  const std::vector<int32_t>& a = (*w)[0].prompt;
  const std::vector<int32_t>& b = (*w)[3].prompt;  // the same system prompt
  ASSERT_EQ(a.size(), b.size());
  const size_t system = a.size() - 20;
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + system, b.begin()));
  EXPECT_FALSE(std::equal(a.begin() + system, a.end(), b.begin() + system));
  EXPECT_NE((*w)[1].prompt.front(), a.front());
  o.max_context = 150;
  EXPECT_EQ(MakeWorkload(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PrefixWorkloadsTest, ConversationsInterleaveAndMustFitTheContext) {
  WorkloadOptions o = Options(WorkloadKind::kMultiTurn);
  o.conversations = 4;
  absl::StatusOr<std::vector<BenchRequest>> w = MakeWorkload(o);
  ASSERT_TRUE(w.ok()) << w.status();
  for (size_t i = 0; i < w->size(); ++i) {
    EXPECT_EQ((*w)[i].conversation, static_cast<int32_t>(i % 4));
    EXPECT_EQ((*w)[i].turn, static_cast<int32_t>(i / 4));
    EXPECT_EQ((*w)[i].prompt.size(), 20u);
  }
  const std::vector<int32_t> history = {1, 2, 3};
  EXPECT_EQ(ConversationPrompt(history, (*w)[4].prompt).size(), 23u);
  o.max_context = 80;  // 3 turns of 28 tokens do not fit
  absl::StatusOr<std::vector<BenchRequest>> too_long = MakeWorkload(o);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("--conversations"), std::string::npos);
  EXPECT_EQ(ParseWorkloadKind("multiturn").value(), WorkloadKind::kMultiTurn);
  EXPECT_FALSE(ParseWorkloadKind("chat").ok());
}

RequestRecord Record(double sent, double ttft, double e2e, std::vector<int32_t> prompt, std::vector<int32_t> output) {
  RequestRecord r;
  r.ok = true;
  r.sent = sent;
  r.tokens = {ttft, e2e};
  r.prompt_ids = std::move(prompt);
  r.output_ids = std::move(output);
  return r;
}

std::vector<int32_t> Range(int n, int start) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(PrefixWorkloadsTest, OracleCountsBlocksComputedBeforeTheRequestLeft) {
  // Turn 1: 40 prompt tokens + 10 answer tokens, done at t=1.
  const std::vector<int32_t> p1 = Range(40, 0), a1 = Range(10, 100);
  std::vector<int32_t> p2 = p1;
  p2.insert(p2.end(), a1.begin(), a1.end());
  const std::vector<int32_t> u2 = Range(30, 500);
  p2.insert(p2.end(), u2.begin(), u2.end());  // 80 tokens
  std::vector<RequestRecord> records = {
      Record(0.0, 0.5, 1.0, p1, a1),
      Record(2.0, 0.5, 1.0, p2, Range(5, 900)),
      // Sent before turn 1's first token: nothing to hit.
      Record(0.1, 0.5, 1.0, p1, a1),
  };
  // With answers: turn 2 hits p1 + a1[:-1] = 49 tokens -> 3 blocks of 16;
  // the copy of turn 1 left too early to hit anything.
  PrefixHits with = OraclePrefixHits(records, 16, true);
  EXPECT_EQ(with.prompt_tokens, 40 + 80 + 40);
  EXPECT_EQ(with.hit_tokens, 48);
  // Prompts only: turn 2 hits the 2 full blocks of p1.
  EXPECT_EQ(OraclePrefixHits(records, 16, false).hit_tokens, 32);
  // A prompt that ends on a block boundary hits one block less than it holds.
  records = {Record(0.0, 0.1, 0.2, Range(32, 0), {}), Record(1.0, 0.1, 0.2, Range(32, 0), {})};
  EXPECT_EQ(OraclePrefixHits(records, 16, false).hit_tokens, 16);
}

}  // namespace
}  // namespace tandem::bench
