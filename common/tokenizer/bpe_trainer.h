// Trains a small byte-level BPE tokenizer (Llama 3's pre-tokenizer and
// format) on a corpus, deterministically: the built-in default model's
// tokenizer is made this way.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tandem {

// Returns a complete tokenizer.json: ids 0..255 are the bytes, then the
// learned merges in order (the most frequent adjacent pair first, ties to
// the lexicographically smallest pair), then `special_tokens` as added
// tokens; the first special token is the BOS the post-processor adds.
// `vocab_size` counts all of these; a corpus too small to learn that many
// merges gives a smaller vocabulary (read Tokenizer::vocab_size()).
std::string TrainByteLevelBpeTokenizerJson(std::string_view corpus, int vocab_size,
                                           const std::vector<std::string>& special_tokens);

}  // namespace tandem
