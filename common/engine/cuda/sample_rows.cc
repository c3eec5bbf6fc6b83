#include "common/engine/cuda/sample_rows.h"

#include <map>

namespace tandem::cuda {

SampleRowsInput BuildSampleRows(std::span<const SampleSpec> specs, int64_t vocab) {
  SampleRowsInput in;
  in.params.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const SampleSpec& spec = specs[i];
    const SamplingParams& sp = *spec.params;
    SampleRowParams& p = in.params[i];
    p.temperature = sp.temperature;
    p.top_k = sp.top_k;
    p.top_p = sp.top_p;
    p.min_p = sp.min_p;
    p.seed = spec.seed;
    p.step = spec.step;
    p.logprobs = sp.logprobs;
    p.repetition_penalty = sp.repetition_penalty;
    p.frequency_penalty = sp.frequency_penalty;
    p.presence_penalty = sp.presence_penalty;
    p.penalty_begin = p.penalty_end = static_cast<int32_t>(in.penalties.size());
    if (sp.repetition_penalty == 1.0f && sp.frequency_penalty == 0.0f && sp.presence_penalty == 0.0f) continue;
    std::map<int32_t, int32_t> seen;
    if (sp.repetition_penalty != 1.0f) {
      for (int32_t t : spec.history.prompt) seen.emplace(t, 0);
    }
    for (int32_t t : spec.history.output) ++seen[t];
    for (const auto& [token, count] : seen) {
      if (token >= 0 && token < vocab) in.penalties.push_back({token, count});
    }
    p.penalty_end = static_cast<int32_t>(in.penalties.size());
    in.any_penalty = true;
  }
  return in;
}

SampleResult ToSampleResult(const SampleRowResult& r, const SampleRowParams& p) {
  SampleResult s;
  s.token = r.token;
  if (p.logprobs >= 0) {
    s.logprob_valid = true;
    s.logprob = r.logprob;
    s.rank = r.rank;
    for (int j = 0; j < r.num_top; ++j) s.top.push_back({r.top_ids[j], r.top_logprobs[j]});
  }
  return s;
}

}  // namespace tandem::cuda
