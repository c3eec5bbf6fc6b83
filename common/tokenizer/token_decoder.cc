#include "common/tokenizer/token_decoder.h"

#include "absl/strings/str_cat.h"
#include "common/tokenizer/byte_level.h"

namespace tandem {
namespace {

using Json = nlohmann::json;

class ByteLevelDecoder final : public TokenDecoder {
 public:
  std::string Decode(const std::vector<DecodePiece>& pieces) const override {
    std::string out;
    for (const DecodePiece& p : pieces) {
      if (p.added) {
        out += p.text;
        continue;
      }
      for (size_t i = 0; i < p.text.size();) {
        const size_t start = i;
        const char32_t c = DecodeUtf8(p.text, i);
        if (auto b = UnicodeToByte(c)) {
          out.push_back(static_cast<char>(*b));
        } else {
          out.append(p.text.substr(start, i - start));
        }
      }
    }
    return out;
  }
};

// The decoders of a Sequence applied as one pass, in the order the
// `tokenizers` library runs them: per-token Replace and ByteFallback, then
// Fuse, then Strip on the fused text (Metaspace likewise).
class PieceDecoder final : public TokenDecoder {
 public:
  std::vector<std::pair<std::string, std::string>> replaces;
  bool byte_fallback = false;
  size_t strip_start = 0, strip_stop = 0;
  std::string strip_content = " ";

  std::string Decode(const std::vector<DecodePiece>& pieces) const override {
    std::string out;
    for (const DecodePiece& p : pieces) {
      std::string t(p.text);
      if (!p.added && byte_fallback && t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        out.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
        continue;
      }
      for (const auto& [from, to] : replaces) {
        for (size_t pos = 0; (pos = t.find(from, pos)) != std::string::npos; pos += to.size()) {
          t.replace(pos, from.size(), to);
        }
      }
      out += t;
    }
    size_t begin = 0, end = out.size();
    for (size_t k = 0; k < strip_start && out.compare(begin, strip_content.size(), strip_content) == 0; ++k) {
      begin += strip_content.size();
    }
    for (size_t k = 0; k < strip_stop && end >= begin + strip_content.size() &&
                       out.compare(end - strip_content.size(), strip_content.size(), strip_content) == 0;
         ++k) {
      end -= strip_content.size();
    }
    return out.substr(begin, end - begin);
  }
};

absl::Status AddToPieceDecoder(const Json& d, std::string_view source, PieceDecoder* pd) {
  const std::string type = d.value("type", std::string());
  if (type == "Replace") {
    if (!d["pattern"].contains("String")) {
      return absl::UnimplementedError(absl::StrCat(std::string(source), ": decoder Replace supports String patterns only"));
    }
    pd->replaces.emplace_back(d["pattern"]["String"].get<std::string>(), d.value("content", std::string()));
  } else if (type == "ByteFallback") {
    pd->byte_fallback = true;
  } else if (type == "Fuse") {
  } else if (type == "Strip") {
    pd->strip_content = d.value("content", std::string(" "));
    pd->strip_start = d.value("start", 0);
    pd->strip_stop = d.value("stop", 0);
  } else if (type == "Metaspace") {
    pd->replaces.emplace_back(d.value("replacement", std::string("\xE2\x96\x81")), " ");
    std::string scheme = d.value("prepend_scheme", std::string());
    if (scheme.empty()) scheme = d.value("add_prefix_space", true) ? "always" : "never";
    if (scheme != "never") pd->strip_start = 1;
  } else {
    return absl::UnimplementedError(absl::StrCat(std::string(source), ": decoder type '", type, "' is not supported"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenDecoder>> TokenDecoder::FromJson(const Json& d, std::string_view source) {
  if (d.is_null()) return std::unique_ptr<TokenDecoder>(new PieceDecoder());  // plain concatenation
  const std::string type = d.value("type", std::string());
  if (type == "ByteLevel") return std::unique_ptr<TokenDecoder>(new ByteLevelDecoder());
  auto pd = std::make_unique<PieceDecoder>();
  if (type == "Sequence") {
    for (const Json& sub : d.value("decoders", Json::array())) {
      if (sub.value("type", std::string()) == "ByteLevel") return std::unique_ptr<TokenDecoder>(new ByteLevelDecoder());
      absl::Status s = AddToPieceDecoder(sub, source, pd.get());
      if (!s.ok()) return s;
    }
  } else {
    absl::Status s = AddToPieceDecoder(d, source, pd.get());
    if (!s.ok()) return s;
  }
  return std::unique_ptr<TokenDecoder>(std::move(pd));
}

}  // namespace tandem
