#include "common/engine/local_generator.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// A request while it is in the generator. The Sequence is what the engine
// sees; detokenizer and stop checker turn its tokens into released text.
struct ActiveRequest {
  size_t index = 0;
  int32_t priority = 0;
  Sequence seq;
  std::optional<IncrementalDetokenizer> detokenizer;
  std::optional<StopChecker> stop;
};

// Waiting order: higher priority first, then arrival (request index).
bool RunsBefore(const ActiveRequest* a, const ActiveRequest* b) {
  if (a->priority != b->priority) return a->priority > b->priority;
  return a->index < b->index;
}

}  // namespace

LocalGenerator::LocalGenerator(Engine& engine, const Tokenizer& tokenizer,
                               LocalGeneratorOptions options)
    : engine_(engine), tokenizer_(tokenizer), options_(options) {}

absl::Status LocalGenerator::Run(std::span<const GenerationRequest> requests,
                                 const std::function<void(const GenerationEvent&)>& on_event) {
  const ModelConfig& config = engine_.config();
  KvCacheManager& kv = engine_.kv_cache();
  const KvLayout& layout = kv.layout();
  std::vector<int32_t> eos;
  if (config.eos_token_ids.empty()) {
    eos = tokenizer_.eos_ids();
  } else {
    for (int64_t id : config.eos_token_ids) eos.push_back(static_cast<int32_t>(id));
  }
  std::random_device entropy;

  auto fail = [&](size_t index, absl::Status error) {
    GenerationEvent e;
    e.request = index;
    e.finished = true;
    e.finish_reason = FinishReason::kError;
    e.error = std::move(error);
    on_event(e);
  };

  std::vector<std::unique_ptr<ActiveRequest>> all;
  std::vector<ActiveRequest*> waiting;
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    absl::Status valid = ValidateSamplingParams(r.sampling, config.vocab_size);
    if (valid.ok()) valid = ValidateStoppingParams(r.stopping, config.vocab_size);
    if (valid.ok() && r.prompt.empty()) valid = absl::InvalidArgumentError("the prompt is empty");
    for (int32_t id : r.prompt) {
      if (valid.ok() && (id < 0 || id >= config.vocab_size)) {
        valid = absl::InvalidArgumentError(
            absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ", config.vocab_size, ")"));
      }
    }
    if (valid.ok() && config.max_position_embeddings > 0 &&
        static_cast<int64_t>(r.prompt.size()) >= config.max_position_embeddings) {
      valid = absl::InvalidArgumentError(absl::StrCat("prompt of ", r.prompt.size(),
                                                      " tokens leaves no room in the model's context of ",
                                                      config.max_position_embeddings));
    }
    if (valid.ok() && layout.BlocksForTokens(r.prompt.size() + 1) > kv.num_total_blocks()) {
      valid = absl::ResourceExhaustedError(absl::StrCat(
          "prompt of ", r.prompt.size(), " tokens needs more KV blocks than the pool's ",
          kv.num_total_blocks()));
    }
    if (!valid.ok()) {
      fail(i, valid);
      continue;
    }
    auto a = std::make_unique<ActiveRequest>();
    a->index = i;
    a->priority = r.priority;
    a->seq.id = static_cast<SeqId>(i);
    a->seq.tokens = r.prompt;
    a->seq.prompt_len = static_cast<int32_t>(r.prompt.size());
    a->seq.sampling = r.sampling;
    a->seq.seed = r.sampling.seed.has_value()
                      ? *r.sampling.seed
                      : (static_cast<uint64_t>(entropy()) << 32) ^ entropy();
    a->detokenizer.emplace(tokenizer_, r.prompt, r.skip_special_tokens);
    a->stop.emplace(r.stopping, eos);
    waiting.push_back(a.get());
    all.push_back(std::move(a));
  }
  std::sort(waiting.begin(), waiting.end(), RunsBefore);

  std::vector<ActiveRequest*> running;
  while (!waiting.empty() || !running.empty()) {
    // Admit waiting requests while the step's budgets allow. Each running
    // sequence needs one token of budget and, at a block boundary, a block.
    int64_t token_budget = options_.max_batch_tokens - static_cast<int64_t>(running.size());
    int64_t free_blocks = kv.num_free_blocks();
    for (ActiveRequest* r : running) {
      free_blocks -= kv.BlocksNeeded(r->seq.id, r->seq.tokens.size());
    }
    while (!waiting.empty() && static_cast<int32_t>(running.size()) < options_.max_batch_size) {
      ActiveRequest* next = waiting.front();
      const int64_t tokens = static_cast<int64_t>(next->seq.tokens.size()) - next->seq.num_computed;
      const int64_t blocks = kv.BlocksNeeded(next->seq.id, next->seq.tokens.size());
      // An oversized prompt still runs, alone, so it cannot starve.
      if (!running.empty() && (tokens > token_budget || blocks > free_blocks)) break;
      token_budget -= tokens;
      free_blocks -= blocks;
      running.push_back(next);
      waiting.erase(waiting.begin());
    }

    std::vector<Sequence*> batch;
    batch.reserve(running.size());
    for (ActiveRequest* r : running) batch.push_back(&r->seq);
    absl::StatusOr<std::vector<SampleResult>> step = engine_.Step(batch);
    if (absl::IsResourceExhausted(step.status())) {
      // Out of KV blocks: preempt the lowest-priority, newest sequence and
      // recompute it later.
      auto victim = std::min_element(running.begin(), running.end(),
                                     [](const ActiveRequest* a, const ActiveRequest* b) {
                                       return RunsBefore(b, a);
                                     });
      ActiveRequest* v = *victim;
      if (running.size() == 1) {
        engine_.Release(v->seq);
        running.clear();
        fail(v->index, step.status());
        continue;
      }
      engine_.Release(v->seq);
      running.erase(victim);
      waiting.insert(std::upper_bound(waiting.begin(), waiting.end(), v, RunsBefore), v);
      ++num_preemptions_;
      continue;
    }
    if (!step.ok()) {
      for (ActiveRequest* r : running) engine_.Release(r->seq);
      return step.status();
    }
    max_batch_seen_ = std::max(max_batch_seen_, static_cast<int32_t>(running.size()));

    std::vector<ActiveRequest*> still_running;
    for (size_t i = 0; i < running.size(); ++i) {
      ActiveRequest* r = running[i];
      const SampleResult& sample = (*step)[i];
      GenerationEvent e;
      e.request = r->index;
      e.sample = sample;
      e.token = sample.token;
      const std::string delta = r->detokenizer->Push(sample.token);
      StopDecision d = r->stop->OnToken(sample.token, delta);
      e.text = std::move(d.text);
      // The model's context is a hard end, like max_new_tokens.
      const bool context_full = config.max_position_embeddings > 0 &&
                                static_cast<int64_t>(r->seq.tokens.size()) >= config.max_position_embeddings;
      if (d.finished || context_full) {
        e.finished = true;
        e.finish_reason = d.finished ? d.reason : FinishReason::kLength;
        e.matched_stop = d.matched_stop;
        if (!d.finished || d.reason == FinishReason::kLength) {
          e.text += r->detokenizer->Flush();
          e.text += r->stop->Flush();
        }
        engine_.Release(r->seq);
      } else {
        still_running.push_back(r);
      }
      on_event(e);
    }
    running.swap(still_running);
  }
  return absl::OkStatus();
}

}  // namespace tandem
