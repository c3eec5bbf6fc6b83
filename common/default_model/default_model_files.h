// The files of the trained default model (common/default_model/trained/),
// compiled into every binary that links tandem_default_model, so a
// binary copied alone (a container image, build/bin/tandem on a fresh
// clone) still serves it without a download or a path to the sources.
#pragma once

#include <span>
#include <string_view>

namespace tandem {

struct DefaultModelFile {
  std::string_view name;   // file name in the checkpoint directory
  std::string_view bytes;  // its contents, in the binary's read-only data
};

// config.json, model.safetensors, tokenizer.json, tokenizer_config.json.
std::span<const DefaultModelFile> DefaultModelFiles();

}  // namespace tandem
