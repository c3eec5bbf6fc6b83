// The text side of tokenizer.json: the normalizer and the pre-tokenizer,
// which together turn a stretch of text (between added tokens) into the
// words the BPE model encodes one by one.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem {

class TextSplitter {
 public:
  // `normalizer` and `pre_tokenizer` are tokenizer.json's objects (either
  // may be null). Supported: normalizers NFC, Prepend, Replace, Sequence;
  // pre-tokenizers Split (regex or string, Isolated/Removed/...),
  // ByteLevel, Metaspace, Sequence.
  static absl::StatusOr<std::unique_ptr<TextSplitter>> FromJson(const nlohmann::json& normalizer,
                                                                const nlohmann::json& pre_tokenizer,
                                                                std::string_view source);
  virtual ~TextSplitter() = default;

  // `first` is true for the first stretch of the input (Metaspace's
  // prepend_scheme "first").
  virtual std::vector<std::string> Split(std::string_view text, bool first) const = 0;
};

}  // namespace tandem
