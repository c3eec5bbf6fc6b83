#include "common/engine/local_generator.h"

#include <algorithm>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/request/request_validation.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// A request while it is in the generator: the detokenizer and the stop
// checker turn the tokens the batcher samples into released text.
struct ActiveRequest {
  size_t index = 0;
  std::optional<IncrementalDetokenizer> detokenizer;
  std::optional<StopChecker> stop;
};

}  // namespace

LocalGenerator::LocalGenerator(Engine& engine, const Tokenizer& tokenizer,
                               LocalGeneratorOptions options)
    : engine_(engine), tokenizer_(tokenizer), options_(options) {}

std::vector<int32_t> ModelEosIds(const ModelConfig& config, const Tokenizer& tokenizer) {
  if (config.eos_token_ids.empty()) return tokenizer.eos_ids();
  std::vector<int32_t> eos;
  for (int64_t id : config.eos_token_ids) eos.push_back(static_cast<int32_t>(id));
  return eos;
}

absl::Status ValidateGenerationRequest(const ModelConfig& config, const KvCacheManager& kv,
                                       std::span<const int32_t> prompt, const SamplingParams& sampling,
                                       const StoppingParams& stopping) {
  // The same rules the router and the workers apply (request_validation.h),
  // so `tandem generate` refuses exactly what a cluster refuses; only the
  // pool check is this engine's own.
  TANDEM_RETURN_IF_ERROR(ValidateGenerationParams(sampling, stopping, config.vocab_size));
  TANDEM_RETURN_IF_ERROR(ValidatePromptTokens(prompt, config));
  if (kv.layout().BlocksForTokens(prompt.size() + 1) > kv.num_total_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("prompt of ", prompt.size(),
                                                     " tokens needs more KV blocks than the pool's ",
                                                     kv.num_total_blocks()));
  }
  return absl::OkStatus();
}

absl::Status LocalGenerator::Run(std::span<const GenerationRequest> requests,
                                 const std::function<void(const GenerationEvent&)>& on_event) {
  const ModelConfig& config = engine_.config();
  const std::vector<int32_t> eos = ModelEosIds(config, tokenizer_);
  std::random_device entropy;
  Scheduler scheduler(engine_.kv_cache(), options_);

  auto fail = [&](size_t index, absl::Status error) {
    GenerationEvent e;
    e.request = index;
    e.finished = true;
    e.finish_reason = FinishReason::kError;
    e.error = std::move(error);
    on_event(e);
  };

  // Sequence ids are request indices.
  std::vector<ActiveRequest> active(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    absl::Status valid =
        ValidateGenerationRequest(config, engine_.kv_cache(), r.prompt, r.sampling, r.stopping);
    if (!valid.ok()) {
      fail(i, valid);
      continue;
    }
    Sequence seq;
    seq.id = static_cast<SeqId>(i);
    seq.tokens = r.prompt;
    seq.prompt_len = static_cast<int32_t>(r.prompt.size());
    seq.sampling = r.sampling;
    seq.cache_salt = r.cache_salt;
    seq.seed = r.sampling.seed.has_value() ? *r.sampling.seed
                                           : (static_cast<uint64_t>(entropy()) << 32) ^ entropy();
    active[i].index = i;
    active[i].detokenizer.emplace(tokenizer_, r.prompt, r.skip_special_tokens);
    active[i].stop.emplace(r.stopping, eos);
    scheduler.Add(std::move(seq), {r.priority});
  }

  while (!scheduler.idle()) {
    StepPlan plan = scheduler.Schedule();
    num_preemptions_ += static_cast<int64_t>(plan.preempted.size());
    for (auto& [id, error] : plan.failed) fail(static_cast<size_t>(id), error);
    if (plan.empty()) {
      if (!plan.failed.empty()) continue;
      // Nothing else holds this engine's pool, so an empty plan would
      // repeat forever.
      for (size_t i = 0; i < requests.size(); ++i) scheduler.Remove(static_cast<SeqId>(i));
      return absl::InternalError("the scheduler planned nothing with requests pending");
    }
    max_batch_seen_ = std::max(max_batch_seen_, static_cast<int32_t>(plan.chunks.size()));
    absl::StatusOr<std::vector<StepSample>> sampled = engine_.Step(plan);
    if (!sampled.ok()) {
      for (size_t i = 0; i < requests.size(); ++i) scheduler.Remove(static_cast<SeqId>(i));
      return sampled.status();
    }
    for (const StepSample& s : *sampled) {
      ActiveRequest& r = active[static_cast<size_t>(s.id)];
      GenerationEvent e;
      e.request = r.index;
      e.sample = s.sample;
      e.token = s.sample.token;
      StopDecision d = r.stop->OnToken(s.sample.token, r.detokenizer->Push(s.sample.token));
      e.text = std::move(d.text);
      // The model's context is a hard end, like max_new_tokens.
      const Sequence* seq = scheduler.Find(s.id);
      const bool context_full = config.max_position_embeddings > 0 &&
                                static_cast<int64_t>(seq->tokens.size()) >= config.max_position_embeddings;
      if (d.finished || context_full) {
        e.finished = true;
        e.finish_reason = d.finished ? d.reason : FinishReason::kLength;
        e.matched_stop = d.matched_stop;
        if (d.matched_stop.empty()) {
          e.text += r.stop->Flush();
          e.text += r.detokenizer->Flush();
        }
        scheduler.Remove(s.id);
      }
      on_event(e);
    }
  }
  return absl::OkStatus();
}

}  // namespace tandem
