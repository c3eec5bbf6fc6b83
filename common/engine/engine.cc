#include "common/engine/engine.h"

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace tandem {

Engine::Engine(std::unique_ptr<ModelBackend> backend)
    : backend_(std::move(backend)),
      kv_cache_(backend_->kv_pool().layout(), backend_->kv_pool().num_blocks()) {}

absl::StatusOr<ForwardOutput> Engine::Forward(std::span<Sequence* const> seqs, bool all_logits,
                                              std::function<void(int)> on_layer_done, bool sample) {
  const int64_t max_pos = config().max_position_embeddings;
  for (const Sequence* s : seqs) {
    if (s->num_computed >= static_cast<int32_t>(s->tokens.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s->id, " has no uncomputed tokens"));
    }
    if (max_pos > 0 && static_cast<int64_t>(s->tokens.size()) > max_pos) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s->id, " has ", s->tokens.size(),
                                                     " tokens, more than the model's ", max_pos));
    }
  }
  // Reserve everything before computing anything, so a batch that does not
  // fit fails before any sequence's state changes.
  for (const Sequence* s : seqs) {
    TANDEM_RETURN_IF_ERROR(kv_cache_.Reserve(s->id, static_cast<int64_t>(s->tokens.size())));
  }
  std::vector<std::vector<int32_t>> tables;
  tables.reserve(seqs.size());
  ForwardBatch batch;
  batch.on_layer_done = std::move(on_layer_done);
  for (const Sequence* s : seqs) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> table, kv_cache_.BlockTable(s->id));
    tables.push_back(std::move(table));
    SequenceChunk c;
    c.tokens = std::span<const int32_t>(s->tokens).subspan(s->num_computed);
    c.num_cached = s->num_computed;
    c.block_table = tables.back();
    c.all_logits = all_logits;
    batch.seqs.push_back(c);
    if (sample) {
      batch.sample.push_back({&s->sampling, TokenHistory{s->prompt(), s->output()}, s->seed,
                              static_cast<uint64_t>(s->num_generated())});
    }
  }
  ForwardOutput out;
  TANDEM_RETURN_IF_ERROR(backend_->Forward(batch, &out));
  for (Sequence* s : seqs) s->num_computed = static_cast<int32_t>(s->tokens.size());
  return out;
}

absl::StatusOr<std::vector<SampleResult>> Engine::Step(std::span<Sequence* const> seqs,
                                                       std::function<void(int)> on_layer_done) {
  const bool on_device = backend_->samples_on_device();
  TANDEM_ASSIGN_OR_RETURN(ForwardOutput out, Forward(seqs, /*all_logits=*/false,
                                                     std::move(on_layer_done), on_device));
  std::vector<SampleResult> results;
  if (on_device) {
    results = std::move(out.samples);
  } else {
    results.reserve(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      const Sequence& s = *seqs[i];
      results.push_back(sampler_.Sample(out.Row(out.row_offset[i]), s.sampling, TokenHistory{s.prompt(), s.output()},
                                        s.seed, static_cast<uint64_t>(s.num_generated())));
    }
  }
  for (size_t i = 0; i < seqs.size(); ++i) seqs[i]->tokens.push_back(results[i].token);
  return results;
}

absl::StatusOr<ForwardOutput> Engine::ComputeLogits(std::span<Sequence* const> seqs) {
  return Forward(seqs, /*all_logits=*/true, nullptr, /*sample=*/false);
}

void Engine::Release(Sequence& seq) {
  kv_cache_.Free(seq.id);
  seq.num_computed = 0;
}

}  // namespace tandem
