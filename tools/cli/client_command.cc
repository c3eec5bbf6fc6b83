#include "tools/cli/client_command.h"

#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "common/rpc/proto_convert.h"
#include "common/rpc/tls_credentials.h"
#include "nlohmann/json.hpp"
#include "tandem/v1/generate.grpc.pb.h"
#include "tools/cli/request_flags.h"

ABSL_FLAG(std::string, router, "127.0.0.1:8000", "router address host:port");
ABSL_FLAG(double, deadline_seconds, 0, "gRPC deadline of each request; 0: none");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that issued the router's certificate: TLS; empty: plaintext");
ABSL_FLAG(std::string, token, "", "bearer token of the router's public API (its --api_token)");

namespace tandem::cli {
namespace {

std::string FinishName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_CANCELLED: return "cancelled";
    case v1::FINISH_REASON_ERROR: return "error";
    default: return "none";
  }
}

}  // namespace

int RunClient(const std::vector<std::string>& prompts) {
  if (prompts.empty()) {
    std::cerr << "tandem client: give at least one prompt\n";
    return 2;
  }
  absl::StatusOr<StoppingParams> stopping = StoppingFromFlags();
  if (!stopping.ok()) {
    std::cerr << "tandem client: " << stopping.status() << "\n";
    return 2;
  }
  const SamplingParams sampling = SamplingFromFlags();
  const std::string output = absl::GetFlag(FLAGS_output);
  PublicClientOptions client;
  client.ca_file = absl::GetFlag(FLAGS_tls_ca);
  client.tls = !client.ca_file.empty();
  client.token = absl::GetFlag(FLAGS_token);
  if (!client.token.empty() && !client.tls) {
    std::cerr << "tandem client: warning: --token without --tls_ca sends the token in plaintext\n";
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = DialPublic(absl::GetFlag(FLAGS_router), client);
  if (!channel.ok()) {
    std::cerr << "tandem client: " << channel.status() << "\n";
    return 2;
  }
  auto stub = v1::GenerationService::NewStub(*channel);

  std::mutex out_mu;
  std::vector<int> failed(prompts.size(), 0);
  auto run_one = [&](size_t i) {
    v1::GenerateRequest req;
    if (absl::GetFlag(FLAGS_token_ids)) {
      absl::StatusOr<std::vector<int32_t>> ids = ParseIds(prompts[i]);
      if (!ids.ok()) {
        std::lock_guard<std::mutex> lock(out_mu);
        std::cerr << "request " << i << ": " << ids.status() << "\n";
        failed[i] = 1;
        return;
      }
      for (int32_t id : *ids) req.mutable_token_ids()->add_ids(id);
    } else {
      req.set_text(prompts[i]);
      req.set_add_special_tokens(absl::GetFlag(FLAGS_add_special_tokens));
    }
    *req.mutable_sampling() = ToProto(sampling);
    // Fields not given on the command line stay unset, so the router
    // applies the model's generation_config.json defaults to them.
    const SamplingFieldsSet given = SamplingFlagsGiven();
    if (!given.temperature) req.mutable_sampling()->clear_temperature();
    if (!given.top_p) req.mutable_sampling()->clear_top_p();
    if (!given.top_k) req.mutable_sampling()->clear_top_k();
    if (!given.repetition_penalty) req.mutable_sampling()->clear_repetition_penalty();
    *req.mutable_stopping() = ToProto(*stopping);
    if (sampling.logprobs >= 0) req.set_logprobs(sampling.logprobs);
    req.set_skip_special_tokens(absl::GetFlag(FLAGS_skip_special_tokens));
    req.set_priority(absl::GetFlag(FLAGS_priority));

    grpc::ClientContext ctx;
    if (absl::GetFlag(FLAGS_deadline_seconds) > 0) {
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           std::chrono::duration<double>(absl::GetFlag(FLAGS_deadline_seconds))));
    }
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse resp;
    std::string text;
    int completion = 0;
    while (reader->Read(&resp)) {
      std::lock_guard<std::mutex> lock(out_mu);
      for (const v1::GeneratedToken& t : resp.tokens()) {
        ++completion;
        text += t.text();
        if (output == "jsonl") {
          nlohmann::json j{{"request", i}, {"token", t.id()}, {"text", t.text()}};
          if (t.has_logprob()) j["logprob"] = t.logprob();
          std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        } else if (prompts.size() == 1) {
          std::cout << t.text();
        }
      }
      text += resp.text_tail();
      if (resp.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
        if (output == "jsonl") {
          nlohmann::json j{{"request", i},
                           {"text", resp.text_tail()},
                           {"finish_reason", FinishName(resp.finish_reason())},
                           {"completion_tokens", resp.usage().completion_tokens()},
                           {"ttft_seconds", resp.timing().ttft_seconds()},
                           {"prefill_worker", resp.prefill_worker()},
                           {"decode_worker", resp.decode_worker()}};
          if (!resp.matched_stop().empty()) j["matched_stop"] = resp.matched_stop();
          std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        } else if (prompts.size() == 1) {
          std::cout << resp.text_tail() << "\n";
        } else {
          std::cout << "[" << i << "] " << text << "\n";
        }
      }
      std::cout.flush();
    }
    grpc::Status s = reader->Finish();
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(out_mu);
      failed[i] = 1;
      if (output == "jsonl") {
        nlohmann::json j{{"request", i},
                         {"error_code", static_cast<int>(s.error_code())},
                         {"error", s.error_message()}};
        std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      }
      std::cerr << "request " << i << ": " << s.error_code() << ": " << s.error_message() << "\n";
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) threads.emplace_back(run_one, i);
  for (std::thread& t : threads) t.join();
  for (int f : failed) {
    if (f) return 1;
  }
  return 0;
}

}  // namespace tandem::cli
