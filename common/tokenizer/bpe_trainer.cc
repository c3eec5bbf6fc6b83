#include "common/tokenizer/bpe_trainer.h"

#include <cstdint>
#include <map>
#include <unordered_map>

#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/pre_tokenizer.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

// Llama 3's split pattern.
const char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

nlohmann::ordered_json PreTokenizerJson() {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
}

}  // namespace

std::string TrainByteLevelBpeTokenizerJson(std::string_view corpus, int vocab_size,
                                           const std::vector<std::string>& special_tokens) {
  // Distinct words (byte-level strings) with their counts; symbols are
  // token ids, starting as the ids of the words' bytes.
  auto splitter = TextSplitter::FromJson(nullptr, PreTokenizerJson(), "trainer");
  std::map<std::string, int64_t> word_counts;
  for (const std::string& w : (*splitter)->Split(corpus, true)) ++word_counts[w];
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  for (const auto& [w, n] : word_counts) {
    std::vector<int32_t> symbols;
    for (size_t i = 0; i < w.size();) symbols.push_back(*UnicodeToByte(DecodeUtf8(w, i)));
    words.push_back(std::move(symbols));
    counts.push_back(n);
  }

  std::vector<std::string> token_text;  // id -> byte-level string
  std::unordered_map<std::string, int32_t> token_id;
  for (int b = 0; b < 256; ++b) {
    token_text.push_back(ByteToUnicode(static_cast<uint8_t>(b)));
    token_id[token_text.back()] = b;
  }

  // Pair counts are kept up to date incrementally: a merge only rewrites
  // the words that contain its pair (`occurs_in` may list a word that no
  // longer does; rewriting it is then a no-op).
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<size_t>> occurs_in;
  auto key = [](int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); };
  auto count_pairs = [&](size_t w, int64_t sign) {
    const std::vector<int32_t>& sym = words[w];
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const uint64_t k = key(sym[i], sym[i + 1]);
      pair_count[k] += sign * counts[w];
      if (sign > 0) occurs_in[k].push_back(w);
    }
  };
  for (size_t w = 0; w < words.size(); ++w) count_pairs(w, +1);

  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  const int target = vocab_size - static_cast<int>(special_tokens.size());
  std::vector<size_t> last_rewritten(words.size(), SIZE_MAX);
  for (size_t step = 0; static_cast<int>(token_text.size()) < target; ++step) {
    // The most frequent pair; ties go to the lexicographically smallest
    // (left, right) pair of strings, so the result does not depend on
    // hash order.
    uint64_t best = 0;
    int64_t best_count = 0;
    for (const auto& [k, n] : pair_count) {
      if (n <= 0) continue;
      if (n > best_count) {
        best = k;
        best_count = n;
        continue;
      }
      if (n < best_count) continue;
      const std::string& a = token_text[k >> 32];
      const std::string& best_a = token_text[best >> 32];
      const int c = a.compare(best_a);
      if (c < 0 || (c == 0 && token_text[k & 0xFFFFFFFF] < token_text[best & 0xFFFFFFFF])) best = k;
    }
    if (best_count == 0) break;  // every word is a single token
    const int32_t a = static_cast<int32_t>(best >> 32), b = static_cast<int32_t>(best & 0xFFFFFFFF);
    const std::string merged = token_text[a] + token_text[b];
    merges.push_back(token_text[a] + " " + token_text[b]);
    auto [it, inserted] = token_id.emplace(merged, static_cast<int32_t>(token_text.size()));
    if (inserted) token_text.push_back(merged);
    const int32_t merged_id = it->second;

    const std::vector<size_t> affected = std::move(occurs_in[best]);
    occurs_in.erase(best);
    for (size_t w : affected) {
      if (last_rewritten[w] == step) continue;
      last_rewritten[w] = step;
      count_pairs(w, -1);
      std::vector<int32_t>& sym = words[w];
      std::vector<int32_t> out;
      out.reserve(sym.size());
      for (size_t i = 0; i < sym.size(); ++i) {
        if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
          out.push_back(merged_id);
          ++i;
        } else {
          out.push_back(sym[i]);
        }
      }
      sym.swap(out);
      count_pairs(w, +1);
    }
  }

  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (size_t id = 0; id < token_text.size(); ++id) vocab[token_text[id]] = id;
  int next_id = static_cast<int>(token_text.size());
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (const std::string& s : special_tokens) {
    added.push_back({{"id", next_id++},
                     {"content", s},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  nlohmann::ordered_json post = nullptr;
  if (!special_tokens.empty()) {
    const std::string& bos = special_tokens.front();
    const int bos_id = added[0]["id"].get<int>();
    post = {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair",
             {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
              {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
            {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
  }
  nlohmann::ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = PreTokenizerJson();
  j["post_processor"] = post;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", true},
                {"vocab", vocab},
                {"merges", merges}};
  return j.dump(1) + "\n";
}

}  // namespace tandem
