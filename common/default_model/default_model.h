// tandem's built-in default model: a small Llama-3-shaped model trained on
// children's stories the project writes itself (tools/train_default_model/),
// committed under common/default_model/trained/ and compiled into the
// binary, so every machine serves the same model without a download.
// `tandem up`, `tandem generate` and the workers serve it when no --model
// is given. Tests that only need some model use the random test model
// (test_model.h), which is cheaper to reason about: it never stops early.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tandem {

// Bump when the default model's bytes change, so caches of an older version
// are not reused.
inline constexpr int kDefaultModelVersion = 2;

// Writes the checkpoint (config.json, model.safetensors, tokenizer.json,
// tokenizer_config.json) into `dir` (created; existing files replaced).
absl::Status WriteDefaultModel(const std::string& dir);

// The directory of the default model in the cache ($TANDEM_CACHE_DIR, else
// $XDG_CACHE_HOME/tandem, else ~/.cache/tandem), written there on first use.
// Safe against concurrent callers in several processes: the model is
// written to a temporary directory and renamed into place.
absl::StatusOr<std::string> EnsureDefaultModel();

}  // namespace tandem
