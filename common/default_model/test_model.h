// The random test model: a small Llama-3-shaped checkpoint (config.json,
// model.safetensors, tokenizer.json, tokenizer_config.json) generated
// deterministically from code. Its weights are random, so its text is
// gibberish, but it exercises every part of the loading and serving path
// and, unlike the trained default model, it never ends a story early: a
// greedy run goes on to max_new_tokens, which the engine, worker and
// cluster tests rely on. Served nowhere; tests write it where they need it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/model/model_config.h"

namespace tandem {

// The test model's architecture (its vocab_size is the trained tokenizer's).
ModelConfig TestModelConfig(int64_t vocab_size);

// The byte-level BPE tokenizer.json of the test model, trained by
// common/tokenizer/bpe_trainer on a fixed English/code snippet. The trained
// default model ships a copy of these bytes (common/default_model/trained/).
std::string TestModelTokenizerJson();

// Writes the checkpoint into `dir` (created; existing files replaced). The
// same bytes on every machine and every call. `num_hidden_layers` other
// than 4 gives a deeper or shallower model of the same shape otherwise
// (tests that need many layer boundaries in one step).
absl::Status WriteTestModel(const std::string& dir, int num_hidden_layers = 4);

}  // namespace tandem
