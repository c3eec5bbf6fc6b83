// The router's prefix index: prefix matches per worker, the event
// sequence (gaps and resyncs), staleness, and forgetting a worker.
#include "router/prefix_index.h"

#include <numeric>

#include "gtest/gtest.h"

namespace tandem::router {
namespace {

std::vector<int32_t> Tokens(int n, int start) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

v1::KvBlockEvents Batch(uint64_t sequence, bool full, std::span<const BlockHash> stored,
                        std::span<const BlockHash> removed = {}) {
  v1::KvBlockEvents e;
  e.set_sequence(sequence);
  e.set_full_set(full);
  for (const BlockHash& k : stored) BlockKeyToProto(k, e.add_stored());
  for (const BlockHash& k : removed) BlockKeyToProto(k, e.add_removed());
  return e;
}

class PrefixIndexTest : public ::testing::Test {
 protected:
  const absl::Time t0_ = absl::Now();
  PrefixIndex index_{absl::Seconds(2), absl::Seconds(5)};
  // Two prompts sharing their first 3 of 8 blocks.
  const std::vector<BlockHash> a_ = HashFullBlocks(Tokens(128, 0), 16, "");
  const std::vector<BlockHash> b_ = [] {
    std::vector<int32_t> t = Tokens(128, 0);
    for (int i = 48; i < 128; ++i) t[i] = 5000 + i;
    return HashFullBlocks(t, 16, "");
  }();
  const std::vector<std::string> workers_ = {"w0", "w1", "w2"};
};

TEST_F(PrefixIndexTest, MatchesTheLongestLeadingRunPerWorker) {
  ASSERT_EQ(a_.size(), 8u);
  ASSERT_EQ(a_[2], b_[2]);
  ASSERT_NE(a_[3], b_[3]);
  EXPECT_FALSE(index_.Apply("w0", Batch(1, true, a_), t0_));
  EXPECT_FALSE(index_.Apply("w1", Batch(1, true, std::span(b_).first(5)), t0_));
  // w2 holds a later block of a_ but not its first: no prefix.
  EXPECT_FALSE(index_.Apply("w2", Batch(1, true, std::span(a_).subspan(1)), t0_));
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_), (std::vector<int32_t>{8, 3, 0}));
  EXPECT_EQ(index_.MatchPrefix(b_, workers_, t0_), (std::vector<int32_t>{3, 5, 0}));
  // Another salt: nothing in common.
  EXPECT_EQ(index_.MatchPrefix(HashFullBlocks(Tokens(128, 0), 16, "tenant"), workers_, t0_),
            (std::vector<int32_t>{0, 0, 0}));
  // An unknown worker matches nothing; the order of the answer is the asked one.
  EXPECT_EQ(index_.MatchPrefix(a_, std::vector<std::string>{"nobody", "w0"}, t0_), (std::vector<int32_t>{0, 8}));
  EXPECT_EQ(index_.NumKeys(), 8u + 5u - 3u);
}

TEST_F(PrefixIndexTest, DeltasApplyInSequenceAndAGapAsksForTheFullSet) {
  ASSERT_FALSE(index_.Apply("w0", Batch(1, true, std::span(a_).first(2)), t0_));
  ASSERT_FALSE(index_.Apply("w0", Batch(2, false, std::span(a_).subspan(2, 4)), t0_));
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_)[0], 6);
  // Evicting block 4 cuts the prefix there, though 5 is still held.
  ASSERT_FALSE(index_.Apply("w0", Batch(3, false, {}, std::span(a_).subspan(4, 1)), t0_));
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_)[0], 4);
  // Batch 4 is lost: 5 is refused, the worker is scored by load until
  // its full set comes, and later deltas are refused too.
  EXPECT_TRUE(index_.Apply("w0", Batch(5, false, a_), t0_));
  EXPECT_FALSE(index_.Fresh("w0", t0_));
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_)[0], 0);
  EXPECT_TRUE(index_.Apply("w0", Batch(6, false, a_), t0_));
  // The full set replaces everything it knew.
  ASSERT_FALSE(index_.Apply("w0", Batch(7, true, std::span(a_).first(3)), t0_));
  EXPECT_TRUE(index_.Fresh("w0", t0_));
  EXPECT_EQ(index_.NumKeysOf("w0"), 3u);
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_)[0], 3);
  EXPECT_FALSE(index_.Apply("w0", Batch(8, false, std::span(a_).subspan(3)), t0_));
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_)[0], 8);
}

TEST_F(PrefixIndexTest, AWorkerNotResyncedYetIsAskedForItsFullSet) {
  // A router that restarted sees deltas from a worker that registered again.
  EXPECT_TRUE(index_.Apply("w1", Batch(41, false, a_), t0_));
  EXPECT_EQ(index_.NumKeysOf("w1"), 0u);
  EXPECT_FALSE(index_.Apply("w1", Batch(42, true, a_), t0_));
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_)[1], 8);
}

TEST_F(PrefixIndexTest, SilentWorkersGoStaleAndEmptyBatchesKeepThemFresh) {
  ASSERT_FALSE(index_.Apply("w0", Batch(1, true, a_), t0_));
  ASSERT_FALSE(index_.Apply("w1", Batch(1, true, a_), t0_));
  const absl::Time later = t0_ + absl::Seconds(3);
  ASSERT_FALSE(index_.Apply("w1", Batch(2, false, {}), t0_ + absl::Seconds(2)));
  EXPECT_FALSE(index_.Fresh("w0", later));
  EXPECT_TRUE(index_.Fresh("w1", later));
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, later), (std::vector<int32_t>{0, 8, 0}));
}

TEST_F(PrefixIndexTest, RemovingAWorkerDropsItsKeys) {
  ASSERT_FALSE(index_.Apply("w0", Batch(1, true, a_), t0_));
  ASSERT_FALSE(index_.Apply("w1", Batch(1, true, b_), t0_));
  index_.RemoveWorker("w0");
  EXPECT_EQ(index_.NumKeys(), b_.size());
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_), (std::vector<int32_t>{0, 3, 0}));
  index_.RemoveWorker("w1");
  EXPECT_EQ(index_.NumKeys(), 0u);
  // A stored-and-removed key in one batch is held (removals go first).
  ASSERT_FALSE(index_.Apply("w2", Batch(1, true, {}), t0_));
  ASSERT_FALSE(index_.Apply("w2", Batch(2, false, std::span(a_).first(1), std::span(a_).first(1)), t0_));
  EXPECT_EQ(index_.NumKeysOf("w2"), 1u);
}

TEST_F(PrefixIndexTest, PredictionsCountUntilConfirmedRemovedOrLapsed) {
  ASSERT_FALSE(index_.Apply("w0", Batch(1, true, {}), t0_));
  ASSERT_FALSE(index_.Apply("w1", Batch(1, true, {}), t0_));
  index_.Predict("w0", a_, t0_);
  index_.Predict("w2", a_, t0_);  // unknown (never in step): ignored
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_), (std::vector<int32_t>{8, 0, 0}));
  // Confirmed blocks stay after the prediction would have lapsed.
  ASSERT_FALSE(index_.Apply("w0", Batch(2, false, std::span(a_).first(5)), t0_ + absl::Seconds(1)));
  EXPECT_EQ(index_.NumPredictedOf("w0"), 3u);
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_ + absl::Seconds(1))[0], 8);
  // A removal ends a prediction too.
  ASSERT_FALSE(index_.Apply("w0", Batch(3, false, {}, std::span(a_).subspan(6, 1)), t0_ + absl::Seconds(1)));
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_ + absl::Seconds(1))[0], 6);
  // Unconfirmed ones lapse after 5 s (fresh batches keep w0 in play).
  ASSERT_FALSE(index_.Apply("w0", Batch(4, false, {}), t0_ + absl::Seconds(6)));
  EXPECT_EQ(index_.NumPredictedOf("w0"), 0u);
  EXPECT_EQ(index_.MatchPrefix(a_, workers_, t0_ + absl::Seconds(6))[0], 5);
  // Predictions on a worker out of step are not made.
  EXPECT_TRUE(index_.Apply("w1", Batch(9, false, {}), t0_));
  index_.Predict("w1", b_, t0_);
  EXPECT_EQ(index_.NumPredictedOf("w1"), 0u);
}

}  // namespace
}  // namespace tandem::router
