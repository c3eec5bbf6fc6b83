#include "bench/tandem_bench/bench_client.h"

#include <chrono>

#include "bench/tandem_bench/load_runner.h"

namespace tandem::bench {

void GrpcBenchClient::Generate(std::span<const int32_t> prompt, int32_t output_tokens, double deadline_seconds,
                               RequestRecord& rec) {
  using Clock = std::chrono::steady_clock;
  v1::GenerateRequest req;
  for (int32_t id : prompt) req.mutable_token_ids()->add_ids(id);
  req.mutable_sampling()->set_temperature(0.0f);
  req.mutable_stopping()->set_max_new_tokens(output_tokens);
  req.mutable_stopping()->set_ignore_eos(true);
  req.set_return_text(false);
  if (!cache_salt_.empty()) req.set_cache_salt(cache_salt_);
  grpc::ClientContext ctx;
  if (deadline_seconds > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(deadline_seconds * 1000)));
  }
  const Clock::time_point sent = Clock::now();
  auto reader = stub_.Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    const double at = std::chrono::duration<double>(Clock::now() - sent).count();
    for (const v1::GeneratedToken& t : resp.tokens()) {
      rec.tokens.push_back(at);
      rec.output_ids.push_back(t.id());
    }
  }
  grpc::Status s = reader->Finish();
  rec.ok = s.ok();
  if (!s.ok()) rec.error = s.error_message();
}

}  // namespace tandem::bench
