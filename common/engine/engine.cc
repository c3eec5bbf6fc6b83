#include "common/engine/engine.h"

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace tandem {

Engine::Engine(std::unique_ptr<ModelBackend> backend)
    : backend_(std::move(backend)),
      kv_cache_(backend_->kv_pool().layout(), backend_->kv_pool().num_blocks()) {}

absl::StatusOr<StepPlan> PlanWhole(KvCacheManager& kv, std::span<Sequence* const> seqs) {
  StepPlan plan;
  for (Sequence* s : seqs) {
    TANDEM_RETURN_IF_ERROR(kv.Reserve(s->id, static_cast<int64_t>(s->tokens.size())));
    const int32_t n = static_cast<int32_t>(s->tokens.size()) - s->num_computed;
    plan.chunks.push_back({s, n});
    plan.num_tokens += n;
  }
  return plan;
}

absl::StatusOr<ForwardOutput> Engine::Forward(const StepPlan& plan, bool all_logits,
                                              std::function<void(int)> on_layer_done, bool sample) {
  const int64_t max_pos = config().max_position_embeddings;
  const KvLayout& layout = kv_cache_.layout();
  std::vector<std::vector<int32_t>> tables;
  tables.reserve(plan.chunks.size());
  ForwardBatch batch;
  batch.on_layer_done = std::move(on_layer_done);
  for (const ScheduledChunk& c : plan.chunks) {
    const Sequence* s = c.seq;
    const int64_t end = static_cast<int64_t>(s->num_computed) + c.num_tokens;
    if (c.num_tokens <= 0 || end > static_cast<int64_t>(s->tokens.size())) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s->id, ": a chunk of ", c.num_tokens,
                                                     " tokens from ", s->num_computed, " does not fit its ",
                                                     s->tokens.size(), " tokens"));
    }
    if (max_pos > 0 && end > max_pos) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s->id, " reaches ", end,
                                                     " tokens, more than the model's ", max_pos));
    }
    TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> table, kv_cache_.BlockTable(s->id));
    if (static_cast<int64_t>(table.size()) < layout.BlocksForTokens(end)) {
      return absl::FailedPreconditionError(absl::StrCat("sequence ", s->id, " holds ", table.size(),
                                                        " KV blocks, too few for ", end, " tokens"));
    }
    tables.push_back(std::move(table));
    SequenceChunk sc;
    sc.tokens = std::span<const int32_t>(s->tokens).subspan(s->num_computed, c.num_tokens);
    sc.num_cached = s->num_computed;
    sc.block_table = tables.back();
    sc.all_logits = all_logits;
    batch.seqs.push_back(sc);
    if (sample) {
      // A chunk that does not reach the end samples a row nobody reads;
      // the backend samples every sequence's last row.
      batch.sample.push_back({&s->sampling, TokenHistory{s->prompt(), s->output()}, s->seed,
                              static_cast<uint64_t>(s->num_generated())});
    }
  }
  ForwardOutput out;
  TANDEM_RETURN_IF_ERROR(backend_->Forward(batch, &out));
  for (const ScheduledChunk& c : plan.chunks) c.seq->num_computed += c.num_tokens;
  return out;
}

absl::StatusOr<std::vector<StepSample>> Engine::Step(const StepPlan& plan, std::function<void(int)> on_layer_done) {
  const bool on_device = backend_->samples_on_device();
  // Which chunks sample is decided before the forward pass advances
  // num_computed.
  std::vector<bool> samples(plan.chunks.size());
  for (size_t i = 0; i < plan.chunks.size(); ++i) samples[i] = plan.chunks[i].samples();
  TANDEM_ASSIGN_OR_RETURN(ForwardOutput out, Forward(plan, /*all_logits=*/false, std::move(on_layer_done), on_device));
  std::vector<StepSample> results;
  results.reserve(plan.chunks.size());
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    if (!samples[i]) continue;
    Sequence& s = *plan.chunks[i].seq;
    SampleResult r = on_device ? std::move(out.samples[i])
                               : sampler_.Sample(out.Row(out.row_offset[i]), s.sampling,
                                                 TokenHistory{s.prompt(), s.output()}, s.seed,
                                                 static_cast<uint64_t>(s.num_generated()));
    s.tokens.push_back(r.token);
    results.push_back({s.id, std::move(r)});
  }
  return results;
}

absl::StatusOr<ForwardOutput> Engine::ComputeLogits(const StepPlan& plan) {
  return Forward(plan, /*all_logits=*/true, nullptr, /*sample=*/false);
}

void Engine::Release(Sequence& seq) {
  kv_cache_.Free(seq.id);
  seq.num_computed = 0;
}

}  // namespace tandem
