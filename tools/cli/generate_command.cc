#include "tools/cli/generate_command.h"

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "common/engine/scheduler_flags.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/engine/engine.h"
#include "common/engine/local_generator.h"
#include "common/engine/model_loader.h"
#include "common/request/request_validation.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/cli/request_flags.h"

ABSL_FLAG(bool, dummy_weights, false, "random weights of the config's shapes (needs config.json and tokenizer.json only)");
ABSL_FLAG(uint64_t, dummy_seed, 0, "seed of --dummy_weights");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(int32_t, block_size, 16, "tokens per KV block");
ABSL_FLAG(int32_t, num_kv_blocks, 2048, "KV blocks in the pool");
ABSL_FLAG(int32_t, threads, 0, "CPU threads; 0: all cores");
ABSL_FLAG(std::string, cpu_bf16_activations, "auto",
          "CPU: round activations to bf16 as a bf16 model does: auto (when the weights are bf16), on or off");

namespace tandem::cli {
namespace {

absl::StatusOr<GenerationRequest> RequestFromFlags(const Tokenizer& tokenizer, int64_t vocab_size,
                                                   const GenerationConfig& model_defaults, const std::string& prompt) {
  GenerationRequest r;
  if (absl::GetFlag(FLAGS_token_ids)) {
    TANDEM_ASSIGN_OR_RETURN(r.prompt, ParseIds(prompt));
  } else {
    TANDEM_RETURN_IF_ERROR(ValidatePromptText(prompt));
    r.prompt = tokenizer.Encode(prompt, absl::GetFlag(FLAGS_add_special_tokens));
  }
  r.sampling = SamplingFromFlags();
  // The model's generation_config.json fills what the flags left out, as
  // the router does for served requests.
  ApplySamplingDefaults(model_defaults, SamplingFlagsGiven(), &r.sampling.temperature, &r.sampling.top_p,
                        &r.sampling.top_k, &r.sampling.repetition_penalty);
  TANDEM_ASSIGN_OR_RETURN(r.stopping, StoppingFromFlags());
  // The router's limits (common/request): a request this accepts, the
  // served path accepts too. The prompt's own checks are per request, in
  // LocalGenerator.
  TANDEM_RETURN_IF_ERROR(ValidateGenerationParams(r.sampling, r.stopping, vocab_size));
  r.skip_special_tokens = absl::GetFlag(FLAGS_skip_special_tokens);
  r.priority = absl::GetFlag(FLAGS_priority);
  return r;
}

int Fail(const absl::Status& s) {
  std::cerr << "tandem generate: " << s << "\n";
  return 1;
}

}  // namespace

int RunGenerate(const std::vector<std::string>& prompts) {
  SetLogRole("generate");
  if (prompts.empty()) {
    std::cerr << "tandem generate: give at least one prompt\n";
    return 2;
  }
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "jsonl") {
    return Fail(absl::InvalidArgumentError("--output must be text or jsonl"));
  }
  ModelSource source{absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_dummy_weights),
                     absl::GetFlag(FLAGS_dummy_seed)};
  absl::StatusOr<LoadedModel> model = LoadModel(source);
  if (!model.ok()) return Fail(model.status());

  BackendOptions options;
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device == "cpu") {
    options.device = BackendOptions::Device::kCpu;
  } else if (device == "cuda") {
    options.device = BackendOptions::Device::kCuda;
  } else {
    return Fail(absl::InvalidArgumentError("--device must be cpu or cuda"));
  }
  options.block_size = absl::GetFlag(FLAGS_block_size);
  options.num_kv_blocks = absl::GetFlag(FLAGS_num_kv_blocks);
  options.num_threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<std::optional<bool>> bf16 = ParseBf16ActivationsFlag(absl::GetFlag(FLAGS_cpu_bf16_activations));
  if (!bf16.ok()) return Fail(bf16.status());
  options.cpu_bf16_activations = *bf16;
  absl::StatusOr<std::unique_ptr<ModelBackend>> backend = CreateBackend(*model, options);
  if (!backend.ok()) return Fail(backend.status());
  Engine engine(std::move(*backend));

  std::vector<GenerationRequest> requests;
  for (const std::string& p : prompts) {
    absl::StatusOr<GenerationRequest> r = RequestFromFlags(*model->tokenizer, model->config.vocab_size, model->generation, p);
    if (!r.ok()) return Fail(r.status());
    requests.push_back(std::move(*r));
  }

  const SchedulerOptions scheduling = SchedulerOptionsFromFlags(absl::GetFlag(FLAGS_device) == "cuda");
  if (absl::Status s = ValidateSchedulerOptions(scheduling); !s.ok()) return Fail(s);
  LocalGenerator generator(engine, *model->tokenizer, scheduling);
  std::vector<int> generated(requests.size(), 0);
  const absl::Time start = absl::Now();
  int failures = 0;
  // With one prompt the text streams as one piece; with several, each
  // request's text is printed when it finishes so outputs do not interleave.
  std::vector<std::string> texts(requests.size());
  absl::Status run = generator.Run(requests, [&](const GenerationEvent& e) {
    if (e.token >= 0) ++generated[e.request];
    if (output == "jsonl") {
      nlohmann::json j;
      j["request"] = e.request;
      if (e.token >= 0) {
        j["token"] = e.token;
        if (e.sample.logprob_valid) {
          j["logprob"] = e.sample.logprob;
        }
      }
      j["text"] = e.text;
      if (e.finished) {
        j["finish_reason"] = FinishReasonName(e.finish_reason);
        j["completion_tokens"] = generated[e.request];
        if (!e.matched_stop.empty()) j["matched_stop"] = e.matched_stop;
        if (!e.error.ok()) j["error"] = e.error.ToString();
      }
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      std::cout.flush();
    } else if (requests.size() == 1) {
      std::cout << e.text << std::flush;
      if (e.finished) std::cout << "\n";
    } else {
      texts[e.request] += e.text;
      if (e.finished) std::cout << "[" << e.request << "] " << texts[e.request] << "\n";
    }
    if (e.finished && !e.error.ok()) {
      ++failures;
      std::cerr << "request " << e.request << ": " << e.error << "\n";
    }
  });
  if (!run.ok()) return Fail(run);
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  int total = 0;
  for (int g : generated) total += g;
  TANDEM_LOG(INFO) << requests.size() << " request(s), " << total << " tokens in " << secs << " s ("
                   << (secs > 0 ? total / secs : 0) << " tok/s), " << generator.num_preemptions()
                   << " preemption(s)";
  return failures ? 1 : 0;
}

}  // namespace tandem::cli
