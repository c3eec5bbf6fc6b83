// The BPE model of a tokenizer.json: vocabulary, merge ranks, and the merge
// loop that turns one pre-tokenized word into token ids.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem {

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object; `source` names the file.
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& model, std::string_view source);

  // Appends the ids of `word` (already normalized / byte-level mapped).
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The vocabulary's string for `id`; empty if none.
  const std::string& IdToToken(int32_t id) const;
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t byte_tokens_[256];  // ids of "<0xNN>" tokens for byte fallback, -1 if absent
};

}  // namespace tandem
