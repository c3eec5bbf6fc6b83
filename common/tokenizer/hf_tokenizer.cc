// Tokenizer over a Hugging Face tokenizer.json: added tokens are split out
// of the text first (longest match), the rest goes through the normalizer,
// pre-tokenizer and BPE model, and the post-processor adds BOS (etc.).
#include <algorithm>
#include <array>
#include <filesystem>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/bpe_model.h"
#include "common/tokenizer/pre_tokenizer.h"
#include "common/tokenizer/token_decoder.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/read_file.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using Json = nlohmann::json;

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
};

bool IsSpaceByte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// tokenizer_config.json spells tokens as a string or {"content": ...}.
std::string TokenName(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

// Names the config file in errors: "<dir>/tokenizer_config.json" when the
// source is "<dir>/tokenizer.json", else "<source> (tokenizer_config.json)".
std::string ConfigSource(const std::string& source) {
  const std::string json = "tokenizer.json";
  if (source.size() >= json.size() && source.compare(source.size() - json.size(), json.size(), json) == 0) {
    return source.substr(0, source.size() - json.size()) + "tokenizer_config.json";
  }
  return source + " (tokenizer_config.json)";
}

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(BpeModel model, std::unique_ptr<TextSplitter> splitter, std::unique_ptr<TokenDecoder> decoder)
      : model_(std::move(model)), splitter_(std::move(splitter)), decoder_(std::move(decoder)) {}

  absl::Status Init(const Json& j, const Json& config, std::string_view source) {
    const std::string src(source);
    for (const Json& a : j.value("added_tokens", Json::array())) {
      AddedToken t;
      if (!a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") || !a["content"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(src, ": added_tokens entry lacks an integer id or a content"));
      }
      t.id = a["id"].get<int32_t>();
      t.content = a["content"].get<std::string>();
      t.special = a.value("special", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      if (t.content.empty()) continue;
      added_by_id_[t.id] = added_.size();
      added_by_content_[t.content] = t.id;
      added_.push_back(t);
    }
    // Candidates per first byte, longest first, so that matching at a
    // position prefers the longest and looks only at plausible tokens.
    for (size_t i = 0; i < added_.size(); ++i) {
      match_by_first_byte_[static_cast<uint8_t>(added_[i].content[0])].push_back(i);
    }
    for (auto& bucket : match_by_first_byte_) {
      std::stable_sort(bucket.begin(), bucket.end(),
                       [&](size_t a, size_t b) { return added_[a].content.size() > added_[b].content.size(); });
    }
    vocab_size_ = model_.max_id() + 1;
    for (const AddedToken& t : added_) vocab_size_ = std::max<int64_t>(vocab_size_, t.id + 1);

    const Json& post = j.contains("post_processor") ? j["post_processor"] : Json();
    absl::Status s = ReadPostProcessor(post, src);
    if (!s.ok()) return s;

    if (config.is_object()) {
      absl::Status cs = ReadConfig(config, src);
      if (!cs.ok()) return cs;
    }
    if (!bos_ && !prefix_.empty()) bos_ = prefix_.front();
    return absl::OkStatus();
  }

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override {
    std::vector<int32_t> ids;
    if (add_special_tokens) ids = prefix_;
    // Split out added tokens; encode the stretches between them.
    size_t stretch_begin = 0;
    bool first = true;
    size_t i = 0;
    auto flush = [&](size_t end) {
      if (end > stretch_begin) {
        for (const std::string& word : splitter_->Split(text.substr(stretch_begin, end - stretch_begin), first)) {
          model_.EncodeWord(word, &ids);
        }
      }
      first = false;
    };
    while (i < text.size()) {
      const AddedToken* hit = nullptr;
      for (size_t k : match_by_first_byte_[static_cast<uint8_t>(text[i])]) {
        const AddedToken& t = added_[k];
        if (text.compare(i, t.content.size(), t.content) == 0) {
          hit = &t;
          break;
        }
      }
      if (hit == nullptr) {
        ++i;
        continue;
      }
      size_t end_of_stretch = i;
      if (hit->lstrip) {
        while (end_of_stretch > stretch_begin && IsSpaceByte(text[end_of_stretch - 1])) --end_of_stretch;
      }
      flush(end_of_stretch);
      ids.push_back(hit->id);
      i += hit->content.size();
      if (hit->rstrip) {
        while (i < text.size() && IsSpaceByte(text[i])) ++i;
      }
      stretch_begin = i;
    }
    flush(text.size());
    if (add_special_tokens) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    std::vector<DecodePiece> pieces;
    pieces.reserve(ids.size());
    for (int32_t id : ids) {
      auto a = added_by_id_.find(id);
      if (a != added_by_id_.end()) {
        const AddedToken& t = added_[a->second];
        if (skip_special_tokens && t.special) continue;
        pieces.push_back({t.content, true});
        continue;
      }
      const std::string& s = model_.IdToToken(id);
      if (!s.empty()) pieces.push_back({s, false});
    }
    return decoder_->Decode(pieces);
  }

  int64_t vocab_size() const override { return vocab_size_; }

  std::optional<int32_t> TokenToId(std::string_view token) const override {
    if (token.empty()) return std::nullopt;
    auto a = added_by_content_.find(std::string(token));
    if (a != added_by_content_.end()) return a->second;
    return model_.TokenToId(token);
  }

  std::string IdToToken(int32_t id) const override {
    auto a = added_by_id_.find(id);
    if (a != added_by_id_.end()) return added_[a->second].content;
    return model_.IdToToken(id);
  }

  bool IsSpecial(int32_t id) const override {
    auto a = added_by_id_.find(id);
    return a != added_by_id_.end() && added_[a->second].special;
  }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::vector<int32_t> eos_ids() const override { return eos_; }

 private:
  // TemplateProcessing: the special tokens around sequence A of "single".
  // ByteLevel adds nothing; Sequence combines.
  absl::Status ReadPostProcessor(const Json& post, const std::string& src) {
    if (post.is_null()) return absl::OkStatus();
    const std::string type = post.value("type", std::string());
    if (type == "Sequence") {
      for (const Json& p : post.value("processors", Json::array())) {
        absl::Status s = ReadPostProcessor(p, src);
        if (!s.ok()) return s;
      }
      return absl::OkStatus();
    }
    if (type == "ByteLevel") return absl::OkStatus();
    if (type != "TemplateProcessing") {
      return absl::UnimplementedError(absl::StrCat(src, ": post_processor type '", type, "' is not supported"));
    }
    const Json& specials = post.value("special_tokens", Json::object());
    bool seen_sequence = false;
    for (const Json& piece : post.value("single", Json::array())) {
      if (piece.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!piece.contains("SpecialToken")) continue;
      const std::string name = piece["SpecialToken"].value("id", std::string());
      std::vector<int32_t> ids;
      if (specials.contains(name) && specials[name].contains("ids")) {
        for (const Json& id : specials[name]["ids"]) ids.push_back(id.get<int32_t>());
      } else if (auto id = TokenToId(name)) {
        ids.push_back(*id);
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(src, ": post_processor special token '", name, "' is not in the vocabulary"));
      }
      auto& dst = seen_sequence ? suffix_ : prefix_;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
    return absl::OkStatus();
  }

  // tokenizer_config.json: bos_token / eos_token (a string, an object
  // {"content": ...} or null), and add_bos_token / add_eos_token, which, as
  // in transformers' Llama tokenizers, override what the post-processor adds.
  absl::Status ReadConfig(const Json& config, const std::string& src) {
    const std::string where = ConfigSource(src);
    std::optional<int32_t> config_bos, config_eos;
    for (const char* field : {"bos_token", "eos_token"}) {
      if (!config.contains(field) || config[field].is_null()) continue;
      const std::string name = TokenName(config[field]);
      if (name.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ", field, " is neither a string nor an object with a string \"content\""));
      }
      std::optional<int32_t> id = TokenToId(name);
      if (!id) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", field, " '", name, "' is not in the vocabulary"));
      }
      (std::string_view(field) == "bos_token" ? config_bos : config_eos) = id;
    }
    if (config_bos) bos_ = config_bos;
    if (config_eos) eos_.push_back(*config_eos);
    for (const char* field : {"add_bos_token", "add_eos_token"}) {
      if (!config.contains(field) || config[field].is_null()) continue;
      if (!config[field].is_boolean()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", field, " is not a boolean"));
      }
      const bool add = config[field].get<bool>();
      const bool is_bos = std::string_view(field) == "add_bos_token";
      const std::optional<int32_t> token = is_bos ? config_bos : config_eos;
      if (!token) {
        if (add) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": ", field, " is true but ", is_bos ? "bos_token" : "eos_token", " is not set"));
        }
        continue;
      }
      std::vector<int32_t>& ends = is_bos ? prefix_ : suffix_;
      const bool present = !ends.empty() && (is_bos ? ends.front() : ends.back()) == *token;
      if (add && !present) {
        if (is_bos) {
          ends.insert(ends.begin(), *token);
        } else {
          ends.push_back(*token);
        }
      } else if (!add && present) {
        if (is_bos) {
          ends.erase(ends.begin());
        } else {
          ends.pop_back();
        }
      }
    }
    return absl::OkStatus();
  }

  BpeModel model_;
  std::unique_ptr<TextSplitter> splitter_;
  std::unique_ptr<TokenDecoder> decoder_;
  std::vector<AddedToken> added_;
  std::array<std::vector<size_t>, 256> match_by_first_byte_;  // indices into added_
  std::unordered_map<int32_t, size_t> added_by_id_;
  std::unordered_map<std::string, int32_t> added_by_content_;
  std::vector<int32_t> prefix_, suffix_;
  std::optional<int32_t> bos_;
  std::vector<int32_t> eos_;
  int64_t vocab_size_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                               std::string_view config_json,
                                                               std::string_view source) {
  const std::string src(source);
  Json j = Json::parse(tokenizer_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(src, ": not a valid JSON object"));
  Json config;
  if (!config_json.empty()) {
    config = Json::parse(config_json, nullptr, false);
    if (config.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(ConfigSource(src), ": not valid JSON"));
    }
  }
  if (!j.contains("model")) return absl::InvalidArgumentError(absl::StrCat(src, ": model is missing"));
  auto model = BpeModel::FromJson(j["model"], source);
  if (!model.ok()) return model.status();
  auto splitter = TextSplitter::FromJson(j.value("normalizer", Json()), j.value("pre_tokenizer", Json()), source);
  if (!splitter.ok()) return splitter.status();
  auto decoder = TokenDecoder::FromJson(j.value("decoder", Json()), source);
  if (!decoder.ok()) return decoder.status();
  auto t = std::make_unique<HfTokenizer>(std::move(*model), std::move(*splitter), std::move(*decoder));
  absl::Status s = t->Init(j, config, source);
  if (!s.ok()) return s;
  return std::unique_ptr<Tokenizer>(std::move(t));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDir(const std::string& dir) {
  const std::string json_path = dir + "/tokenizer.json";
  auto json = ReadWholeFile(json_path);
  if (!json.ok()) return json.status();
  std::string config;
  const std::string config_path = dir + "/tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    auto c = ReadWholeFile(config_path);
    if (!c.ok()) return c.status();
    config = std::move(*c);
  }
  return FromJson(*json, config, json_path);
}

}  // namespace tandem
