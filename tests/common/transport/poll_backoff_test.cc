// The CUDA IPC transport's wait schedule: microsecond polls for the first
// 2 ms, then sleeps of an eighth of the wait, 20-500 us.
#include "common/transport/poll_backoff.h"

#include "gtest/gtest.h"

namespace tandem {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(PollBackoffTest, SpinsAMicrosecondApartAtFirst) {
  for (auto waited : {microseconds(0), microseconds(40), microseconds(1999)}) {
    const PollBackoff::Step s = PollBackoff::StepAt(waited);
    EXPECT_FALSE(s.sleep) << waited.count();
    EXPECT_EQ(s.length, microseconds(1));
  }
}

TEST(PollBackoffTest, ThenSleepsAnEighthOfTheWaitWithinBounds) {
  EXPECT_EQ(PollBackoff::StepAt(milliseconds(2)).length, microseconds(250));
  EXPECT_TRUE(PollBackoff::StepAt(milliseconds(2)).sleep);
  EXPECT_EQ(PollBackoff::StepAt(milliseconds(3)).length, microseconds(375));
  EXPECT_EQ(PollBackoff::StepAt(milliseconds(100)).length, PollBackoff::kMaxSleep);
  EXPECT_GE(PollBackoff::StepAt(PollBackoff::kSpinFor).length, PollBackoff::kMinSleep);
}

TEST(PollBackoffTest, ABusyWaitLastsAboutItsGap) {
  const auto t0 = PollBackoff::Clock::now();
  PollBackoff backoff(t0);
  backoff.Wait();
  const auto took = PollBackoff::Clock::now() - t0;
  EXPECT_GE(took, PollBackoff::kSpinGap);
  EXPECT_LT(took, std::chrono::seconds(1));  // bounded even on a loaded machine
}

}  // namespace
}  // namespace tandem
