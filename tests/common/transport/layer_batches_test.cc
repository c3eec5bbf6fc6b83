// The pending-layer set of the CUDA IPC transport: any arrival order, a
// layer pending twice copied once, groups capped at the launch size, and
// nothing left pending after a take. And its launch timing: a burst is one
// launch at its last layer, paced layers launch at once (the first with
// the second), a slow burst is held at most one window.
#include "common/transport/layer_batches.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>

#include "gtest/gtest.h"

namespace tandem {
namespace {

using Launches = std::vector<std::vector<int32_t>>;

TEST(PendingLayersTest, EmptyTakesNothing) {
  PendingLayers p(32);
  EXPECT_TRUE(p.empty());
  EXPECT_TRUE(p.Take(32).empty());
  PendingLayers none;
  none.Add(0);  // out of range: ignored (the transfer checks the range first)
  EXPECT_TRUE(none.empty());
}

TEST(PendingLayersTest, OneLayerIsOneLaunch) {
  PendingLayers p(32);
  p.Add(7);
  EXPECT_EQ(p.size(), 1);
  EXPECT_EQ(p.Take(32), (Launches{{7}}));
  EXPECT_TRUE(p.empty());
  p.Add(8);
  EXPECT_EQ(p.Take(32), (Launches{{8}}));
}

TEST(PendingLayersTest, OutOfOrderAndGapsGoOutAscendingInOneLaunch) {
  PendingLayers p(32);
  for (int l : {9, 3, 30, 4, 0}) p.Add(l);
  EXPECT_EQ(p.Take(32), (Launches{{0, 3, 4, 9, 30}}));
}

TEST(PendingLayersTest, ALayerPendingTwiceIsCopiedOnce) {
  PendingLayers p(4);
  p.Add(2);
  p.Add(2);
  EXPECT_EQ(p.size(), 1);
  EXPECT_EQ(p.Take(4), (Launches{{2}}));
  p.Add(2);  // sent again after its launch: pending again
  EXPECT_EQ(p.Take(4), (Launches{{2}}));
}

TEST(PendingLayersTest, MoreLayersThanALaunchTakesSplitIntoFullGroups) {
  PendingLayers p(80);
  for (int l = 79; l >= 0; --l) p.Add(l);
  const Launches launches = p.Take(32);
  ASSERT_EQ(launches.size(), 3u);
  EXPECT_EQ(launches[0].size(), 32u);
  EXPECT_EQ(launches[1].size(), 32u);
  EXPECT_EQ(launches[2].size(), 16u);
  EXPECT_EQ(launches[0].front(), 0);
  EXPECT_EQ(launches[2].back(), 79);
  EXPECT_TRUE(p.empty());
}

// Random arrivals with takes in between: every layer added is taken exactly
// once per time it was pending, ascending within a take, no group too big.
TEST(PendingLayersTest, RandomArrivalsAreEachTakenOnce) {
  std::mt19937 rng(42);
  for (int round = 0; round < 200; ++round) {
    const int layers = 1 + static_cast<int>(rng() % 130);
    const int cap = 1 + static_cast<int>(rng() % 40);
    std::vector<int> order(static_cast<size_t>(layers));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    PendingLayers p(layers);
    std::vector<int> taken(static_cast<size_t>(layers), 0);
    auto take = [&] {
      const int before = p.size();
      int got = 0;
      for (const auto& group : p.Take(cap)) {
        ASSERT_FALSE(group.empty());
        ASSERT_LE(static_cast<int>(group.size()), cap);
        ASSERT_TRUE(std::is_sorted(group.begin(), group.end()));
        for (int32_t l : group) ++taken[static_cast<size_t>(l)];
        got += static_cast<int>(group.size());
      }
      ASSERT_EQ(got, before);
      ASSERT_TRUE(p.empty());
    };
    for (int l : order) {
      p.Add(l);
      if (rng() % 3 == 0) take();
    }
    take();
    for (int l = 0; l < layers; ++l) EXPECT_EQ(taken[static_cast<size_t>(l)], 1) << "layer " << l;
  }
}

using Clock = LaunchTiming::Clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// Which calls of a transfer launch, for layers 0..n-1 sent at `times`
// (offsets from the start).
std::vector<int> LaunchingCalls(int n, const std::vector<Clock::duration>& times) {
  const Clock::time_point t0{};
  LaunchTiming timing(n, t0);
  std::vector<int> launches;
  for (int l = 0; l < n; ++l) {
    if (timing.Sent(l, t0 + times[static_cast<size_t>(l)])) launches.push_back(l);
  }
  return launches;
}

TEST(LaunchTimingTest, ABurstIsOneLaunchAtItsLastLayer) {
  std::vector<Clock::duration> times;
  for (int l = 0; l < 32; ++l) times.push_back(microseconds(1) + l * std::chrono::nanoseconds(300));
  EXPECT_EQ(LaunchingCalls(32, times), (std::vector<int>{31}));
}

TEST(LaunchTimingTest, PacedLayersLaunchAtOnceButTheFirstRidesWithTheSecond) {
  std::vector<Clock::duration> times;
  for (int l = 0; l < 8; ++l) times.push_back(microseconds(2) + l * microseconds(400));
  EXPECT_EQ(LaunchingCalls(8, times), (std::vector<int>{1, 2, 3, 4, 5, 6, 7}));
}

TEST(LaunchTimingTest, AStartLongBeforeTheFirstLayerLaunchesItAtOnce) {
  std::vector<Clock::duration> times;
  for (int l = 0; l < 4; ++l) times.push_back(milliseconds(5) + l * milliseconds(1));
  EXPECT_EQ(LaunchingCalls(4, times), (std::vector<int>{0, 1, 2, 3}));
}

TEST(LaunchTimingTest, ASlowBurstIsHeldAtMostOneWindow) {
  // Calls 6 us apart: the first hold (since call 0) reaches 20 us at call 4;
  // the next (since call 5) is at 18 us by call 8, and call 9 is the last
  // layer, which goes out at once.
  std::vector<Clock::duration> times;
  for (int l = 0; l < 10; ++l) times.push_back(l * microseconds(6));
  EXPECT_EQ(LaunchingCalls(10, times), (std::vector<int>{4, 9}));
}

TEST(LaunchTimingTest, ALayerSentTwiceCountsOnceTowardsAllSent) {
  const Clock::time_point t0{};
  LaunchTiming timing(2, t0);
  EXPECT_FALSE(timing.Sent(0, t0 + microseconds(1)));
  EXPECT_FALSE(timing.Sent(0, t0 + microseconds(2)));
  EXPECT_TRUE(timing.Sent(1, t0 + microseconds(3)));  // both sent
  EXPECT_TRUE(timing.Sent(1, t0 + microseconds(4)));  // and nothing more can come: at once
}

TEST(LaunchTimingTest, OneLayerTransfersLaunchAtOnce) {
  const Clock::time_point t0{};
  LaunchTiming timing(1, t0);
  EXPECT_TRUE(timing.Sent(0, t0));
}

}  // namespace
}  // namespace tandem
