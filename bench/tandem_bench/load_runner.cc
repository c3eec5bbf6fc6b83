#include "bench/tandem_bench/load_runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <span>
#include <thread>

#include <unistd.h>

#include "bench/tandem_bench/prefix_workloads.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace tandem::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Sends `prompt` (the request's own, or a conversation turn's assembled one).
RequestRecord RunOne(BenchClient& client, const BenchRequest& r, std::span<const int32_t> prompt,
                     Clock::time_point t0, const LoadOptions& options) {
  RequestRecord rec;
  rec.prompt_tokens = static_cast<int32_t>(prompt.size());
  rec.prompt_ids.assign(prompt.begin(), prompt.end());
  rec.sent = Since(t0);
  client.Generate(prompt, r.output_tokens, options.deadline_seconds, rec);
  return rec;
}

// A bar redrawn in place on a terminal; on a pipe or a log file, a line
// at each quarter.
class Progress {
 public:
  Progress(bool on, size_t total, std::string label)
      : on_(on), tty_(isatty(2) != 0), total_(total), label_(std::move(label)) {}
  void Done() {
    const size_t n = ++done_;
    if (!on_) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (!tty_) {
      if (n * 4 / total_ != (n - 1) * 4 / total_) {
        std::fprintf(stderr, "%s: %zu/%zu requests done\n", label_.c_str(), n, total_);
      }
      return;
    }
    const int width = 30, filled = static_cast<int>(width * n / total_);
    std::fprintf(stderr, "\r%s [%.*s%*s] %zu/%zu", label_.c_str(), filled, "==============================",
                 width - filled, "", n, total_);
    if (n == total_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  bool on_;
  bool tty_;
  size_t total_;
  std::string label_;
  std::atomic<size_t> done_{0};
  std::mutex mu_;
};

// Multiturn: one thread per conversation (open loop) or per client
// (closed loop). A turn's prompt is the previous turn's prompt and answer
// and its own user message; a failed turn ends its conversation (the
// rest are recorded as not sent).
void RunConversations(BenchClient& client, const std::vector<BenchRequest>& requests,
                      const LoadOptions& options, uint64_t seed, Clock::time_point t0, Progress& progress,
                      LoadResult& result) {
  std::map<int32_t, std::vector<size_t>> turns;  // conversation -> request indices in turn order
  for (size_t i = 0; i < requests.size(); ++i) turns[requests[i].conversation].push_back(i);
  for (auto& [c, idx] : turns) {
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return requests[a].turn < requests[b].turn; });
  }
  std::vector<double> arrivals(requests.size(), 0.0);
  if (options.rate > 0) arrivals = PoissonArrivals(static_cast<int>(requests.size()), options.rate, seed);
  auto run_conversation = [&](const std::vector<size_t>& idx) {
    std::vector<int32_t> history;
    bool failed = false;
    for (size_t i : idx) {
      if (failed) {
        result.records[i].error = "not sent: an earlier turn of its conversation failed";
        progress.Done();
        continue;
      }
      if (options.rate > 0) {
        std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(arrivals[i])));
      }
      const std::vector<int32_t> prompt = ConversationPrompt(history, requests[i].prompt);
      result.records[i] = RunOne(client, requests[i], prompt, t0, options);
      history = prompt;
      history.insert(history.end(), result.records[i].output_ids.begin(), result.records[i].output_ids.end());
      failed = !result.records[i].ok;
      progress.Done();
    }
  };
  std::vector<const std::vector<size_t>*> order;
  for (const auto& [c, idx] : turns) order.push_back(&idx);
  std::vector<std::thread> threads;
  std::atomic<size_t> next{0};
  const size_t clients = options.rate > 0 ? order.size() : static_cast<size_t>(std::max(1, options.concurrency));
  for (size_t t = 0; t < std::min(clients, order.size()); ++t) {
    threads.emplace_back([&] {
      for (size_t k = next++; k < order.size(); k = next++) run_conversation(*order[k]);
    });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace

std::unique_ptr<v1::GenerationService::Stub> ConnectRouter(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return v1::GenerationService::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

LoadResult RunLoad(v1::GenerationService::Stub& stub, const std::vector<BenchRequest>& requests,
                   const LoadOptions& options, uint64_t seed) {
  GrpcBenchClient client(stub);
  return RunLoad(client, requests, options, seed);
}

LoadResult RunLoad(BenchClient& client, const std::vector<BenchRequest>& requests, const LoadOptions& options,
                   uint64_t seed) {
  LoadResult result;
  result.records.resize(requests.size());
  Progress progress(options.progress, requests.size(), options.label);
  const Clock::time_point t0 = Clock::now();
  // The closed loop's next request index: declared here, not in its
  // branch, because its threads run until the joins below.
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  const bool conversations = std::any_of(requests.begin(), requests.end(),
                                         [](const BenchRequest& r) { return r.conversation >= 0; });
  if (conversations) {
    RunConversations(client, requests, options, seed, t0, progress, result);
  } else if (options.rate > 0) {
    // Open loop: each request leaves at its Poisson arrival time.
    const std::vector<double> arrivals = PoissonArrivals(static_cast<int>(requests.size()), options.rate, seed);
    for (size_t i = 0; i < requests.size(); ++i) {
      std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(arrivals[i])));
      threads.emplace_back([&, i] {
        result.records[i] = RunOne(client, requests[i], requests[i].prompt, t0, options);
        progress.Done();
      });
    }
  } else {
    // Closed loop: `concurrency` clients, each sending its next request as
    // soon as the previous one finished.
    for (int c = 0; c < std::max(1, options.concurrency); ++c) {
      threads.emplace_back([&] {
        for (size_t i = next++; i < requests.size(); i = next++) {
          result.records[i] = RunOne(client, requests[i], requests[i].prompt, t0, options);
          progress.Done();
        }
      });
    }
  }
  for (std::thread& t : threads) t.join();
  double end = 0;
  for (const RequestRecord& r : result.records) end = std::max(end, r.sent + r.e2e());
  result.duration = end;
  return result;
}

}  // namespace tandem::bench
