// A deliberately naive Llama forward pass for tests: double precision, no
// KV cache, every position recomputed from the token ids, weights read
// straight from the WeightStore by Hugging Face name. It shares no code with
// the backends, so agreement with it means the backends' paging, caching,
// fusion and batching did not change the math.
#pragma once

#include <cstdint>
#include <vector>

#include "common/model/model_config.h"
#include "common/model/weight_store.h"

namespace tandem::testing {

// Logits [tokens.size()][vocab] for every position of `tokens`.
std::vector<std::vector<double>> ReferenceLogits(const ModelConfig& config,
                                                 const WeightStore& weights,
                                                 const std::vector<int32_t>& tokens);

}  // namespace tandem::testing
