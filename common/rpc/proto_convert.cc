#include "common/rpc/proto_convert.h"

namespace tandem {

SamplingParams FromProto(const v1::SamplingParameters& p, std::optional<int32_t> logprobs) {
  SamplingParams s;
  s.temperature = p.has_temperature() ? p.temperature() : 1.0f;
  s.top_k = p.top_k();
  s.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  s.min_p = p.min_p();
  if (p.has_seed()) s.seed = p.seed();
  s.repetition_penalty = p.has_repetition_penalty() ? p.repetition_penalty() : 1.0f;
  s.presence_penalty = p.presence_penalty();
  s.frequency_penalty = p.frequency_penalty();
  s.logprobs = logprobs.value_or(-1);
  return s;
}

StoppingParams FromProto(const v1::StoppingCriteria& p) {
  StoppingParams s;
  s.max_new_tokens = p.has_max_new_tokens() ? p.max_new_tokens() : 16;
  s.min_new_tokens = p.min_new_tokens();
  s.stop.assign(p.stop().begin(), p.stop().end());
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  s.ignore_eos = p.ignore_eos();
  s.include_stop_str_in_output = p.include_stop_str_in_output();
  return s;
}

v1::SamplingParameters ToProto(const SamplingParams& s) {
  v1::SamplingParameters p;
  p.set_temperature(s.temperature);
  p.set_top_k(s.top_k);
  p.set_top_p(s.top_p);
  p.set_min_p(s.min_p);
  if (s.seed) p.set_seed(*s.seed);
  p.set_repetition_penalty(s.repetition_penalty);
  p.set_presence_penalty(s.presence_penalty);
  p.set_frequency_penalty(s.frequency_penalty);
  return p;
}

v1::StoppingCriteria ToProto(const StoppingParams& s) {
  v1::StoppingCriteria p;
  p.set_max_new_tokens(s.max_new_tokens);
  p.set_min_new_tokens(s.min_new_tokens);
  for (const std::string& stop : s.stop) p.add_stop(stop);
  for (int32_t id : s.stop_token_ids) p.add_stop_token_ids(id);
  p.set_ignore_eos(s.ignore_eos);
  p.set_include_stop_str_in_output(s.include_stop_str_in_output);
  return p;
}

v1::GeneratedToken ToProto(const SampleResult& s) {
  v1::GeneratedToken t;
  t.set_id(s.token);
  if (s.logprob_valid) {
    t.set_logprob(s.logprob);
    t.set_rank(s.rank);
    for (const TokenLogprob& alt : s.top) {
      v1::TokenLogprob* p = t.add_top_logprobs();
      p->set_token_id(alt.token);
      p->set_logprob(alt.logprob);
    }
  }
  return t;
}

SampleResult FromProto(const v1::GeneratedToken& t) {
  SampleResult s;
  s.token = t.id();
  if (t.has_logprob()) {
    s.logprob_valid = true;
    s.logprob = t.logprob();
    s.rank = t.rank();
    for (const v1::TokenLogprob& alt : t.top_logprobs()) s.top.push_back({alt.token_id(), alt.logprob()});
  }
  return s;
}

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError: return v1::FINISH_REASON_ERROR;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace tandem
