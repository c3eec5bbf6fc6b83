// The router's admission queue on its own: order of service, the bound,
// deadlines (passed while queued, or unmeetable given the queue ahead),
// clients that leave while queued, and a limit that grows.
#include "router/admission_queue.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::router {
namespace {

AdmissionOptions Options(std::atomic<int32_t>* limit, int32_t max_queued) {
  AdmissionOptions o;
  o.max_running = [limit] { return limit->load(); };
  o.max_queued = max_queued;
  o.poll = absl::Milliseconds(5);
  return o;
}

// Waits until `n` requests are queued.
void WaitQueued(const AdmissionQueue& q, int32_t n) {
  for (int i = 0; i < 1000 && q.queued() < n; ++i) absl::SleepFor(absl::Milliseconds(2));
  ASSERT_EQ(q.queued(), n);
}

TEST(AdmissionQueueTest, ServesPriorityThenTtftDeadlineThenArrival) {
  std::atomic<int32_t> limit{1};
  AdmissionQueue q(Options(&limit, 16));
  auto holder = q.Enter({});
  ASSERT_TRUE(holder.ok());
  const absl::Time now = absl::Now();
  struct Spec {
    int id;
    int32_t priority;
    absl::Time ttft;
  };
  // Queued in this order; served as 3 (priority), 4 (earlier TTFT), 1, 2.
  const std::vector<Spec> specs = {{1, 0, now + absl::Seconds(9)},
                                   {2, 0, now + absl::Seconds(9)},
                                   {3, 1, now + absl::Seconds(99)},
                                   {4, 0, now + absl::Seconds(1)}};
  std::mutex mu;
  std::vector<int> order;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < specs.size(); ++i) {
    threads.emplace_back([&, i] {
      AdmissionQueue::Request r;
      r.priority = specs[i].priority;
      r.ttft_deadline = specs[i].ttft;
      auto t = q.Enter(r);
      ASSERT_TRUE(t.ok()) << t.status();
      std::lock_guard<std::mutex> lock(mu);
      // Recorded before the ticket goes, so before the next is admitted.
      order.push_back(specs[i].id);
    });
    WaitQueued(q, static_cast<int32_t>(i + 1));
  }
  holder->Release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(order, (std::vector<int>{3, 4, 1, 2}));
  EXPECT_EQ(q.running(), 0);
  EXPECT_EQ(q.queued(), 0);
}

TEST(AdmissionQueueTest, RefusesWhenTheQueueIsFull) {
  std::atomic<int32_t> limit{1};
  AdmissionQueue q(Options(&limit, 1));
  auto holder = q.Enter({});
  ASSERT_TRUE(holder.ok());
  std::thread waiter([&] { EXPECT_TRUE(q.Enter({}).ok()); });
  WaitQueued(q, 1);
  auto refused = q.Enter({});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("queue is full (1 requests waiting, 1 running)"), std::string::npos)
      << refused.status();
  holder->Release();
  waiter.join();
}

TEST(AdmissionQueueTest, DeadlinesEndTheWaitOrRefuseWhenTheQueueAheadCannotClearInTime) {
  std::atomic<int32_t> limit{1};
  AdmissionQueue q(Options(&limit, 64));
  // Teach it a completion rate of about 50 per second.
  for (int i = 0; i < 40; ++i) {
    auto t = q.Enter({});
    ASSERT_TRUE(t.ok());
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_GT(q.completion_rate(), 15.0);
  EXPECT_LT(q.completion_rate(), 100.0);
  auto holder = q.Enter({});
  ASSERT_TRUE(holder.ok());
  std::vector<std::thread> queued;
  for (int i = 0; i < 10; ++i) {
    queued.emplace_back([&] { EXPECT_TRUE(q.Enter({}).ok()); });
    WaitQueued(q, i + 1);
  }
  // 10 ahead at ~50/s is ~0.2 s: a 40 ms deadline cannot be met even with
  // the estimate's margin.
  AdmissionQueue::Request hurried;
  hurried.deadline = absl::Now() + absl::Milliseconds(40);
  auto refused = q.Enter(hurried);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("deadline cannot be met: 10 requests are queued ahead"),
            std::string::npos)
      << refused.status();
  // A higher priority has nobody ahead: it is queued, and its deadline
  // then passes while the holder keeps the slot.
  AdmissionQueue::Request urgent;
  urgent.priority = 9;
  urgent.deadline = absl::Now() + absl::Milliseconds(60);  // nobody ahead: no estimate refuses it
  auto late = q.Enter(urgent);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  holder->Release();
  for (auto& t : queued) t.join();
  EXPECT_EQ(q.running(), 0);
}

TEST(AdmissionQueueTest, AClientThatLeavesIsDroppedAndAGrowingLimitAdmits) {
  std::atomic<int32_t> limit{1};
  AdmissionQueue q(Options(&limit, 8));
  auto holder = q.Enter({});
  ASSERT_TRUE(holder.ok());
  std::atomic<bool> gone{false};
  AdmissionQueue::Request leaving;
  leaving.client_gone = [&] { return gone.load(); };
  absl::Status left;
  std::thread t1([&] { left = q.Enter(leaving).status(); });
  WaitQueued(q, 1);
  gone = true;
  t1.join();
  EXPECT_EQ(left.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(q.queued(), 0);
  // A worker registered: the limit grows and a queued request runs while
  // the holder still holds its slot.
  std::thread t2([&] { EXPECT_TRUE(q.Enter({}).ok()); });
  WaitQueued(q, 1);
  limit = 2;
  t2.join();
  EXPECT_EQ(q.running(), 1);
}

}  // namespace
}  // namespace tandem::router
