// Conversions between the public/internal protos and the engine's types, in
// one place so the router and both workers read a request the same way.
#pragma once

#include <optional>

#include "common/sampling/sampler.h"
#include "common/sampling/sampling_params.h"
#include "common/sampling/stop_checker.h"
#include "tandem/v1/generate.pb.h"

namespace tandem {

// Unset proto fields take the documented defaults (temperature 1, top_p 1,
// repetition_penalty 1, max_new_tokens 16). Values are not validated here;
// ValidateSamplingParams / ValidateStoppingParams do that.
SamplingParams FromProto(const v1::SamplingParameters& p, std::optional<int32_t> logprobs);
StoppingParams FromProto(const v1::StoppingCriteria& p);
// The inverse, so the router can forward validated values to the workers.
v1::SamplingParameters ToProto(const SamplingParams& p);
v1::StoppingCriteria ToProto(const StoppingParams& p);

// The token's id and sampling results; the caller fills `text`.
v1::GeneratedToken ToProto(const SampleResult& s);
SampleResult FromProto(const v1::GeneratedToken& t);

v1::FinishReason ToProto(FinishReason r);

}  // namespace tandem
