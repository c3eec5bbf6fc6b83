// Hugging Face tokenizer.json tokenizers: byte-level BPE (Llama 3, Qwen2/3)
// and SentencePiece-style BPE with byte fallback (Llama 2, Mistral), with
// added/special tokens, as `tokenizers` (and @lenml/tokenizers) encode them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads `dir`/tokenizer.json and, when present, `dir`/tokenizer_config.json
  // (bos/eos tokens, add_bos_token). Errors name the file and the field.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDir(const std::string& dir);
  // `config_json` may be empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                             std::string_view config_json,
                                                             std::string_view source);

  // Special/added tokens in `text` are matched as whole tokens. With
  // add_special_tokens the post-processor's BOS (etc.) is added.
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const = 0;
  // Ids out of range decode to nothing. Invalid UTF-8 from partial byte
  // sequences is kept as raw bytes (see IncrementalDetokenizer for streams).
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;

  virtual int64_t vocab_size() const = 0;  // including added tokens
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  virtual std::string IdToToken(int32_t id) const = 0;  // "" when out of range
  virtual bool IsSpecial(int32_t id) const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::vector<int32_t> eos_ids() const = 0;
};

// Turns a growing token sequence into text deltas for streaming: a delta is
// released only when it is complete UTF-8, and SentencePiece's leading-space
// rules give the same text as decoding the whole sequence at once. Deltas
// are valid UTF-8: bytes that never form a character (random models emit
// such tokens) come out as U+FFFD. For valid text, the concatenation of all
// deltas and Flush() is what the generated ids add to the decoded prompt.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::span<const int32_t> prompt_ids,
                         bool skip_special_tokens);
  // Appends one generated token and returns the new text (may be empty).
  std::string Push(int32_t id);
  // Text still held back (an incomplete UTF-8 sequence) at end of stream.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
};

}  // namespace tandem
