// The decoder of tokenizer.json: token strings back to text.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem {

// One token to decode: a vocabulary string, or the raw content of an added
// token (passed through as text).
struct DecodePiece {
  std::string_view text;
  bool added = false;
};

class TokenDecoder {
 public:
  // Supported: ByteLevel; Metaspace; Sequence of Replace (String),
  // ByteFallback, Fuse, Strip (the SentencePiece-BPE decoder of Llama 2).
  static absl::StatusOr<std::unique_ptr<TokenDecoder>> FromJson(const nlohmann::json& decoder,
                                                                std::string_view source);
  virtual ~TokenDecoder() = default;
  // Bytes that do not form valid UTF-8 are kept as they are.
  virtual std::string Decode(const std::vector<DecodePiece>& pieces) const = 0;
};

}  // namespace tandem
