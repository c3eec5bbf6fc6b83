#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem {

// vLLM/TGI's scheme: decode a short window ending at the new token and
// subtract the window's text without it. The window starts a few tokens
// back (prefix_offset), so tokenizer rules that depend on the position
// (SentencePiece's leading-space strip) act the same in both decodes.
IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, std::span<const int32_t> prompt_ids,
                                               bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens), ids_(prompt_ids.begin(), prompt_ids.end()) {
  read_offset_ = ids_.size();
  prefix_offset_ = ids_.size() > 5 ? ids_.size() - 5 : 0;
}

std::string IncrementalDetokenizer::Push(int32_t id) {
  ids_.push_back(id);
  const std::span<const int32_t> all(ids_);
  const std::string prefix =
      tokenizer_.Decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string full = tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  // Hold text back while it ends inside a UTF-8 sequence (a character split
  // across tokens) or has not grown.
  if (full.size() <= prefix.size() || IncompleteUtf8Suffix(full) > 0 || full.compare(0, prefix.size(), prefix) != 0) {
    return "";
  }
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return SanitizeUtf8(full.substr(prefix.size()));
}

std::string IncrementalDetokenizer::Flush() {
  const std::span<const int32_t> all(ids_);
  const std::string prefix =
      tokenizer_.Decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string full = tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  prefix_offset_ = read_offset_ = ids_.size();
  if (full.size() <= prefix.size() || full.compare(0, prefix.size(), prefix) != 0) return "";
  return SanitizeUtf8(full.substr(prefix.size()));
}

}  // namespace tandem
