// Stopping rules, token by token, with stop strings split across tokens.
#include "common/sampling/stop_checker.h"

#include <algorithm>
#include <random>

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


TEST(StopCheckerTest, StopIdsApplyEvenWithIgnoreEos) {
  StoppingParams p;
  p.ignore_eos = true;
  p.stop_token_ids = {7};
  StopChecker c(p, {2});
  Outcome r = Feed(c, {{2, "a"}, {7, "b"}, {3, "c"}});
  EXPECT_EQ(r.tokens, 2);
  EXPECT_EQ(r.last.reason, FinishReason::kStop);
  EXPECT_EQ(r.text, "ab");
  EXPECT_EQ(c.num_generated(), 2);
  // Tokens after the end change nothing and repeat the reason.
  StopDecision after = c.OnToken(3, "zzz");
  EXPECT_TRUE(after.finished);
  EXPECT_EQ(after.reason, FinishReason::kStop);
  EXPECT_EQ(after.text, "");
}

TEST(StopCheckerTest, FlushReleasesHeldBackTextOnce) {
  StoppingParams p;
  p.stop = {"###"};
  StopChecker c(p, {});
  EXPECT_EQ(c.OnToken(1, "x #").text, "x ");
  EXPECT_EQ(c.OnToken(2, "#").text, "");
  EXPECT_EQ(c.Flush(), "##");
  EXPECT_EQ(c.Flush(), "");
}

TEST(StopCheckerTest, IncludeStopStringAcrossTokens) {
  StoppingParams p;
  p.stop = {"<|eot|>"};
  p.include_stop_str_in_output = true;
  StopChecker c(p, {});
  Outcome r = Feed(c, {{1, "ok<|"}, {2, "eo"}, {3, "t|>tail"}});
  EXPECT_EQ(r.last.reason, FinishReason::kStop);
  EXPECT_EQ(r.last.matched_stop, "<|eot|>");
  EXPECT_EQ(r.text, "ok<|eot|>");
}

// The first stop string occurrence that is complete once `len` bytes of
// `text` exist, earliest start first (longer string on a tie); npos if none.
struct Match {
  size_t pos = std::string::npos;
  std::string stop;
};
Match FirstMatch(const std::string& text, size_t len, const std::vector<std::string>& stops) {
  Match m;
  const std::string prefix = text.substr(0, len);
  for (const std::string& s : stops) {
    const size_t pos = prefix.find(s);
    if (pos == std::string::npos) continue;
    if (pos < m.pos || (pos == m.pos && s.size() > m.stop.size())) m = {pos, s};
  }
  return m;
}

// Random texts over a small alphabet (so near-misses and overlaps are
// common), cut into random deltas (some empty), against a direct reference
// on the whole text: the checker ends at the first token that completes a
// stop string, the released text is exactly the text before the earliest
// match (plus the stop string when included), and at every step it held
// back no more than could still begin a stop string.
TEST(StopCheckerTest, RandomStreamsMatchAWholeTextReference) {
  std::mt19937 gen(123);
  const std::vector<std::vector<std::string>> stop_sets = {
      {"aba"}, {"bb", "abab"}, {"aab", "ba", "bbb"}, {"a\nb", "\n\n"}, {"abba", "bab", "b"}};
  int matched = 0;
  for (int round = 0; round < 2000; ++round) {
    const auto& stops = stop_sets[round % stop_sets.size()];
    std::string text;
    const int len = 1 + static_cast<int>(gen() % 24);
    for (int i = 0; i < len; ++i) text += "ab\n"[gen() % (round % 2 ? 3 : 2)];
    std::vector<std::string> deltas;
    for (size_t i = 0; i < text.size();) {
      const size_t n = std::min<size_t>(text.size() - i, gen() % 4);  // 0..3 bytes
      deltas.push_back(text.substr(i, n));
      i += n;
    }
    StoppingParams p;
    p.stop = stops;
    p.max_new_tokens = 1000;
    p.include_stop_str_in_output = round % 3 == 0;
    StopChecker c(p, {});
    std::string released;
    size_t fed = 0;
    StopDecision d;
    size_t max_stop = 0;
    for (const auto& s : stops) max_stop = std::max(max_stop, s.size());
    for (const std::string& delta : deltas) {
      d = c.OnToken(1, delta);
      released += d.text;
      fed += delta.size();
      const Match m = FirstMatch(text, fed, stops);
      ASSERT_EQ(d.finished, m.pos != std::string::npos) << "round " << round << " text " << text;
      if (d.finished) {
        ++matched;
        EXPECT_EQ(d.matched_stop, m.stop) << text;
        EXPECT_EQ(released, text.substr(0, m.pos + (p.include_stop_str_in_output ? m.stop.size() : 0)))
            << "round " << round << " text " << text;
        break;
      }
      // Released text is a prefix of the text, and only a possible stop
      // string's beginning stays back.
      ASSERT_EQ(released, text.substr(0, released.size())) << text;
      ASSERT_LT(fed - released.size(), max_stop) << text;
      const std::string held = text.substr(released.size(), fed - released.size());
      bool could_start = held.empty();
      for (const auto& s : stops) could_start |= s.compare(0, held.size(), held) == 0;
      ASSERT_TRUE(could_start) << "held back '" << held << "' which begins no stop string";
    }
    if (!d.finished) {
      released += c.Flush();
      EXPECT_EQ(released, text) << "round " << round;
    }
  }
  EXPECT_GT(matched, 500);  // both branches get exercised
}

}  // namespace
}  // namespace tandem
