#include "common/tokenizer/bpe_model.h"

#include <cstdio>
#include <queue>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/byte_level.h"

namespace tandem {

absl::StatusOr<BpeModel> BpeModel::FromJson(const nlohmann::json& model, std::string_view source) {
  const std::string src(source);
  if (!model.is_object()) return absl::InvalidArgumentError(absl::StrCat(src, ": model is missing"));
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") {
    return absl::UnimplementedError(absl::StrCat(src, ": model.type '", type, "' is not supported (BPE)"));
  }
  BpeModel m;
  auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": model.vocab is missing or not an object"));
  }
  int32_t max_id = -1;
  for (auto& [token, id] : vocab->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(src, ": model.vocab['", token, "'] is not a valid id"));
    }
    m.vocab_[token] = id.get<int32_t>();
    max_id = std::max(max_id, id.get<int32_t>());
  }
  m.id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : m.vocab_) m.id_to_token_[id] = token;

  auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": model.merges is missing or not a list"));
  }
  int32_t rank = 0;
  for (const auto& merge : *merges) {
    std::string a, b;
    if (merge.is_string()) {
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(src, ": model.merges[", rank, "] '", s, "' is not 'a b'"));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      a = merge[0].get<std::string>();
      b = merge[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(src, ": model.merges[", rank, "] is not a pair"));
    }
    auto ia = m.vocab_.find(a), ib = m.vocab_.find(b), ir = m.vocab_.find(a + b);
    if (ia == m.vocab_.end() || ib == m.vocab_.end() || ir == m.vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(src, ": model.merges[", rank, "] ('", a, "', '", b, "') uses a token not in model.vocab"));
    }
    m.merges_.emplace(PairKey(ia->second, ib->second), Merge{rank, ir->second});
    ++rank;
  }
  if (auto unk = model.find("unk_token"); unk != model.end() && unk->is_string()) {
    auto it = m.vocab_.find(unk->get<std::string>());
    if (it != m.vocab_.end()) m.unk_id_ = it->second;
  }
  m.byte_fallback_ = model.value("byte_fallback", false);
  m.fuse_unk_ = model.value("fuse_unk", false);
  m.ignore_merges_ = model.value("ignore_merges", false);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto it = m.vocab_.find(name);
    m.byte_tokens_[b] = it == m.vocab_.end() ? -1 : it->second;
  }
  return m;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string& BpeModel::IdToToken(int32_t id) const {
  static const std::string* empty = new std::string();
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size())) return *empty;
  return id_to_token_[id];
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    // Llama 3: a whole pre-token that is in the vocabulary is one token,
    // whatever the merges would have made of it.
    auto it = vocab_.find(std::string(word));
    if (it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  // Initial symbols: one per character; unknown characters become their
  // bytes' <0xNN> tokens (byte fallback) or the unknown token.
  std::vector<int32_t> ids;
  for (size_t i = 0; i < word.size();) {
    const size_t start = i;
    DecodeUtf8(word, i);
    auto it = vocab_.find(std::string(word.substr(start, i - start)));
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      continue;
    }
    bool all_bytes = byte_fallback_;
    for (size_t k = start; all_bytes && k < i; ++k) all_bytes = byte_tokens_[static_cast<uint8_t>(word[k])] >= 0;
    if (all_bytes) {
      for (size_t k = start; k < i; ++k) ids.push_back(byte_tokens_[static_cast<uint8_t>(word[k])]);
    } else if (unk_id_) {
      if (!(fuse_unk_ && !ids.empty() && ids.back() == *unk_id_)) ids.push_back(*unk_id_);
    }
  }
  // Merge the lowest-ranked adjacent pair until none applies. Symbols form
  // a linked list; the heap holds candidate pairs, validated when popped.
  const int n = static_cast<int>(ids.size());
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int left;
    int32_t left_id, right_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    auto it = merges_.find(PairKey(ids[left], ids[next[left]]));
    if (it != merges_.end()) heap.push({it->second.rank, left, ids[left], ids[next[left]]});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int right = next[c.left];
    if (ids[c.left] != c.left_id || right < 0 || ids[right] != c.right_id) continue;  // stale
    ids[c.left] = merges_.at(PairKey(c.left_id, c.right_id)).result;
    ids[right] = -2;  // removed
    next[c.left] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.left;
    push(prev[c.left]);
    push(c.left);
  }
  for (int i = 0; i >= 0 && i < n; i = next[i]) out->push_back(ids[i]);
}

}  // namespace tandem
