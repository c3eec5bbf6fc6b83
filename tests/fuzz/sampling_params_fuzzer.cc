// A client's GenerateRequest as the router reads it (GenerateCall::Prepare:
// prompt ids against the vocabulary, FromProto, ValidateSamplingParams,
// ValidateStoppingParams), then what the accepted parameters drive: the
// Sampler over a small logits row and the StopChecker over the output.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/rpc/proto_convert.h"
#include "common/sampling/sampler.h"
#include "common/sampling/stop_checker.h"
#include "tandem/v1/generate.pb.h"
#include "tests/fuzz/quiet_protobuf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // First byte: the vocabulary size, small so that top_k, logprobs and stop
  // ids can exceed it.
  if (size < 1) return 0;
  const int32_t vocab = 1 + data[0];
  tandem::v1::GenerateRequest req;
  if (!req.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;

  std::vector<int32_t> prompt;
  if (req.has_token_ids()) {
    prompt.assign(req.token_ids().ids().begin(), req.token_ids().ids().end());
    for (int32_t id : prompt) {
      if (id < 0 || id >= vocab) return 0;
    }
  } else {
    // No tokenizer here (tokenizer_fuzzer has one): a byte per token.
    for (unsigned char c : req.text()) prompt.push_back(c % vocab);
  }
  if (prompt.empty()) return 0;
  tandem::SamplingParams sampling = tandem::FromProto(
      req.sampling(), req.has_logprobs() ? std::optional<int32_t>(req.logprobs()) : std::nullopt);
  const tandem::StoppingParams stopping = tandem::FromProto(req.stopping());
  if (!tandem::ValidateSamplingParams(sampling, vocab).ok()) return 0;
  if (!tandem::ValidateStoppingParams(stopping, vocab).ok()) return 0;

  // Logits from the request id's bytes: fuzzer-chosen, finite, with ties.
  std::vector<float> logits(vocab, 0.0f);
  const std::string& pattern = req.request_id();
  for (int32_t i = 0; i < vocab && !pattern.empty(); ++i) {
    logits[i] = static_cast<int8_t>(pattern[i % pattern.size()]) / 4.0f;
  }
  // Output text: pieces of the prompt text, so stop strings can match.
  const std::string& text = req.text().empty() ? pattern : req.text();
  tandem::StopChecker stop(stopping, {0});
  tandem::Sampler sampler;
  std::vector<int32_t> output;
  size_t at = 0;
  const int32_t steps = std::min(stopping.max_new_tokens, 64);
  for (int32_t step = 0; step < steps; ++step) {
    const tandem::SampleResult r =
        sampler.Sample(logits, sampling, {prompt, output}, sampling.seed.value_or(7), static_cast<uint64_t>(step));
    if (r.token < 0 || r.token >= vocab) std::abort();
    if (sampling.logprobs >= 0 && (!r.logprob_valid || r.top.size() > static_cast<size_t>(sampling.logprobs))) {
      std::abort();
    }
    output.push_back(r.token);
    const size_t n = std::min<size_t>(r.token % 4, text.size() - std::min(at, text.size()));
    const tandem::StopDecision d = stop.OnToken(r.token, std::string_view(text).substr(std::min(at, text.size()), n));
    at += n;
    if (d.finished) break;
  }
  (void)stop.Flush();
  return 0;
}
