// Stopping rules, token by token, with stop strings split across tokens.
#include "common/sampling/stop_checker.h"

#include "gtest/gtest.h"

namespace tandem {
namespace {

struct Outcome {
  std::string text;
  StopDecision last;
  int tokens = 0;
};

// Feeds (token, delta) pairs until the checker finishes.
Outcome Feed(StopChecker& c, const std::vector<std::pair<int32_t, std::string>>& steps) {
  Outcome r;
  for (const auto& [token, delta] : steps) {
    r.last = c.OnToken(token, delta);
    r.text += r.last.text;
    ++r.tokens;
    if (r.last.finished) break;
  }
  return r;
}

TEST(StopCheckerTest, MaxNewTokensEndsWithLength) {
  StoppingParams p;
  p.max_new_tokens = 3;
  StopChecker c(p, {2});
  Outcome r = Feed(c, {{5, "a"}, {6, "b"}, {7, "c"}, {8, "d"}});
  EXPECT_EQ(r.tokens, 3);
  EXPECT_EQ(r.last.reason, FinishReason::kLength);
  EXPECT_EQ(r.text, "abc");
}

TEST(StopCheckerTest, EosStopsUnlessIgnoredOrBeforeMinTokens) {
  StoppingParams p;
  p.max_new_tokens = 10;
  StopChecker eos(p, {2});
  Outcome r = Feed(eos, {{5, "a"}, {2, ""}, {6, "b"}});
  EXPECT_EQ(r.tokens, 2);
  EXPECT_EQ(r.last.reason, FinishReason::kStop);

  p.ignore_eos = true;
  StopChecker ignored(p, {2});
  EXPECT_EQ(Feed(ignored, {{2, ""}, {2, ""}, {2, ""}}).last.finished, false);

  StoppingParams m;
  m.min_new_tokens = 2;
  m.stop_token_ids = {9};
  StopChecker min(m, {2});
  r = Feed(min, {{2, ""}, {9, "x"}, {9, "y"}});
  EXPECT_EQ(r.tokens, 2);  // the first EOS was too early; the stop id at 2 counts
  EXPECT_EQ(r.text, "x");
}

TEST(StopCheckerTest, StopStringAcrossThreeTokensIsCutAndNeverReleased) {
  StoppingParams p;
  p.stop = {"STOP"};
  StopChecker c(p, {});
  std::string released;
  StopDecision d = c.OnToken(1, "hello S");
  released += d.text;
  EXPECT_EQ(d.text, "hello ");  // "S" may begin the stop string
  d = c.OnToken(2, "T");
  released += d.text;
  EXPECT_EQ(d.text, "");
  d = c.OnToken(3, "OP and more");
  released += d.text;
  EXPECT_TRUE(d.finished);
  EXPECT_EQ(d.reason, FinishReason::kStop);
  EXPECT_EQ(d.matched_stop, "STOP");
  EXPECT_EQ(released, "hello ");
}

TEST(StopCheckerTest, HeldBackTextIsReleasedWhenItIsNotAStop) {
  StoppingParams p;
  p.stop = {"</end>"};
  StopChecker c(p, {});
  Outcome r = Feed(c, {{1, "a </"}, {2, "en"}, {3, "try"}});
  EXPECT_FALSE(r.last.finished);
  EXPECT_EQ(r.text, "a </entry");
  // At the end of the stream the held-back text comes out with the final decision.
  StoppingParams q;
  q.stop = {"xyz"};
  q.max_new_tokens = 2;
  StopChecker c2(q, {});
  r = Feed(c2, {{1, "ab"}, {2, "cx"}});
  EXPECT_EQ(r.last.reason, FinishReason::kLength);
  EXPECT_EQ(r.text, "abcx");
}

TEST(StopCheckerTest, IncludeStopStringAndEarliestMatchWins) {
  StoppingParams p;
  p.stop = {"world", "lo w"};
  p.include_stop_str_in_output = true;
  StopChecker c(p, {});
  Outcome r = Feed(c, {{1, "hel"}, {2, "lo world!"}});
  EXPECT_EQ(r.last.matched_stop, "lo w");
  EXPECT_EQ(r.text, "hello w");
}

TEST(StopCheckerTest, NamesOfFinishReasons) {
  EXPECT_EQ(FinishReasonName(FinishReason::kLength), "length");
  EXPECT_EQ(FinishReasonName(FinishReason::kStop), "stop");
}

}  // namespace
}  // namespace tandem
